"""Hand-checked cases for the pure math of the robust rules of issue #29 (strategies/geomed.py,
centered_clipping.py, fltrust.py, foolsgold.py, flame.py, dnc.py, norm_bound.py,
preaggregators.py). Each expected value is derived in the comment next to it."""

from __future__ import annotations

import math

import pytest
import torch

from strategies.centered_clipping import centered_clipping
from strategies.dnc import dnc, dnc_result
from strategies.flame import cosine_distances, flame
from strategies.fltrust import fltrust
from strategies.foolsgold import foolsgold_aggregate, foolsgold_weights
from strategies.geomed import geometric_median, geometric_median_result
from strategies.norm_bound import norm_bound
from strategies.preaggregators import (
    adaptive_clipping,
    arc_count,
    bucketing,
    nnm,
    pairwise_sq_distances,
    static_clipping,
)

f64 = torch.float64


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=f64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- geometric median


def test_geomed_collinear_is_middle_point():
    # 0, 1, 3 on a line: the sum of distances is minimised at the middle point 1 (mean 4/3)
    r = geometric_median_result(t([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]), tol=1e-12)
    assert r.converged and r.iterations >= 2
    assert torch.allclose(r.median, t([1.0, 0.0]), atol=1e-4)


def test_geomed_equilateral_triangle_is_centroid_and_optimal():
    # symmetric: the Fermat point of an equilateral triangle is its centroid
    U = t([[0.0, 0.0], [2.0, 0.0], [1.0, math.sqrt(3.0)]])
    m = geometric_median(U, tol=1e-14)
    assert torch.allclose(m, t([1.0, math.sqrt(3.0) / 3]), atol=1e-9)


def test_geomed_first_order_optimality_on_random_points():
    # at the (non-data-point) median, sum_i (m - U_i)/||m - U_i|| = 0
    U = torch.randn(7, 5, generator=gen(1), dtype=f64)
    r = geometric_median_result(U, tol=1e-15, max_iter=10000)
    grad = ((r.median - U) / (r.median - U).norm(dim=1, keepdim=True)).sum(0)
    assert r.converged and grad.norm() < 1e-6
    assert torch.allclose(r.coefficients.sum(), torch.tensor(1.0, dtype=f64))


def test_geomed_weights_duplicate_a_point():
    # weight 2 on a point = that point twice; weights (2,1,1) on 0,1,3 vs points 0,0,1,3:
    # with 4 points 0,0,1,3 the median set is [0, 1]... use a clear case: weight 3 on 0 wins
    U = t([[0.0], [1.0], [3.0]])
    assert abs(float(geometric_median(U, t([3.0, 1.0, 1.0]), tol=1e-12)) - 0.0) < 1e-4
    with pytest.raises(ValueError, match="weights"):
        geometric_median(U, t([-1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="weights"):
        geometric_median(U, t([1.0, 1.0]))


def test_geomed_max_iter_and_convergence_flag():
    U = t([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    r = geometric_median_result(U, tol=0.0, max_iter=2)
    assert r.iterations == 2 and not r.converged
    r0 = geometric_median_result(U, max_iter=0)  # the start: the mean
    assert r0.iterations == 0 and torch.allclose(r0.median, U.mean(0))
    z = geometric_median_result(U, max_iter=0, init=t([7.0, 7.0]))
    assert torch.allclose(z.median, t([7.0, 7.0]))


def test_geomed_objective_never_increases():
    U = torch.randn(6, 3, generator=gen(2), dtype=f64)
    objs = [geometric_median_result(U, tol=0.0, max_iter=k).objective for k in range(8)]
    assert all(b <= a + 1e-12 for a, b in zip(objs, objs[1:], strict=False))
    assert objs[-1] < objs[0]


def test_geomed_edge_cases():
    assert torch.equal(geometric_median(t([[2.0, -1.0]])), t([2.0, -1.0]))  # n = 1
    same = t([[1.0, 2.0]] * 4)  # all identical (distances 0 < nu)
    assert torch.allclose(geometric_median(same), t([1.0, 2.0]))
    assert geometric_median(t([[0.0], [1.0], [5.0]]), tol=1e-12).shape == (1,)  # d = 1
    m32 = geometric_median(torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]))
    assert m32.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"nu": 0.0}, "nu"), ({"tol": -1.0}, "tol"), ({"max_iter": -1}, "max_iter")],
)
def test_geomed_invalid(kwargs, name):
    with pytest.raises(ValueError, match=name):
        geometric_median(t([[0.0], [1.0]]), **kwargs)


