"""Schemathesis against the running stack's /openapi.json: no 5xx, no response off the schema.

Three callers: anonymous (the protected routes must answer a conforming 401), a customer
registered by the test, and the bootstrap admin the stack creates. The signed-in callers also
run stateful: schemathesis follows the document's OpenAPI links from each create to the
operations on what it created, and each stateful run must follow at least one.
``tests.support.fuzz_hooks`` lets the creates send realistic bodies some of the time, so there
are resources to follow links from.

The stack runs with the gateway's rate limits off: hundreds of requests from one address would
otherwise turn into 429s before they reach anything worth testing. Fraud screening is off for
the same reason: its velocity and declined-card rules turn hundreds of checkouts by one user,
card and address into 402s whatever they carry (tests/integration/payment/test_fraud_* test it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localrun.broker import EmbeddedBroker
from tests.support.fuzz_seed import CATEGORY_ENV, ORDER_ENV, PRODUCT_ENV
from tests.support.processes import ROOT, Stack, start_stack, wait_for

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
ADMIN_EMAIL = "fuzz-admin@example.com"
PROTECTED = '/x-access != "ACCESS_PUBLIC"'
FUZZ = "examples,coverage,fuzzing"
MAX_EXAMPLES = 10
STATEFUL = "stateful"


@dataclass(frozen=True)
class Run:
    """One schemathesis run: who calls, which phases, over which operations."""

    caller: str
    phases: str
    only: tuple[str, ...] = ()
    label: str = "all"
    examples: int = MAX_EXAMPLES

    def __str__(self) -> str:
        return f"{self.caller}-{self.phases}-{self.label}"


# Every run is bounded by its work, not by the clock, so each covers what it should however
# busy the machine is: the coverage phase's fixed set of cases, ``examples`` fuzzed cases per
# operation, ``examples`` stateful scenarios. (A --max-time budget would not do: fuzzing and
# stateful testing repeat until it is spent, and a slow coverage phase starves them.) On a
# quiet 2-core machine the file takes well under two minutes.
RUNS = (
    # Public operations are fuzzed by the signed-in runs; here only the refusals matter, and
    # the gateway refuses before it reads the request: a few cases per operation say enough.
    Run(
        "anonymous",
        "fuzzing",
        only=("--include-by", PROTECTED, "--exclude-tag", "meta"),
        label="protected",
        examples=5,
    ),
    Run("customer", FUZZ),
    Run("customer", STATEFUL),
    Run("admin", FUZZ),
    Run("admin", STATEFUL),
    # Schemathesis starts its scenarios from the creates it deems likely to succeed, and only
    # falls back on the others when there is none: it judges the catalog's creates unlikely
    # (their category_id / parent_id), so they get a run of their own, without the others.
    Run("admin", STATEFUL, only=("--include-tag", "ProductService"), label="catalog"),
)
RUN_TIMEOUT_S = 120
STARTUP_S = 90
# Everyone may erase their own account: the rest of a signed-in run would then test a deleted
# user. The anonymous run still calls it (and gets 401).
SELF_DESTRUCTIVE = "UserService_DeleteMe"
ADMIN_ONLY = '/x-access == "ACCESS_ADMIN"'
CONFIG = """
hooks = "tests.support.fuzz_hooks"

# Data the document calls valid that the API refuses means the document lies (issue 16):
# a "schema validation mismatch" warning fails the run.
[warnings]
fail-on = ["validation_mismatch"]

[phases.stateful.inference]
# Follow the document's links only: they are what this test is about.
algorithms = []
"""
# Every operation is fuzzed in full by the caller it is meant for, once: the customer takes
# the public and customer operations, the admin the admin ones. The customer still gets the
# coverage phase on admin operations (each answer a conforming 403); the admin's stateful runs
# still walk through everything, since links lead from admin creates to public reads.
CALLER_CONFIG = {
    "anonymous": "",
    "customer": f"""
[[operations]]
include-by = '{ADMIN_ONLY}'
phases.examples.enabled = false
phases.fuzzing.enabled = false
phases.stateful.enabled = false
""",
    "admin": f"""
[[operations]]
exclude-by = '{ADMIN_ONLY}'
phases.examples.enabled = false
phases.coverage.enabled = false
phases.fuzzing.enabled = false

