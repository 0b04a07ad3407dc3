"""The Dockerfile, read statically (no Docker engine here): a final stage fit for a cluster."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import pytest

from common.entrypoint import COMMANDS
from tests.deploy.dockerfile import Stage, parse
from tests.deploy.tooling import Tools
from tests.support.processes import ROOT

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|pip|make|gcc|g\+\+|cc|build-essential|compileall)\b")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE)


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_the_image_is_built_in_two_stages_from_the_same_slim_python_311(
    stages: list[Stage],
) -> None:
    assert len(stages) == 2
    assert all(stage.base.startswith("python:3.11") and "slim" in stage.base for stage in stages)
    # The virtualenv's python is a link to the base image's interpreter.
    assert stages[0].base == stages[1].base


def test_the_build_stage_installs_the_lock_with_hashes_through_the_makefile(
    stages: list[Stage],
) -> None:
    runs = " ; ".join(i.value for i in stages[0].all("RUN"))
    assert "make install" in runs
    assert "make proto" in runs
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes" in makefile.split("$(INSTALLED): requirements.lock", 1)[1]


def test_the_final_stage_keeps_the_build_path_the_virtualenv_pth_file_names(
    stages: list[Stage], final: Stage
) -> None:
    assert stages[0].all("WORKDIR")[-1].value == final.all("WORKDIR")[-1].value == "/app"
    copied = {i.value.split()[-1] for i in final.all("COPY") if "--from=build" in i.value}
    assert {"/app/.venv", "/app/gen"} <= copied


def test_the_final_stage_has_no_compiler_package_manager_or_make(final: Stage) -> None:
    for run in final.all("RUN"):
        assert not BUILD_TOOLS.search(run.value), f"line {run.line}: {run.value}"


def test_the_final_stage_runs_as_a_fixed_non_root_uid(final: Stage) -> None:
    user = final.all("USER")[-1].value
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit()
    assert int(uid) >= 1000
    assert gid.isdigit()
    assert int(gid) >= 1000


def test_the_final_stage_is_fit_for_a_read_only_root_filesystem(final: Stage) -> None:
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MC_DATA_DIR"] == "/data"
    assert env["HOME"].startswith("/tmp")
    # Faust makes a directory per app, by default in the working directory (read-only here).
    assert env["FAUST_DATADIR"].startswith("/tmp/")


def test_the_image_stops_on_sigterm_and_carries_oci_labels(final: Stage) -> None:
    assert final.all("STOPSIGNAL")[-1].value == "SIGTERM"
    labels = " ".join(i.value for i in final.all("LABEL"))
    for key in ("source", "version", "licenses", "revision", "title"):
        assert f"org.opencontainers.image.{key}=" in labels
    version_default = next(
        i.value.split("=", 1)[1] for i in final.all("ARG") if i.value.startswith("VERSION=")
    )
    assert version_default == project_version()


def test_the_entrypoint_is_the_entry_module_with_the_gateway_as_default_command(
    final: Stage,
) -> None:
    entrypoint = final.all("ENTRYPOINT")[-1].exec_form()
    assert entrypoint[0] == "/app/.venv/bin/python"
    assert entrypoint[1:] == ["-m", "common.entrypoint"]
    assert (ROOT / "common" / "entrypoint.py").is_file()
    assert final.all("CMD")[-1].exec_form()[0] in COMMANDS


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def in_context(path: str) -> bool:
    """Whether Docker sends ``path`` (relative) with the build context: last match wins."""
    included = True
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if matched:
            included = negated
    return included


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".tools/venv/bin/checkov",
        "var/user.db",
        "gen/microcommerce/user/v1/user_service_pb2.py",
        "tests/conftest.py",
        "bench/results/latest.json",
        "common/__pycache__/db.cpython-311.pyc",
        "payment-health-1234-data/x",
        "product_svc/local.db",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_build_context(path: str) -> None:
    assert not in_context(path)


def test_everything_the_dockerfile_copies_is_in_the_build_context(stages: list[Stage]) -> None:
    sources = [
        source
        for instruction in stages[0].all("COPY")
        for source in instruction.value.split()[:-1]
        if not source.startswith("--")
    ]
    assert sources
    for source in sources:
        probe = f"{source.rstrip('/')}/x.py" if source.endswith("/") else source
        assert in_context(probe), source


def test_the_image_copies_every_process_package_the_entrypoint_imports(
    stages: list[Stage],
) -> None:
    copied = " ".join(i.value for i in stages[0].all("COPY"))
    for command in COMMANDS.values():
        package = command.module.split(".")[0]
        assert f"{package}/" in copied, package


def test_hadolint_finds_nothing(tools: Tools) -> None:
    tools.run(tools.hadolint, str(DOCKERFILE))
