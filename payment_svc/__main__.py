"""`python -m payment_svc` starts the service."""

from payment_svc.main import main

main()
