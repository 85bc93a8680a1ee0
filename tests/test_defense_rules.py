"""Issue 29's rules as strategies: registry, config checks, pre-aggregators, server state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from immunefl.experiments import resolve_config
from server_app.checkpoint import (
    Checkpoint,
    load_checkpoint,
    restore_strategy_state,
    save_checkpoint,
    strategy_state,
)
from strategies import STRATEGIES, build_strategy
from strategies.fltrust_rule import RootTrainer
from strategies.preaggregators import static_clipping
from task.params import declared
from task.schema import ConfigError, load_schema
from tests.conftest import make_fake_fmnist, typed_config
from tests.test_strategies import benign_states, global_state, reply

NODES = list(range(101, 111))
NEW = ["geomed", "centered-clipping", "fltrust", "foolsgold", "flame", "dnc", "norm-bound"]


@pytest.fixture(autouse=True)
def _identity(task_identity: None) -> None:
    """Flower stamps messages with the running task's identity (see conftest)."""


def shifted_root(state: dict, server_round: int) -> dict:
    """A stand-in for the root-set training: every float moves by +0.1."""
    return {k: v + 0.1 if v.is_floating_point() else v for k, v in state.items()}


def make(name: str, nodes=NODES, **overrides):
    cfg = typed_config(**{"strategy": name, "device": "cpu", **overrides})
    strategy = build_strategy(cfg, lambda r: nodes)
    if name == "fltrust":
        strategy.server_update = shifted_root
    return strategy


def run_round(strategy, server_round: int, states: list[dict], arrays=None):
    arrays = arrays or ArrayRecord(global_state())
    msgs = list(strategy.configure_train(server_round, arrays, ConfigRecord(), None))
    replies = [reply(m, s) for m, s in zip(msgs, states, strict=False)]
    return strategy.aggregate_train(server_round, replies)


def test_every_builtin_rules_params_default_is_the_schema_default() -> None:
    schema = load_schema()
    for name, cls in STRATEGIES.items():
        for p in declared(cls):
            assert p.key in schema, f"{name}: {p.key} is not in [tool.flwr.app.config]"
            assert schema[p.key] == p.default and type(schema[p.key]) is type(p.default), (
                f"{name}: {p.key} defaults to {p.default!r} in PARAMS, {schema[p.key]!r} in "
                "pyproject.toml"
            )


DIAGNOSTIC = {
    "geomed": "geomed_iterations",
    "centered-clipping": "cc_shift",
    "fltrust": "fltrust_admitted",
    "foolsgold": "foolsgold_weights",
    "flame": "flame_admitted",
    "dnc": "dnc_kept",
    "norm-bound": "norm_bound_clipped",
}


@pytest.mark.parametrize("name", NEW)
def test_each_new_rule_aggregates_and_reports_its_diagnostic(name: str) -> None:
    arrays, metrics = run_round(make(name), 1, benign_states(10))
    assert arrays is not None and metrics["aggregated_replies"] == 10
    assert DIAGNOSTIC[name] in metrics
    new = arrays.to_torch_state_dict()
    assert torch.isfinite(new["w"]).all() and new["steps"].dtype == torch.int64


def test_geomed_reports_convergence() -> None:
    _, metrics = run_round(make("geomed"), 1, benign_states(10))
    assert metrics["geomed_converged"] == 1 and 1 <= metrics["geomed_iterations"] < 1000


