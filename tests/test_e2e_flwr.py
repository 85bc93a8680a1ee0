"""End-to-end: real `flwr run` on the simulation engine through the `immunefl run` launcher."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from task.schema import PROJECT_ROOT
from tests.conftest import processes_of_flwr_home

pytestmark = pytest.mark.slow


def _processes_of(home: Path) -> list[str]:
    """Command lines of the live processes of the launcher whose FLWR_HOME is `home`."""
    return list(processes_of_flwr_home(home).values())


RAY_POINTER = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"


def _ray_traces() -> tuple[str | None, set[Path]]:
    """What a local Ray head could leave behind: the address a plain `ray.init()` connects to,
    and our heads' private session directories."""
    pointer = RAY_POINTER.read_text() if RAY_POINTER.exists() else None
    return pointer, set(Path(tempfile.gettempdir()).glob("immunefl-ray-*"))


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flwr_home = tmp_path / "flwr-home"
    before = _ray_traces()
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "run", *args, "--flwr-home", str(flwr_home)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=PROJECT_ROOT,
    )
    leftovers = _processes_of(flwr_home)
    assert not leftovers, f"processes left running after the launcher exited: {leftovers}"
    # each launcher ran one Ray head beside its SuperLink and left nothing that redirects Ray
    logs = flwr_home / "superlink"
    assert len(list(logs.glob("ray-*.log"))) == len(list(logs.glob("superlink-*.log"))) >= 1
    pointer, _ = _ray_traces()
    assert pointer == before[0]  # nothing redirects a plain `ray.init()`
    # this launcher's Ray session files are gone (other launchers may run beside it)
    mine = [Path(p.read_text()) for p in logs.glob("ray-*.dir")]
    assert mine and not [d for d in mine if d.exists()], mine
    return out


SMOKE = str(PROJECT_ROOT / "configs" / "smoke.yaml")


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory: pytest.TempPathFactory, fmnist_dir: Path):
    tmp = tmp_path_factory.mktemp("fedavg")
    out = _launch(
        tmp,
        SMOKE,
        "--set",
        f"results-dir={tmp / 'results'}",
        "--set",
        "run-name=e2e",
        "--set",
        f"data-dir={fmnist_dir}",
    )
    return out, tmp / "results" / "e2e"


def test_flwr_run_simulation_end_to_end(fedavg_run) -> None:
    out, run_dir = fedavg_run
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(run_dir)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(len(r["sampled"]) == 5 == r["num_replies"] and r["failed_replies"] == 0
               for r in rows)  # fmt: skip
    assert all(set(r["sampled"]) <= set(range(10)) for r in rows)
    assert rows[-1]["benign_acc"] > 0.5  # chance is 0.1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num-partitions"] == 10 and config["clients-per-round"] == 5
    assert (run_dir / "model.pt").stat().st_size > 100_000
    assert "[immunefl] round 3/3" in out.stdout
    assert f"immunefl: figure (accuracy): {run_dir / 'e2e-accuracy.png'}" in out.stdout
    assert (run_dir / "e2e-accuracy.png").stat().st_size > 1000
    assert out.stdout.count("round 3/3") == 1  # one line per round (not Flower's as well)


def test_a_run_starts_from_initial_model(fedavg_run, tmp_path: Path, fmnist_dir: Path) -> None:
    _, first = fedavg_run
    trained = _rows(first)[-1]["benign_acc"]
    out = _launch(tmp_path, SMOKE, "--set", f"results-dir={tmp_path / 'r'}", "--set",
                  "run-name=warm", "--set", f"data-dir={fmnist_dir}", "--set",
                  f"initial-model={first / 'model.pt'}", "--set", "num-server-rounds=1",
                  "--set", "seed=5")  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "round 1 starts from initial-model" in out.stdout
    # one more round from a model at `trained` lands near it; from a fresh init it would not
    assert _rows(tmp_path / "r" / "warm")[0]["benign_acc"] > trained - 0.1 > 0.4


