"""The roles an access token carries: plain names, for the domains as for the token code.

Kept apart from ``common.tokens`` (JWT, cryptography) so that a service's domain can name a
role while importing nothing but the standard library.
"""

from __future__ import annotations

ROLE_CUSTOMER = "customer"
ROLE_ADMIN = "admin"
# Held only by service identity tokens; no user can be given it.
ROLE_SERVICE = "service"
SERVICE_SUBJECT_PREFIX = "service:"
