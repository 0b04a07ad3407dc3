"""A pytest plugin loaded only by ``make mutants``: pytest 9 items for mutmut 3.4.

mutmut 3.4 (the newest that installs beside faust-streaming's click<8.4) reads ``item._nodeid``,
which pytest 9 no longer sets; this gives every node that attribute as its public ``nodeid``.
"""

from __future__ import annotations

from _pytest.nodes import Node


def _nodeid(node: Node) -> str:
    return node.nodeid


if not hasattr(Node, "_nodeid"):
    Node._nodeid = property(_nodeid)  # type: ignore[attr-defined]
