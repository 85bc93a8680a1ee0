"""Server-side evaluation of the global model on the held-out test split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord

from immunefl.data import load_dataset
from immunefl.models import build_model
from immunefl.training import evaluate, resolve_device


class CentralEvaluator:
    """Benign accuracy and loss of a global model on the dataset's full test split."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.dataset = load_dataset(str(config["dataset"]), str(config["data-dir"]))
        self.model = build_model(str(config["model"]), str(config["dataset"]))
        self.device = resolve_device(str(config["device"]))

    def __call__(self, arrays: ArrayRecord) -> dict[str, float]:
        self.model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(self.model, self.dataset, self.dataset.test, self.device)
        return {"benign_acc": acc, "benign_loss": loss}
