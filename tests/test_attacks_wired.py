"""Issue 30's attacks as `Attack`s: each craft computes what its math module says on what the
attacker knows, the full-knowledge replay is the benign nodes' exact update, every bad key and
every impossible setting is an error before a run starts (naming the keys), and the ClientApp
keeps Neurotoxin's previous global model in the node's state."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from attacks import ATTACKS, AttackContext, attack_problems, craft_malicious
from attacks.base import flatten_update
from attacks.fang import fang_krum_attack, fang_trim_full, fang_trim_partial
from attacks.knowledge import known_benign
from attacks.label_flip import flip_labels
from attacks.mimic import mimic_update
from attacks.min_max import min_max_update, min_sum_update
from attacks.neurotoxin import Neurotoxin, neurotoxin_mask
from task.data import Dataset
from task.models import build_model, init_model
from task.runconfig import RunConfig
from task.schema import ConfigError
from task.training import train_sgd
from tests.conftest import fake_fmnist_dataset, typed_config

CPU = torch.device("cpu")
PARTS = tuple(torch.arange(i * 8, (i + 1) * 8) for i in range(6))  # 6 nodes of 8 images


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return fake_fmnist_dataset(tmp_path_factory.mktemp("d") / "fm", n_train=48, n_test=20)


def ctx_for(data: Dataset, attack: str, pid: int = 5, **overrides) -> AttackContext:
    cfg = typed_config(**{"attack": attack, "num-partitions": 6, "num-malicious": 2,
                          "clients-per-round": 6, "malicious-per-round": 2, "batch-size": 4,
                          "attack-local-epochs": 1, "trigger-size": 3, **overrides})  # fmt: skip
    return AttackContext(
        config=cfg, dataset=data, partition_id=pid, indices=PARTS[pid], partitions=PARTS,
        malicious=(4, 5), server_round=2,
        global_state=init_model("cnn-fmnist", "fmnist", 0).state_dict(),
        build_model=lambda: build_model("cnn-fmnist", "fmnist"), device=CPU,
        round_benign=(0, 1, 2, 3), round_malicious=(4, 5),
    )  # fmt: skip


def sent(ctx: AttackContext) -> torch.Tensor:
    return flatten_update(craft_malicious(ctx), ctx.global_state)


def test_full_knowledge_replays_the_benign_nodes_exact_updates(data) -> None:
    ctx = ctx_for(data, "min-max")
    model = ctx.fresh_model()
    train_sgd(
        model,
        data,
        data.train,
        PARTS[1],
        epochs=1,
        batch_size=4,
        lr=0.01,
        momentum=0.0,
        generator=ctx.generator("client-data", 1),
        device=CPU,
    )  # as client_app.app does
    node = flatten_update(model.state_dict(), ctx.global_state)
    assert torch.equal(ctx.observed_update(1), node)
    assert known_benign(ctx, "full").shape[0] == 4  # the round's benign participants
    assert torch.equal(known_benign(ctx, "partial")[1], ctx.benign_update(5))  # own partitions
    no_round = ctx_for(data, "min-max")
    no_round.round_benign = ()
    with pytest.raises(ValueError, match="round-benign"):
        known_benign(no_round, "full")


@pytest.mark.parametrize(
    ("attack", "fn"), [("min-max", min_max_update), ("min-sum", min_sum_update)]
)
@pytest.mark.parametrize("perturbation", ["unit-vec", "sign", "std"])
def test_min_max_and_min_sum_send_the_math_on_the_round(data, attack, fn, perturbation) -> None:
    ctx = ctx_for(data, attack, **{"minmax-perturbation": perturbation})
    expected, gamma = fn(known_benign(ctx, "full"), perturbation)
    assert gamma > 0
    torch.testing.assert_close(sent(ctx), expected)


def test_fang_attacks_send_the_math(data) -> None:
    ctx = ctx_for(data, "fang-trmean")
    seed = int(ctx.generator("attack", 5).initial_seed()) ^ 0xFA9
    want = fang_trim_full(known_benign(ctx, "full"), 1, torch.Generator().manual_seed(seed))[0]
    torch.testing.assert_close(sent(ctx), want)
    part = ctx_for(data, "fang-trmean", **{"attack-knowledge": "partial"})
    want = fang_trim_partial(known_benign(part, "partial"), 1, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(sent(part), want[0])
    krum = ctx_for(data, "fang-krum")  # c = 2 attackers, 4 benign: m = 6 = 2c + 2
    crafted, lam = fang_krum_attack(known_benign(krum, "full"), 2)
    assert lam > 0
    torch.testing.assert_close(sent(krum), crafted[0])


def test_mimic_copies_the_benign_update_the_paper_picks(data) -> None:
    ctx = ctx_for(data, "mimic")
    benign = known_benign(ctx, "full")
    copy, i = mimic_update(benign)
    assert torch.equal(sent(ctx), copy) and torch.equal(copy, ctx.observed_update(i))


@pytest.mark.parametrize(("source", "target"), [(-1, -1), (3, 7)])
def test_label_flip_trains_honestly_on_flipped_labels(data, source, target) -> None:
    ctx = ctx_for(data, "label-flip", **{"label-flip-source": source,
                                         "label-flip-target": target})  # fmt: skip
    pair = () if source == -1 else (source, target)
    model = ctx.fresh_model()
    train_sgd(model, data, data.train, PARTS[5], epochs=1, batch_size=4, lr=0.01, momentum=0.0,
              generator=ctx.generator("attack", 5), device=CPU,
              batch_transform=lambda x, y: (x, flip_labels(y, 10, *pair)))  # fmt: skip
    torch.testing.assert_close(sent(ctx), flatten_update(model.state_dict(), ctx.global_state))


def test_model_replacement_scales_the_backdoor_by_n_over_eta_c(data) -> None:
    plain = ctx_for(data, "backdoor", **{"attack-boost": 1.0})
    backdoor = sent(plain)
    ctx = ctx_for(data, "model-replacement", **{"server-lr": 0.5})
    torch.testing.assert_close(sent(ctx), backdoor * (6 / 0.5 / 2))  # n / (eta c)
    fixed = ctx_for(data, "model-replacement", **{"replacement-scale": 3.0})
    torch.testing.assert_close(sent(fixed), backdoor * 3.0)
    bounded = ctx_for(data, "model-replacement", **{"replacement-norm-bound": 0.01})
    assert float(torch.linalg.vector_norm(sent(bounded))) == pytest.approx(0.01, rel=1e-4)


def test_neurotoxin_never_touches_the_top_coordinates_of_the_last_global_update(data) -> None:
    ctx = ctx_for(data, "neurotoxin", **{"neurotoxin-ratio": 0.3, "momentum": 0.9})
    prev = {k: v - 0.01 * torch.randn_like(v) if v.is_floating_point() else v
            for k, v in ctx.global_state.items()}  # fmt: skip
    ctx.previous_global = prev
    mask = neurotoxin_mask(flatten_update(ctx.global_state, prev), 0.3)
    assert torch.equal(Neurotoxin(ctx.config).mask(ctx), mask)
    update = sent(ctx)
    assert float(update[~mask].abs().max()) == 0.0 and float(update[mask].abs().max()) > 0
    assert (~mask).sum() == round(0.3 * mask.numel())
    first = ctx_for(data, "neurotoxin")  # no memory, global = the seeded initial model: no mask
    assert bool(Neurotoxin(first.config).mask(first).all())


def test_every_new_attack_is_registered_with_its_keys() -> None:
    new = ("min-max", "min-sum", "fang-trmean", "fang-krum", "mimic", "label-flip",
           "model-replacement", "neurotoxin")  # fmt: skip
    assert set(new) <= set(ATTACKS)
    defaults = RunConfig.defaults().as_mapping()
    for name in new:
        for p in ATTACKS[name].cls.PARAMS:
            assert defaults[p.key] == p.default, (name, p.key)  # schema and PARAMS agree


BASE = {"num-partitions": 20, "num-malicious": 4, "clients-per-round": 10,
        "malicious-per-round": 2, "adv-rounds": "2"}  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"attack": "min-max", "minmax-perturbation": "gauss"},
         "'minmax-perturbation' is 'gauss'; valid: unit-vec, sign, std"),
        ({"attack": "min-sum", "minmax-gamma-init": 0.0},
         "'minmax-gamma-init' must be in (0, inf)"),
        ({"attack": "fang-trmean", "attack-knowledge": "some"},
         "'attack-knowledge' is 'some'; valid: full, partial"),
        ({"attack": "min-max", "attack-knowledge": "partial", "num-malicious": 1,
          "malicious-per-round": 1}, "num-malicious=1); it needs >= 2"),
        ({"attack": "min-max", "clients-per-round": 3}, "clients-per-round=3 minus the attackers"),
        ({"attack": "fang-krum", "clients-per-round": 5},
         "clients-per-round >= 2c + 2"),
        ({"attack": "fang-krum", "attack-knowledge": "partial", "num-malicious": 2},
         "attack 'fang-krum' with attack-knowledge=partial knows 2 benign update(s)"),
        ({"attack": "fang-krum", "attack-mode": "continuous", "adv-rounds": "",
          "num-malicious": 5}, "(5: malicious-per-round=2, attack-mode=continuous)"),
        ({"attack": "mimic", "attack-knowledge": "partial"}, "it needs attack-knowledge=full"),
        ({"attack": "label-flip", "label-flip-source": 3}, "are set together"),
        ({"attack": "label-flip", "label-flip-source": 3, "label-flip-target": 3},
         "flips nothing"),
        ({"attack": "label-flip", "label-flip-source": 12, "label-flip-target": 1},
         "'label-flip-source' must be -1 or a class in [0, 10), got 12"),
        ({"attack": "label-flip", "label-flip-source": 1, "label-flip-target": -2},
         "'label-flip-target' must be -1 or a class in [0, 10), got -2"),
        ({"attack": "model-replacement", "backdoor-poison": "blend"},
         "'backdoor-poison' is 'blend'; valid: pixel, edge-case"),
        ({"attack": "model-replacement", "replacement-scale": -1.0}, "'replacement-scale' must"),
        ({"attack": "model-replacement", "replacement-norm-bound": -1.0},
         "'replacement-norm-bound' must"),
        ({"attack": "neurotoxin", "backdoor-poison": "edge-case"},
         "attack 'neurotoxin' with edge-case-source 'file' needs 'edge-case-file'"),
        ({"attack": "neurotoxin", "neurotoxin-ratio": 1.0}, "'neurotoxin-ratio' must be in [0, 1)"),
        ({"attack": "neurotoxin", "poison-fraction": 0.0}, "'poison-fraction' must be in (0, 1]"),
    ],
)  # fmt: skip
def test_bad_keys_and_impossible_settings_are_refused_before_the_run(overrides, needle) -> None:
    from immunefl.experiments import resolve_config

    config = typed_config(**{**BASE, **overrides})
    assert any(needle in p for p in attack_problems(config)), attack_problems(config)
    with pytest.raises(ConfigError, match="invalid run config"):
        resolve_config(None, {**BASE, **overrides})


def test_good_settings_pass() -> None:
    for attack in ("min-max", "min-sum", "fang-trmean", "fang-krum", "mimic", "label-flip",
                   "model-replacement", "neurotoxin"):  # fmt: skip
        assert attack_problems(typed_config(**{**BASE, "attack": attack})) == [], attack
    partial = {**BASE, "attack": "fang-krum", "attack-knowledge": "partial"}
    assert attack_problems(typed_config(**partial)) == []  # 4 own >= max(3, 1 + 2)
    edge = {**BASE, "attack": "neurotoxin", "backdoor-poison": "edge-case",
            "edge-case-source": "digits"}  # fmt: skip
    assert attack_problems(typed_config(**edge)) == []


def test_adversarial_train_messages_name_the_rounds_participants() -> None:
    from server_app.loop import train_config
    from server_app.scenario import RoundPlan

    assert dict(train_config(RoundPlan(1, False, [0, 1], []))) == {}
    cfg = train_config(RoundPlan(2, True, [0, 3], [9]))
    assert list(cfg["round-benign"]) == [0, 3] and list(cfg["round-malicious"]) == [9]


def test_the_client_app_keeps_neurotoxins_last_global_model(task_identity, fmnist_dir) -> None:
    from client_app.app import train
    from task.schema import load_schema

    threat = {"num-malicious": 5, "attack": "neurotoxin", "adv-rounds": "2,3",
              "attack-local-epochs": 1, "num-partitions": 100}  # fmt: skip
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 97, "num-partitions": 100},
                      state=RecordDict(), run_config={**load_schema(), **threat})  # fmt: skip
    g1 = init_model("cnn-fmnist", "fmnist", 5).state_dict()
    cfg = ConfigRecord({"server-round": 2, "round-benign": [1, 2], "round-malicious": [97]})
    msg = Message(RecordDict({"arrays": ArrayRecord(g1), "config": cfg}), dst_node_id=7,
                  message_type=MessageType.TRAIN)  # fmt: skip
    assert train(msg, context).content["metrics"]["attacked"] == 1
    kept = context.state.array_records["attack-last-global"].to_torch_state_dict()
    assert all(torch.equal(kept[k], g1[k]) for k in g1)
