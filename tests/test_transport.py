"""`exchange`: replies are collected as soon as they arrive, and the timeout is honoured.

A virtual clock replaces `time.monotonic` and `time.sleep` in the transport, so the timings
checked here are exact and independent of the machine's load.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server_app import transport
from server_app.transport import exchange


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(transport, "time", c)
    return c


class FakeGrid:
    """Replies become available `delays[i]` seconds after the push (None: never)."""

    def __init__(self, clock: Clock, delays: list[float | None]) -> None:
        self.clock, self.delays = clock, delays
        self.pulls = 0
        self.t0 = 0.0

    def push_messages(self, messages):
        self.t0 = self.clock.now
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids):
        self.pulls += 1
        now = self.clock.now - self.t0
        ready = [i for i in message_ids if self.delays[int(i[1:])] is not None
                 and self.delays[int(i[1:])] <= now]  # fmt: skip
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]


def test_returns_right_after_the_last_reply(clock: Clock) -> None:
    grid = FakeGrid(clock, [0.05, 0.3, 0.2])
    replies = exchange(grid, [object()] * 3, timeout=30, max_interval=0.1)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert 0.3 <= clock.now <= 0.3 + 0.1  # at most one interval late; Flower's loop: 3 s
    assert clock.sleeps[:3] == pytest.approx([0.005, 0.01, 0.02])  # backs off ...
    assert max(clock.sleeps) == pytest.approx(0.1)  # ... up to max_interval
    assert grid.pulls == len(clock.sleeps) + 1


def test_timeout_returns_what_arrived(clock: Clock) -> None:
    grid = FakeGrid(clock, [0.0, None])
    replies = exchange(grid, [object()] * 2, timeout=0.4, max_interval=0.1)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert clock.now == pytest.approx(0.4)  # the last sleep is cut to the deadline


def test_no_messages_no_waiting(clock: Clock) -> None:
    assert exchange(FakeGrid(clock, []), [], timeout=5) == []
    assert clock.sleeps == []
