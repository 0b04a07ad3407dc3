"""The REST gateway: transcodes HTTP/JSON calls to the services' gRPC APIs (ARCHITECTURE.md)."""
