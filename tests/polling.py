"""Waiting for a state by polling it, with a deadline: tests wait for what they need, never sleep a guess.
`holds_within` says whether the state came; `wait_until` fails the test, naming what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def holds_within(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Whether `condition()` came to hold within `timeout_s` (checked every `poll_s`)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll until `condition()` holds; fail with `what` if it never does."""
    if not holds_within(condition, timeout_s, poll_s=0.01):
        pytest.fail(f"{what} (waited {timeout_s} s)")
