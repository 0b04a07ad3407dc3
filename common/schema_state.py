"""Bringing a service's schema to head from a short-lived child process.

Alembic and a migration run leave ~10 MB in a process that then serves for weeks without
needing either (``python -m bench.idle``): the service's ``main`` therefore migrates in a child
(``python -c``, ``common.migrations.upgrade_from_stdin``) and imports nothing of Alembic itself.
The in-process path (``common.migrations.upgrade_to_head``) stays for tests and tools that run
a service inside their own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# The repository root, so the child imports the same code whatever its working directory.
_ROOT = Path(__file__).resolve().parent.parent
_CHILD = "from common.migrations import upgrade_from_stdin; upgrade_from_stdin()"


class SchemaNotAtHead(RuntimeError):
    """A service told not to migrate (MC_MIGRATE_ON_START=false) found its schema behind."""


class MigrationFailed(RuntimeError):
    """The migration child exited with an error (its own log lines say which)."""


def upgrade_in_child(service: str, url: str, log_level: str) -> None:
    """Apply ``service``'s pending migrations to ``url`` in a child process; wait for it.

    Its log lines go to this process's stderr; its failure raises ``MigrationFailed``.
    """
    path = os.pathsep.join(filter(None, (str(_ROOT), os.environ.get("PYTHONPATH"))))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps({"service": service, "url": url, "log_level": log_level}) + "\n",
        text=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    if result.returncode != 0:
        raise MigrationFailed(
            f"migrating the {service} database failed (exit status {result.returncode}); "
            "the lines above say why"
        )
