"""The pretraining slice (``pretrain-holdout``) and scripts/pretrain.py's clean model (issue 32)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from immunefl.experiments import resolve_config
from task.models import build_model
from task.partition import cached_partitions, pretrain_indices, root_indices
from task.schema import ConfigError
from tests.conftest import load_script


def test_the_pretraining_slice_is_in_no_partition_for_every_seed(fmnist_dir: Path) -> None:
    data = str(fmnist_dir)
    n = 60_000
    slice_ = set(pretrain_indices(n, 6000).tolist())
    assert len(slice_) == 6000
    for seed in (0, 1):
        parts = cached_partitions("fmnist", data, "iid", 50, seed, 0.5, 0, 6000)
        held = np.concatenate([p.numpy() for p in parts])
        assert not slice_ & set(held.tolist())
        assert len(held) == len(set(held.tolist())) == n - 6000  # every other example, once
    # with FLTrust's root set too: both out, nothing else
    parts = cached_partitions("fmnist", data, "dirichlet", 20, 3, 0.5, 100, 6000)
    held = set(np.concatenate([p.numpy() for p in parts]).tolist())
    root = set(root_indices(n, 100, 3).tolist())
    assert not (slice_ | root) & held and len(held) == n - len(slice_ | root)


def test_the_slice_is_one_draw_whatever_the_run_seed() -> None:
    a, b = pretrain_indices(1000, 100), pretrain_indices(1000, 100)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 100
    with pytest.raises(ValueError, match="'pretrain-holdout' 1000 needs 0 < size < 1000"):
        pretrain_indices(1000, 1000)


def test_the_script_trains_on_the_slice_and_records_it(fmnist_dir: Path, tmp_path: Path,
                                                       capsys) -> None:  # fmt: skip
    script = load_script("pretrain")
    out = tmp_path / "clean.pt"
    rc = script.main(["--out", str(out), "--holdout", "600", "--epochs", "1",
                      "--data-dir", str(fmnist_dir)])  # fmt: skip
    assert rc == 0
    report = json.loads(Path(f"{out}.json").read_text())
    assert report["pretrain-holdout"] == 600 and report["steps"] == 10  # 600 / batch 64
    assert report["momentum"] == 0.9 and report["batch-size"] == 64
    shares = report["edge_case_class_share"]
    assert len(shares) == 10 and sum(shares) == pytest.approx(1.0)
    assert 0.1 < report["test_acc"] < 1.0  # trained: better than chance after 10 steps
    printed = capsys.readouterr().out
    assert "| class | share |" in printed and "classes under 2%" in printed
    # the model is an initial-model only with the slice it saw kept out of the partitions
    state = torch.load(out, weights_only=True)
    assert list(state) == list(build_model("cnn-fmnist", "fmnist").state_dict())
    ok = resolve_config(None, {"initial-model": str(out), "pretrain-holdout": 600})
    assert ok["initial-model"] == str(out)
    with pytest.raises(ConfigError, match="set 'pretrain-holdout' to 600 \\(it is 0\\)"):
        resolve_config(None, {"initial-model": str(out)})


def test_the_script_refuses_bad_arguments(tmp_path: Path, capsys) -> None:
    script = load_script("pretrain")
    with pytest.raises(SystemExit):
        script.main(["--out", str(tmp_path / "m.txt"), "--holdout", "10"])
    assert "--out must name a .pt file" in capsys.readouterr().err
    assert script.main(["--out", str(tmp_path / "m.pt"), "--holdout", "0"]) == 2
    assert "'pretrain-holdout' 0 needs 0 < size" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sidecar", "needle"),
    [
        ('{"pretrain-holdout": "600"}', "'pretrain-holdout' must be an int >= 0, got '600'"),
        ('{"pretrain-holdout": true}', "must be an int >= 0, got True"),
        ('{"pretrain-holdout": null}', "must be an int >= 0, got None"),
        ('{"other": 1}', "has no 'pretrain-holdout'"),
        ("not json", "is unreadable: JSONDecodeError"),
    ],
)
def test_a_bad_sidecar_is_refused_naming_what_is_wrong(tmp_path: Path, sidecar, needle) -> None:
    model = tmp_path / "m.pt"
    torch.save(build_model("cnn-fmnist", "fmnist").state_dict(), model)
    Path(f"{model}.json").write_text(sidecar)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        resolve_config(None, {"initial-model": str(model), "pretrain-holdout": 600})


def test_pretrain_holdout_must_leave_the_clients_data() -> None:
    assert resolve_config(None, {"pretrain-holdout": 59_899})["pretrain-holdout"] == 59_899
    for bad in (59_900, 10**9, -1):
        with pytest.raises(ConfigError, match=r"'pretrain-holdout' must be in \[0, 59900\)"):
            resolve_config(None, {"pretrain-holdout": bad})


def test_a_run_from_the_clean_model_passes_the_slice_on(tmp_path: Path) -> None:
    """A model a run grows from the clean one carries the sidecar too (else a run from it
    could hand its clients the slice)."""
    from server_app.results import RunRecorder

    state = build_model("cnn-fmnist", "fmnist").state_dict()
    rec = RunRecorder(tmp_path / "run")
    rec.save_model(state, pretrain_holdout=600)
    assert json.loads((tmp_path / "run" / "model.pt.json").read_text()) == {
        "pretrain-holdout": 600}  # fmt: skip
    with pytest.raises(ConfigError, match="set 'pretrain-holdout' to 600"):
        resolve_config(None, {"initial-model": str(tmp_path / "run" / "model.pt")})
    plain = RunRecorder(tmp_path / "plain")
    plain.save_model(state)
    assert not (tmp_path / "plain" / "model.pt.json").exists()
