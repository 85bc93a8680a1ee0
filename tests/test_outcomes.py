"""Per-role round outcomes, attack delivery, honest run status and --resume refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import Message, MetricRecord, RecordDict

from immunefl.cli import resume_config
from server_app.outcomes import (
    attack_delivery,
    round_outcomes,
    run_status,
    unexpected_failures,
)
from server_app.roster import Roster
from strategies.updates import Screened
from task.schema import ConfigError, load_schema

# partitions 0-3 benign, 4-5 malicious; node id = 100 + partition
ROSTER = Roster(
    node_of={p: 100 + p for p in range(6)},
    role_of={p: ("malicious" if p >= 4 else "benign") for p in range(6)},
)


@pytest.fixture(autouse=True)
def _identity(task_identity: None) -> None:
    """Flower stamps messages with the running task's identity (see conftest)."""


def _sent(nodes: list[int]) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=n, message_type="train") for n in nodes]


def test_outcomes_count_each_reply_once_by_role() -> None:
    messages = _sent([100, 101, 102, 103, 104, 105])
    replies = [Message(RecordDict({"metrics": MetricRecord({})}), reply_to=m)
               for m in messages[:5]]  # fmt: skip  # node 105 never answered (timeout)
    screened = Screened(nodes=[100, 101, 104], failed=[(102, "boom")], rejected=[(103, "nan")])
    out = round_outcomes(messages, replies, screened, ROSTER, aggregated=True)
    assert out == {"failed_benign": 1, "failed_malicious": 1, "rejected_benign": 1,
                   "rejected_malicious": 0, "malicious_aggregated": 1}  # fmt: skip
    skipped = round_outcomes(messages, replies, screened, ROSTER, aggregated=False)
    assert skipped["malicious_aggregated"] == 0  # a skipped round delivered nothing


def test_only_unmarked_failures_are_bugs() -> None:
    injected = (101, "<class 'X'>:<'[injected fault] crash'>")
    bug = (104, "ZeroDivisionError: division by zero\nTraceback ...")
    screened = Screened(failed=[injected, bug])
    bugs = unexpected_failures(screened, ROSTER)
    assert len(bugs) == 1 and "node 104 (partition 4, malicious)" in bugs[0]
    assert "ZeroDivisionError" in bugs[0]


def test_attack_delivery_names_the_rounds_no_malicious_update_reached() -> None:
    rows = [{"round": 1, "adversarial": False, "malicious_aggregated": 0},
            {"round": 2, "adversarial": True, "malicious_aggregated": 2},
            {"round": 3, "adversarial": True, "malicious_aggregated": 0}]  # fmt: skip
    out = attack_delivery(rows)
    assert out["attack_not_delivered_rounds"] == [3]
    assert out["attack_delivered"] and not out["attack_fully_delivered"]
    none = attack_delivery([{**r, "malicious_aggregated": 0} for r in rows])
    assert not none["attack_delivered"] and none["attack_not_delivered_rounds"] == [2, 3]


@pytest.mark.parametrize(
    ("updated", "num_rounds", "status"),
    [([True, True], 2, "completed"), ([True, False], 2, "degraded"),
     ([False, False], 2, "failed"), ([True], 2, "degraded"), ([], 2, "failed")],
)  # fmt: skip
def test_status_is_honest(updated: list[bool], num_rounds: int, status: str) -> None:
    rows = [{"round": i + 1, "model_updated": u, "failed_replies": 0 if u else 5,
             "rejected_replies": 1} for i, u in enumerate(updated)]  # fmt: skip
    out = run_status(rows, num_rounds)
    assert out["status"] == status
    assert out["rounds_not_updated"] == [i + 1 for i, u in enumerate(updated) if not u]
    assert out["failed_replies_total"] == 5 * updated.count(False)
    assert out["rejected_replies_total"] == len(updated)


def _run_dir(tmp_path: Path, checkpoint: bool) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**load_schema(), "run-name": "run"}))
    (run / "rounds.jsonl").write_text('{"round": 1}\n{"round": 2}\n{"round": 3}\n')
    if checkpoint:
        (run / "checkpoint.pt").write_bytes(b"")
    return run


def test_resume_without_a_checkpoint_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, checkpoint=False)
    with pytest.raises(ConfigError, match="no checkpoint.pt"):
        resume_config(run, {})
    assert len((run / "rounds.jsonl").read_text().splitlines()) == 3


def test_resume_refuses_keys_that_change_the_experiment(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, checkpoint=True)
    with pytest.raises(ConfigError, match="--set lr, strategy would change"):
        resume_config(run, {"strategy": "median", "lr": "0.1"})
    config = resume_config(run, {"round-timeout": "60", "poll-interval": "0.05"})
    assert config["resume"] is True and config["round-timeout"] == 60.0


def test_whoami_replies_are_checked_field_by_field() -> None:
    from server_app.roster import _whoami

    def content(**info):
        from flwr.app import ConfigRecord

        base = {"partition-id": 3, "role": "benign", "num-examples": 600}
        return RecordDict({"whoami": ConfigRecord({**base, **info})})

    assert _whoami(content()) == (3, "benign", 600)
    for bad in ({"role": "admin"}, {"num-examples": 0}, {"partition-id": "3"}):
        with pytest.raises(ValueError):
            _whoami(content(**bad))


def test_discovery_waits_for_slow_whoami_answers_as_long_as_a_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI on a loaded machine: no simulated node answered whoami within the old fixed 120 s
    (their actors were still importing torch) and the run failed. Connecting keeps its own
    bound; the answers get ``reply_timeout`` (the ServerApp passes max(120 s, round-timeout))."""
    from server_app import roster

    seen = {}

    class Grid:
        def get_node_ids(self):
            return [11, 12]

    def exchange(grid, messages, timeout, poll):
        seen["reply_timeout"] = timeout
        return []

    monkeypatch.setattr(roster, "exchange", exchange)
    with pytest.raises(RuntimeError, match=r"no node reported partition\(s\) \[0, 1\]"):
        roster.discover(Grid(), 2, timeout=5.0, reply_timeout=3600.0)
    assert seen["reply_timeout"] == 3600.0
    with pytest.raises(RuntimeError):
        roster.discover(Grid(), 2, timeout=5.0)
    assert seen["reply_timeout"] == 5.0
