"""A lying client can neither take over, freeze nor crash the server (every field screened)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from client_app.faults import FORGED_METRICS, faulty_eval_metrics, faulty_reply
from strategies.updates import Layout, cap_weights
from tests.test_strategies import global_state, make


@pytest.fixture(autouse=True)
def _identity(task_identity: None) -> None:
    """Flower stamps messages with the running task's identity (see conftest)."""


def honest(k: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(4, 3, generator=g) * 0.1, "b": torch.randn(3, generator=g) * 0.1,
             "steps": torch.tensor(6)} for _ in range(k)]  # fmt: skip


def reply_to(msg: Message, content: RecordDict) -> Message:
    return Message(content, reply_to=msg)


def plain(state: dict, n: float = 600.0) -> RecordDict:
    metrics = MetricRecord({"num-examples": n, "train_loss": 1.0})
    return RecordDict({"arrays": ArrayRecord(state), "metrics": metrics})


def one_round(strategy, contents: list[RecordDict]):
    msgs = list(strategy.configure_train(1, ArrayRecord(global_state()), ConfigRecord(), None))
    return strategy.aggregate_train(
        1, [reply_to(m, c) for m, c in zip(msgs, contents, strict=False)]
    )


# --------------------------------------------------------------------------- weights
def test_cap_weights_rules() -> None:
    # discovery size caps a claim; 2 x lower median caps the rest; nobody holds half
    w, why = cap_weights([600, 600, 5000], [600, 600, 600])
    assert w == [600, 600, 600] and why[2] and "discovery" in why[2]
    w, _ = cap_weights([600] * 9 + [1e12], [None] * 10)
    assert w == [600] * 9 + [1200]
    w, why = cap_weights([1.0, 1.0, 1e12], [None] * 3)  # 2 x median = 2 would be half
    assert w == [1.0, 1.0, 1.0] and "half" in (why[2] or "")
    w, _ = cap_weights([100.0, 600.0, 1e12], [None] * 3)  # honest ones unequal
    assert max(w) / sum(w) < 0.5
    assert cap_weights([300, 400, 500], [None] * 3) == ([300, 400, 500], [None] * 3)  # honest
    with pytest.raises(ValueError):
        cap_weights([1.0], [None], cap_ratio=0.5)


@pytest.mark.parametrize("n_honest", [2, 3, 9])
@pytest.mark.parametrize("claim", [1e12, 1e39, 1.7e308])
def test_one_huge_claim_never_holds_half_of_the_round(n_honest: int, claim: float) -> None:
    rng = np.random.default_rng(n_honest)
    claims = [float(c) for c in rng.integers(50, 2000, n_honest)] + [claim]
    w, _ = cap_weights(claims, [None] * len(claims))
    assert all(np.isfinite(w)) and w[-1] / sum(w) < 0.5


@pytest.mark.parametrize("name", ["fedavg", "rlr", "dp-fixed"])
@pytest.mark.parametrize("claim", [1e12, 1e39])
def test_a_huge_weight_claim_neither_dominates_nor_poisons_the_model(name: str, claim: float):
    strategy = make(name, **{"dp-noise-multiplier": 0.0, "dp-clip": 100.0, "rlr-theta": 1})
    states = honest(9)
    attacker = {
        "w": torch.full((4, 3), 50.0),
        "b": torch.full((3,), 50.0),
        "steps": torch.tensor(6),
    }
    arrays, metrics = one_round(strategy, [plain(s) for s in states] + [plain(attacker, claim)])
    new = arrays.to_torch_state_dict()
    assert torch.isfinite(new["w"]).all() and torch.isfinite(new["b"]).all()
    # the attacker's share is at most 2/11 (FedAvg): far from its model (50 everywhere)
    assert float(new["w"].abs().max()) < 50.0 * 2 / 11 + 1
    assert metrics["rejected_replies"] == 0
    if name != "dp-fixed":  # DP-FedAvg ignores claims (uniform weights)
        assert metrics["weight_capped"] == 1