# Archiving the product the realistic checkouts buy would turn every later checkout into a 404;
# deleting is tested on the products the stateful phase creates itself.
[[operations]]
include-operation-id = "ProductService_DeleteProduct"
phases.examples.enabled = false
phases.coverage.enabled = false
phases.fuzzing.enabled = false
""",
}
TESTED = re.compile(r"Tested:\s+(\d+)")
COVERED_LINKS = re.compile(r"API Links:\s+(\d+) covered")


@dataclass(frozen=True)
class FuzzTarget:
    """The running stack, a token per signed-in caller, and what realistic bodies refer to."""

    url: str
    tokens: dict[str, str]
    category_id: str
    product_id: str
    order_id: str


@pytest.fixture(scope="module")
def fuzz_stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "MC_RATE_LIMIT_ENABLED": "false",
        "MC_FRAUD_ENABLED": "false",
        "MC_ADMIN_EMAIL": ADMIN_EMAIL,
        "MC_ADMIN_PASSWORD": secrets.token_urlsafe(16),
    }
    running = start_stack(broker.bootstrap, Path(tmp_path_factory.mktemp("fuzz")), env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fuzz_target(fuzz_stack: Stack) -> FuzzTarget:
    return asyncio.run(_prepare(fuzz_stack))


async def _prepare(stack: Stack) -> FuzzTarget:
    async with aiohttp.ClientSession(
        stack.gateway_url, timeout=aiohttp.ClientTimeout(total=10)
    ) as http:

        async def call(path: str, body: dict[str, Any], token: str = "") -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            headers["Idempotency-Key"] = uuid.uuid4().hex  # asked for by the checkout only
            async with http.post(path, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        async def admin_session() -> str | None:
            password = stack.base_env["MC_ADMIN_PASSWORD"]
            try:
                status, body = await call(
                    "/api/v1/auth/token", {"email": ADMIN_EMAIL, "password": password}
                )
            except (aiohttp.ClientError, TimeoutError):
                return None
            # 401 until user_svc has created the admin, just after it starts.
            return str(body["access_token"]) if status == 200 else None

        await stack.wait_until_up(within=STARTUP_S)
        admin = await wait_for(admin_session, within=STARTUP_S, interval=0.5)
        email, password = f"fuzz-{uuid.uuid4().hex[:10]}@example.com", secrets.token_urlsafe(12)
        created = await call("/api/v1/users", {"email": email, "password": password, "name": "C"})
        assert created[0] == 201, created
        signed_in = await call("/api/v1/auth/token", {"email": email, "password": password})
        assert signed_in[0] == 200, signed_in
        category = await call(
            "/api/v1/categories",
            {"name": "Fuzzing", "slug": f"fuzzing-{uuid.uuid4().hex[:8]}"},
            admin,
        )
        assert category[0] == 201, category
        product = await call(
            "/api/v1/products",
            {
                "sku": f"FUZZ-SEED-{uuid.uuid4().hex[:8]}",
                "name": "What the fuzzer buys",
                "description": "made by the fuzz test",
                "category_id": category[1]["id"],
                "price": {"amount": 1999, "currency": "USD"},
                "stock": 1_000_000,
            },
            admin,
        )
        assert product[0] == 201, product
        # A cancelled order of the customer: cancelling it again answers it unchanged (200).
        customer = str(signed_in[1]["access_token"])
        order = await call(
            "/api/v1/orders",
            {
                "items": [{"product_id": product[1]["id"], "quantity": 1}],
                "payment_method": {
                    "card": {
                        "number": "4242424242424242",
                        "exp_month": 12,
                        "exp_year": datetime.now(UTC).year + 3,
                        "cvc": "123",
                        "holder_name": "Fuzz Seed",
                    }
                },
            },
            customer,
        )
        assert order[0] == 201, order
        cancelled = await call(f"/api/v1/orders/{order[1]['id']}:cancel", {}, customer)
        assert cancelled[0] == 200, cancelled
    return FuzzTarget(
        url=stack.gateway_url,
        tokens={"customer": customer, "admin": admin},
        category_id=str(category[1]["id"]),
        product_id=str(product[1]["id"]),
        order_id=str(order[1]["id"]),
    )


def _arguments(run: Run, target: FuzzTarget, config: Path, report: Path) -> list[str]:
    arguments = [
        "--config-file",
        str(config),
        "run",
        f"{target.url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(run.examples),
        "--phases",
        run.phases,
        # One worker: CPython 3.11 keeps the AST converter's recursion depth in state shared by
        # every thread (gh-106905), and Hypothesis parses the source of the schema's filter
        # functions in each worker, so two workers now and then fail a run with "SystemError:
        # AST constructor recursion depth mismatch".
        "--workers",
        "1",
        "--seed",
        "6",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report),
        *run.only,
    ]
    if run.caller == "anonymous":
        return arguments
    return [
        *arguments,
        "--header",
        f"Authorization: Bearer {target.tokens[run.caller]}",
        "--exclude-operation-id",
        SELF_DESTRUCTIVE,
    ]


@pytest.mark.parametrize("run", RUNS, ids=str)
async def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    run: Run, fuzz_target: FuzzTarget, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG + CALLER_CONFIG[run.caller])
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("schemathesis")),
        *_arguments(run, fuzz_target, config, tmp_path / "report"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its example database (.schemathesis/) stays out of the repository
        env={
            **os.environ,
            CATEGORY_ENV: fuzz_target.category_id,
            PRODUCT_ENV: fuzz_target.product_id,
            ORDER_ENV: fuzz_target.order_id,
        },
    )
    raw, _ = await asyncio.wait_for(process.communicate(), timeout=RUN_TIMEOUT_S)
    output = raw.decode(errors="replace")
    (tmp_path / "schemathesis.out").write_text(output)  # kept with the test's temp files

    assert process.returncode == 0, output[-20000:]
    tested = TESTED.search(output)
    assert tested is not None, output[-5000:]
    assert int(tested.group(1)) > 0, output[-5000:]
    if run.phases == STATEFUL:
        covered = COVERED_LINKS.search(output)
        # The stateful phase must have followed at least one link from a real create.
        assert covered is not None, output[-5000:]
        assert int(covered.group(1)) > 0, output[-5000:]


# ---- a client generated from the document refuses what the services refuse ------------------

CODEGEN = ROOT / ".tools" / "codegen" / "bin"
# Runs in the generator's venv (its pydantic and email-validator): each case's body through
# the generated model, True when the model accepts it.
JUDGE = """
import importlib, json, sys
from pydantic import ValidationError
sys.path.insert(0, sys.argv[1])
verdicts = []
for module, name, body in json.load(sys.stdin):
    model = getattr(importlib.import_module("client." + module), name)
    try:
        model.model_validate(body)
        verdicts.append(True)
    except ValidationError:
        verdicts.append(False)
