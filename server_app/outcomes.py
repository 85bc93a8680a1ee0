"""What happened to each reply of a round, by role, and what a run's results may claim.

A round's **outcomes** (`round_outcomes`) count, with the roster's roles:

- ``failed_benign`` / ``failed_malicious``: the node's reply carried an error or never came
  (round-timeout): the node did not take part;
- ``rejected_benign`` / ``rejected_malicious``: the server's screening refused the reply (a
  defense outcome: bad arrays, metrics or records, NaN, too long an update);
- ``malicious_aggregated``: malicious updates that reached the aggregation rule this round
  (0 when the round was skipped). An adversarial round with 0 here is an attack that was
  **not delivered**: no result may credit a defense for it (`attack_delivery`).

`unexpected_failures` tells configured faults (their text carries
`task.faultspec.INJECTED`) from bugs: in simulation every node is ours, so any other
exception stops the run (`ClientFailure`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Message

from server_app.roster import Roster
from strategies.updates import Screened
from task.faultspec import INJECTED

MALICIOUS = "malicious"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ClientFailure(RuntimeError):
    """A node raised an exception that no configured fault explains (a bug): the run stops."""


def _role(roster: Roster, node: int) -> str:
    try:
        return roster.role_of_node(node)
    except KeyError:
        return "unknown"


def round_outcomes(
    messages: Sequence[Message], replies: Sequence[Message], screened: Screened,
    roster: Roster, aggregated: bool,
) -> dict[str, int]:  # fmt: skip
    """Per-role counts of one round's train replies (see module doc)."""
    answered = {r.metadata.src_node_id for r in replies}
    failed = [n for n, _ in screened.failed]
    failed += [m.metadata.dst_node_id for m in messages if m.metadata.dst_node_id not in answered]
    rejected = [n for n, _ in screened.rejected]
    reached = screened.nodes if aggregated else []

    def count(nodes: Iterable[int], malicious: bool) -> int:
        return sum(1 for n in nodes if (_role(roster, n) == MALICIOUS) == malicious)

    return {
        "failed_benign": count(failed, False),
        "failed_malicious": count(failed, True),
        "rejected_benign": count(rejected, False),
        "rejected_malicious": count(rejected, True),
        "malicious_aggregated": count(reached, True),
    }


def unexpected_failures(screened: Screened, roster: Roster) -> list[str]:
    """The failed replies that no configured fault explains, described for a person."""
    out = []
    for node, raw in screened.failed:
        reason = ANSI_ESCAPE.sub("", raw)  # Ray colours its tracebacks
        if INJECTED not in reason:
            try:
                where = f"partition {roster.partition_of(node)}, {_role(roster, node)}"
            except KeyError:
                where = "not in the roster"
            out.append(f"node {node} ({where}) raised: {reason}")
    return out


def attack_delivery(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Adversarial rounds in which no malicious update reached the rule, and whether the run's
    attack was delivered at all (False: no result of this run measures a defense)."""
    adversarial = [r for r in rows if r.get("adversarial")]
    missed = [int(r["round"]) for r in adversarial if not r.get("malicious_aggregated")]
    return {
        "attack_not_delivered_rounds": missed,
        "attack_delivered": bool(adversarial) and len(missed) < len(adversarial),
        "attack_fully_delivered": bool(adversarial) and not missed,
    }


def run_status(rows: Sequence[Mapping[str, Any]], num_rounds: int) -> dict[str, Any]:
    """Honest status and totals: ``completed`` (every round updated the model), ``degraded``
    (some did not), ``failed`` (none did, or rounds are missing: nothing was learned)."""
    not_updated = [int(r["round"]) for r in rows if not r.get("model_updated")]
    totals = {
        f"{key}_total": int(sum(int(r.get(key) or 0) for r in rows))
        for key in (
            "failed_replies",
            "rejected_replies",
            "weight_capped",
            "aggregate_rejected",
            "cf_aggregate_rejected",
        )
    }
    if not rows or len(not_updated) == len(rows):
        status = "failed"
    elif not_updated or len(rows) < num_rounds:
        status = "degraded"
    else:
        status = "completed"
    return {"status": status, "rounds_not_updated": not_updated, **totals}
