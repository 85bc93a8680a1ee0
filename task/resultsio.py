"""Results files, written so that a crash never leaves half a file, and read back.

Whole files are written to a temporary name, fsynced and renamed (`atomic_write_bytes`,
`atomic_write_json`; NaN and infinities become JSON null). `summary_warnings` says what a
person must know about a finished run from its summary.json. The ServerApp writes with these
(`server_app.results`), and the launcher reads summaries and writes sweep indexes with them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` with every non-finite float as None, recursively (JSON has no NaN/inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null says "not a number" explicitly
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a fsynced temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(jsonable(obj), indent=2) + "\n").encode())


def summary_warnings(summary: dict[str, Any]) -> list[str]:
    """What a person must know about a finished run's results (from its summary.json)."""
    lines = []
    if summary.get("rounds_not_updated"):
        lines.append(
            f"rounds {summary['rounds_not_updated']} did not update the model "
            f"({summary.get('failed_replies_total', 0)} failed, "
            f"{summary.get('rejected_replies_total', 0)} rejected replies in all)"
        )
    if summary.get("attack_not_delivered_rounds"):
        lines.append(
            "attack not delivered in adversarial rounds "
            f"{summary['attack_not_delivered_rounds']}: no malicious update reached aggregation"
        )
    return lines
