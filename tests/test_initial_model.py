"""`initial-model`: round 1 starts from a saved state_dict, checked before anything starts."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from immunefl.experiments import resolve_config
from task.models import build_model, init_model, load_initial_model
from task.schema import ConfigError


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    model = init_model("cnn-fmnist", "fmnist", seed=7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # anything the seeded init would not give
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    return path


def test_a_fitting_state_dict_loads_as_it_was_saved(trained: Path) -> None:
    state = load_initial_model(str(trained), "cnn-fmnist", "fmnist")
    saved = torch.load(trained, weights_only=True)
    assert list(state) == list(build_model("cnn-fmnist", "fmnist").state_dict())
    assert all(torch.equal(state[k], saved[k]) for k in state)


def test_a_relative_path_is_resolved_from_the_callers_directory(trained: Path) -> None:
    here = os.getcwd()
    try:
        os.chdir(trained.parent)
        config = resolve_config(None, {"initial-model": "model.pt"})
    finally:
        os.chdir(here)
    assert config["initial-model"] == str(trained)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: None, "does not exist"),
        (
            lambda p: torch.save(build_model("cnn-cifar", "cifar10").state_dict(), p),
            "does not fit model 'cnn-fmnist'",
        ),
        (
            lambda p: torch.save(
                {**build_model("cnn-fmnist", "fmnist").state_dict(), "extra": torch.zeros(1)}, p
            ),
            "unexpected extra",
        ),
        (
            lambda p: torch.save(
                {
                    k: v.double()
                    for k, v in build_model("cnn-fmnist", "fmnist").state_dict().items()
                },
                p,
            ),
            "torch.float64 where the model has",
        ),
        (lambda p: torch.save([1, 2], p), "is not a state_dict"),
        (lambda p: p.write_bytes(b"not a checkpoint"), "loads as data"),
    ],
)
def test_a_model_that_does_not_fit_is_refused_naming_the_key(tmp_path: Path, make, needle) -> None:
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(ConfigError, match="'initial-model'") as info:
        resolve_config(None, {"initial-model": str(path)})
    assert needle in str(info.value)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/immunefl-initial-model-pwned",))


def test_a_pickle_with_code_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"conv1.weight": Boom()}))
    marker = Path("/tmp/immunefl-initial-model-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="loads as data"):
        resolve_config(None, {"initial-model": str(path)})
    assert not marker.exists()


def test_the_apps_refuse_a_relative_path() -> None:
    from task.runconfig import RunConfig

    with pytest.raises(ConfigError, match="'initial-model' must be an absolute path"):
        RunConfig.defaults(**{"initial-model": "model.pt"})
