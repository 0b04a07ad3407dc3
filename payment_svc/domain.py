"""Orders, payments and refunds: the checkout saga's states and rules (payment issue).

Plain Python only: no gRPC, SQL, Kafka or HTTP here (tests/unit/test_architecture.py).
"""
