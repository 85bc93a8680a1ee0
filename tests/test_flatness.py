"""The loss-landscape walk of the flatness measurement (Invariant paper App. D.1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from immunefl.flatness import loss_gradient, losses_along, unit
from tests.conftest import load_script


def test_walking_down_the_unit_gradient_of_a_quadratic_follows_the_closed_form() -> None:
    """f(w) = 0.5 ||w - c||^2 has gradient w - c; at w - d * u (u the unit gradient) the loss
    is 0.5 (||w - c|| - d)^2."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    c = torch.randn(1, 3)

    def loss(m: nn.Module) -> list[float]:
        return [0.5 * float(((m.weight - c) ** 2).sum())]

    w = model.weight.detach().clone()
    g = (w - c).reshape(-1)
    r = float(g.norm())
    ds = [0.0, r / 4, r / 2, r]
    got = [v[0] for v in losses_along(model, unit(g), ds, loss)]
    assert got == pytest.approx([0.5 * (r - d) ** 2 for d in ds], abs=1e-6)
    assert torch.equal(model.weight.detach(), w)


def test_loss_gradient_matches_finite_differences() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    g = loss_gradient(model, x, y).double()
    u = unit(torch.randn(g.numel(), dtype=torch.float64))
    eps = 1e-5

    def ce(m: nn.Module) -> list[float]:
        return [float(nn.functional.cross_entropy(m(x), y))]

    minus, plus = (v[0] for v in losses_along(model, u, [eps, -eps], ce))
    assert (plus - minus) / (2 * eps) == pytest.approx(float(g @ u), rel=1e-4)


def test_summary_reports_the_first_distance_each_success_level_is_reached() -> None:
    script = load_script("flatness")
    distances = [0.0, 0.1, 0.2, 0.3]

    def row(benign_loss, acc, edge_asr, pixel_asr):
        return {"benign_loss": benign_loss, "benign_acc": acc, "edge_loss": 1.0,
                "edge_asr": edge_asr, "pixel_loss": 9.0, "pixel_asr": pixel_asr}  # fmt: skip

    curves = [row(0.3, 0.9, 0.4, 0.0), row(0.31, 0.9, 0.6, 0.1), row(0.4, 0.85, 0.95, 0.3),
              row(0.9, 0.6, 1.0, 0.55)]  # fmt: skip
    result = {"curves": {"edge-case": curves, "pixel": curves}}
    s = script.summarize(result, distances)
    assert s["edge-case"]["asr_0.5"]["distance"] == 0.1
    assert s["edge-case"]["asr_0.5"]["benign_loss_rise"] == pytest.approx(0.01)
    assert s["edge-case"]["asr_0.9"]["distance"] == 0.2
    assert s["edge-case"]["asr_0.9"]["benign_acc_drop"] == pytest.approx(0.05)
    assert s["pixel"]["asr_0.5"]["distance"] == 0.3
    assert s["pixel"]["asr_0.9"] is None  # not reached within the walk: said, not invented
