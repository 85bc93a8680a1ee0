"""Models of the papers (FL-WBC Table 3; Invariant Aggregator §6: ResNet-18).

- ``cnn-fmnist``: 5x5 conv 1->16, 5x5 conv 16->32, FC->10 (FL-WBC Table 3), with ReLU and 2x2
  max-pooling after each conv as in the common FedAvg CNN (28 -> 14 -> 7).
- ``cnn-cifar``: LeNet-style 5x5 conv 3->6, pool, 5x5 conv 6->16, pool, FC 120, 84, 10. Table 3
  lists 3x3 max-pooling; we use 3x3 windows with stride 2 (32 -> 28 -> 13 -> 9 -> 4).
- ``resnet18``: torchvision's ResNet-18 with 10 classes, its stem adapted to small images (3x3
  stride-1 first conv, no initial max-pool), the usual choice for 32x32 inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from task.catalog import MODEL_DATASETS, MODELS

INPUT_SHAPES = {"fmnist": (1, 28, 28), "cifar10": (3, 32, 32)}


class CNNFmnist(nn.Module):
    """FL-WBC Table 3 Fashion-MNIST CNN (28,938 parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class CNNCifar(nn.Module):
    """FL-WBC Table 3 CIFAR-10 LeNet-style CNN."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def resnet18(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """torchvision ResNet-18 with a small-image stem."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_model(name: str, dataset: str, num_classes: int = 10) -> nn.Module:
    """Instantiate model `name` for `dataset`; raises ValueError naming valid combinations."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; valid: {', '.join(MODELS)}")
    if dataset not in MODEL_DATASETS[name]:
        raise ValueError(
            f"model '{name}' does not fit dataset '{dataset}'; "
            f"it accepts: {', '.join(MODEL_DATASETS[name])}"
        )
    if name == "cnn-fmnist":
        return CNNFmnist(num_classes)
    if name == "cnn-cifar":
        return CNNCifar(num_classes)
    return resnet18(INPUT_SHAPES[dataset][0], num_classes)


def init_model(name: str, dataset: str, seed: int) -> nn.Module:
    """`build_model` with weights drawn from a generator seeded by `seed` (reproducible init)."""
    from task.seeding import derive_seed

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(derive_seed(seed, "model-init"))
        return build_model(name, dataset)
    finally:
        torch.random.set_rng_state(state)


def load_initial_model(path: str, name: str, dataset: str) -> dict[str, torch.Tensor]:
    """The ``initial-model`` state_dict at `path`, checked against model `name` for `dataset`.

    Read as data only (``torch.load(weights_only=True)``: tensors and containers, no code).
    Raises ValueError naming the key for a missing or unreadable file, something that is not a
    state_dict, and any missing, extra or differently shaped or typed entry.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"'initial-model' {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - a pickle with code, a damaged file, ...
        raise ValueError(
            f"'initial-model' {path} is not a state_dict this version loads as data "
            f"(torch.load weights_only=True: {type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"'initial-model' {path} is not a state_dict (a mapping of tensors)")
    expected = build_model(name, dataset).state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: {tuple(state[k].shape)} {state[k].dtype} where the model has "
        f"{tuple(v.shape)} {v.dtype}"
        for k, v in expected.items()
        if k in state and (state[k].shape != v.shape or state[k].dtype != v.dtype)
    ]
    if problems:
        raise ValueError(
            f"'initial-model' {path} does not fit model '{name}' for '{dataset}': "
            + "; ".join(problems[:5])
            + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        )
    return {k: state[k] for k in expected}


def initial_model_problems(config) -> list[str]:  # noqa: ANN001 - a task.runconfig.RunConfig
    """The run config's ``initial-model`` problems (none when it is empty)."""
    if not config.initial_model:
        return []
    try:
        load_initial_model(config.initial_model, config.model, config.dataset)
    except ValueError as exc:
        return [str(exc)]
    return pretrain_sidecar_problems(config)


def pretrain_sidecar_problems(config) -> list[str]:  # noqa: ANN001 - a RunConfig
    """A clean model from ``scripts/pretrain.py`` records beside it (``<model>.json``) the
    ``pretrain-holdout`` slice it saw; a run that does not keep that slice out of its
    partitions would hand clients the model's training examples, so it is refused."""
    import json
    from pathlib import Path

    sidecar = Path(f"{config.initial_model}.json")
    if not sidecar.is_file():
        return []
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        return [f"'initial-model' sidecar {sidecar} is unreadable: {type(exc).__name__}: {exc}"]
    if not isinstance(meta, dict) or "pretrain-holdout" not in meta:
        return [
            f"'initial-model' sidecar {sidecar} has no 'pretrain-holdout' (it is what "
            "scripts/pretrain.py and runs with pretrain-holdout write beside a model)"
        ]
    recorded = meta["pretrain-holdout"]
    if type(recorded) is not int or recorded < 0:
        return [
            f"'initial-model' sidecar {sidecar}: 'pretrain-holdout' must be an int >= 0, "
            f"got {recorded!r}"
        ]
    if recorded != config.pretrain_holdout:
        return [
            f"'initial-model' {config.initial_model} was trained on a slice of "
            f"{recorded} training examples ({sidecar}): set 'pretrain-holdout' to {recorded} "
            f"(it is {config.pretrain_holdout}), so that no client's partition holds them"
        ]
    return []


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