# ---------------------------------------------------------------- centered clipping


def test_cc_huge_tau_one_iteration_is_mean():
    # no clipping: v + mean(U - v) = mean(U), from any centre
    U = torch.randn(5, 4, generator=gen(3), dtype=f64)
    out = centered_clipping(U, t([9.0, -9.0, 1.0, 0.0]), tau=1e6, iters=1)
    assert torch.allclose(out, U.mean(0))


def test_cc_hand_example_two_iterations():
    # U = (4, 0), (0, 0); v0 = 0; tau = 1: clip((4,0)) = (1,0), clip(0) = 0 -> v1 = (0.5, 0)
    # v1: U0 - v1 = (3.5, 0) -> (1, 0); U1 - v1 = (-0.5, 0) unclipped -> v2 = 0.5 + 0.25
    U = t([[4.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(centered_clipping(U, None, 1.0, 1), t([0.5, 0.0]))
    assert torch.allclose(centered_clipping(U, None, 1.0, 2), t([0.75, 0.0]))


def test_cc_bounded_step_and_edge_cases():
    U = t([[100.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    # the outlier moves the centre by exactly tau / n
    assert torch.allclose(centered_clipping(U, None, 0.3, 1), t([0.1, 0.0]))
    c = t([1.0, 2.0])
    assert torch.equal(centered_clipping(U, c, 1.0, 0), c)  # 0 iterations: the centre
    one = t([[3.0, 4.0]])  # n = 1: step of length min(5, tau) towards it
    assert torch.allclose(centered_clipping(one, None, 1.0, 1), t([0.6, 0.8]))
    assert torch.allclose(centered_clipping(t([[0.0]] * 3), None, 1.0, 3), t([0.0]))


@pytest.mark.parametrize(("tau", "iters", "name"), [(0.0, 1, "tau"), (1.0, -1, "iters")])
def test_cc_invalid(tau, iters, name):
    with pytest.raises(ValueError, match=name):
        centered_clipping(t([[0.0], [1.0]]), None, tau, iters)
    with pytest.raises(ValueError, match="center"):
        centered_clipping(t([[0.0], [1.0]]), t([0.0, 0.0]), 1.0, 1)


# ---------------------------------------------------------------- FLTrust


def test_fltrust_opposite_update_gets_zero_trust():
    U = t([[1.0, 1.0], [-2.0, -2.0]])
    agg, ts, none = fltrust(U, t([1.0, 1.0]))
    assert torch.allclose(ts, t([1.0, 0.0])) and not none
    assert torch.allclose(agg, t([1.0, 1.0]))  # only client 0, already at ||g0||


def test_fltrust_magnitude_normalised_to_server_norm():
    # one client in g0's direction but 1000x larger: rescaled to ||g0|| = 2
    agg, ts, _ = fltrust(t([[0.0, 1000.0]]), t([0.0, 2.0]))
    assert torch.allclose(agg, t([0.0, 2.0])) and ts.tolist() == [1.0]


def test_fltrust_weighted_by_trust():
    # g0 = (1,0); U0 = (1,0) cos 1; U1 = (0,1) cos 0; U2 = (1,1) cos 1/sqrt2 -> (1,1)/sqrt2
    # agg = (1*(1,0) + 0.7071*(0.7071,0.7071)) / 1.7071 = (1.5, 0.5)/1.7071
    agg, ts, _ = fltrust(t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), t([1.0, 0.0]))
    assert torch.allclose(ts, t([1.0, 0.0, 1 / math.sqrt(2)]))
    assert torch.allclose(agg, t([1.5, 0.5]) / (1 + 1 / math.sqrt(2)))


def test_fltrust_all_rejected_and_zero_vectors():
    agg, ts, none = fltrust(t([[-1.0, 0.0], [0.0, 0.0]]), t([1.0, 0.0]))
    assert none and ts.tolist() == [0.0, 0.0] and torch.equal(agg, t([0.0, 0.0]))
    agg, _, none = fltrust(t([[1.0, 0.0]]), t([0.0, 0.0]))  # zero server update
    assert none and torch.equal(agg, t([0.0, 0.0]))
    with pytest.raises(ValueError, match="server_update"):
        fltrust(t([[1.0, 0.0]]), t([1.0]))


# ---------------------------------------------------------------- FoolsGold


def test_foolsgold_sybils_zero_honest_one():
    H = t([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    assert foolsgold_weights(H).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_foolsgold_partial_similarity_hand_value():
    # H0 = (1, 0), H1 = (0.6, 0.8): cos 0.6, v = (0.6, 0.6), no pardoning; alpha = 0.4 each;
    # normalised 1 -> 0.99 -> logit 4.595 + 0.5 > 1 -> 1 for both
    assert foolsgold_weights(t([[1.0, 0.0], [0.6, 0.8]])).tolist() == [1.0, 1.0]
    # three clients: H2 orthogonal; alpha = (0.4, 0.4, 1) -> /1 -> (0.4, 0.4, 0.99)
    # logit(0.4) + 0.5 = ln(2/3) + 0.5 = 0.0945 ; kappa = 1
    w = foolsgold_weights(t([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]))
    assert torch.allclose(w, t([math.log(2 / 3) + 0.5] * 2 + [1.0]))
    # kappa = 2 doubles the logit
    w2 = foolsgold_weights(t([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]), kappa=2.0)
    assert torch.allclose(w2[:2], t([2 * (math.log(2 / 3) + 0.5)] * 2))


def test_foolsgold_pardoning():
    # H0,H1 identical (cos 1, v=1); H2 has cos 0.6 with both (v2 = 0.6 < 1). Pardoning of
    # row 2: cs_2j *= v2 / vj = 0.6 -> 0.36; alpha2 = 0.64 -> max -> 0.99 -> 1; sybils 0
    s = 0.6
    H = t([[1.0, 0.0], [1.0, 0.0], [s, 0.8]])
    assert foolsgold_weights(H).tolist() == [0.0, 0.0, 1.0]


def test_foolsgold_all_alike_and_aggregate_modes():
    H = t([[1.0, 2.0]] * 3)
    w = foolsgold_weights(H)
    assert w.tolist() == [0.0, 0.0, 0.0]
    r = foolsgold_aggregate(H, H)
    assert r.all_zero and torch.equal(r.aggregate, t([0.0, 0.0]))
    H = t([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # zero history: cos 0 -> weight 1
    U = t([[5.0, 5.0], [5.0, 5.0], [0.0, 2.0], [4.0, 0.0]])
    assert foolsgold_weights(H).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert torch.allclose(foolsgold_aggregate(U, H).aggregate, t([2.0, 1.0]))
    assert torch.allclose(foolsgold_aggregate(U, H, normalize="clients").aggregate, t([1.0, 0.5]))
    assert torch.allclose(foolsgold_aggregate(U, H, normalize="none").aggregate, t([4.0, 2.0]))
    assert foolsgold_weights(t([[3.0, 1.0]])).tolist() == [1.0]  # n = 1


def test_foolsgold_invalid():
    with pytest.raises(ValueError, match="kappa"):
        foolsgold_weights(t([[1.0]]), kappa=0.0)
    with pytest.raises(ValueError, match="normalize"):
        foolsgold_aggregate(t([[1.0]]), t([[1.0]]), normalize="bad")


# ---------------------------------------------------------------- FLAME


def test_flame_rejects_far_cluster():
    # 6 honest updates along (1, 0) (cosine distance 0 among them, norms 1..6), 3 attackers
    # around (-1, 5): cosine distance ~1.2 to the honest ones, and 3 < min_cluster_size = 5
    honest = t([[float(k), 0.0] for k in range(1, 7)])
    bad = t([[-1.0, 5.0], [-1.1, 5.0], [-1.0, 5.2]])
    U = torch.cat([honest, bad])
    r = flame(U, noise_lambda=0.0)
    assert r.admitted.tolist() == [True] * 6 + [False] * 3 and r.clustered
    norms = U.norm(dim=1)
    assert r.clip_bound == pytest.approx(float(norms.median()))  # odd n: the middle norm
    S = r.clip_bound
    expect = (honest * torch.clamp(S / honest.norm(dim=1), max=1.0)[:, None]).mean(0)
    assert torch.allclose(r.aggregate, expect)


def test_flame_noise_std_and_determinism():
    U = torch.randn(5, 20000, generator=gen(4), dtype=f64) + 3.0  # one cluster
    a = flame(U, noise_lambda=0.01, generator=gen(7))
    b = flame(U, noise_lambda=0.01, generator=gen(7))
    clean = flame(U, noise_lambda=0.0)
    assert torch.equal(a.aggregate, b.aggregate)
    std = float((a.aggregate - clean.aggregate).std())
    assert std == pytest.approx(0.01 * a.clip_bound, rel=0.05)


def test_flame_edge_cases():
    r = flame(t([[3.0, 4.0]]), noise_lambda=0.0)  # n = 1: admitted, S = its norm
    assert r.admitted.tolist() == [True] and r.clip_bound == 5.0
    assert torch.allclose(r.aggregate, t([3.0, 4.0]))
    D = cosine_distances(t([[0.0, 0.0], [1.0, 0.0]]))  # zero vector: cosine 0
    assert D.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="noise_lambda"):
        flame(t([[1.0]]), noise_lambda=-1.0)
    with pytest.raises(ValueError, match="features"):
        flame(t([[1.0], [2.0]]), features=t([[1.0]]))


# ---------------------------------------------------------------- DnC


def test_dnc_removes_obvious_outlier():
    U = torch.randn(9, 50, generator=gen(5), dtype=f64) * 0.1
    U[4] += 10.0
    r = dnc_result(U, 1, b=20, niters=3, c=1.0, generator=gen(0))
    assert r.good.tolist() == [True] * 4 + [False] + [True] * 4
    assert torch.allclose(r.aggregate, U[r.good].mean(0))


def test_dnc_f0_is_mean_and_deterministic():
    U = torch.randn(6, 30, generator=gen(6), dtype=f64)
    assert torch.allclose(dnc(U, 0, b=10, niters=2, c=1.0, generator=gen(1)), U.mean(0))
    a = dnc_result(U, 2, b=5, niters=2, c=1.0, generator=gen(3))
    b = dnc_result(U, 2, b=5, niters=2, c=1.0, generator=gen(3))
    assert torch.equal(a.good, b.good) and int(a.good.sum()) <= 4


def test_dnc_edge_cases_and_invalid():
    # d = 1, b > d: all coordinates; the largest |deviation| goes
    U = t([[0.0], [1.0], [-1.0], [9.0]])
    assert torch.allclose(dnc(U, 1, b=10, niters=1, c=1.0, generator=None), t([0.0]))
    for kw, name in [
        ({"f": 4}, "f"),
        ({"b": 0}, "b"),
        ({"niters": 0}, "niters"),
        ({"c": -1.0}, "c"),
        ({"f": 2, "c": 2.0}, "c"),
    ]:
        args = {"f": 1, "b": 1, "niters": 1, "c": 1.0} | kw
        with pytest.raises(ValueError, match=name):
            dnc(U, args.pop("f"), generator=None, **args)


# ---------------------------------------------------------------- norm bounding


def test_norm_bound_hand_values_and_noise():
    U = t([[3.0, 4.0], [0.0, 0.5], [0.0, 0.0]])
    # (3,4) -> (0.6, 0.8); others unchanged; mean = (0.2, 1.3/3)
    assert torch.allclose(norm_bound(U, 1.0), t([0.2, 1.3 / 3]))
    assert torch.allclose(norm_bound(U, 100.0), U.mean(0))
    a = norm_bound(U, 1.0, noise_std=0.5, generator=gen(2))
    noise = torch.randn(2, generator=gen(2), dtype=f64)
    assert torch.allclose(a, t([0.2, 1.3 / 3]) + 0.5 * noise)
    assert torch.allclose(norm_bound(U, 1.0, weights=t([0.0, 1.0, 0.0])), t([0.0, 0.5]))
    for kw, name in [({"bound": 0.0}, "bound"), ({"noise_std": -1.0}, "noise_std")]:
        with pytest.raises(ValueError, match=name):
            norm_bound(U, **({"bound": 1.0} | kw))
    with pytest.raises(ValueError, match="weights"):
        norm_bound(U, 1.0, weights=t([0.0, 0.0, 0.0]))


# ---------------------------------------------------------------- pre-aggregators


def test_bucketing_s1_is_permutation_and_sizes():
    U = torch.randn(7, 3, generator=gen(8), dtype=f64)
    out = bucketing(U, 1, gen(9))
    perm = torch.randperm(7, generator=gen(9))
    assert torch.equal(out, U[perm])
    out3 = bucketing(U, 3, gen(9))  # buckets of 3, 3, 1
    assert out3.shape == (3, 3)
    assert torch.allclose(out3[0], U[perm[:3]].mean(0))
    assert torch.allclose(out3[2], U[perm[6]])
    assert torch.allclose(bucketing(U, 10, gen(0)), U.mean(0, keepdim=True))
    with pytest.raises(ValueError, match="s"):
        bucketing(U, 0, gen(0))


def test_nnm_hand_values():
    U = t([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0]])
    # f = 0: every row the mean
    assert torch.allclose(nnm(U, 0), U.mean(0).expand(4, 2))
    # f = 2: each row + its nearest other: 0<->1 (1), 1->0, 2->0 (2), 3->2 (sqrt 164 < sqrt 181)
    expect = t([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0], [5.0, 6.0]])
    assert torch.allclose(nnm(U, 2), expect)
    assert torch.equal(nnm(U, 3), U)  # n - f = 1: itself
    dup = t([[1.0], [1.0], [1.0]])  # ties at distance 0: still the mean of identical rows
    assert torch.equal(nnm(dup, 1), dup)
    D = pairwise_sq_distances(U)
    assert D[0, 3] == 200.0 and D[3, 2] == 164.0
    with pytest.raises(ValueError, match="f"):
        nnm(U, 4)


def test_static_clipping():
    out = static_clipping(t([[6.0, 8.0], [0.0, 1.0], [0.0, 0.0]]), 2.0)
    assert torch.allclose(out, t([[1.2, 1.6], [0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="c"):
        static_clipping(t([[1.0]]), 0.0)


def test_adaptive_clipping():
    U = t([[1.0], [-2.0], [3.0], [-4.0], [50.0]])
    assert torch.equal(adaptive_clipping(U, 0), U)  # k = 0: nothing clipped
    # n = 5, f = 2: k = floor(2 * 2/5 * 3) = 2; third-largest norm = 3
    assert arc_count(5, 2) == 2
    assert torch.allclose(adaptive_clipping(U, 2), t([[1.0], [-2.0], [3.0], [-3.0], [3.0]]))
    ties = t([[2.0], [-2.0], [2.0], [1.0]])  # n = 4, f = 1: k = 1; threshold 2: unchanged
    assert torch.equal(adaptive_clipping(ties, 1), ties)
    assert torch.equal(adaptive_clipping(t([[7.0]]), 0), t([[7.0]]))  # n = 1
    with pytest.raises(ValueError, match="f"):
        adaptive_clipping(U, 5)


def test_float32_inputs_keep_dtype():
    U = torch.randn(5, 8, generator=gen(11))
    gens = gen(0)
    outs = [
        geometric_median(U),
        centered_clipping(U, None, 1.0, 2),
        fltrust(U, U[0]).aggregate,
        foolsgold_aggregate(U, U).aggregate,
        flame(U, generator=gens).aggregate,
        dnc(U, 1, b=4, niters=1, c=1.0, generator=gens),
        norm_bound(U, 1.0),
        bucketing(U, 2, gens),
        nnm(U, 1),
        static_clipping(U, 1.0),
        adaptive_clipping(U, 1),
    ]
    assert all(o.dtype == torch.float32 for o in outs)