def test_garbage_nodes_rejected_robust_rule_and_wbc_run_on(
    fedavg_run, tmp_path: Path, fmnist_dir: Path
) -> None:
    faults = {1: "nan", 2: "shape", 3: "huge", 4: "crash"}
    out = _launch(
        tmp_path,
        SMOKE,
        "--set",
        f"results-dir={tmp_path / 'results'}",
        "--set",
        "run-name=bad",
        "--set",
        f"data-dir={fmnist_dir}",
        "--set",
        "strategy=trimmed-mean",
        "--set",
        "trim-beta=0.2",
        "--set",
        "client-defense=wbc",
        "--set",
        "max-update-norm=1000",
        "--set",
        "inject-faults=" + ",".join(f"{p}:{k}" for p, k in faults.items()),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(tmp_path / "results" / "bad")
    baseline = _rows(fedavg_run[1])
    # the client defense and the rule change nothing about who is sampled
    assert [r["sampled"] for r in rows] == [r["sampled"] for r in baseline]
    for r in rows:
        sampled = set(r["sampled"])
        rejected = len(sampled & {1, 2, 3})
        crashed = len(sampled & {4})
        assert r["rejected_replies"] == rejected, r
        assert r["failed_replies"] == crashed, r
        assert r["aggregated_replies"] == 5 - rejected - crashed, r
        assert r["client.wbc_perturbed_fraction"] > 0
    assert rows[-1]["benign_acc"] > 0.5
    assert "rejected reply from node" in out.stdout


def test_unwritable_results_dir_is_refused_before_anything_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("results-dir cannot live under a regular file")
    flwr_home = tmp_path / "flwr-home"
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "run", SMOKE, "--quiet", "--flwr-home",
         str(flwr_home), "--set", f"results-dir={blocker / 'results'}"],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "results-dir: cannot write results to" in out.stderr and "a-file" in out.stderr
    assert not (flwr_home / "superlink").exists()  # nothing was started


