"""A node's identity and data, read from its node config and the run config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from attacks import ROLES
from task.allocator import configure_allocator
from task.data import Dataset, load_dataset
from task.partition import config_partitions
from task.roles import simulated_role
from task.runconfig import RunConfig


@dataclass(frozen=True)
class NodeIdentity:
    """Who this node is: its partition of the training set and its role."""

    partition_id: int
    num_partitions: int
    role: str

    @classmethod
    def from_configs(cls, node_config: Mapping[str, Any], run_config: RunConfig) -> NodeIdentity:
        """Validate the node config against the run config (clear errors for bad deploys)."""
        missing = [k for k in ("partition-id", "num-partitions") if k not in node_config]
        if missing:
            raise ValueError(
                f"node config lacks {', '.join(missing)}; start the SuperNode with "
                '--node-config "partition-id=<i> num-partitions=<n>"'
            )
        pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])
        if n != run_config.num_partitions:
            raise ValueError(
                f"node config num-partitions={n} differs from run config "
                f"num-partitions={run_config.num_partitions} (in simulation, set "
                "num-supernodes equal to num-partitions)"
            )
        if not 0 <= pid < n:
            raise ValueError(f"node config partition-id={pid} is outside [0, {n})")
        role = str(node_config.get("role", "")) or simulated_role(pid, n, run_config)
        if role not in ROLES:
            raise ValueError(f"node config role='{role}'; valid: {', '.join(ROLES)}")
        return cls(pid, n, role)


def all_partitions(run_config: RunConfig, num_partitions: int) -> tuple[torch.Tensor, ...]:
    """Every partition's training indices (cached per process); the server's root examples
    (`task.partition.server_holdout`) and the pretraining slice are in none of them."""
    return config_partitions(run_config, num_partitions)


def node_data(identity: NodeIdentity, run_config: RunConfig) -> tuple[Dataset, torch.Tensor]:
    """The dataset (cached per process) and this node's training indices."""
    dataset = load_dataset(run_config.dataset, run_config.data_dir)
    return dataset, all_partitions(run_config, identity.num_partitions)[identity.partition_id]


def prepare_process() -> None:
    """Per call, not at import (the ServerApp's process imports this module too): one intra-op
    thread per actor by default, as many actors share a machine's cores
    (``IMMUNEFL_TORCH_THREADS`` overrides, e.g. when each client is given several CPUs); and
    glibc's allocator keeps large buffers (`task.allocator`).
    """
    configure_allocator()
    torch.set_num_threads(max(1, int(os.environ.get("IMMUNEFL_TORCH_THREADS", "1"))))
