from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from task.data import Dataset, ImageSplit, load_dataset
from task.models import init_model
from task.seeding import derive_seed, torch_generator
from task.training import SGD, evaluate, resolve_device, train_sgd


@pytest.fixture(scope="module")
def fmnist(fmnist_dir: Path) -> Dataset:
    return load_dataset("fmnist", str(fmnist_dir))


def _train(ds: Dataset, seed: int = 0, epochs: int = 1) -> tuple[nn.Module, float]:
    model = init_model("cnn-fmnist", "fmnist", seed=0)
    res = train_sgd(
        model,
        ds,
        ds.train,
        torch.arange(600),
        epochs=epochs,
        batch_size=32,
        lr=0.05,
        momentum=0.0,
        generator=torch_generator(seed, "t"),
        device=torch.device("cpu"),
    )
    assert res.num_examples == 600 and res.steps == 19 * epochs  # ceil(600/32): no drop_last
    return model, res.mean_loss


def test_training_learns_and_is_reproducible(fmnist: Dataset) -> None:
    untrained = init_model("cnn-fmnist", "fmnist", seed=0)
    _, acc0 = evaluate(untrained, fmnist, fmnist.test, torch.device("cpu"), torch.arange(2000))
    a, _ = _train(fmnist, seed=1, epochs=3)
    b, _ = _train(fmnist, seed=1, epochs=3)
    c, _ = _train(fmnist, seed=2, epochs=3)
    _, acc = evaluate(a, fmnist, fmnist.test, torch.device("cpu"), torch.arange(2000))
    assert acc > 0.6 > acc0 + 0.2  # 1800 SGD samples already lift accuracy well above chance
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed -> bit-identical
    assert not torch.equal(sa["fc.weight"], sc["fc.weight"])  # data order follows the seed


def test_evaluate_matches_hand_computation() -> None:
    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # logits favour class 0 for dark images, class 1 for bright ones
            m = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([-m, m, torch.zeros_like(m).expand(-1, 8)], 1)

    images = torch.stack([torch.zeros(1, 28, 28), torch.full((1, 28, 28), 255)]).to(torch.uint8)
    split = ImageSplit(images, torch.tensor([0, 0]))
    ds = Dataset("fmnist", split, split, Path("."))
    loss, acc = evaluate(Fixed(), ds, split, torch.device("cpu"))
    logits = Fixed()(ds.normalize(images))
    expected = nn.functional.cross_entropy(logits, torch.tensor([0, 0])).item()
    assert acc == 0.5 and loss == pytest.approx(expected, rel=1e-6)


def test_empty_partition_is_an_error(fmnist: Dataset) -> None:
    with pytest.raises(ValueError, match="empty partition"):
        train_sgd(
            init_model("cnn-fmnist", "fmnist", 0),
            fmnist,
            fmnist.train,
            torch.arange(0),
            epochs=1,
            batch_size=32,
            lr=0.1,
            momentum=0.0,
            generator=torch.Generator(),
            device=torch.device("cpu"),
        )


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("tpu")


def test_seed_streams_are_independent_and_stable() -> None:
    assert derive_seed(0, "client-sampling", 3) == derive_seed(0, "client-sampling", 3)
    values = {derive_seed(0, s, k) for s in ("a", "b") for k in range(50)}
    assert len(values) == 100
    assert derive_seed(0, "a") != derive_seed(1, "a")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_torch_optim_step_for_step(momentum: float) -> None:
    ours, ref = init_model("cnn-fmnist", "fmnist", 0), init_model("cnn-fmnist", "fmnist", 0)
    ref.fc.weight.requires_grad_(False)  # frozen parameters are left alone by both
    ours.fc.weight.requires_grad_(False)
    opt, ref_opt = (
        SGD(ours.parameters(), 0.05, momentum),
        torch.optim.SGD(
            [p for p in ref.parameters() if p.requires_grad], lr=0.05, momentum=momentum
        ),
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            o.step()
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    start = init_model("cnn-fmnist", "fmnist", 0)
    assert torch.equal(ours.fc.weight, start.fc.weight)  # frozen: untouched
    assert not torch.equal(ours.fc.bias, start.fc.bias)  # trained