def test_a_node_bug_stops_the_simulation_with_its_traceback(
    tmp_path: Path, fmnist_dir: Path
) -> None:
    out = _launch(
        tmp_path, SMOKE, "--set", f"results-dir={tmp_path / 'r'}", "--set", "run-name=bug",
        "--set", f"data-dir={fmnist_dir}", "--set", "inject-faults=0:bug,1:bug,2:bug",
        "--quiet",
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "r" / "bug" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "ClientFailure" in summary["error"] and "ZeroDivisionError" in summary["error"]
    assert 'faults.py", line' in summary["error"]  # where the node failed
    assert "\x1b[" not in summary["error"]  # no terminal colour codes in the results
    assert "ZeroDivisionError" in out.stderr and 'faults.py", line' in out.stderr  # shown
    assert summary["rounds_completed"] == 0  # it stopped in round 1, before any row


def test_nothing_learned_is_a_failure_not_a_completed_run(tmp_path: Path, fmnist_dir: Path):
    out = _launch(
        tmp_path, SMOKE, "--set", f"results-dir={tmp_path / 'r'}", "--set", "run-name=dead",
        "--set", f"data-dir={fmnist_dir}", "--set", "fail-prob=1.0",
        "--set", "num-server-rounds=2", "--quiet",
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "r" / "dead" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["rounds_not_updated"] == [1, 2]
    assert summary["failed_replies_total"] == 10
    rows = _rows(tmp_path / "r" / "dead")
    assert all(r["failed_benign"] == 5 and not r["model_updated"] for r in rows)


def test_lying_clients_neither_dominate_freeze_overwrite_nor_crash(
    tmp_path: Path, fmnist_dir: Path
) -> None:
    faults = {5: "weight", 6: "metrics", 7: "records", 8: "bytes"}
    out = _launch(
        tmp_path, SMOKE, "--set", f"results-dir={tmp_path / 'r'}", "--set", "run-name=liars",
        "--set", f"data-dir={fmnist_dir}", "--set", "federated-eval=true",
        "--set", "metrics-port=0",
        "--set", "inject-faults=" + ",".join(f"{p}:{k}" for p, k in faults.items()), "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(tmp_path / "r" / "liars")
    assert [r["round"] for r in rows] == [1, 2, 3]  # never overwritten by a client
    assert any(set(r["sampled"]) & set(faults) for r in rows)  # the liars took part
    for r in rows:
        sampled = set(r["sampled"])
        assert r["model_updated"] and r["aggregate_rejected"] == 0, r  # never frozen
        assert r["rejected_replies"] == len(sampled & {7, 8}) == r["rejected_benign"], r
        assert r["weight_capped"] == len(sampled & {5}), r
        assert r["adversarial"] is False and r["failed_replies"] == 0, r
        if 6 in sampled:
            assert r["client.round"] == 1.0 and r["client.rejected_replies"] == -100.0
        assert r["client_eval.acc"] > 0 and r["eval_rejected"] == 0, r
    assert rows[-1]["benign_acc"] > 0.5  # not dominated by the 1e39 claim
    summary = json.loads((tmp_path / "r" / "liars" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rejected_replies_total"] == sum(r["rejected_replies"] for r in rows) > 0


def test_sweep_runs_every_point_on_one_superlink(tmp_path: Path, fmnist_dir: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(  # `run` of a file with a list value runs the sweep; the preset shrinks it
        "num-partitions: 10\nclients-per-round: 3\nnum-server-rounds: 50\n"
        "client-defense: wbc\nwbc-s: [0.0, 0.4, 0.8]\n"
        "presets:\n  cpu: {num-server-rounds: 1, wbc-s: [0.0, 0.4]}\n"
    )
    flwr_home = tmp_path / "flwr-home"
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "run", str(sweep), "--preset", "cpu",
         "--flwr-home", str(flwr_home), "--set", f"results-dir={tmp_path / 'res'}",
         "--set", "run-name=sw", "--set", f"data-dir={fmnist_dir}"],
        capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not _processes_of(flwr_home)
    assert out.stdout.count("Using SuperLink") == 1  # one Flower run for both points ...
    assert len(list((flwr_home / "superlink").glob("superlink-*.log"))) == 1  # ... one SuperLink
    assert len(list((flwr_home / "superlink").glob("ray-*.log"))) == 1  # ... one Ray cluster
    result = json.loads((tmp_path / "res" / "sw" / "sweep.json").read_text())
    assert [p["point"] for p in result["points"]] == [{"wbc-s": 0.0}, {"wbc-s": 0.4}]
    assert all(p["ok"] and p["summary"]["rounds_completed"] == 1 for p in result["points"])
    rows = [_rows(tmp_path / "res" / "sw" / name)[0] for name in ("wbc-s=0.0", "wbc-s=0.4")]
    assert rows[0]["sampled"] == rows[1]["sampled"]
    assert rows[0]["client.wbc_perturbed_fraction"] == 0 < rows[1]["client.wbc_perturbed_fraction"]
    rep = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "report", str(tmp_path / "res" / "sw")],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "res" / "sw" / "sw-accuracy.png").exists()
    assert "| FedAvg (FL-WBC s=0: no noise) | iid | 1 |" in rep.stdout
    assert "| FL-WBC s=0.4 | iid | 1 |" in rep.stdout


def test_parallel_sweep_runs_points_at_once_on_separate_superlinks(
    tmp_path: Path, fmnist_dir: Path
) -> None:
    sweep = tmp_path / "par.yaml"
    sweep.write_text("num-partitions: 10\nclients-per-round: 2\nnum-server-rounds: 1\n"
                     "seed: [0, 1]\n")  # fmt: skip
    flwr_home = tmp_path / "flwr-home"
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "sweep", str(sweep), "--parallel", "2",
         "--flwr-home", str(flwr_home), "--set", f"results-dir={tmp_path / 'res'}",
         "--set", "run-name=par", "--set", f"data-dir={fmnist_dir}", "--quiet"],
        capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not _processes_of(flwr_home)
    assert len(list((flwr_home / "superlink").glob("superlink-*.log"))) == 2
    assert len(list((flwr_home / "superlink").glob("ray-*.log"))) == 2  # a Ray cluster each
    # ... and a FLWR_HOME each, where its runs install the app (sharing one, a run imported the
    # app while the other SuperLink's run was still copying it); both removed at the end
    assert not (flwr_home / "apps").exists()
    assert not list((flwr_home / "superlink").glob("home-*"))
    assert "[1] " in out.stdout and "[2] " in out.stdout  # each run's lines are tagged
    result = json.loads((tmp_path / "res" / "par" / "sweep.json").read_text())
    assert [p["point"] for p in result["points"]] == [{"seed": 0}, {"seed": 1}]
    assert all(p["ok"] for p in result["points"])


def test_targeted_attack_poisons_fedavg_at_its_round_and_aep_is_tracked(
    tmp_path: Path, fmnist_dir: Path
) -> None:
    out = _launch(
        tmp_path, "--set", f"results-dir={tmp_path / 'res'}", "--set", "run-name=atk",
        "--set", f"data-dir={fmnist_dir}", "--set", "num-partitions=50",
        "--set", "clients-per-round=4", "--set", "num-server-rounds=3",
        "--set", "num-malicious=2", "--set", "malicious-per-round=2", "--set", "attack=targeted",
        "--set", "adv-rounds=2", "--set", "track-aep=true", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(tmp_path / "res" / "atk")
    assert [r["adversarial"] for r in rows] == [False, True, False]
    assert rows[1]["malicious"] == [48, 49] and set(rows[1]["sampled"]) >= {48, 49}
    assert not set(rows[0]["sampled"]) & {48, 49} and not set(rows[2]["sampled"]) & {48, 49}
    assert rows[0]["mis_conf"] < 0.5 < rows[1]["mis_conf"]  # the jump at the attack
    assert rows[0]["aep_norm"] == 0.0 < rows[1]["aep_norm"]  # same model until the attack
    assert rows[1]["cf_mis_conf"] < 0.5  # the attack-free counterfactual is not poisoned
    summary = json.loads((tmp_path / "res" / "atk" / "summary.json").read_text())
    assert summary["adversarial_rounds"] == [2] and "2" in summary["mitigation_rounds"]
    config = json.loads((tmp_path / "res" / "atk" / "config.json").read_text())
    assert config["_meta"]["malicious_partitions"] == [48, 49]


def test_continuous_backdoor_on_cifar_format_data_is_delivered_every_round(
    tmp_path: Path,
) -> None:
    """3-channel data (CIFAR-10's pickle layout, generated): the backdoor really runs, its
    updates reach the rule in every round, and ASR is measured each round."""
    from tests.conftest import make_fake_cifar10

    data = make_fake_cifar10(tmp_path / "data", per_batch=40).parent
    out = _launch(
        tmp_path, "--set", f"results-dir={tmp_path / 'r'}", "--set", "run-name=cifar",
        "--set", f"data-dir={data}", "--set", "dataset=cifar10", "--set", "model=cnn-cifar",
        "--set", "num-partitions=10", "--set", "clients-per-round=5",
        "--set", "num-server-rounds=3", "--set", "num-malicious=5",
        "--set", "attack=backdoor", "--set", "attack-mode=continuous",
        "--set", "attack-local-epochs=1", "--set", "malicious-placement=first",
        "--set", "save-model=false", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(tmp_path / "r" / "cifar")
    assert len(rows) == 3
    for r in rows:
        assert r["failed_replies"] == 0 and r["rejected_replies"] == 0, r
        assert r["adversarial"] and r["malicious_aggregated"] == len(r["malicious"]) >= 1, r
        assert 0.0 <= r["asr"] <= 1.0
    summary = json.loads((tmp_path / "r" / "cifar" / "summary.json").read_text())
    assert summary["attack_not_delivered_rounds"] == [] and summary["attack_fully_delivered"]
