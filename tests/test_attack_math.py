"""The pure math of the model-poisoning attacks of issue #30, on hand-checkable inputs."""

from __future__ import annotations

import math

import pytest
import torch

from attacks.fang import (
    benign_direction,
    fang_krum_attack,
    fang_krum_lambda_bound,
    fang_trim_full,
    fang_trim_partial,
    krum_scores,
    krum_select,
)
from attacks.label_flip import flip_labels
from attacks.mimic import (
    mimic_init,
    mimic_select,
    mimic_update,
    mimic_warmup_step,
    power_step,
    top_variance_direction,
)
from attacks.min_max import (
    gamma_search,
    min_max_update,
    min_sum_update,
    pairwise_distances,
    perturbation_vector,
)
from attacks.model_replacement import replacement_scale, scale_update
from attacks.neurotoxin import neurotoxin_mask, project

TOL = 1e-4  # Algorithm 1 stops within tau = 1e-5 of the boundary


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- Min-Max / Min-Sum

LINE = torch.tensor([[0.0], [0.0], [3.0]])  # mu = 1, diameter 3, benign sums 9, 9, 18


def test_perturbation_vectors_by_hand() -> None:
    b = torch.tensor([[1.0, -2.0], [3.0, -2.0]])  # mu = (2, -2)
    assert torch.allclose(perturbation_vector(b, "unit-vec"), torch.tensor([-1.0, 1.0]) / 2**0.5)
    assert torch.equal(perturbation_vector(b, "sign"), torch.tensor([-1.0, 1.0]))
    # unbiased std of (0, 0, 3): sqrt((1 + 1 + 4) / 2) = sqrt(3)
    assert torch.allclose(perturbation_vector(LINE, "std"), torch.tensor([-math.sqrt(3)]))


def test_gamma_search_follows_algorithm_1() -> None:
    """The authors' update rule: step starts at gamma_init, gamma moves by step/2, step halves."""
    tried: list[float] = []

    def feasible(g: float) -> bool:
        tried.append(g)
        return g <= 3.0

    result = gamma_search(feasible, gamma_init=10.0, tau=1e-5)
    assert tried[:6] == [10.0, 5.0, 2.5, 3.75, 3.125, 2.8125]
    assert 3.0 - 1e-5 <= result <= 3.0
    assert gamma_search(lambda g: True, gamma_init=1.0) == pytest.approx(2.0, abs=TOL)
    assert gamma_search(lambda g: False) == 0.0


def test_min_max_closed_form_unit_vec() -> None:
    # m = 1 - gamma; its largest distance 2 + gamma (to 3) must stay <= 3: gamma = 1
    u, g = min_max_update(LINE, "unit-vec")
    assert g == pytest.approx(1.0, abs=TOL) and g <= 1.0
    assert float(u[0]) == pytest.approx(0.0, abs=TOL)


def test_min_max_closed_form_sign_in_2d() -> None:
    b = torch.tensor([[1.0, 1.0], [1.0, 1.0], [4.0, 4.0]])  # mu = (2, 2), p = (-1, -1)
    # distance to (4, 4) is sqrt(2) (2 + gamma) <= diameter sqrt(2) * 3: gamma = 1
    u, g = min_max_update(b, "sign")
    assert g == pytest.approx(1.0, abs=TOL)
    assert torch.allclose(u, torch.tensor([1.0, 1.0]), atol=TOL)


def test_min_max_closed_form_std() -> None:
    # p = -sqrt(3): 2 + gamma sqrt(3) <= 3 gives gamma = 1 / sqrt(3), m = 0
    u, g = min_max_update(LINE, "std")
    assert g == pytest.approx(1 / math.sqrt(3), abs=TOL)
    assert float(u[0]) == pytest.approx(0.0, abs=TOL)


def test_min_sum_closed_form_paper_and_code_bounds() -> None:
    # sum_i (m - b_i)^2 = 2 (1 - g)^2 + (2 + g)^2 = 6 + 3 g^2 <= 18 (paper: max) or 9 (code: min)
    u, g = min_sum_update(LINE, "unit-vec", bound="max")
    assert g == pytest.approx(2.0, abs=TOL) and float(u[0]) == pytest.approx(-1.0, abs=TOL)
    _, g_min = min_sum_update(LINE, "unit-vec", bound="min")
    assert g_min == pytest.approx(1.0, abs=TOL)
    assert min_sum_update(LINE)[1] == pytest.approx(2.0, abs=TOL)  # default: the paper's bound


