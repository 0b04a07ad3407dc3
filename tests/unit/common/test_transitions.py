"""A state machine declared as a table of legal moves."""

from __future__ import annotations

from enum import Enum

import pytest

from common.errors import FailedPrecondition
from common.reasons import Reason
from common.transitions import Transitions


class Light(Enum):
    RED = "RED"
    GREEN = "GREEN"
    OFF = "OFF"


LIGHTS = Transitions[Light](
    "light",
    {
        Light.RED: frozenset({Light.GREEN, Light.OFF}),
        Light.GREEN: frozenset({Light.RED}),
        Light.OFF: frozenset(),
    },
)


def test_a_legal_move_passes_and_an_illegal_one_names_both_states() -> None:
    LIGHTS.check(Light.RED, Light.GREEN)

    with pytest.raises(FailedPrecondition) as refused:
        LIGHTS.check(Light.OFF, Light.RED, field="status")

    assert refused.value.reason is Reason.ILLEGAL_TRANSITION
    assert refused.value.field == "status"
    assert "OFF" in refused.value.message
    assert "RED" in refused.value.message


def test_a_table_that_forgets_a_state_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="OFF"):
        Transitions[Light]("light", {Light.RED: frozenset(), Light.GREEN: frozenset()})
