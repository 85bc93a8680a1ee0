"""Names the run config may use for datasets, models and partitionings.

A module without heavy imports: the launcher validates a config before anything starts, and it
should not pay for importing torch to do so. `immunefl.data`, `immunefl.models` and
`immunefl.partition` use these same tuples.
"""

from __future__ import annotations

DATASETS = ("fmnist", "cifar10")
MODELS = ("cnn-fmnist", "cnn-cifar", "resnet18")
PARTITIONINGS = ("iid", "shard", "dirichlet")
#: which dataset each model accepts (resnet18 accepts both)
MODEL_DATASETS = {
    "cnn-fmnist": ("fmnist",),
    "cnn-cifar": ("cifar10",),
    "resnet18": ("fmnist", "cifar10"),
}