def test_gamma_search_terminates_with_a_tau_below_float_precision() -> None:
    assert gamma_search(lambda g: g <= 3.0, gamma_init=10.0, tau=1e-300) == pytest.approx(3.0)


def test_searches_stop_at_the_boundary_on_random_updates() -> None:
    b = torch.randn(6, 8, generator=gen(1)) + 0.5
    mu = b.mean(0)
    p = perturbation_vector(b, "unit-vec")
    diameter = float(pairwise_distances(b).max())
    u, g = min_max_update(b)
    assert float(torch.linalg.vector_norm(b - u, dim=1).max()) <= diameter + 1e-5
    beyond = mu + (g + 1e-3) * p
    assert float(torch.linalg.vector_norm(b - beyond, dim=1).max()) > diameter

    limit = float((pairwise_distances(b) ** 2).sum(1).max())
    u, g = min_sum_update(b)
    assert float((torch.linalg.vector_norm(b - u, dim=1) ** 2).sum()) <= limit * (1 + 1e-6)
    beyond = mu + (g + 1e-3) * p
    assert float((torch.linalg.vector_norm(b - beyond, dim=1) ** 2).sum()) > limit


def test_zero_perturbation_returns_the_mean() -> None:
    b = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # mu = 0: unit-vec and sign are 0
    u, g = min_max_update(b, "unit-vec")
    assert g == 0.0 and torch.equal(u, torch.zeros(2))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: min_max_update(LINE, "bogus"), "perturbation"),  # type: ignore[arg-type]
        (lambda: min_max_update(LINE, gamma_init=0.0), "gamma_init"),
        (lambda: min_sum_update(LINE, tau=-1.0), "tau"),
        (lambda: min_sum_update(LINE, bound="mean"), "bound"),  # type: ignore[arg-type]
        (lambda: min_max_update(torch.tensor([1.0, 2.0])), "benign"),
        (lambda: min_max_update(torch.tensor([[1.0, 2.0]])), "benign"),
    ],
)
def test_min_max_invalid_parameters(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


# --------------------------------------------------------------------------- Fang: trimmed mean

# coordinates: s = +1 with w_min = 1 > 0; s = -1 with w_max = -1 < 0;
#              s = +1 with w_min = -1 <= 0; s = -1 with w_max = 1 > 0
FOUR = torch.tensor([[1.0, -1.0, -1.0, 1.0], [3.0, -3.0, 3.0, -3.0]])


def test_trim_full_intervals_by_hand() -> None:
    w = fang_trim_full(FOUR, 200, gen())
    lo = torch.tensor([0.5, -1.0, -2.0, 1.0])  # [w_min/2, w_min], [w_max, w_max/2],
    hi = torch.tensor([1.0, -0.5, -1.0, 2.0])  # [2 w_min, w_min], [w_max, 2 w_max]
    assert bool(((w >= lo) & (w <= hi)).all())
    assert bool((w.max(0).values - w.min(0).values > 0.3).all())  # sampled, not constant


def test_trim_full_pushes_against_the_benign_direction() -> None:
    """Catches a flipped sign: crafted values lie beyond the benign extreme OPPOSITE to s, so
    the coordinate-wise median and trimmed mean move against the benign direction."""
    benign = torch.randn(9, 64, generator=gen(2)) + torch.linspace(-2, 2, 64)
    s = benign_direction(benign)
    assert bool((s != 0).all())
    crafted = fang_trim_full(benign, 3, gen(3))
    up, down = s < 0, s > 0
    assert bool((crafted[:, up] >= benign.max(0).values[up]).all())
    assert bool((crafted[:, down] <= benign.min(0).values[down]).all())

    both = torch.cat([crafted, benign])
    shift = both.median(0).values - benign.median(0).values
    assert bool((shift * s <= 0).all()) and bool((shift * s < 0).float().mean() > 0.9)
    trimmed = both.sort(0).values[3:-3].mean(0)  # trimmed mean, 3 per side
    assert bool(((trimmed - benign.mean(0)) * s < 0).all())


def test_trim_partial_intervals_by_hand() -> None:
    own = torch.tensor([[1.0, -1.0, 1.0], [3.0, -3.0, -1.0]])  # mu = (2, -2, 0), sigma = 1
    w = fang_trim_partial(own, 200, gen())
    assert bool(((w[:, 0] >= -2.0) & (w[:, 0] <= -1.0)).all())  # s = +1: [mu - 4s, mu - 3s]
    assert bool(((w[:, 1] >= 1.0) & (w[:, 1] <= 2.0)).all())  # s = -1: [mu + 3s, mu + 4s]
    assert torch.equal(w[:, 2], torch.zeros(200))  # s = 0: mu


def test_trim_randomness_only_from_the_generator() -> None:
    assert torch.equal(fang_trim_full(FOUR, 3, gen(5)), fang_trim_full(FOUR, 3, gen(5)))
    assert not torch.equal(fang_trim_full(FOUR, 3, gen(5)), fang_trim_full(FOUR, 3, gen(6)))
    assert torch.equal(fang_trim_partial(FOUR, 3, gen(5)), fang_trim_partial(FOUR, 3, gen(5)))


# --------------------------------------------------------------------------- Fang: Krum

LINE5 = torch.tensor([[-2.0], [-1.0], [1.0], [2.0], [3.0]])  # mean 0.6: s = +1


def test_krum_scores_by_hand() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert torch.equal(krum_scores(x, 0), torch.tensor([10.0, 5.0, 13.0, 52.0]))
    assert krum_select(x, 0) == 1
    dup = torch.tensor([[0.0], [0.0], [5.0], [6.0]])  # duplicates are 0 apart, self excluded
    assert torch.equal(krum_scores(dup, 1), torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_lambda_bound_by_hand() -> None:
    # c = 1, m = 6: 3 nearest of 3 sum to 1 + 1 + 2 = 4, / (m - 2c - 1 = 3), + max norm 5
    one_to_five = torch.arange(1.0, 6.0).unsqueeze(1)
    assert fang_krum_lambda_bound(one_to_five, 1) == pytest.approx(4 / 3 + 5)
    # c = 2, m = 7: 3 nearest of 1 (or 2) sum to 5, / 2, + max norm 3
    assert fang_krum_lambda_bound(LINE5, 2) == pytest.approx(5.5)
    # repeating the coordinate d = 4 times scales distances by sqrt(d), which the bound divides out
    assert fang_krum_lambda_bound(LINE5.repeat(1, 4), 2) == pytest.approx(5.5)


def test_krum_attack_by_hand_is_selected() -> None:
    # lambda: 5.5 (benign 1 scores 9 < 32.5), 2.75 (benign -2: 2.125 < 3.625),
    # 1.375 (crafted pair: 0.375^2 + 0.625^2 = 0.53125 < benign -1: 1.28125) -> selected
    w, lam = fang_krum_attack(LINE5, 2)
    assert lam == 1.375
    assert torch.equal(w, torch.full((2, 1), -1.375))
    assert krum_select(torch.cat([w, LINE5]), 2) < 2
    assert krum_select(torch.cat([LINE5, w]), 2) >= 5  # whatever order the server uses


def test_krum_attack_gives_up_below_threshold() -> None:
    # one attacker at -lambda never beats benign 3 (score 6 <= 14 + ...): lambda -> 0
    w, lam = fang_krum_attack(torch.arange(1.0, 6.0).unsqueeze(1), 1)
    assert lam == 0.0 and torch.equal(w, torch.zeros(1, 1))


def test_krum_attack_on_random_updates_against_benign_direction() -> None:
    # SGD-like: the benign updates' spread dominates their mean (where Fang's attack works)
    benign = torch.randn(8, 6, generator=gen(7)) + 0.3 * torch.tensor([1.0, -1, 2, -2, 1, -1])
    s = torch.sign(benign.mean(0))
    w, lam = fang_krum_attack(benign, 3)
    assert lam > 0
    assert torch.allclose(w, (-lam * s).expand(3, 6))
    assert bool((w * s < 0).all())  # every coordinate against the benign direction
    assert krum_select(torch.cat([benign, w]), 3) >= 8

    w_eps, lam_eps = fang_krum_attack(benign, 3, epsilon=1e-3, generator=gen(8))
    assert lam_eps > 0
    spread = torch.linalg.vector_norm(w_eps[1:] - w_eps[0], dim=1)
    assert bool((spread > 0).all()) and bool((spread <= 1e-3).all())
    assert krum_select(torch.cat([benign, w_eps]), 3) >= 8


def test_krum_attack_partial_knowledge_with_fewer_simulated() -> None:
    own = torch.randn(4, 5, generator=gen(9)) + 0.3  # own updates of the 3 attackers (+ 1)
    with pytest.raises(ValueError, match="num_malicious"):
        fang_krum_attack(own, 3)  # k = 4 < c + 2
    w, lam = fang_krum_attack(own, 3, num_simulated=1)
    assert w.shape == (3, 5) and lam > 0
    assert krum_select(torch.cat([w[:1], own]), 1) == 0


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: fang_trim_full(FOUR, 0, gen()), "num_malicious"),
        (lambda: fang_trim_full(FOUR, 2, gen(), b=1.0), "b"),
        (lambda: fang_trim_partial(FOUR[0], 2, gen()), "own"),
        (lambda: krum_scores(LINE5, 3), "f"),
        (lambda: fang_krum_attack(LINE5, 2, threshold=0.0), "threshold"),
        (lambda: fang_krum_attack(LINE5, 2, epsilon=-1.0), "epsilon"),
        (lambda: fang_krum_attack(LINE5, 2, epsilon=1.0), "generator"),
        (lambda: fang_krum_attack(LINE5, 2, num_simulated=3), "num_simulated"),
        (lambda: fang_krum_lambda_bound(LINE5, 4), "num_malicious"),
    ],
)
def test_fang_invalid_parameters(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


# --------------------------------------------------------------------------- Mimic


def test_top_variance_direction_is_the_covariance_top_eigenvector() -> None:
    b = torch.randn(6, 5, generator=gen(11), dtype=torch.float64) * torch.tensor(
        [3.0, 1, 0.5, 0.2, 0.1], dtype=torch.float64
    )
    z = top_variance_direction(b)
    x = b - b.mean(0)
    v = torch.linalg.eigh(x.T @ x).eigenvectors[:, -1]
    assert float(torch.linalg.vector_norm(z)) == pytest.approx(1.0)
    assert abs(float(z @ v)) == pytest.approx(1.0, abs=1e-9)


def test_mimic_picks_the_extreme_point_along_max_variance() -> None:
    axis = torch.tensor([1.0, 1.0]) / 2**0.5
    ortho = torch.tensor([1.0, -1.0]) / 2**0.5
    t = torch.tensor([1.0, 2.0, -0.5, -4.0, 1.5])  # spread along `axis`; index 3 most extreme
    b = t[:, None] * axis + 0.1 * torch.tensor([1.0, -1, 1, -1, 0])[:, None] * ortho
    u, i = mimic_update(b)
    assert i == 3 and torch.equal(u, b[3])
    u[0] = 99.0  # a copy, not a view
    assert float(b[3, 0]) != 99.0
    assert mimic_update(-b)[1] == 3  # the sign convention follows the extreme point
    assert mimic_select(b, axis) == 1  # with the opposite sign of z: the other end


def test_mimic_chooses_the_most_extreme_worker_on_random_updates() -> None:
    """Independent check against the (d, d) covariance: i* maximises |<v, b_i - mu>| for the
    top eigenvector v (whose sign eigh picks arbitrarily, so a missing sign rule fails here)."""
    for seed in range(20):
        b = torch.randn(7, 4, generator=gen(100 + seed), dtype=torch.float64)
        b = b * torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64)
        x = b - b.mean(0)
        v = torch.linalg.eigh(x.T @ x).eigenvectors[:, -1]
        expected = int(torch.argmax((x @ v).abs()))
        assert mimic_update(b)[1] == expected, seed


