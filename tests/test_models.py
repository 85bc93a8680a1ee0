from __future__ import annotations

import pytest
import torch

from task.models import INPUT_SHAPES, build_model, count_parameters, init_model


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _fc(cin: int, cout: int) -> int:
    return cin * cout + cout


@pytest.mark.parametrize(
    ("name", "dataset", "expected"),
    [
        # FL-WBC Table 3, FMNIST: conv 1->16 (5x5), conv 16->32 (5x5), FC 32*7*7 -> 10
        ("cnn-fmnist", "fmnist", _conv(1, 16, 5) + _conv(16, 32, 5) + _fc(32 * 7 * 7, 10)),
        # CIFAR LeNet: conv 3->6, conv 6->16, FC 16*4*4->120->84->10
        (
            "cnn-cifar",
            "cifar10",
            _conv(3, 6, 5) + _conv(6, 16, 5) + _fc(256, 120) + _fc(120, 84) + _fc(84, 10),
        ),
    ],
)
def test_parameter_counts_match_architecture(name: str, dataset: str, expected: int) -> None:
    assert count_parameters(build_model(name, dataset)) == expected


def test_resnet18_size_and_forward_shapes() -> None:
    model = build_model("resnet18", "cifar10")
    assert 11_100_000 < count_parameters(model) < 11_200_000  # ~11.2 M, as in the paper setup
    for name, ds in [
        ("cnn-fmnist", "fmnist"),
        ("cnn-cifar", "cifar10"),
        ("resnet18", "cifar10"),
        ("resnet18", "fmnist"),
    ]:
        out = build_model(name, ds).eval()(torch.zeros(3, *INPUT_SHAPES[ds]))
        assert out.shape == (3, 10)


def test_incompatible_or_unknown_model_is_named() -> None:
    with pytest.raises(ValueError, match="does not fit dataset 'cifar10'"):
        build_model("cnn-fmnist", "cifar10")
    with pytest.raises(ValueError, match="valid: cnn-fmnist, cnn-cifar, resnet18"):
        build_model("vgg", "fmnist")


def test_init_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = init_model("cnn-fmnist", "fmnist", seed=7).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    b = init_model("cnn-fmnist", "fmnist", seed=7).state_dict()
    c = init_model("cnn-fmnist", "fmnist", seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
