"""Local-run tooling: the `make run` supervisor, the embedded broker and the demo seeder."""
