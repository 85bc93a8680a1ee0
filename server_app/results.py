"""Results of a run on disk: ``<results-dir>/<run-name>/``.

- ``config.json``: the full resolved run config (plus run metadata),
- ``rounds.jsonl``: one JSON object per round, appended, flushed and fsynced line by line,
- ``summary.json``: written at the end,
- ``model.pt``: the final global model's ``state_dict``.

Whole files are written to a temporary name, fsynced and renamed, so a crash never leaves a
half-written file; a crash can at most lose the round being written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from task.resultsio import atomic_write_bytes, atomic_write_json, jsonable

if TYPE_CHECKING:
    import torch

# Row keys that are wall-clock measurements: they differ between two runs of the same config
# (everything else in a row is determined by the config and its seed).
TIMING_KEYS = frozenset(
    {"round_seconds", "aggregate_seconds", "client.seconds", "train_phase_seconds", "eval_seconds"}
)


class RunRecorder:
    """Writes one run's results directory."""

    def __init__(self, run_dir: Path, resume_rows: list[dict[str, Any]] | None = None) -> None:
        """Start a run directory, or continue one from a checkpoint's `resume_rows`.

        On resume, ``rounds.jsonl`` is rewritten (atomically) to exactly the checkpointed rows,
        dropping any round that was written after the checkpoint.
        """
        self.run_dir = Path(run_dir)
        self.rounds_path = self.run_dir / "rounds.jsonl"
        if resume_rows is None and self.rounds_path.exists() and self.rounds_path.stat().st_size:
            raise FileExistsError(
                f"{self.run_dir} already holds a run (rounds.jsonl is not empty); "
                "choose another run-name, remove it, or resume it (resume=true)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = [dict(r) for r in resume_rows or []]
        if resume_rows is not None:
            text = "".join(json.dumps(jsonable(r), separators=(",", ":")) + "\n" for r in self.rows)
            atomic_write_bytes(self.rounds_path, text.encode())

    def write_config(self, config: Mapping[str, Any], **meta: Any) -> None:
        atomic_write_json(self.run_dir / "config.json", {**config, "_meta": meta})

    def append_round(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(jsonable(row), separators=(",", ":")) + "\n"
        with open(self.rounds_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.append(dict(row))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.run_dir / "summary.json", summary)

    def save_model(
        self, state_dict: Mapping[str, torch.Tensor], pretrain_holdout: int = 0
    ) -> None:
        """``model.pt``; a model grown from a clean model's pretraining slice (``pretrain-holdout``
        > 0) gets the sidecar that keeps a run from it from handing clients that slice."""
        import torch  # here, not at the top: the launcher imports this module and not torch

        path = self.run_dir / "model.pt"
        if pretrain_holdout > 0:
            sidecar = {"pretrain-holdout": pretrain_holdout}
            atomic_write_json(self.run_dir / "model.pt.json", sidecar)
        tmp = path.with_name(".model.pt.tmp")
        torch.save(dict(state_dict), tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def summarize(rows: list[Mapping[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """Final/best benign accuracy and timing over the recorded rounds."""
    accs = [(r["round"], r["benign_acc"]) for r in rows if r.get("benign_acc") is not None]
    best_round, best_acc = max(accs, key=lambda t: t[1]) if accs else (None, None)
    times = sorted(r["round_seconds"] for r in rows)
    return {
        "rounds_completed": len(rows),
        "final_benign_acc": rows[-1]["benign_acc"] if rows else None,
        "final_benign_loss": rows[-1]["benign_loss"] if rows else None,
        "best_benign_acc": best_acc,
        "best_round": best_round,
        "median_round_seconds": times[len(times) // 2] if times else None,
        "wall_seconds": wall_seconds,
    }
