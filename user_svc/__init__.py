"""user_svc: the user service (gRPC on :8083)."""
