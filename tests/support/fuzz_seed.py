"""How the fuzz test hands the ids of what it made beforehand to the schemathesis hooks.

Apart from ``fuzz_hooks`` so the test can name them without importing that module, whose
import registers hooks in schemathesis' global registry.
"""

from __future__ import annotations

CATEGORY_ENV = "FUZZ_CATEGORY_ID"
PRODUCT_ENV = "FUZZ_PRODUCT_ID"
# An order of the signed-in customer that cancelling answers with 200: it is already cancelled.
ORDER_ENV = "FUZZ_ORDER_ID"
