"""The shared kernel: settings, logging, errors, gRPC, database and Kafka plumbing."""
