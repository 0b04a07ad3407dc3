"""`python -m product_svc` starts the service."""

from product_svc.main import main

main()
