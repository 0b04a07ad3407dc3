"""payment_svc: the payment service (gRPC on :8081)."""
