"""FL-WBC (Algorithm 1) and local DP on hand-built examples and a real Fashion-MNIST client."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from client_app.ldp import clip_to_norm, ldp_release
from client_app.wbc import FLWBC, noise_std, wbc_perturbation
from task.data import Dataset, load_dataset
from task.models import init_model
from task.noise import laplace_like
from task.seeding import torch_generator
from task.training import train_sgd

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fmnist(fmnist_dir: Path) -> Dataset:
    return load_dataset("fmnist", str(fmnist_dir))


def _train(ds: Dataset, s: float | None, n: int = 600, noise_param: str = "std"):
    model = init_model("cnn-fmnist", "fmnist", seed=0)
    hooks = []
    if s is not None:
        hooks = [FLWBC(model.parameters(), 0.01, s, torch_generator(0, "wbc", 1, 0), noise_param)]
    train_sgd(model, ds, ds.train, torch.arange(n), epochs=1, batch_size=32, lr=0.01,
              momentum=0.0, generator=torch_generator(0, "client-data", 1, 0), device=CPU,
              hooks=hooks)  # fmt: skip
    return model.state_dict(), hooks


def test_s_zero_is_bit_identical_to_plain_sgd(fmnist: Dataset) -> None:
    plain, _ = _train(fmnist, None)
    wbc, hooks = _train(fmnist, 0.0)
    assert all(torch.equal(plain[k], wbc[k]) for k in plain)
    assert hooks[0].perturbed_fraction == 0.0


def test_first_step_of_a_round_is_never_perturbed(fmnist: Dataset) -> None:
    plain, _ = _train(fmnist, None, n=32)  # exactly one step
    wbc, hooks = _train(fmnist, 5.0, n=32)
    assert all(torch.equal(plain[k], wbc[k]) for k in plain)
    assert hooks[0].perturbed_fractions == []
    _, hooks = _train(fmnist, 5.0, n=64)  # the second step is perturbed
    assert len(hooks[0].perturbed_fractions) == 1 and hooks[0].perturbed_fractions[0] > 0


def test_eq_9_10_on_a_hand_built_example() -> None:
    w_star = torch.tensor([0.001, -0.05, 0.0, 0.02, -0.003])
    noise = torch.tensor([0.5, 1.0, -0.1, -1.0, -0.2])
    change, mask = wbc_perturbation(w_star, noise, lr=0.01)
    # |W*| <= 0.01 * |Y|: 0.001<=0.005 yes, 0.05<=0.01 no, 0<=0.001 yes, 0.02<=0.01 no,
    # 0.003<=0.002 no
    assert mask.tolist() == [True, False, True, False, False]
    assert change.tolist() == pytest.approx([0.005, 0.0, -0.001, 0.0, 0.0])


def test_hook_follows_algorithm_1_with_known_noise() -> None:
    """Drive the hook with fixed SGD steps and replay its noise from a cloned generator."""
    p = torch.zeros(6)
    gen = torch.Generator().manual_seed(11)
    replay = torch.Generator().manual_seed(11)
    hook = FLWBC([p.requires_grad_(False)], lr=0.1, s=1.0, generator=gen)
    hook.params = [p]  # a plain tensor stands in for a parameter
    hook._before = [torch.empty_like(p)]
    hook._prev = [torch.empty_like(p)]
    hook._numel = p.numel()
    steps = [torch.tensor([0.01, 0.0, -0.02, 0.3, 0.0, 0.001]),
             torch.tensor([0.01, 0.05, -0.02, -0.3, 0.0, 0.002])]  # fmt: skip
    hook.before_step()
    p += steps[0]  # step 1: no perturbation, prev change = step 1
    hook.after_step()
    assert torch.equal(p, steps[0])
    w_before = p.clone()
    hook.before_step()
    p += steps[1]
    hook.after_step()
    noise = laplace_like(p, 1.0, replay)
    w_star = steps[1] - steps[0]  # (W - W_-1) - (W_-1 - W_-2)
    expected_mask = w_star.abs() <= 0.1 * noise.abs()
    assert 0 < int(expected_mask.sum()) < 6  # the example exercises both branches
    expected = w_before + steps[1] + torch.where(expected_mask, 0.1 * noise, 0.0)
    torch.testing.assert_close(p, expected)
    assert hook.perturbed_fractions == [pytest.approx(float(expected_mask.float().mean()))]
    # the next step's "previous change" includes this step's perturbation
    torch.testing.assert_close(hook._prev[0], p - w_before)


@pytest.mark.parametrize(("param", "factor"), [("std", 1.0), ("scale", math.sqrt(2))])
def test_noise_std_matches_s(param: str, factor: float) -> None:
    s, lr = 0.4, 0.01
    noise = laplace_like(
        torch.zeros(400_000), noise_std(s, param), torch.Generator().manual_seed(0)
    )
    change, mask = wbc_perturbation(torch.zeros(400_000), noise, lr)  # W* = 0: all perturbed
    assert bool(mask.all())
    assert float((change / lr).std()) == pytest.approx(s * factor, rel=0.02)


def test_perturbed_fraction_grows_with_s(fmnist: Dataset) -> None:
    fractions = [_train(fmnist, s)[1][0].perturbed_fraction for s in (0.05, 0.2, 0.4, 1.0)]
    assert all(a < b for a, b in zip(fractions, fractions[1:], strict=False)), fractions
    assert fractions[0] > 0 and fractions[-1] < 1


def test_wbc_changes_the_model_but_not_the_data_order(fmnist: Dataset) -> None:
    plain, _ = _train(fmnist, None)
    wbc, _ = _train(fmnist, 0.4)
    assert not torch.equal(plain["conv2.weight"], wbc["conv2.weight"])
    # the defense's noise stream is its own: the data-order stream is untouched by it
    a = torch_generator(0, "client-data", 1, 0)
    FLWBC([torch.zeros(3, requires_grad=True)], 0.01, 0.4, torch_generator(0, "wbc", 1, 0))
    assert torch.equal(
        torch.randperm(10, generator=a),
        torch.randperm(10, generator=torch_generator(0, "client-data", 1, 0)),
    )


def test_ldp_clips_then_adds_laplace_noise() -> None:
    g = {"w": torch.zeros(100_000), "steps": torch.tensor(3)}
    local = {"w": torch.full((100_000,), 0.1), "steps": torch.tensor(4)}  # norm 31.6
    assert float(torch.linalg.vector_norm(clip_to_norm(local["w"], 1.0))) == pytest.approx(
        1.0, rel=1e-3
    )
    quiet = ldp_release(local, g, clip=1.0, multiplier=0.0, generator=torch.Generator())
    assert float(torch.linalg.vector_norm(quiet["w"] - g["w"])) == pytest.approx(1.0, rel=1e-3)
    assert quiet["steps"].item() == 4  # integer buffers pass through
    gen = torch.Generator().manual_seed(1)
    noisy = ldp_release(local, g, clip=1.0, multiplier=0.5, generator=gen)
    residual = noisy["w"] - quiet["w"]
    assert float(residual.std()) == pytest.approx(0.5, rel=0.02)
    assert float(residual.abs().mean()) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)


@pytest.mark.parametrize(("clip", "z"), [(5.0, 0.02), (1.0, 0.3), (2.0, 0.0)])
def test_ldp_noise_std_is_the_multiplier_times_the_clip_norm(clip: float, z: float) -> None:
    """DP-FedAvg's convention: one clipped update has sensitivity C, its noise std is z * C."""
    g = {"w": torch.zeros(1_000_000)}
    gen = torch.Generator().manual_seed(7)
    noisy = ldp_release({"w": torch.zeros(1_000_000)}, g, clip=clip, multiplier=z, generator=gen)
    assert float(noisy["w"].std()) == pytest.approx(z * clip, rel=0.01, abs=1e-12)
    again = ldp_release({"w": torch.zeros(1_000_000)}, g, clip, z, torch.Generator().manual_seed(7))
    assert torch.equal(noisy["w"], again["w"])  # seeded
