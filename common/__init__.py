"""The shared kernel: settings, logging, errors, gRPC, database, Kafka plumbing for every process."""
