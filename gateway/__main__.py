"""`python -m gateway` starts the REST gateway."""

from gateway.main import main

main()