def test_power_step_and_warmup_by_hand() -> None:
    b = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    z = power_step(b, torch.zeros(2), torch.tensor([1.0, 1.0]))  # (2, 8) normalised
    assert torch.allclose(z, torch.tensor([1.0, 4.0]) / 17**0.5)

    b2 = torch.tensor([[0.0, 3.0], [0.0, -1.0]])
    z2, mu2 = mimic_warmup_step(torch.tensor([0.6, 0.8]), torch.tensor([2.0, 1.0]), 1, b2)
    assert torch.equal(mu2, torch.tensor([1.0, 1.0]))
    step = torch.tensor([1.2, 6.4]) / 42.4**0.5  # power step around mu = (1, 1)
    expected = 0.5 * torch.tensor([0.6, 0.8]) + 0.5 * step
    assert torch.allclose(z2, expected / torch.linalg.vector_norm(expected))


def test_mimic_init_draws_from_the_generator() -> None:
    b = torch.randn(5, 4, generator=gen(12))
    z1, mu1 = mimic_init(b, gen(13))
    z2, _ = mimic_init(b, gen(13))
    assert torch.equal(z1, z2) and torch.allclose(mu1, b.mean(0))
    assert float(torch.linalg.vector_norm(z1)) == pytest.approx(1.0, abs=1e-6)


