"""Live sales analytics: a read model (CQRS) folded from the order and payment events.

``facts`` turns one event into the increments it adds (pure, no SQL); ``store`` keeps the
read-model tables and applies increments as commutative upserts, so the figures do not depend
on the order events arrive in; ``service`` holds the use cases (fold an event once, through the
inbox; read sales and top products; rebuild from the stored order changes); ``grpc_api`` the
admin RPCs; ``python -m payment_svc.analytics rebuild`` the rebuild command.
"""
