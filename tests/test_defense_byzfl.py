"""Cross-checks of strategies/geomed.py, centered_clipping.py and preaggregators.py against
ByzFL (EPFL's independent implementations; ``pip install byzfl``). Skipped without ByzFL.

ByzFL casts torch inputs to float32, so inputs are float32 and the tolerances are float32
ones: ``atol = 1e-5 * (1 + max |value|)`` unless stated. Random inputs: seeds 0..2,
n in {5, 10, 20}, f in {1, 2, 4}, d = 7 (ties in distances/norms have probability 0).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from strategies.centered_clipping import centered_clipping
from strategies.geomed import geometric_median, geometric_median_result
from strategies.preaggregators import adaptive_clipping, bucketing, nnm, static_clipping

byzfl = pytest.importorskip("byzfl")

SEEDS = (0, 1, 2)
NS = (5, 10, 20)
FS = (1, 2, 4)
D = 7


def sample(seed: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * seed + n)
    U = torch.randn(n, D, generator=g)
    U[: n // 4] *= 10.0  # a few large rows, so that clipping rules have something to do
    return U


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    scale = 1.0 + float(b.abs().max())
    assert float((a - b).abs().max()) <= rel * scale, float((a - b).abs().max())


@pytest.mark.parametrize(("seed", "n"), itertools.product(SEEDS, NS))
def test_geometric_median_matches_byzfl_fixed_iterations(seed, n):
    # ByzFL: T smoothed-Weiszfeld steps from 0 with nu; ours with the same start, tol = 0
    U = sample(seed, n)
    for T in (1, 3, 10):
        theirs = byzfl.GeometricMedian(nu=0.1, T=T)(U.clone())
        ours = geometric_median_result(U, nu=0.1, tol=0.0, max_iter=T, init=torch.zeros(D))
        assert ours.iterations == T
        close(ours.median, theirs)


@pytest.mark.parametrize(("seed", "n"), itertools.product(SEEDS, NS))
def test_geometric_median_converged_matches_byzfl_many_iterations(seed, n):
    # both converge to the same minimiser (ByzFL from 0, ours from the mean)
    U = sample(seed, n)
    theirs = byzfl.GeometricMedian(nu=1e-6, T=3000)(U.clone())
    ours = geometric_median(U.double(), nu=1e-6, tol=1e-15, max_iter=3000)
    close(ours.float(), theirs, rel=1e-4)


@pytest.mark.parametrize(("seed", "n"), itertools.product(SEEDS, NS))
def test_centered_clipping_matches_byzfl(seed, n):
    # ByzFL's CenteredClipping starts from 0 (its m argument cannot be set: a type check
    # rejects every tensor), so the centre here is 0
    U = sample(seed, n)
    for tau, L in ((0.5, 1), (2.0, 3), (100.0, 2)):
        theirs = byzfl.CenteredClipping(L=L, tau=tau)(U.clone())
        close(centered_clipping(U, None, tau, L), theirs)


@pytest.mark.parametrize(("seed", "n", "f"), itertools.product(SEEDS, NS, FS))
def test_nnm_matches_byzfl(seed, n, f):
    U = sample(seed, n)
    close(nnm(U, f), byzfl.NNM(f=f)(U.clone()))


@pytest.mark.parametrize(("seed", "n"), itertools.product(SEEDS, NS))
def test_bucketing_matches_byzfl_same_permutation(seed, n):
    # ByzFL permutes with torch.randperm(n) from the global generator; seeding the global
    # generator and ours with the same seed gives the same permutation
    U = sample(seed, n)
    for s in (1, 2, 3, n):
        torch.manual_seed(seed)
        theirs = byzfl.Bucketing(s=s)(U.clone())
        ours = bucketing(U, s, torch.Generator().manual_seed(seed))
        assert ours.shape == theirs.shape
        close(ours, theirs)


@pytest.mark.parametrize(("seed", "n"), itertools.product(SEEDS, NS))
def test_static_clipping_matches_byzfl(seed, n):
    U = sample(seed, n)
    for c in (0.5, 2.0, 50.0):
        close(static_clipping(U, c), byzfl.Clipping(c=c)(U.clone()))


@pytest.mark.parametrize(("seed", "n", "f"), itertools.product(SEEDS, NS, FS))
def test_arc_matches_byzfl(seed, n, f):
    U = sample(seed, n)
    close(adaptive_clipping(U, f), byzfl.ARC(f=f)(U.clone()))
