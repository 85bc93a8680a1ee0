"""``fltrust``: FLTrust (Cao et al., NDSS 2021) as a strategy, with the server's root data set.

Each round the server computes its own update ``g0`` by training the broadcast global model on
its **root set** with the run's local-training settings (`task.training.train_sgd`:
``local-epochs``, ``batch-size``, ``lr``, ``momentum``; data order from the stream
``fltrust-root`` keyed by (seed, round)), then weighs every client update by
``ReLU(cos(U_i, g0))`` and rescales it to ``||g0||`` (`strategies.fltrust`).

The root set is ``fltrust-root-size`` training examples drawn uniformly with the run seed
(`task.partition.root_indices`); with ``strategy = fltrust`` every client's partition is cut
from the rest of the training set (`task.partition.server_holdout`), so no root example is in
any client's data. `RootTrainer` is that server update; a Flower app of your own passes any
``server_update(global_state, server_round) -> trained_state`` callable instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from strategies.contract import NodeSelector
from strategies.fedavg import Diagnostics, ImmuneFedAvg
from strategies.fltrust import fltrust
from strategies.updates import Layout
from task.params import Param
from task.runconfig import RunConfig

#: ``server_update(global_state, server_round) -> the state after training on the root set``
ServerUpdate = Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]


class RootTrainer:
    """The server's root-set training for a run config (data loaded on first use)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self._root: torch.Tensor | None = None

    def root(self) -> torch.Tensor:
        """Indices of the root examples in the training split."""
        if self._root is None:
            from task.data import load_dataset
            from task.partition import root_indices

            n = len(load_dataset(self.config.dataset, self.config.data_dir).train)
            size = self.config.fltrust_root_size
            self._root = torch.from_numpy(root_indices(n, size, self.config.seed))
        return self._root

    def __call__(self, state: dict[str, torch.Tensor], server_round: int) -> dict[str, Any]:
        from task.data import load_dataset
        from task.models import build_model
        from task.seeding import torch_generator
        from task.training import resolve_device, train_sgd

        c = self.config
        dataset = load_dataset(c.dataset, c.data_dir)
        model = build_model(c.model, c.dataset)
        model.load_state_dict(state)
        train_sgd(
            model, dataset, dataset.train, self.root(), epochs=c.local_epochs,
            batch_size=c.batch_size, lr=c.lr, momentum=c.momentum,
            generator=torch_generator(c.seed, "fltrust-root", server_round),
            device=resolve_device(c.device),
        )  # fmt: skip
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}


class FLTrustStrategy(ImmuneFedAvg):
    """FLTrust: ReLU-cosine trust against the server's root-set update, magnitudes rescaled."""

    PARAMS = (
        Param("fltrust-root-size", "root_size", 100,
              "clean training examples held out from every client as the server's root set",
              low=1),
    )  # fmt: skip

    def __init__(self, select_nodes: NodeSelector | None = None, *, root_size: int = 100,
                 server_update: ServerUpdate | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(root_size=root_size)
        self.server_update = server_update

    @classmethod
    def from_config(cls, config: RunConfig, select_nodes: NodeSelector) -> FLTrustStrategy:
        return cls(select_nodes, server_update=RootTrainer(config), **cls.rule_kwargs(config))

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        if values["root_size"] > 10_000:  # far more than FLTrust's 100-500 and beyond a client
            return [f"'fltrust-root-size' must be in [1, 10000], got {values['root_size']}"]
        return []

    def root_update(self, server_round: int) -> torch.Tensor:
        """``g0 (d,)``: the server's trained root-set model minus the broadcast global model."""
        if self.server_update is None:
            raise ValueError("fltrust has no server_update (the server's root-set training)")
        assert self._global is not None
        layout = Layout.of(self._global)
        trained = self.server_update(self._global.to_torch_state_dict(), server_round)
        flat = torch.empty((2, layout.size), dtype=torch.float32)
        layout.flatten({k: np.asarray(v.cpu().numpy()) for k, v in trained.items()}, flat[0])
        layout.flatten(layout.decode(self._global), flat[1])
        return flat[0] - flat[1]

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        g0 = self.root_update(server_round).to(U.device, U.dtype)
        r = fltrust(U, g0)
        trust = r.trust_scores.tolist()
        return r.aggregate, {
            "n": U.shape[0],
            "fltrust_trust": trust,
            "fltrust_admitted": sum(1 for t in trust if t > 0),
            "fltrust_server_norm": float(torch.linalg.vector_norm(g0)),
            "fltrust_all_rejected": int(r.all_rejected),
        }
