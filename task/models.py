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


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
