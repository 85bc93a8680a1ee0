"""The pure aggregation rules: hand-computed cases, independent references, robustness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from strategies import order_stats
from strategies.cdp import central_dp_aggregate, clip_rows
from strategies.invariant import and_mask, invariant_aggregate, sign_consistency
from strategies.mean import weighted_mean
from strategies.median import coordinate_median
from strategies.rlr import robust_lr_aggregate, robust_lr_sign
from strategies.signsgd import majority_vote
from strategies.trimmed_mean import trim_count, trimmed_mean

T = torch.tensor


# ------------------------------------------------------------------ hand-computed
def test_median_odd_even_ties() -> None:
    U = T([[1.0, 5.0], [3.0, 5.0], [2.0, 1.0]])
    assert coordinate_median(U).tolist() == [2.0, 5.0]
    U4 = T([[1.0, 7.0], [4.0, 7.0], [2.0, 0.0], [10.0, 7.0]])
    assert coordinate_median(U4).tolist() == [3.0, 7.0]  # even n: mean of the two middle


def test_median_0d_and_1d_updates() -> None:
    assert coordinate_median(T([3.0, -1.0, 2.0])).item() == 2.0  # each update is a scalar
    assert coordinate_median(torch.ones(4, 2, 3)).shape == (2, 3)


def test_trimmed_mean_definition_9() -> None:
    U = T([[0.0], [1.0], [2.0], [3.0], [100.0]])
    assert trim_count(5, 0.1) == 1  # ceil(0.5) = 1 (scipy/Flower would floor to 0)
    assert trimmed_mean(U, 0.1).tolist() == [2.0]  # drops 0 and 100
    assert trimmed_mean(U, 0.0).tolist() == [pytest.approx(21.2)]  # beta = 0: plain mean
    assert trim_count(20, 0.1) == 2  # 0.1 * 20 is exactly 2 despite floating point
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        trimmed_mean(U, 0.5)
    with pytest.raises(ValueError, match="leaves no values"):
        trimmed_mean(U[:2], 0.4)


def test_and_mask_all_equal_all_split_and_zeros() -> None:
    U = T(
        [[1.0, 1.0, 0.0, 2.0], [2.0, -1.0, 0.0, 3.0], [3.0, 1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 1.0]]
    )
    c = sign_consistency(U)
    assert c.tolist() == [1.0, 0.0, 0.0, 0.75]  # sign(0) = 0 counts as no vote
    assert and_mask(U, 0.5).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert and_mask(U, 0.75).tolist() == [1.0, 0.0, 0.0, 1.0]  # c = tau is kept (Theorem 10)
    assert and_mask(U, 0.76).tolist() == [1.0, 0.0, 0.0, 0.0]
    out = invariant_aggregate(U, tau=0.5, alpha=0.25)
    # column 0: trim 1 per side of [1,1,2,3] -> mean(1,2) = 1.5; column 3: [0,1,2,3] -> 1.5
    assert out.tolist() == [1.5, 0.0, 0.0, 1.5]
    with pytest.raises(ValueError, match="tau"):
        and_mask(U, 1.0)


def test_signsgd_and_rlr_by_hand() -> None:
    U = T([[1.0, -2.0, 3.0], [2.0, -1.0, -3.0], [0.5, 4.0, 0.0]])
    assert majority_vote(U).tolist() == [1.0, -1.0, 0.0]  # a tie votes 0
    # |sum sign| = [3, 1, 0]; theta = 2 keeps column 0 only
    assert robust_lr_sign(U, 2).tolist() == [1.0, -1.0, -1.0]
    mean = U.mean(0)
    assert robust_lr_aggregate(U, 2).tolist() == pytest.approx(
        [mean[0].item(), -mean[1].item(), -mean[2].item()]
    )


def test_weighted_mean_is_fedavg() -> None:
    U = T([[1.0, 0.0], [3.0, 4.0]])
    assert weighted_mean(U, T([1.0, 3.0])).tolist() == [2.5, 3.0]
    with pytest.raises(ValueError):
        weighted_mean(U, T([1.0, 0.0]))


def test_cdp_clips_and_adds_seeded_laplace_noise() -> None:
    U = T([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    clipped = clip_rows(U, 1.0)
    assert torch.linalg.vector_norm(clipped, dim=1).tolist() == pytest.approx([1.0, 0.5])
    assert central_dp_aggregate(U, 1.0, 0.0, None).tolist() == pytest.approx([0.45, 0.6])
    big = torch.zeros(2, 200_000)
    a = central_dp_aggregate(big, 1.0, 0.5, torch.Generator().manual_seed(3))
    b = central_dp_aggregate(big, 1.0, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert float(a.std()) == pytest.approx(0.5 * 1.0 / 2, rel=0.02)  # z * C / K, K = 2
    # Laplace: E|x| = b = std / sqrt(2); a Gaussian would give std * sqrt(2/pi)
    assert float(a.abs().mean()) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize(("clip", "z", "k"), [(5.0, 0.1, 10), (1.0, 1.0, 20), (5.0, 0.02, 3)])
def test_cdp_noise_std_is_multiplier_times_clip_over_k(clip: float, z: float, k: int) -> None:
    """DP-FedAvg's convention: the mean of K clipped updates has sensitivity C / K."""
    out = central_dp_aggregate(torch.zeros(k, 1_000_000), clip, z, torch.Generator().manual_seed(0))
    assert float(out.std()) == pytest.approx(z * clip / k, rel=0.01)


