"""A state machine as a table of legal moves; every service's domain declares its states so."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Generic, TypeVar

from common.errors import FailedPrecondition
from common.reasons import Reason

StateT = TypeVar("StateT", bound=Enum)


class Transitions(Generic[StateT]):
    """The legal moves between the states of one kind of entity (an order, a reservation, ...).

    ``moves`` must name every state, final ones with no successor, so a state added to the enum
    but forgotten here fails at import time rather than at the first move.
    """

    def __init__(self, entity: str, moves: Mapping[StateT, frozenset[StateT]]) -> None:
        states = {state for state in moves} | {
            target for targets in moves.values() for target in targets
        }
        missing = set(type(next(iter(moves)))) - set(moves)
        if missing or not states <= set(moves):
            raise ValueError(
                f"the {entity} transitions leave out {sorted(s.name for s in missing)}"
            )
        self.entity = entity
        self._moves = dict(moves)

    def allows(self, current: StateT, target: StateT) -> bool:
        return target in self._moves[current]

    def successors(self, current: StateT) -> frozenset[StateT]:
        return self._moves[current]

    def check(self, current: StateT, target: StateT, *, field: str | None = None) -> None:
        """FailedPrecondition (ILLEGAL_TRANSITION) unless ``current -> target`` is legal."""
        if not self.allows(current, target):
            raise FailedPrecondition(
                f"a {self.entity} that is {current.name} cannot become {target.name}",
                field=field,
                reason=Reason.ILLEGAL_TRANSITION,
            )
