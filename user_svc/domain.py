"""Accounts, credentials, sessions and roles: the user service's entities and rules (user issue).

Plain Python only: no gRPC, SQL, Kafka or HTTP here (tests/unit/test_architecture.py).
"""