def test_mimic_invalid_parameters() -> None:
    b = torch.ones(3, 2)
    with pytest.raises(ValueError, match="t must"):
        mimic_warmup_step(torch.ones(2), torch.zeros(2), 0, b)
    with pytest.raises(ValueError, match="z must"):
        mimic_select(b, torch.ones(3))
    with pytest.raises(ValueError, match="benign"):
        mimic_update(torch.ones(3))


# --------------------------------------------------------------------------- label flipping


def test_flip_all_labels() -> None:
    y = torch.tensor([0, 1, 2, 3, 9])
    out = flip_labels(y, 10)
    assert torch.equal(out, torch.tensor([9, 8, 7, 6, 0])) and out.dtype == y.dtype
    assert torch.equal(y, torch.tensor([0, 1, 2, 3, 9]))  # not in place


def test_flip_source_to_target_only() -> None:
    y = torch.tensor([3, 5, 3, 0])
    assert torch.equal(flip_labels(y, 10, source=3, target=8), torch.tensor([8, 5, 8, 0]))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 10, "source": 3}, "source"),
        ({"num_classes": 10, "source": 3, "target": 10}, "target"),
        ({"num_classes": 10, "source": -1, "target": 2}, "source"),
        ({"num_classes": 3}, "y"),
    ],
)
def test_flip_invalid_parameters(kwargs, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        flip_labels(torch.tensor([0, 1, 5]), **kwargs)


def test_flip_rejects_float_labels() -> None:
    with pytest.raises(ValueError, match="y"):
        flip_labels(torch.tensor([0.0, 1.0]), 2)


# --------------------------------------------------------------------------- model replacement


def test_replacement_scale_is_n_over_eta() -> None:
    assert replacement_scale(10, 1.0) == 10.0
    assert replacement_scale(30, 0.5) == 60.0
    u = torch.tensor([1.0, -2.0])
    assert torch.equal(scale_update(u, replacement_scale(4, 2.0)), torch.tensor([2.0, -4.0]))


def test_scale_update_respects_the_norm_bound() -> None:
    u = torch.tensor([3.0, 4.0, 0.0])  # norm 5
    big = scale_update(u, 10.0, norm_bound=7.0)
    assert float(torch.linalg.vector_norm(big)) == pytest.approx(7.0)
    assert torch.allclose(big, u * (7.0 / 5.0))  # same direction
    assert torch.equal(scale_update(u, 1.2, norm_bound=7.0), 1.2 * u)  # 6 <= 7: untouched


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: replacement_scale(0, 1.0), "n"),
        (lambda: replacement_scale(10, 0.0), "eta"),
        (lambda: scale_update(torch.ones(2), 0.0), "gamma"),
        (lambda: scale_update(torch.ones(2), 2.0, norm_bound=-1.0), "norm_bound"),
    ],
)
def test_model_replacement_invalid_parameters(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


# --------------------------------------------------------------------------- Neurotoxin


def test_neurotoxin_mask_excludes_exactly_the_top_k() -> None:
    g = torch.randn(40, generator=gen(14))
    mask = neurotoxin_mask(g, 0.1)  # k = 4
    top = set(torch.argsort(g.abs(), descending=True)[:4].tolist())
    assert set(torch.nonzero(~mask).flatten().tolist()) == top
    assert mask.dtype == torch.bool and int(mask.sum()) == 36


def test_neurotoxin_mask_by_hand_and_shape() -> None:
    g = torch.tensor([[0.1, -5.0], [0.2, 3.0]])
    assert torch.equal(neurotoxin_mask(g, 0.5), torch.tensor([[True, False], [True, False]]))
    assert bool(neurotoxin_mask(g, 0.0).all())


def test_project_keeps_only_the_masked_coordinates() -> None:
    u = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = neurotoxin_mask(torch.tensor([0.0, 9.0, 0.0, -8.0]), 0.5)
    assert torch.equal(project(u, mask), torch.tensor([1.0, 0.0, 3.0, 0.0]))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: neurotoxin_mask(torch.ones(4), 1.0), "ratio"),
        (lambda: neurotoxin_mask(torch.ones(4), -0.1), "ratio"),
        (lambda: project(torch.ones(2), torch.ones(2)), "mask"),
        (lambda: project(torch.ones(2), torch.ones(3, dtype=torch.bool)), "mask"),
    ],
)
def test_neurotoxin_invalid_parameters(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()
