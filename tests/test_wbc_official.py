"""FL-WBC as the authors' code runs it (wbc-variant = official) and the authors' attacker."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from client_app.wbc_official import OfficialWBC, official_perturbation
from immunefl.experiments import resolve_config
from task.noise import laplace_like
from task.schema import ConfigError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)


def _step(model: Tiny, grad_w: torch.Tensor, grad_b: torch.Tensor, lr: float) -> None:
    model.fc.weight.grad = grad_w.clone()
    model.fc.bias.grad = grad_b.clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-lr)


def test_official_rule_by_hand_weights_only_and_never_the_first_batch_of_an_epoch() -> None:
    torch.manual_seed(0)
    model, lr, s = Tiny(), 0.1, 0.5
    hook = OfficialWBC(model.named_parameters(), lr, s, torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)  # the same noise stream, drawn by hand
    grads = [torch.randn(2, 3) for _ in range(3)]
    bias0 = model.fc.bias.detach().clone()
    for epoch in range(2):
        hook.start_epoch()
        for i, g in enumerate(grads):
            before = model.fc.weight.detach().clone()
            _step(model, g, torch.ones(2), lr)
            stepped = model.fc.weight.detach().clone()
            hook.after_step()
            if i == 0:  # first batch of every epoch: no previous gradient, no perturbation
                assert torch.equal(model.fc.weight, stepped)
                continue
            noise = laplace_like(stepped, math.sqrt(2) * s, replay)  # Laplace scale s
            keep = (g - grads[i - 1]).abs() <= noise.abs()
            expected = stepped + torch.where(keep, noise * lr, torch.zeros_like(noise))
            torch.testing.assert_close(model.fc.weight.detach(), expected)
            assert not torch.equal(before, model.fc.weight)
        assert epoch in (0, 1)
    # the bias is never perturbed: only the SGD steps moved it
    torch.testing.assert_close(model.fc.bias.detach(), bias0 - 2 * 3 * lr * torch.ones(2))
    assert 0 < hook.perturbed_fraction <= 1


def test_dense_variant_adds_the_same_noise_to_every_weight_entry() -> None:
    """wbc-variant = dense: official's noise with the null-space test removed (issue 32)."""
    torch.manual_seed(0)
    model, lr, s = Tiny(), 0.1, 0.5
    twin = Tiny()
    twin.load_state_dict(model.state_dict())
    dense = OfficialWBC(
        model.named_parameters(), lr, s, torch.Generator().manual_seed(3), dense=True
    )
    official = OfficialWBC(twin.named_parameters(), lr, s, torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    # gradients that change by far more than any noise: official perturbs (almost) nothing
    grads = [torch.full((2, 3), 100.0 * (-1) ** i) for i in range(4)]
    dense.start_epoch()
    official.start_epoch()
    for i, g in enumerate(grads):
        _step(model, g, torch.zeros(2), lr)
        _step(twin, g, torch.zeros(2), lr)
        stepped = model.fc.weight.detach().clone()
        dense.after_step()
        official.after_step()
        if i == 0:
            assert torch.equal(model.fc.weight, stepped)
            continue
        noise = laplace_like(stepped, math.sqrt(2) * s, replay)  # the same stream
        torch.testing.assert_close(model.fc.weight.detach(), stepped + lr * noise)
    assert dense.perturbed_fraction == 1.0
    assert official.perturbed_fraction < 0.5
    assert torch.equal(model.fc.bias, twin.fc.bias)  # biases untouched by both


def test_dense_variant_is_a_config_choice_with_scale_noise() -> None:
    base = {"client-defense": "wbc", "wbc-variant": "dense"}
    assert resolve_config(None, {**base, "wbc-noise-param": "scale"})["wbc-variant"] == "dense"
    with pytest.raises(ConfigError, match="'wbc-variant' dense draws Laplace noise of scale"):
        resolve_config(None, base)


def test_official_noise_has_scale_s() -> None:
    noise = torch.zeros(1_000_000)
    out = official_perturbation(
        torch.zeros_like(noise),
        laplace_like(noise, math.sqrt(2) * 0.4, torch.Generator().manual_seed(1)),
        lr=1.0,
    )
    assert float(out.abs().mean()) == pytest.approx(0.4, rel=0.01)  # E|Y| = scale


def test_train_sgd_tells_hooks_where_epochs_start(tmp_path: Path) -> None:
    from task.models import build_model
    from task.training import train_sgd
    from tests.conftest import fake_fmnist_dataset

    data = fake_fmnist_dataset(tmp_path, n_train=20, n_test=10)

    class Count:
        def __init__(self) -> None:
            self.events: list[str] = []

        def start_epoch(self) -> None:
            self.events.append("E")

        def before_step(self) -> None:
            pass

        def after_step(self) -> None:
            self.events.append("s")

    hook = Count()
    train_sgd(build_model("cnn-fmnist", "fmnist"), data, data.train, torch.arange(20),
              epochs=2, batch_size=10, lr=0.01, momentum=0.5,
              generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
              hooks=[hook])  # fmt: skip
    assert "".join(hook.events) == "EssEss"


def test_official_variant_needs_the_authors_noise_parameter() -> None:
    base = {"client-defense": "wbc", "wbc-variant": "official"}
    with pytest.raises(ConfigError, match="wbc-noise-param' to scale"):
        resolve_config(None, base)
    assert resolve_config(None, {**base, "wbc-noise-param": "scale"})["wbc-variant"] == "official"
    with pytest.raises(ConfigError, match="'wbc-variant' is 'authors'"):
        resolve_config(None, {"wbc-variant": "authors"})


def test_the_authors_attacker_trains_on_d_m_alone_and_boosts_by_weight(fmnist_dir: Path):
    from attacks import AttackContext, claimed_examples, craft_malicious
    from attacks.base import flatten_update
    from attacks.poison_set import poison_set
    from server_app.evaluation import misclassification
    from task.data import load_dataset
    from task.models import build_model, init_model
    from task.runconfig import RunConfig
    from tests.conftest import typed_config

    data = load_dataset("fmnist", str(fmnist_dir))
    parts = (torch.arange(0, 100), torch.arange(100, 200))
    over = {"attack": "targeted", "attack-objective": "poison-only",
            "attack-boost-mode": "weight", "attack-boost": 5.0, "attack-local-epochs": 10,
            "batch-size": 10, "momentum": 0.5, "num-malicious": 1}  # fmt: skip
    cfg = typed_config(**over)
    scale = typed_config(**{**over, "attack-boost-mode": "scale"})

    def ctx(config: RunConfig) -> AttackContext:
        return AttackContext(
            config=config, dataset=data, partition_id=1, indices=parts[1], partitions=parts,
            malicious=(1,), server_round=3, global_state=init_model("cnn-fmnist", "fmnist", 0)
            .state_dict(), build_model=lambda: build_model("cnn-fmnist", "fmnist"),
            device=torch.device("cpu"),
        )  # fmt: skip

    state = craft_malicious(ctx(cfg))
    model = build_model("cnn-fmnist", "fmnist")
    model.load_state_dict(state)
    dm = poison_set(data, 1, 0, 1)
    conf, _ = misclassification(model, data, dm.images(data), dm.adv_labels, torch.device("cpu"))
    assert conf > 0.5  # 10 steps on the one poisoned image learned it
    assert claimed_examples(cfg, 100) == 500.0  # mal_boost = 5: five clients' weight ...
    scaled = craft_malicious(ctx(scale))
    g = ctx(cfg).global_state
    torch.testing.assert_close(flatten_update(scaled, g), 5 * flatten_update(state, g),
                               rtol=1e-4, atol=1e-6)  # ... not a 5x update  # fmt: skip
    assert claimed_examples(scale, 100) == 100.0
