"""`exchange`: replies are collected as soon as they arrive, and the timeout is honoured."""

from __future__ import annotations

import time
from types import SimpleNamespace

from server_app.transport import exchange


class FakeGrid:
    """Replies become available `delays[i]` seconds after the push (None: never)."""

    def __init__(self, delays: list[float | None]) -> None:
        self.delays = delays
        self.pulls = 0
        self.t0 = 0.0

    def push_messages(self, messages):
        self.t0 = time.monotonic()
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids):
        self.pulls += 1
        now = time.monotonic() - self.t0
        ready = [i for i in message_ids if self.delays[int(i[1:])] is not None
                 and self.delays[int(i[1:])] <= now]  # fmt: skip
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]


def test_returns_right_after_the_last_reply() -> None:
    grid = FakeGrid([0.05, 0.3, 0.2])
    t0 = time.monotonic()
    replies = exchange(grid, [object()] * 3, timeout=30, max_interval=0.1)
    took = time.monotonic() - t0
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert 0.3 <= took < 0.45  # Flower's own loop would take 3 s here
    assert grid.pulls < 15  # backs off instead of spinning


def test_timeout_returns_what_arrived() -> None:
    grid = FakeGrid([0.0, None])
    t0 = time.monotonic()
    replies = exchange(grid, [object()] * 2, timeout=0.4, max_interval=0.1)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 0.4 <= time.monotonic() - t0 < 0.6


def test_no_messages_no_waiting() -> None:
    assert exchange(FakeGrid([]), [], timeout=5) == []
