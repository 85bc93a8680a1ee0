"""Sending a round's messages and collecting the replies, with a short polling interval.

Flower's `Grid.send_and_receive` sleeps between two pulls: 3 s in flwr 1.41's HTTP grid (the
ServerApp of the deployment engine), so every deployment round took a multiple of 3 s (a round
whose clients need 2.3 s ended after 3 s), and 0.1 s in the in-memory grid of the simulation.
`exchange` does the same push/pull through the Grid's public `push_messages` and
`pull_messages`, polling after 5 ms, then at doubling intervals up to `max_interval` (run config
``poll-interval``, 20 ms by default), so a round ends at most `max_interval` after its last
reply. A pull is a cheap call (in-process in
simulation, one small request to the SuperLink in a deployment); raise ``poll-interval`` for a
SuperLink far away.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

FIRST_INTERVAL = 0.005
MAX_INTERVAL = 0.02  # the run config's default `poll-interval`


def exchange(
    grid: Grid, messages: Iterable[Message], timeout: float, max_interval: float = MAX_INTERVAL
) -> list[Message]:
    """Push `messages`; pull their replies until all arrived or `timeout` seconds passed."""
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    interval = FIRST_INTERVAL
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(list(pending)))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            break
        time.sleep(min(interval, left))
        interval = min(interval * 2, max_interval)
    return replies
