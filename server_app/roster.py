"""Who is in the federation: node id <-> partition id and role, learned by `query.whoami`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import INFO, WARNING

from flwr.app import Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from attacks import ROLES
from server_app.transport import MAX_INTERVAL, exchange
from task import messages as M

WHOAMI = f"query.{M.WHOAMI}"


@dataclass(frozen=True)
class Roster:
    """The federation's nodes keyed by partition id."""

    node_of: dict[int, int]  # partition id -> node id
    role_of: dict[int, str]  # partition id -> role
    size_of: dict[int, int] = field(default_factory=dict)  # partition id -> reported examples

    def role_of_node(self, node_id: int) -> str:
        return self.role_of[self.partition_of(node_id)]

    def reported_sizes(self) -> dict[int, float]:
        """node id -> the example count the node reported at discovery (caps its claims)."""
        return {self.node_of[p]: float(n) for p, n in self.size_of.items()}

    @property
    def partitions(self) -> list[int]:
        return sorted(self.node_of)

    def partition_of(self, node_id: int) -> int:
        for pid, nid in self.node_of.items():
            if nid == node_id:
                return pid
        raise KeyError(f"node {node_id} is not in the roster")


def _whoami(content: RecordDict, num_partitions: int | None = None) -> tuple[int, str, int]:
    """(partition id, role, example count) of a whoami reply, every field checked."""
    info = content[M.WHOAMI]
    pid, role, size = info[M.PARTITION_ID], info[M.ROLE], info[M.WEIGHT]
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise ValueError(f"partition-id {pid!r} is not an integer")
    if num_partitions is not None and not 0 <= pid < num_partitions:
        raise ValueError(f"partition-id {pid} is outside [0, {num_partitions})")
    if not isinstance(role, str) or role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"num-examples {size!r} is not a positive integer")
    return pid, role, size


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """Block until `count` nodes are connected; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(nodes)} of {count} nodes connected after {timeout:.0f}s "
                "(in simulation, num-supernodes must equal num-partitions)"
            )
        time.sleep(0.5)
    return nodes


def discover(
    grid: Grid, num_partitions: int, timeout: float = 120.0, poll_interval: float = MAX_INTERVAL,
    reply_timeout: float | None = None,
) -> Roster:  # fmt: skip
    """Ask every node `whoami`; check that partition ids 0..num_partitions-1 appear once each.

    ``timeout`` bounds the wait for the nodes to connect; ``reply_timeout`` (default: the same)
    the wait for their answers, which on a loaded machine includes each node's first import of
    torch and load of its data."""
    nodes = wait_for_nodes(grid, num_partitions, timeout)
    reply_timeout = timeout if reply_timeout is None else reply_timeout
    messages = [Message(RecordDict(), dst_node_id=nid, message_type=WHOAMI) for nid in nodes]
    node_of: dict[int, int] = {}
    role_of: dict[int, str] = {}
    size_of: dict[int, int] = {}
    problems: list[str] = []
    for reply in exchange(grid, messages, reply_timeout, poll_interval):
        nid = reply.metadata.src_node_id
        if reply.has_error():
            problems.append(f"node {nid}: whoami failed: {reply.error.reason}")
            continue
        try:
            pid, role, size = _whoami(reply.content, num_partitions)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"node {nid}: malformed whoami reply ({exc})")
            continue
        if pid in node_of:
            problems.append(f"nodes {node_of[pid]} and {nid} both claim partition {pid}")
            continue
        node_of[pid] = nid
        role_of[pid] = role
        size_of[pid] = size
    missing = sorted(set(range(num_partitions)) - set(node_of))
    if missing:
        problems.append(
            f"no node reported partition(s) {missing[:10]}{'...' if len(missing) > 10 else ''}"
        )
    if problems:
        for p in problems:
            log(WARNING, "roster: %s", p)
        raise RuntimeError("federation is inconsistent: " + "; ".join(problems[:5]))
    log(
        INFO,
        "roster: %d nodes, roles %s",
        len(node_of),
        {r: sum(1 for v in role_of.values() if v == r) for r in sorted(set(role_of.values()))},
    )
    return Roster(node_of, role_of, size_of)
