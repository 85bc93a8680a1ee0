"""The task every app shares: data, partitions, models, training, the run-config schema and its
checks, seeding, message keys and model-state vectors.

Both Flower apps (`client_app`, `server_app`) and the rules and attacks they use (`strategies`,
`attacks`) import from here, following Flower's "task module" convention; this package imports
none of them, nor the host tools (`immunefl`). See docs/architecture.md.

Every package of ours imports this one first, so it checks that its siblings are ours: a
module of yours named like one of them (a ``strategies.py`` in the working directory, say)
would otherwise be imported in their place and fail far from the cause.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

SIBLINGS = ("strategies", "attacks", "server_app", "client_app", "immunefl")
ROOT = Path(__file__).resolve().parent.parent


def shadowed(root: Path = ROOT) -> list[str]:
    """The sibling packages that resolve to something other than the folder beside us."""
    found = []
    for name in SIBLINGS:
        spec = find_spec(name)
        where = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if where is not None and where.parent.parent != root:
            found.append(f"'{name}' resolves to {where}")
    return found


if problems := shadowed():
    raise ImportError(
        "; ".join(problems) + f": it shadows immunefl's package of that name "
        f"(in {ROOT}); rename yours, or run from a directory "
        "that does not hold it (docs/architecture.md)"
    )
