"""Products, categories, prices and stock: the catalog's entities and rules (catalog issue).

Plain Python only: no gRPC, SQL, Kafka or HTTP here (tests/unit/test_architecture.py).
"""
