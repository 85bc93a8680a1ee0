"""Which partitions are malicious in simulation, from the run config alone.

Used by the ClientApp (a node whose node config sets no ``role``) and by the deploy CLI (which
starts the SuperNodes of a local deployment with their roles).
"""

from __future__ import annotations

from task.runconfig import RunConfig


def malicious_partitions(num_partitions: int, run_config: RunConfig) -> tuple[int, ...]:
    """Partition ids that are malicious in simulation (``num-malicious``, placement).

    >>> cfg = RunConfig.defaults(**{"num-partitions": 10, "num-malicious": 3})
    >>> malicious_partitions(10, cfg)
    (7, 8, 9)
    >>> malicious_partitions(10, cfg.replace(malicious_placement="first"))
    (0, 1, 2)
    """
    m = run_config.num_malicious
    if run_config.malicious_placement == "first":
        return tuple(range(m))
    return tuple(range(num_partitions - m, num_partitions))


def simulated_role(pid: int, num_partitions: int, run_config: RunConfig) -> str:
    """The role of partition `pid` when the node config does not set one."""
    return "malicious" if pid in malicious_partitions(num_partitions, run_config) else "benign"