def test_fltrust_gives_an_opposite_update_no_trust() -> None:
    good = [{**s, "w": s["w"].abs() + 0.1, "b": s["b"].abs() + 0.1} for s in benign_states(5)]
    bad = {**good[0], "w": -good[0]["w"] * 10, "b": -good[0]["b"] * 10}
    _, metrics = run_round(make("fltrust", nodes=NODES[:6]), 1, [*good, bad])
    assert metrics["fltrust_trust"][5] == 0.0 and metrics["fltrust_admitted"] == 5


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"strategy": "geomed", "geomed-nu": "0"}, "'geomed-nu' must be in (0, inf)"),
        ({"strategy": "geomed", "geomed-tol": "-1"}, "'geomed-tol'"),
        ({"strategy": "geomed", "geomed-max-iter": "0"}, "'geomed-max-iter'"),
        ({"strategy": "centered-clipping", "cc-tau": "0"}, "'cc-tau' must be in (0, inf)"),
        ({"strategy": "centered-clipping", "cc-iters": "0"}, "'cc-iters'"),
        ({"strategy": "fltrust", "fltrust-root-size": "0"}, "'fltrust-root-size'"),
        ({"strategy": "fltrust", "fltrust-root-size": "20000"}, "'fltrust-root-size'"),
        ({"strategy": "foolsgold", "foolsgold-kappa": "0"}, "'foolsgold-kappa'"),
        ({"strategy": "foolsgold", "foolsgold-normalize": "x"}, "'foolsgold-normalize'"),
        ({"strategy": "flame", "flame-lambda": "-0.1"}, "'flame-lambda'"),
        ({"strategy": "dnc", "dnc-f": "10"}, "'dnc-f' must be in [0, updates per round=10)"),
        ({"strategy": "dnc", "dnc-b": "0"}, "'dnc-b'"),
        ({"strategy": "dnc", "dnc-niters": "0"}, "'dnc-niters'"),
        ({"strategy": "dnc", "dnc-c": "-1"}, "'dnc-c'"),
        ({"strategy": "dnc", "dnc-c": "4", "dnc-f": "3"}, "removes all 10 updates"),
        ({"strategy": "norm-bound", "norm-bound-m": "0"}, "'norm-bound-m'"),
        ({"strategy": "norm-bound", "norm-bound-noise": "-1"}, "'norm-bound-noise'"),
        ({"pre-aggregator": "median"}, "'pre-aggregator' 'median': unknown 'median'"),
        ({"pre-aggregator": "nnm,nnm"}, "names one pre-aggregator twice"),
        ({"pre-aggregator": "nnm", "preagg-f": "10"}, "'preagg-f' must be in [0"),
        ({"pre-aggregator": "clipping", "preagg-f": "-1"}, "'preagg-f'"),
        ({"pre-aggregator": "bucketing", "preagg-bucket-size": "0"}, "'preagg-bucket-size'"),
        ({"pre-aggregator": "clipping", "preagg-clip": "-1"}, "'preagg-clip'"),
        ({"pre-aggregator": "nnm", "strategy": "krum"}, "cannot apply to strategy 'krum'"),
        ({"pre-aggregator": "nnm", "strategy": "bulyan", "krum-f": "1", "clients-per-round": "7"},
         "cannot apply to strategy 'bulyan'"),
        ({"pre-aggregator": "clipping", "strategy": "dp-fixed"}, "cannot apply to strategy"),
        ({"pre-aggregator": "bucketing", "strategy": "foolsgold"}, "one history per client"),
        # bucketing leaves 5 rows of 10 clients: the rule's own check counts rows
        ({"pre-aggregator": "bucketing", "strategy": "dnc", "dnc-f": "5"}, "updates per round=5"),
        ({"pre-aggregator": "bucketing", "strategy": "trimmed-mean", "trim-beta": "0.45",
          "preagg-bucket-size": "4"}, "'trim-beta' 0.45 with 3 updates"),
    ],
)  # fmt: skip
def test_bad_hyperparameters_fail_before_anything_starts(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, overrides)
    assert needle in str(info.value)


@pytest.mark.parametrize("name", [*NEW, "fedavg", "median", "trimmed-mean"])
@pytest.mark.parametrize("pre", ["bucketing", "nnm", "clipping", "clipping,nnm"])
def test_every_rule_composes_with_every_pre_aggregator(name: str, pre: str) -> None:
    if name == "foolsgold" and pre == "bucketing":
        pytest.skip("refused before start (test above)")
    strategy = make(name, **{"pre-aggregator": pre, "preagg-bucket-size": 3})
    arrays, metrics = run_round(strategy, 1, benign_states(10))
    assert arrays is not None and metrics["aggregated_replies"] == 10
    if "n" in metrics:  # the rows the rule saw
        assert metrics["n"] == (4 if pre == "bucketing" else 10)


