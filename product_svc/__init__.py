"""product_svc: the product service (gRPC on :8082)."""