# ------------------------------------------------------------------ references
@pytest.mark.parametrize("n", [5, 20, 21])
def test_against_numpy_and_scipy(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(order_stats, "BLOCK_ELEMENTS", 64)  # exercise many column blocks
    rng = np.random.default_rng(n)
    U = rng.normal(size=(n, 1000)).astype(np.float32)
    np.testing.assert_allclose(
        coordinate_median(torch.from_numpy(U)).numpy(), np.median(U, axis=0), rtol=1e-6
    )
    for beta in (0.0, 0.2, 0.4):
        if (beta * n) % 1:  # scipy floors beta*n, Definition 9 takes the ceiling
            continue
        np.testing.assert_allclose(
            trimmed_mean(torch.from_numpy(U), beta).numpy(),
            stats.trim_mean(U, beta, axis=0),
            rtol=1e-5,
            atol=1e-6,
        )


def test_against_flower_rules() -> None:
    from flwr.serverapp.strategy.fedtrimmedavg import trim_mean as flwr_trim_mean

    rng = np.random.default_rng(0)
    U = rng.normal(size=(20, 500)).astype(np.float32)
    np.testing.assert_allclose(
        trimmed_mean(torch.from_numpy(U), 0.1).numpy(), flwr_trim_mean(U, 0.1), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------------------ robustness properties
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(5, 25),
    beta=st.sampled_from([0.1, 0.2, 0.3, 0.45]),
    seed=st.integers(0, 10_000),
    outlier=st.sampled_from([1e30, -1e30, 1e6, -3.0]),
)
def test_trimmed_mean_stays_in_benign_range(n: int, beta: float, seed: int, outlier: float) -> None:
    assume(n - 2 * np.ceil(beta * n - 1e-12) >= 1)
    k = trim_count(n, beta)
    f = k  # up to ceil(beta*n) arbitrary outliers per coordinate are trimmed away
    g = torch.Generator().manual_seed(seed)
    benign = torch.randn(n - f, 50, generator=g)
    U = torch.cat([benign, torch.full((f, 50), outlier)])
    out = trimmed_mean(U, beta)
    assert bool((out >= benign.min(0).values - 1e-5).all())
    assert bool((out <= benign.max(0).values + 1e-5).all())


@settings(max_examples=30, deadline=None)
@given(n=st.integers(4, 15), seed=st.integers(0, 10_000))
def test_every_rule_is_permutation_invariant(n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, 64, generator=g)
    perm = torch.randperm(n, generator=g)
    rules = [
        coordinate_median,
        lambda x: trimmed_mean(x, 0.2),
        lambda x: invariant_aggregate(x, 0.3, 0.2),
        majority_vote,
        lambda x: robust_lr_aggregate(x, 2),
        lambda x: weighted_mean(x),
    ]
    for rule in rules:
        torch.testing.assert_close(rule(U), rule(U[perm]), rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 20), tau=st.sampled_from([0.0, 0.2, 0.5, 0.8]), seed=st.integers(0, 999))
def test_invariant_is_zero_exactly_where_agreement_below_tau(n: int, tau: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, 200, generator=g)
    U[:, :20] = U[:, :20].abs() + 0.1  # unanimous columns (trimmed mean is strictly positive)
    out = invariant_aggregate(U, tau, 0.1 if n >= 10 else 0.0)
    low = sign_consistency(U) < tau - 1e-6
    assert bool((out[low] == 0).all())
    assert bool((out[:20] != 0).all())  # full agreement is never masked


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 20, 33])
def test_sorting_network_sorts(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    U = torch.randint(-3, 4, (n, 257), generator=g).float()  # many ties
    rows = order_stats._sorted_rows_cpu(U.clone(), torch.empty(257))
    torch.testing.assert_close(torch.stack(rows), torch.sort(U, dim=0).values)


def _votes(pos: int, neg: int, zero: int = 0) -> torch.Tensor:
    """One coordinate: `pos` clients with +1, `neg` with -1, `zero` with 0 (hand-counted)."""
    return torch.tensor([1.0] * pos + [-1.0] * neg + [0.0] * zero).reshape(-1, 1)


@pytest.mark.parametrize(
    ("pos", "neg", "zero", "tau", "kept"),
    [
        (6, 4, 0, 0.2, True),  # n = 10: c = 2/10 = tau exactly (masked before the fix)
        (4, 6, 0, 0.2, True),  # the same tie the other way round
        (5, 5, 0, 0.2, False),  # one vote fewer: c = 0 < 0.2
        (16, 4, 0, 0.6, True),  # n = 20: c = 12/20 = 0.6 = tau (0.6 * 20 = 12.000000000000002)
        (15, 5, 0, 0.6, False),  # c = 10/20 = 0.5 < 0.6
        (10, 0, 0, 0.8, True),  # c exactly 1
        (10, 0, 0, 0.99, True),
        (5, 5, 0, 0.0, True),  # c exactly 0 with tau = 0: the mask is off
        (0, 0, 10, 0.0, True),  # all zero: c = 0, tau = 0 keeps it (the mean is 0 anyway)
        (0, 0, 10, 0.1, False),  # ... any tau > 0 masks it
        (7, 3, 0, 0.4, True),  # c = 0.4 = tau (0.4 * 10 = 4.000000000000001)
        (3, 1, 1, 0.4, True),  # zeros count in n: c = 2/5 = 0.4
    ],
)
def test_and_mask_keeps_ties_from_hand_counted_votes(pos, neg, zero, tau, kept) -> None:
    U = _votes(pos, neg, zero)
    assert and_mask(U, tau).item() == (1.0 if kept else 0.0)
    out = invariant_aggregate(U, tau, 0.0)
    assert (out.item() != 0.0 or float(U.mean()) == 0.0) if kept else out.item() == 0.0