def test_static_clipping_before_fedavg_is_the_mean_of_clipped_updates() -> None:
    states = benign_states(4, seed=3)
    strategy = make("fedavg", nodes=NODES[:4], **{"pre-aggregator": "clipping", "preagg-clip": 0.5})
    arrays, _ = run_round(strategy, 1, states)
    U = torch.stack([torch.cat([s["w"].reshape(-1), s["b"]]) for s in states])
    expected = static_clipping(U, 0.5).mean(0)
    got = arrays.to_torch_state_dict()
    torch.testing.assert_close(torch.cat([got["w"].reshape(-1), got["b"]]), expected)


def test_bucketing_is_seeded_by_round() -> None:
    a = run_round(make("geomed", **{"pre-aggregator": "bucketing"}), 3, benign_states(10))[0]
    b = run_round(make("geomed", **{"pre-aggregator": "bucketing"}), 3, benign_states(10))[0]
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("dnc", {"dnc-f": 3}), ("geomed", {"pre-aggregator": "nnm", "preagg-f": 3}),
     ("foolsgold", {"pre-aggregator": "bucketing"})],
)  # fmt: skip
def test_a_new_rule_that_cannot_run_on_the_replies_left_skips_the_round(name, overrides) -> None:
    strategy = make(name, **overrides)
    arrays, metrics = run_round(strategy, 1, benign_states(3))  # 3 of 10 replied
    assert arrays is None
    assert metrics["aggregated_replies"] == 0 and metrics["aggregate_rejected"] == 1


def test_fltrust_without_a_root_trainer_skips_the_round() -> None:
    strategy = make("fltrust")
    strategy.server_update = None
    arrays, metrics = run_round(strategy, 1, benign_states(10))
    assert arrays is None and metrics["aggregate_rejected"] == 1


def test_foolsgold_keys_histories_by_partition_and_accumulates_them() -> None:
    strategy = make("foolsgold", nodes=NODES[:4])
    strategy.client_keys.update({n: i for i, n in enumerate(NODES)})
    states = benign_states(4)
    run_round(strategy, 1, states)
    run_round(strategy, 2, states)
    assert sorted(strategy.histories) == [0, 1, 2, 3]
    first = torch.cat([states[0]["w"].reshape(-1), states[0]["b"]])
    torch.testing.assert_close(strategy.histories[0], 2 * first)