# --------------------------------------------------------------------------- records, metrics
def test_forged_server_keys_land_in_the_client_namespace() -> None:
    metrics = MetricRecord({"num-examples": 600.0, "train_loss": 0.5})
    content = faulty_reply("metrics", honest(1)[0], metrics)
    arrays, out = one_round(make("fedavg"), [content] + [plain(s) for s in honest(3, 1)])
    assert arrays is not None
    for key in FORGED_METRICS:
        assert f"client.{key}" in out  # the strategy prefixes every client metric ...
    assert out["rejected_replies"] == 0  # ... and its own keys stay its own
    assert not any(k in out for k in ("round", "adversarial", "model_updated"))


def test_a_second_record_is_refused_not_ignored() -> None:
    content = faulty_reply("records", honest(1)[0], MetricRecord({"num-examples": 600.0}))
    arrays, out = one_round(make("fedavg"), [content] + [plain(s) for s in honest(3, 1)])
    assert out["rejected_replies"] == 1 and out["aggregated_replies"] == 3
    assert out["client.train_loss"] == 1.0  # the -9.99 record never weighed anything


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        ({"num-examples": 600.0, "loss": float("nan")}, "not finite"),
        ({"num-examples": 600.0, "Bad Key!": 1.0}, "not allowed"),
        ({"num-examples": 600.0, "x": [1.0, 2.0]}, "not a number"),
        ({"num-examples": 600.0, **{f"k{i}": 1.0 for i in range(40)}}, "at most"),
        ({"train_loss": 1.0}, "missing"),
        ({"num-examples": -9.99}, "positive"),
    ],
)
def test_bad_metrics_reject_the_reply(metrics: dict, why: str, caplog) -> None:
    bad = RecordDict({"arrays": ArrayRecord(honest(1)[0]), "metrics": MetricRecord(metrics)})
    _, out = one_round(make("fedavg"), [bad] + [plain(s) for s in honest(3, 1)])
    assert out["rejected_replies"] == 1
    assert why in caplog.text


# --------------------------------------------------------------------------- array bytes
def _lying_array(values: np.ndarray, declared_shape: tuple[int, ...], dtype: str) -> Array:
    buf = io.BytesIO()
    np.save(buf, values, allow_pickle=False)
    return Array(dtype=dtype, shape=declared_shape, stype="numpy.ndarray", data=buf.getvalue())


@pytest.mark.parametrize("name", ["fedavg", "krum", "median", "multikrum"])
def test_bytes_that_disagree_with_the_declared_shape_are_rejected(name: str) -> None:
    strategy = make(name, **{"krum-f": 1})
    contents = [plain(s) for s in honest(9)]
    liar = ArrayRecord(honest(1, 7)[0])
    liar["w"] = _lying_array(np.full(12, 99.0, np.float32), (4, 3), "float32")
    contents.append(RecordDict({"arrays": liar,
                                "metrics": MetricRecord({"num-examples": 600.0})}))  # fmt: skip
    arrays, out = one_round(strategy, contents)
    assert out["rejected_replies"] == 1
    assert float(arrays.to_torch_state_dict()["w"].abs().max()) < 10  # never the liar's model


def test_integer_buffer_bytes_that_disagree_never_crash_the_server() -> None:
    contents = [plain(s) for s in honest(5)]
    liar = ArrayRecord(honest(1, 3)[0])
    liar["steps"] = _lying_array(np.arange(3, dtype=np.int64), (), "int64")  # ResNet counters
    contents.append(RecordDict({"arrays": liar,
                                "metrics": MetricRecord({"num-examples": 600.0})}))  # fmt: skip
    arrays, out = one_round(make("fedavg"), contents)
    assert out["rejected_replies"] == 1 and arrays.to_torch_state_dict()["steps"].item() == 6
    content = faulty_reply("bytes", honest(1)[0], MetricRecord({"num-examples": 600.0}))
    _, out = one_round(make("fedavg"), [content] + [plain(s) for s in honest(3, 1)])
    assert out["rejected_replies"] == 1


def test_pickled_or_foreign_serialisations_are_refused() -> None:
    liar = ArrayRecord(honest(1)[0])
    liar["b"] = Array(dtype="float32", shape=(3,), stype="torch.save", data=b"\x80\x04junk")
    content = RecordDict({"arrays": liar, "metrics": MetricRecord({"num-examples": 600.0})})
    _, out = one_round(make("fedavg"), [content] + [plain(s) for s in honest(3, 1)])
    assert out["rejected_replies"] == 1


