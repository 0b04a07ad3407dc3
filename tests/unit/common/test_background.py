"""Periodic work keeps going through failures, backing off, and stops when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from common.background import periodic, run_every


async def test_a_failing_step_is_retried_and_the_loop_keeps_running() -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) < 3:
            raise RuntimeError("database away")
        done.set()

    task = asyncio.create_task(run_every(0.001, step, name="test"))
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert calls[:3] == [0, 1, 2]


async def test_an_early_wake_up_runs_the_next_step_before_the_interval() -> None:
    woken = asyncio.Event()
    steps = 0
    second_step = asyncio.Event()

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps == 2:
            second_step.set()

    async def wait(_interval: float) -> None:
        await woken.wait()
        woken.clear()  # as the outbox's commit signal does: one wake-up per commit

    task = asyncio.create_task(run_every(3600, step, name="test", wait=wait))
    woken.set()
    await asyncio.wait_for(second_step.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_periodic_task_carries_its_name() -> None:
    async def step() -> None:
        return None

    assert periodic(1, step, name="reservation-sweep").__name__ == "reservation-sweep"