def _trajectory(
    name: str, overrides: dict, rounds: int, cut: int | None, tmp: Path, restore: bool = True
):
    """Global models of rounds 1..rounds; with `cut`, the strategy is saved after round `cut`
    through a real checkpoint file and a fresh one continues."""
    strategy = make(name, nodes=NODES[:6], **overrides)
    strategy.client_keys.update({n: i for i, n in enumerate(NODES)})
    arrays = ArrayRecord(global_state())
    out = []
    for t in range(1, rounds + 1):
        states = [
            {k: v + 0.01 * t * (i + 1) if v.is_floating_point() else v for k, v in s.items()}
            for i, s in enumerate(benign_states(6, seed=t))
        ]
        # replies are models: global + a round-dependent update
        g = arrays.to_torch_state_dict()
        states = [{k: (g[k] + v if v.is_floating_point() else v) for k, v in s.items()}
                  for s in states]  # fmt: skip
        new, _ = run_round(strategy, t, states, arrays)
        arrays = new
        out.append(arrays.to_torch_state_dict())
        if t == cut:
            save_checkpoint(tmp, Checkpoint(t, out[-1], None, [], None, strategy_state(strategy)))
            strategy = make(name, nodes=NODES[:6], **overrides)
            strategy.client_keys.update({n: i for i, n in enumerate(NODES)})
            if restore:
                restore_strategy_state(strategy, load_checkpoint(tmp).strategy_state)
    return out


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("foolsgold", {}), ("centered-clipping", {"cc-tau": 0.5, "cc-iters": 2}),
     ("foolsgold", {"pre-aggregator": "nnm"})],
)  # fmt: skip
def test_state_saved_at_round_k_and_restored_gives_the_same_next_rounds(
    name: str, overrides: dict, tmp_path: Path
) -> None:
    whole = _trajectory(name, overrides, 4, None, tmp_path)
    resumed = _trajectory(name, overrides, 4, 2, tmp_path)
    for a, b in zip(whole, resumed, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    lost = _trajectory(name, overrides, 4, 2, tmp_path, restore=False)  # the state matters
    pairs = zip(whole[2:], lost[2:], strict=True)
    assert not all(torch.equal(a[k], b[k]) for a, b in pairs for k in a)


def test_centered_clipping_starts_at_zero_then_at_the_last_aggregate() -> None:
    strategy = make("centered-clipping", nodes=NODES[:3], **{"cc-tau": 100.0})
    states = benign_states(3)
    _, m1 = run_round(strategy, 1, states)
    assert m1["cc_first_round"] == 1 and strategy.center is not None
    U = torch.stack([torch.cat([s["w"].reshape(-1), s["b"]]) for s in states])
    torch.testing.assert_close(strategy.center, U.mean(0))  # tau above every distance: mean
    _, m2 = run_round(strategy, 2, states)
    assert m2["cc_first_round"] == 0


def test_root_examples_are_in_no_client_partition(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("IMMUNEFL_CACHE", str(tmp_path / "cache"))
    data = make_fake_fmnist(tmp_path / "fm", n_train=300)
    from task.partition import cached_partitions, root_indices, server_holdout

    cfg = typed_config(strategy="fltrust", **{"fltrust-root-size": 40})
    assert server_holdout(cfg) == 40 and server_holdout(typed_config()) == 0
    parts = cached_partitions("fmnist", str(data), "iid", 10, 0, 0.5, 40)
    root = root_indices(300, 40, 0)
    clients = np.concatenate([p.numpy() for p in parts])
    assert not set(root.tolist()) & set(clients.tolist())
    assert sorted([*root.tolist(), *clients.tolist()]) == list(range(300))
    assert np.array_equal(root, root_indices(300, 40, 0))  # seeded


def test_root_trainer_trains_the_global_model_on_the_root_set(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("IMMUNEFL_CACHE", str(tmp_path / "cache"))
    data = make_fake_fmnist(tmp_path / "fm", n_train=200)
    from task.models import init_model

    cfg = typed_config(strategy="fltrust", device="cpu", **{"data-dir": str(data),
                       "fltrust-root-size": 20})  # fmt: skip
    trainer = RootTrainer(cfg)
    state = init_model(cfg.model, cfg.dataset, 0).state_dict()
    a, b = trainer(state, 1), trainer(state, 1)
    assert len(trainer.root()) == 20
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded by round
    assert any(not torch.equal(a[k], state[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize(
    ("cls_name", "kwargs", "key"),
    [("GeoMedStrategy", {"nu": 0.0}, "'geomed-nu'"),
     ("CenteredClippingStrategy", {"tau": -1.0}, "'cc-tau'"),
     ("FLTrustStrategy", {"root_size": 0}, "'fltrust-root-size'"),
     ("FoolsGoldStrategy", {"normalize": "sum"}, "'foolsgold-normalize'"),
     ("FlameStrategy", {"noise_lambda": float("nan")}, "'flame-lambda'"),
     ("DnCStrategy", {"niters": 0}, "'dnc-niters'"),
     ("NormBoundStrategy", {"bound": 0.0}, "'norm-bound-m'")],
)  # fmt: skip
def test_a_rule_built_by_hand_names_the_key_of_a_bad_value(cls_name, kwargs, key) -> None:
    import strategies

    with pytest.raises(ValueError, match=key):
        getattr(strategies, cls_name)(**kwargs)


@pytest.mark.parametrize("iters", [1, 2, 4])
def test_centered_clipping_direct_and_gram_paths_agree(iters: int) -> None:
    from strategies import centered_clipping as cc

    U = torch.randn(10, 500, generator=torch.Generator().manual_seed(iters), dtype=torch.float64)
    center = U.mean(0) * 0.3
    direct = cc._direct_coefficients(U, center, 0.8, iters)
    G = cc._centred_gram64(U, center)
    a = torch.zeros(11, dtype=torch.float64)
    a[10] = 1.0
    for _ in range(iters):  # the Gram path's loop, as in centered_clipping
        Ga = G @ a
        dist = (torch.diagonal(G)[:10] - 2 * Ga[:10] + a @ Ga).clamp_min(0).sqrt()
        c = torch.where(dist > 0.8, 0.8 / dist.clamp_min(0.8), torch.ones_like(dist))
        a = a * (1 - c.sum() / 10)
        a[:10] += c / 10
    torch.testing.assert_close(direct, a)