def test_an_exception_while_screening_rejects_only_that_reply(monkeypatch) -> None:
    import strategies.updates as updates

    real = updates.Layout.decode
    calls = {"n": 0}

    def flaky(self, arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("boom")
        return real(self, arrays)

    monkeypatch.setattr(updates.Layout, "decode", flaky)
    arrays, out = one_round(make("fedavg"), [plain(s) for s in honest(4)])
    assert out["rejected_replies"] == 1 and out["aggregated_replies"] == 3 and arrays is not None


def test_a_rule_that_raises_skips_the_round_instead_of_crashing(monkeypatch) -> None:
    strategy = make("median")
    monkeypatch.setattr(strategy, "aggregate_updates",
                        lambda *a: (_ for _ in ()).throw(RuntimeError("rule bug")))  # fmt: skip
    arrays, out = one_round(strategy, [plain(s) for s in honest(4)])
    assert arrays is None and out["aggregated_replies"] == 0


# --------------------------------------------------------------------------- aggregates
def test_a_non_finite_or_misshapen_aggregate_is_refused() -> None:
    layout = Layout.of(ArrayRecord(global_state()))
    assert layout.aggregate_problem(ArrayRecord(global_state())) is None
    nan = {**global_state(), "b": torch.tensor([0.0, float("nan"), 0.0])}
    assert "NaN" in layout.aggregate_problem(ArrayRecord(nan))
    wrong = {**global_state(), "w": torch.zeros(12)}
    assert "expected" in layout.aggregate_problem(ArrayRecord(wrong))


# --------------------------------------------------------------------------- evaluate
def test_evaluate_replies_are_screened_and_averaged_per_key() -> None:
    strategy = make("fedavg", **{"federated-eval": True})
    arrays = ArrayRecord(global_state())
    list(strategy.configure_train(1, arrays, ConfigRecord(), None))
    msgs = list(strategy.configure_evaluate(1, arrays, ConfigRecord(), None))
    good = [
        RecordDict(
            {"metrics": MetricRecord({"acc": 0.5, "loss": 1.0, "num-examples": 600.0})}
        )  # fmt: skip
        for _ in range(7)
    ]
    forged = RecordDict(
        {
            "metrics": faulty_eval_metrics(
                "metrics", MetricRecord({"acc": 0.9, "loss": 0.1, "num-examples": 600.0})
            )
        }
    )
    extra_record = RecordDict({"metrics": MetricRecord({"acc": 1.0, "num-examples": 1.0}),
                               "x": MetricRecord({"num-examples": -1.0})})  # fmt: skip
    huge = RecordDict({"metrics": MetricRecord({"acc": 0.0, "num-examples": 1e39})})
    contents = [*good, forged, extra_record, huge]
    out = strategy.aggregate_evaluate(
        1, [reply_to(m, c) for m, c in zip(msgs, contents, strict=True)]
    )
    assert strategy.last_eval.rejected and len(strategy.last_eval.rejected) == 1
    assert "client_eval.round" in out and "round" not in out
    # 7 x 0.5 + 0.9 (weight 600 each) + 0.0 (capped to 1200)
    assert out["client_eval.acc"] == pytest.approx((7 * 0.5 + 0.9) * 600 / (8 * 600 + 1200))


def test_evaluate_replies_from_unasked_nodes_or_twice_from_one_node_are_refused() -> None:
    """The train path refused both; evaluate replies are screened the same way."""
    strategy = make("fedavg", **{"federated-eval": True})
    arrays = ArrayRecord(global_state())
    list(strategy.configure_train(1, arrays, ConfigRecord(), None))
    msgs = list(strategy.configure_evaluate(1, arrays, ConfigRecord(), None))

    def ev(acc: float) -> RecordDict:
        return RecordDict({"metrics": MetricRecord({"acc": acc, "num-examples": 600.0})})

    replies = [reply_to(m, ev(0.5)) for m in msgs[:3]]
    replies.append(reply_to(msgs[0], ev(0.0)))  # the same node again
    stranger = reply_to(msgs[4], ev(0.0))
    stranger.metadata.__dict__["_src_node_id"] = 999  # a node nobody asked
    replies.append(stranger)
    out = strategy.aggregate_evaluate(1, replies)
    reasons = sorted(r for _, r in strategy.last_eval.rejected)
    assert len(reasons) == 2 and "not asked" in reasons[0] and "second reply" in reasons[1]
    assert out["client_eval.acc"] == pytest.approx(0.5)
    assert strategy.last_eval.nodes == [m.metadata.dst_node_id for m in msgs[:3]]


def test_a_raising_rule_inside_the_strategy_counts_as_a_refused_aggregate() -> None:
    strategy = make("fedavg")

    def boom(*args):
        raise ZeroDivisionError("float division by zero")

    strategy.aggregate_updates = boom
    arrays, out = one_round(strategy, [plain(s) for s in honest(5)])
    assert arrays is None and out["aggregate_rejected"] == 1 and out["aggregated_replies"] == 0


class _Strategy:
    """Returns `aggregates` in turn (one per round); screens nothing."""

    def __init__(self, aggregates: list) -> None:
        from strategies.updates import Screened

        self.aggregates = list(aggregates)
        self.last_screened = Screened()

    def configure_train(self, *args):
        return []

    def aggregate_train(self, server_round, replies):
        new = self.aggregates.pop(0)
        if new is None:  # what a strategy whose rule raised returns
            return None, MetricRecord({"aggregated_replies": 0, "aggregate_rejected": 1})
        return new, MetricRecord({"aggregated_replies": 1})

    def configure_evaluate(self, *args):
        return []


class _Grid:
    def push_messages(self, messages):
        return []

    def pull_messages(self, ids):
        return []


class _Recorder:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.run_dir = None

    def append_round(self, row: dict) -> None:
        self.rows.append(dict(row))


@pytest.mark.parametrize("bad", ["nan", "shape", "raised"])
@pytest.mark.parametrize("where", ["global", "counterfactual"])
def test_the_round_loop_refuses_a_bad_aggregate_and_keeps_the_model(bad: str, where: str):
    """run_rounds itself (not only Layout) refuses a non-finite or misshapen aggregate, for the
    global model and for the AEP counterfactual, and counts it."""
    from types import SimpleNamespace

    from server_app.loop import Counterfactual, run_rounds

    start = ArrayRecord(global_state())
    good = {k: v + 1 if v.is_floating_point() else v for k, v in global_state().items()}
    if bad == "nan":
        broken = {**good, "b": torch.tensor([0.0, float("nan"), 0.0])}
    elif bad == "shape":
        broken = {**good, "w": torch.zeros(12)}
    else:
        broken = None
    plan = SimpleNamespace(adversarial=False, malicious=[])
    scenario = SimpleNamespace(plan=lambda r: plan)
    seen: list[dict] = []

    def evaluator(arrays: ArrayRecord) -> dict[str, float]:
        seen.append(arrays.to_torch_state_dict())
        return {"benign_acc": 0.5}

    seq = [None if broken is None else ArrayRecord(broken), ArrayRecord(good)]
    ok = [ArrayRecord(good), ArrayRecord(good)]
    main = _Strategy(seq if where == "global" else ok)
    cf = Counterfactual(_Strategy(seq if where == "counterfactual" else ok), start)
    recorder = _Recorder()
    final = run_rounds(
        _Grid(), main, start, num_rounds=2, roster=None, scenario=scenario, evaluator=evaluator,
        recorder=recorder, counterfactual=cf,
    )  # fmt: skip
    rows = recorder.rows
    key = "aggregate_rejected" if where == "global" else "cf_aggregate_rejected"
    assert [r[key] for r in rows] == [1, 0]
    if where == "global":
        assert [r["model_updated"] for r in rows] == [False, True]
        assert torch.equal(seen[0]["w"], global_state()["w"])  # round 1: model unchanged
    else:
        assert rows[0]["aep_norm"] > 0  # the counterfactual kept the start, the model moved
        assert torch.isfinite(torch.tensor(rows[0]["aep_norm"]))
    assert torch.equal(final.to_torch_state_dict()["w"], good["w"])


# --------------------------------------------------------------------------- found by red-teaming
def test_dp_fixed_survives_a_zero_update() -> None:
    """Flower's clip divides by the update norm: one client sending the global back crashed it."""
    strategy = make("dp-fixed", **{"dp-noise-multiplier": 0.0, "dp-clip": 1.0})
    zero = {k: v.clone() for k, v in global_state().items()}
    arrays, out = one_round(strategy, [plain(s) for s in honest(9)] + [plain(zero)])
    assert out["rejected_replies"] == 0  # no crash; the round is either aggregated or skipped
    if arrays is None:
        assert out["aggregated_replies"] == 0
    assert out.get("aggregate_rejected", 0) == (arrays is None)


def test_a_failing_dp_fixed_step_counts_as_a_refused_aggregate(monkeypatch) -> None:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping as Flower

    def boom(self, server_round, replies):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(Flower, "aggregate_train", boom)
    strategy = make("dp-fixed", **{"dp-noise-multiplier": 0.0, "dp-clip": 1.0})
    arrays, out = one_round(strategy, [plain(s) for s in honest(5)])
    assert arrays is None and out["aggregate_rejected"] == 1 and out["aggregated_replies"] == 0


@pytest.mark.parametrize("name", ["krum", "multikrum", "bulyan"])
def test_flower_rules_keep_integer_buffers_and_dtypes(name: str) -> None:
    """Flower's rules average in float64 and turn int64 buffers into floats: every aggregate
    of a model with BatchNorm counters (resnet18) used to be refused."""
    strategy = make(name, **{"krum-f": 1, "clients-per-round": 10})
    arrays, _ = one_round(strategy, [plain(s) for s in honest(10)])
    layout = Layout.of(ArrayRecord(global_state()))
    assert layout.aggregate_problem(arrays) is None
    assert arrays["steps"].dtype == "int64" and arrays["w"].dtype == "float32"
    assert arrays.to_torch_state_dict()["steps"].item() == 6


def test_a_raising_aggregation_is_a_skipped_round_not_a_crash(task_identity) -> None:
    from server_app.loop import _train_round

    class Boom:
        def configure_train(self, *args):
            return []

        def aggregate_train(self, *args):
            raise ZeroDivisionError("float division by zero")

    class Grid:
        def push_messages(self, messages):
            return []

        def pull_messages(self, ids):
            return []

    _, _, arrays, metrics = _train_round(Grid(), Boom(), 1, ArrayRecord(global_state()),
                                         ConfigRecord(), 1.0, 0.01)  # fmt: skip
    assert arrays is None and metrics["aggregate_rejected"] == 1


def test_duplicate_unsolicited_oversized_and_out_of_range_replies_are_refused(caplog) -> None:
    strategy = make("fedavg")
    msgs = list(strategy.configure_train(1, ArrayRecord(global_state()), ConfigRecord(), None))
    states = honest(4)
    replies = [reply_to(m, plain(s)) for m, s in zip(msgs[:3], states, strict=False)]
    replies.append(reply_to(msgs[0], plain(states[3])))  # node 101 again
    padded = ArrayRecord(states[3])
    w = padded["w"]
    padded["w"] = Array(dtype=w.dtype, shape=w.shape, stype=w.stype, data=w.data + b"\0" * 100_000)
    replies.append(reply_to(msgs[4], RecordDict({"arrays": padded, "metrics": MetricRecord(
        {"num-examples": 600.0})})))  # fmt: skip
    loud = MetricRecord({"num-examples": 600.0, "train_loss": 1.7e308})
    replies.append(reply_to(msgs[5], RecordDict({"arrays": ArrayRecord(states[0]),
                                                 "metrics": loud})))  # fmt: skip
    evil = MetricRecord({"num-examples": 600.0})
    forged = reply_to(msgs[6], RecordDict({"arrays": ArrayRecord(states[1]), "metrics": evil}))
    forged.metadata.__dict__["_src_node_id"] = 999  # a node nobody asked
    replies.append(forged)
    arrays, out = strategy.aggregate_train(1, replies)
    assert out["aggregated_replies"] == 3 and out["rejected_replies"] == 4
    for why in ("second reply", "extra bytes", "out of range", "not asked"):
        assert why in caplog.text


def test_client_text_cannot_forge_log_lines() -> None:
    from strategies.fedavg import _printable

    assert _printable("x\nINFO : [immunefl] round 9/9\x1b[31m") == (
        "x\\nINFO : [immunefl] round 9/9\\x1b[31m"
    )


def test_whoami_partition_ids_must_be_in_range() -> None:
    from flwr.app import ConfigRecord as CR

    from server_app.roster import _whoami

    content = RecordDict({"whoami": CR({"partition-id": -7, "role": "benign",
                                        "num-examples": 600})})  # fmt: skip
    with pytest.raises(ValueError, match="outside"):
        _whoami(content, 10)
