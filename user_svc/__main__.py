"""`python -m user_svc` starts the service."""

from user_svc.main import main

main()
