"""The container image's command line: one image, the process chosen by its first argument."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A process the image can run: the module holding its ``main`` and what it does."""

    module: str
    help: str
    takes_arguments: bool = False


# The same main functions `make run` and `make migrate` reach, so the tests that start these
# commands exercise exactly what the image runs.
COMMANDS: dict[str, Command] = {
    "gateway": Command("gateway.main", "the REST gateway (MC_GATEWAY_PORT)"),
    "payment": Command("payment_svc.main", "the payment gRPC service (MC_PAYMENT_PORT)"),
    "product": Command("product_svc.main", "the product gRPC service (MC_PRODUCT_PORT)"),
    "user": Command("user_svc.main", "the user gRPC service (MC_USER_PORT)"),
    "migrate": Command(
        "common.migrations",
        "apply pending migrations of every service, or of the SERVICEs named, then exit",
        takes_arguments=True,
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.entrypoint",
        description="Run one MicroCommerce process; settings come from MC_* variables.",
        epilog="commands: "
        + "; ".join(f"{name}: {command.help}" for name, command in COMMANDS.items()),
    )
    parser.add_argument("command", choices=COMMANDS, help="the process to run")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="migrate: SERVICE ...")
    return parser


def resolve(argv: Sequence[str]) -> Callable[[], None]:
    """The function that runs the process ``argv`` names; exits with usage when it names none."""
    parser = _parser()
    args = parser.parse_args(argv)
    command = COMMANDS[args.command]
    if args.arguments and not command.takes_arguments:
        parser.error(f"{args.command} takes no arguments (settings come from MC_* variables)")
    # Imported only now: the gateway need not load the services' code, nor they each other's.
    main: Callable[..., None] = importlib.import_module(command.module).main
    if command.takes_arguments:
        arguments = ["upgrade", *args.arguments]
        return lambda: main(arguments)
    return main


def main(argv: Sequence[str] | None = None) -> None:
    resolve(sys.argv[1:] if argv is None else argv)()


if __name__ == "__main__":
    main()
