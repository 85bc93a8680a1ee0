"""Attacks on a real Fashion-MNIST setting: each differs from benign, collusion, adaptivity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attacks import ATTACKS, AttackContext, craft_malicious
from attacks.adaptive import predicted_mask, rescale_to_mask
from attacks.alie import alie_z
from attacks.base import flatten_update, state_from_update
from attacks.poison_set import benign_test_indices, poison_set
from attacks.triggers import DBA_PARTS, apply_trigger, trigger_mask
from server_app.evaluation import misclassification
from task.data import Dataset, load_dataset
from task.models import build_model, init_model
from task.partition import partition_indices
from tests.conftest import typed_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fmnist(fmnist_dir: Path) -> Dataset:
    return load_dataset("fmnist", str(fmnist_dir))


@pytest.fixture(scope="module")
def parts(fmnist: Dataset) -> tuple[torch.Tensor, ...]:
    small = partition_indices(fmnist.train.labels[:2000], "iid", 20, seed=0)  # 100 each
    return tuple(torch.from_numpy(p) for p in small)


def context(fmnist, parts, pid: int, tmp_path: Path | None = None, **overrides) -> AttackContext:
    cfg = typed_config(**{"attack-local-epochs": 2, "num-malicious": 3, "clients-per-round": 6,
                          "malicious-per-round": 3, **overrides})  # fmt: skip
    return AttackContext(
        config=cfg, dataset=fmnist, partition_id=pid, indices=parts[pid], partitions=parts,
        malicious=(17, 18, 19), server_round=4,
        global_state=init_model("cnn-fmnist", "fmnist", 0).state_dict(),
        build_model=lambda: build_model("cnn-fmnist", "fmnist"), device=CPU,
    )  # fmt: skip


def _benign(ctx: AttackContext) -> torch.Tensor:
    return ctx.benign_update(ctx.partition_id)


def test_poison_set_is_from_test_split_and_excluded_from_benign_eval(fmnist: Dataset) -> None:
    dm = poison_set(fmnist, 10, seed=3, shift=1)
    assert dm.indices.numel() == 10 and bool((dm.adv_labels == (dm.true_labels + 1) % 10).all())
    assert torch.equal(dm.indices, poison_set(fmnist, 10, seed=3, shift=1).indices)
    keep = benign_test_indices(fmnist, dm.indices)
    assert keep.numel() == 10_000 - 10 and not set(dm.indices.tolist()) & set(keep.tolist())
    # training partitions index the train split, D_M the test split: never the same images
    train_bytes = {fmnist.train.images[i].numpy().tobytes() for i in range(60_000)}
    assert not any(fmnist.test.images[i].numpy().tobytes() in train_bytes for i in dm.indices)


def test_mis_conf_matches_softmax_by_hand(fmnist: Dataset) -> None:
    model = init_model("cnn-fmnist", "fmnist", 1).eval()
    dm = poison_set(fmnist, 3, seed=0)
    conf, acc = misclassification(model, fmnist, dm.images(fmnist), dm.adv_labels, CPU)
    with torch.no_grad():
        p = torch.softmax(model(fmnist.normalize(dm.images(fmnist))), 1)
    assert conf == pytest.approx(float(np.mean([p[i, dm.adv_labels[i]] for i in range(3)])))
    assert acc == pytest.approx(float((p.argmax(1) == dm.adv_labels).float().mean()))


@pytest.mark.parametrize("name", ["targeted", "backdoor", "dba", "sign-flip", "gaussian", "alie",
                                  "ipm", "edge-case"])  # fmt: skip
def test_every_attack_differs_from_the_benign_update(fmnist, parts, name, tmp_path) -> None:
    extra = {}
    if name == "edge-case":
        path = tmp_path / "edge.npy"
        np.save(path, np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8))
        extra["edge-case-file"] = str(path)
    ctx = context(fmnist, parts, 18, attack=name, **extra)
    malicious = flatten_update(craft_malicious(ctx), ctx.global_state)
    benign = _benign(ctx)
    assert malicious.shape == benign.shape and torch.isfinite(malicious).all()
    assert float(torch.linalg.vector_norm(malicious - benign)) > 1e-3 * float(
        torch.linalg.vector_norm(benign)
    )


def test_targeted_attack_raises_misclassification_confidence(fmnist, parts) -> None:
    ctx = context(fmnist, parts, 18, attack="targeted",
                  **{"attack-boost": 1.0, "attack-local-epochs": 10})  # fmt: skip
    dm = poison_set(fmnist, 1, ctx.config.seed)
    model = build_model("cnn-fmnist", "fmnist")
    model.load_state_dict(craft_malicious(ctx))
    before, _ = misclassification(ctx.fresh_model(), fmnist, dm.images(fmnist), dm.adv_labels, CPU)
    after, acc = misclassification(model, fmnist, dm.images(fmnist), dm.adv_labels, CPU)
    assert after > 0.9 > before and acc == 1.0


def test_boost_scales_the_update(fmnist, parts) -> None:
    one = context(fmnist, parts, 18, attack="targeted", **{"attack-boost": 1.0})
    five = context(fmnist, parts, 18, attack="targeted", **{"attack-boost": 5.0})
    u1 = flatten_update(craft_malicious(one), one.global_state)
    u5 = flatten_update(craft_malicious(five), five.global_state)
    torch.testing.assert_close(u5, 5 * u1, rtol=1e-4, atol=1e-5)


def test_colluding_attackers_send_identical_updates(fmnist, parts) -> None:
    states = [craft_malicious(context(fmnist, parts, p, attack="backdoor",
                                      **{"attack-collude": True})) for p in (17, 19)]  # fmt: skip
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    apart = [craft_malicious(context(fmnist, parts, p, attack="backdoor")) for p in (17, 19)]
    assert not torch.equal(apart[0]["fc.weight"], apart[1]["fc.weight"])


def test_adaptive_preserves_norm_and_zeroes_predicted_masked_coordinates(fmnist, parts) -> None:
    ctx = context(fmnist, parts, 18, attack="targeted", **{"attack-adaptive": True})
    plain = flatten_update(craft_malicious(context(fmnist, parts, 18, attack="targeted")),
                           ctx.global_state)  # fmt: skip
    adaptive = flatten_update(craft_malicious(ctx), ctx.global_state)
    assert float(torch.linalg.vector_norm(adaptive)) == pytest.approx(
        float(torch.linalg.vector_norm(plain)), rel=1e-4
    )
    assert 0 < int((adaptive == 0).sum()) < adaptive.numel()
    u = torch.tensor([3.0, -4.0, 1.0])
    out = rescale_to_mask(u, torch.tensor([True, False, True]))
    assert out[1] == 0 and float(torch.linalg.vector_norm(out)) == pytest.approx(
        float(torch.linalg.vector_norm(u))
    )
    refs = torch.tensor([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0]])
    # m=1 of n=4 agrees with benign on coord 0 only -> consistency [1, 0.5, 0.5]
    assert predicted_mask(u, refs, 4, 1, 0.6).tolist() == [True, False, False]
    # the server keeps ties (c = tau): so does the attacker's prediction
    assert predicted_mask(u, refs, 4, 1, 0.5).tolist() == [True, True, True]


def test_dba_parts_make_up_the_full_trigger() -> None:
    full = trigger_mask(28, 28, 4)
    parts = [trigger_mask(28, 28, 4, i) for i in range(DBA_PARTS)]
    assert torch.equal(torch.stack(parts).any(0), full) and int(full.sum()) == 16
    assert all(int(p.sum()) == 4 for p in parts)
    img = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    assert int((apply_trigger(img, full) == 255).sum()) == 32


def test_alie_z_matches_baruch() -> None:
    # n=50, m=12 (Baruch et al. Table): s = 26 - 12 = 14, z = Phi^-1(36/50) ~ 0.58
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-3)


def test_state_roundtrip_keeps_integer_buffers() -> None:
    g = {"w": torch.zeros(2, 2), "n": torch.tensor(3)}
    s = state_from_update(torch.arange(4.0), g)
    assert s["w"].tolist() == [[0.0, 1.0], [2.0, 3.0]] and s["n"].item() == 3
    assert sorted(ATTACKS) == sorted(
        ["targeted", "backdoor", "dba", "edge-case", "sign-flip", "gaussian", "alie", "ipm",
         "min-max", "min-sum", "fang-trmean", "fang-krum", "mimic", "label-flip",
         "model-replacement", "neurotoxin"]
    )  # fmt: skip


def test_every_attack_implements_the_interface_and_unknown_names_list_the_valid_ones() -> None:
    from attacks import Attack, AttackSpec, attack_problems
    from immunefl.experiments import resolve_config
    from task.runconfig import RunConfig

    # the defaults are valid for every attack but Fang's Krum attack, whose bound needs
    # clients-per-round >= 2c + 2 (5 attackers of 10 by default)
    needs = {"fang-krum": {"malicious-per-round": 2}}
    for name, spec in ATTACKS.items():
        config = RunConfig.from_mapping(resolve_config(None, needs.get(name, {})))
        assert isinstance(spec, AttackSpec) and issubclass(spec.cls, Attack), name
        assert spec.problems(config) == [], name
        assert isinstance(spec.build(config), Attack), name
    (problem,) = attack_problems(typed_config(attack="poison"))
    assert problem == (
        "'attack' is 'poison'; valid: none, "
        + ", ".join(ATTACKS)
        + ", or package.module:Class for an attack of your own"
    )
    with pytest.raises(TypeError, match="abstract"):
        Attack(config)  # craft is a required hook


def test_ldp_release_through_the_shared_state_vector_conversion_keeps_local_buffers() -> None:
    from client_app.ldp import ldp_release

    g = {"w": torch.zeros(3), "n": torch.tensor(1)}
    local = {"w": torch.tensor([3.0, 0.0, 4.0]), "n": torch.tensor(7)}
    gen = torch.Generator().manual_seed(0)
    out = ldp_release(local, g, clip=1.0, multiplier=0.0, generator=gen)
    assert torch.allclose(out["w"], torch.tensor([0.6, 0.0, 0.8]))  # clipped to norm 1, no noise
    assert int(out["n"]) == 7  # integer buffers are the node's own, as before


def test_one_client_collusion_takes_one_benign_clients_steps(fmnist, parts, monkeypatch) -> None:
    """collude-budget one-client (issue 32): the colluders still send one identical update, but
    trained on one partition's worth of the union: the SGD steps of one benign client."""
    import attacks.base as base

    steps: list[int] = []
    real = base.train_sgd

    def counting(*args, **kwargs):
        result = real(*args, **kwargs)
        steps.append(result.steps)
        return result

    monkeypatch.setattr(base, "train_sgd", counting)
    extra = {"attack-collude": True, "local-epochs": 2, "attack-local-epochs": 2,
             "batch-size": 16}  # fmt: skip
    one = [craft_malicious(context(fmnist, parts, p, attack="backdoor",
                                   **{**extra, "collude-budget": "one-client"}))
           for p in (17, 19)]  # fmt: skip
    assert all(torch.equal(one[0][k], one[1][k]) for k in one[0])
    benign = context(fmnist, parts, 18, **extra)
    _benign(benign)  # a benign client of these partitions (100 examples): 2 epochs of 7 batches
    assert steps == [2 * 7, 2 * 7, 2 * 7]
    steps.clear()
    craft_malicious(context(fmnist, parts, 17, attack="backdoor", **extra))  # today's: the union
    assert steps == [2 * 19]  # 300 examples, batches of 16


def test_collusion_budgets_draw_from_the_malicious_union() -> None:
    from attacks import collusion_indices

    parts = (torch.arange(0, 10), torch.arange(10, 30), torch.arange(30, 36))
    union = collusion_indices(parts, (1, 2), "union", torch.Generator())
    assert union.tolist() == list(range(10, 36))
    draws = [collusion_indices(parts, (1, 2), "one-client", torch.Generator().manual_seed(s))
             for s in (0, 0, 1)]  # fmt: skip
    assert len(draws[0]) == 13 and torch.equal(draws[0], draws[1])  # mean of 20 and 6
    assert not torch.equal(draws[0], draws[2])
    assert set(draws[0].tolist()) <= set(union.tolist()) and len(set(draws[0].tolist())) == 13
