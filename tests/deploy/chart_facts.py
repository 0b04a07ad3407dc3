"""What the code says the chart must agree with: gRPC health service names and who calls whom."""

from __future__ import annotations

from microcommerce.payment.v1 import order_service_pb2
from microcommerce.product.v1 import product_service_pb2
from microcommerce.user.v1 import user_service_pb2

# The service each chart probe asks grpc.health.v1 about: one the process registers with
# health (common.grpc_server.create_server), read from the generated descriptors so a renamed
# service breaks this test, not a cluster.
GRPC_HEALTH_SERVICES: dict[str, str] = {
    "payment": order_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    "product": product_service_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name,
    "user": user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
}

# gRPC calls between components: the gateway transcodes to all three services
# (gateway/upstreams.py) and fetches JWKS from user; payment reserves stock in product
# (payment_svc/inventory_client.py); every service fetches JWKS and service tokens from user
# (common/service_runner.py, common/user_client.py). user_svc calls nobody.
CALLS: dict[str, frozenset[str]] = {
    "gateway": frozenset({"payment", "product", "user"}),
    "payment": frozenset({"product", "user"}),
    "product": frozenset({"user"}),
    "user": frozenset(),
}

COMPONENTS = tuple(CALLS)
