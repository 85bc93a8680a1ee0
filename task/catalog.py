"""Names the run config may use for datasets, models, partitionings and client defenses.

A module without heavy imports: the launcher validates a config before anything starts, and it
should not pay for importing torch to do so. `task.data`, `task.models` and
`task.partition`, `client_app.defense` and `client_app.wbc` use these same tuples.
"""

from __future__ import annotations

DATASETS = ("fmnist", "cifar10")
MODELS = ("cnn-fmnist", "cnn-cifar", "resnet18")
PARTITIONINGS = ("iid", "shard", "dirichlet")
CLIENT_DEFENSES = ("none", "wbc", "ldp")
#: FL-WBC's Laplace parameter: s is the std (Algorithm 1's text) or the scale (the authors' code)
WBC_NOISE_PARAMS = ("std", "scale")
#: FL-WBC as Algorithm 1 (``paper``), as the authors' code (``official``), or the latter's noise
#: on every weight entry without its null-space test (``dense``: the control)
WBC_VARIANTS = ("paper", "official", "dense")
#: what the colluders' one shared update trains on: the union of their partitions, or a draw
#: from it of one partition's size (one benign client's SGD steps)
COLLUDE_BUDGETS = ("union", "one-client")
#: training examples of each dataset as published (the bound of ``pretrain-holdout``)
TRAIN_SIZES = {"fmnist": 60_000, "cifar10": 50_000}
#: which dataset each model accepts (resnet18 accepts both)
MODEL_DATASETS = {
    "cnn-fmnist": ("fmnist",),
    "cnn-cifar": ("cifar10",),
    "resnet18": ("fmnist", "cifar10"),
}