print(json.dumps(verdicts))
"""


@dataclass(frozen=True)
class ClientCase:
    """One request body, the generated model that describes it, and the route it goes to."""

    label: str
    caller: str
    method: str
    path: str
    module: str
    model: str
    body: dict[str, Any]


def _client_cases(target: FuzzTarget) -> list[ClientCase]:
    def unique() -> str:
        return uuid.uuid4().hex[:10]

    def user(**change: Any) -> ClientCase:
        body = {"email": f"client-{unique()}@example.com", "password": "long enough", "name": "A"}
        return ClientCase(
            _label("user", change),
            "",
            "POST",
            "/api/v1/users",
            "microcommerce.user.v1",
            "CreateUserRequest",
            {**body, **change},
        )

    def category(**change: Any) -> ClientCase:
        body = {"name": "Client", "slug": f"client-{unique()}", **change}
        return ClientCase(
            _label("category", change),
            "admin",
            "POST",
            "/api/v1/categories",
            "microcommerce.product.v1",
            "CreateCategoryRequest",
            body,
        )

    def product(**change: Any) -> ClientCase:
        body = {
            "sku": f"CLIENT-{unique()}",
            "name": "Client product",
            "description": "made by the generated-client test",
            "category_id": target.category_id,
            "price": {"amount": 100, "currency": "USD"},
            "stock": 5,
            **change,
        }
        return ClientCase(
            _label("product", change),
            "admin",
            "POST",
            "/api/v1/products",
            "microcommerce.product.v1",
            "CreateProductRequest",
            body,
        )

    def preferences(**change: Any) -> ClientCase:
        body = {"currency": "EUR", "language": "en-GB", "marketing_emails": False, **change}
        return ClientCase(
            _label("preferences", change),
            "customer",
            "PUT",
            "/api/v1/users/me/preferences",
            "microcommerce.user.v1",
            "Preferences",
            body,
        )

    def order(quantity: int = 1, **card_change: Any) -> ClientCase:
        card = {
            "number": "4242424242424242",
            "exp_month": 12,
            "exp_year": datetime.now(UTC).year + 3,
            "cvc": "123",
            "holder_name": "Client Tester",
            **card_change,
        }
        body = {
            "items": [{"product_id": target.product_id, "quantity": quantity}],
            "payment_method": {"card": card},
        }
        return ClientCase(
            _label("order", {"quantity": quantity, **card_change}),
            "customer",
            "POST",
            "/api/v1/orders",
            "microcommerce.payment.v1",
            "CreateOrderRequest",
            body,
        )

    return [
        user(),
        user(email="not an email"),
        user(password="short"),
        user(name=""),
        user(name="x" * 201),
        category(),
        category(slug="Not A Slug"),
        category(slug="double--hyphen"),
        category(name=""),
        product(),
        product(price={"amount": 100, "currency": "usd"}),
        product(price={"amount": -1, "currency": "USD"}),
        product(sku="-leading-hyphen"),
        product(stock=-1),
        product(name="x" * 201),
        preferences(),
        preferences(language="english please"),
        preferences(currency="EURO"),
        order(),
        order(quantity=0),
        order(quantity=10_001),
        order(cvc="12"),
        order(exp_month=13),
        order(holder_name="x" * 201),
    ]


def _label(kind: str, change: dict[str, Any]) -> str:
    return f"{kind} " + (", ".join(f"{k}={v!r:.24}" for k, v in change.items()) or "valid")


async def _gateway_refuses(target: FuzzTarget, case: ClientCase) -> bool:
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    if case.caller:
        headers["Authorization"] = f"Bearer {target.tokens[case.caller]}"
    async with (
        aiohttp.ClientSession(target.url) as http,
        http.request(case.method, case.path, json=case.body, headers=headers) as response,
    ):
        assert response.status < 500, (case.label, response.status, await response.text())
        assert response.status != 401, case.label
        return response.status == 400


async def test_a_client_generated_from_the_document_refuses_what_the_gateway_refuses(
    fuzz_target: FuzzTarget, tmp_path: Path
) -> None:
    if not (CODEGEN / "datamodel-codegen").exists():
        pytest.fail("the model generator is missing: run `make codegen`")
    async with (
        aiohttp.ClientSession(fuzz_target.url) as http,
        http.get("/openapi.json") as served,
    ):
        (tmp_path / "openapi.json").write_text(await served.text())
    generate = await asyncio.create_subprocess_exec(
        str(CODEGEN / "datamodel-codegen"),
        "--input",
        str(tmp_path / "openapi.json"),
        "--input-file-type",
        "openapi",
        "--output",
        str(tmp_path / "client"),
        "--output-model-type",
        "pydantic_v2.BaseModel",
        "--field-constraints",
        "--formatters",
        "builtin",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    generated, _ = await asyncio.wait_for(generate.communicate(), RUN_TIMEOUT_S)
    assert generate.returncode == 0, generated.decode(errors="replace")
    cases = _client_cases(fuzz_target)
    judge = await asyncio.create_subprocess_exec(
        str(CODEGEN / "python"),
        "-c",
        JUDGE,
        str(tmp_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    listed = [[case.module, case.model, case.body] for case in cases]
    out, err = await asyncio.wait_for(judge.communicate(json.dumps(listed).encode()), 120)
    assert judge.returncode == 0, err.decode(errors="replace")
    accepted_by_client = json.loads(out)

    disagreements = []
    for case, client_accepts in zip(cases, accepted_by_client, strict=True):
        gateway_refuses = await _gateway_refuses(fuzz_target, case)
        if client_accepts == gateway_refuses:
            disagreements.append(
                f"{case.label}: client {'accepts' if client_accepts else 'refuses'}, "
                f"gateway {'400' if gateway_refuses else 'accepts'}"
            )
    assert disagreements == []
    # Both sides saw valid and invalid bodies: the comparison says something.
    assert 0 < sum(accepted_by_client) < len(cases)
