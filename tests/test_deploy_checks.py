"""`immunefl deploy supernodes` waits and names each refusal; the SuperExec shared secret."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from immunefl.deploy import Deployment, Security, generate_certs, generate_node_key
from immunefl.deploy_checks import (
    explain_refusal,
    generate_secret,
    is_loopback,
    superexec_secret,
)
from immunefl.processes import find_bin, free_port, tagged_pids
from immunefl.submission import flwr_env
from task.schema import PROJECT_ROOT

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def deploy(*args: str, **kw) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "immunefl.cli", "deploy", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=PROJECT_ROOT, **kw)  # fmt: skip


def cert_for(certs: Path, out: Path, san: str) -> Path:
    """A copy of `certs` whose server certificate (same CA) holds `san` only."""
    shutil.copytree(certs, out)
    ext = out / "ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=elsewhere",
        "-keyout", str(out / "server.key"), "-out", str(out / "server.csr"))  # fmt: skip
    run("x509", "-req", "-in", str(out / "server.csr"), "-CA", str(certs / "ca.crt"),
        "-CAkey", str(certs / "ca.key"), "-CAcreateserial", "-days", "2",
        "-extfile", str(ext), "-out", str(out / "server.pem"))  # fmt: skip
    return out


# Flower 1.42's own lines, as its SuperNodes log them (measured; see immunefl/deploy_checks.py)
WRONG_CA = ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
            "issuer certificate (_ssl.c:1006)")  # fmt: skip
MISMATCH = ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch, "
            "certificate is not valid for '127.0.0.2'. (_ssl.c:1006)")  # fmt: skip


def test_refusals_are_named_from_flowers_own_log_lines() -> None:
    certs, key = Path("/c"), Path("/k/node-1")
    why = explain_refusal(WRONG_CA, "h:1", certs, key)
    assert why.startswith("TLS: the SuperLink's certificate is not signed by the CA you gave")
    assert "--certs /c" in why
    why = explain_refusal(MISMATCH, "127.0.0.2:1", certs, key)
    assert why.startswith("TLS: certificate name mismatch") and "'127.0.0.2'" in why
    assert "Hostname mismatch" not in why
    assert "not valid for 'localhost'" in explain_refusal(
        MISMATCH.replace("IP address", "Hostname").replace("127.0.0.2", "localhost"), "", None, key
    )
    assert "does not speak TLS" in explain_refusal("[SSL: WRONG_VERSION_NUMBER] wrong", "", None,
                                                   key)  # fmt: skip
    why = explain_refusal("[code: 2004] Failed to activate SuperNode.", "", certs, key)
    assert why.startswith("SuperNode authentication") and "/k/node-1.pub is not registered" in why
    assert "give --keys" in explain_refusal("[code: 2001] SuperNode authentication is", "", certs,
                                            None)  # fmt: skip
    assert not explain_refusal("Connection attempt failed, retrying in 0.5 s", "", None, key)


def test_the_secret_is_on_beyond_loopback_and_checked_when_given(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("localhost")
    assert is_loopback("::1") and not is_loopback("0.0.0.0") and not is_loopback("")
    assert not is_loopback("10.0.0.1") and not is_loopback("superlink.example.org")
    assert superexec_secret("127.0.0.1", None, False, tmp_path) is None
    made = superexec_secret("0.0.0.0", None, False, tmp_path / "s")
    assert made == tmp_path / "s" / "superexec.secret" and len(made.read_bytes()) == 32
    assert oct(made.stat().st_mode)[-3:] == "600"
    assert superexec_secret("10.0.0.1", None, True, tmp_path) is None  # the explicit opt-out
    assert superexec_secret("127.0.0.1", made, False, tmp_path) == made  # given: on anywhere
    with pytest.raises(ValueError, match="contradict"):
        superexec_secret("10.0.0.1", made, True, tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        superexec_secret("10.0.0.1", tmp_path / "nope", False, tmp_path)
    (tmp_path / "empty").touch(mode=0o600)
    with pytest.raises(ValueError, match="empty"):
        superexec_secret("10.0.0.1", tmp_path / "empty", False, tmp_path)
    os.chmod(made, 0o644)
    with pytest.raises(ValueError, match="other users may read it .mode 644.; chmod 600"):
        superexec_secret("10.0.0.1", made, False, tmp_path)


def test_keys_without_tls_and_missing_keys_are_errors(tmp_path: Path) -> None:
    common = ["--superlink", "127.0.0.1:9", "--num-partitions", "2", "--state",
              str(tmp_path / "st"), "--flwr-home", str(tmp_path / "h")]  # fmt: skip
    out = deploy("supernodes", *common, "--insecure", "--keys", str(tmp_path), "--partitions",
                 "0").communicate(timeout=120)  # fmt: skip
    assert "--keys (SuperNode authentication) needs TLS" in out[1], out
    out = deploy("supernodes", *common, "--certs", str(tmp_path), "--keys", str(tmp_path),
                 "--partitions", "0-1").communicate(timeout=120)  # fmt: skip
    assert f"no private key {tmp_path}/node-0, {tmp_path}/node-1" in out[1], out
    assert not (tmp_path / "st" / "processes.json").exists()  # nothing was started


@pytest.mark.slow
@needs_openssl
def test_supernodes_waits_and_names_every_refused_node(tmp_path: Path) -> None:
    """One SuperLink (TLS valid for 127.0.0.1 only, SuperNode auth); four `deploy supernodes`
    at once: a registered and an unregistered key, another CA, another name, --insecure."""
    certs = cert_for(generate_certs(tmp_path / "ca"), tmp_path / "certs", "IP:127.0.0.1")
    stranger_ca = generate_certs(tmp_path / "stranger")
    keys = tmp_path / "keys"
    for pid in range(4):
        generate_node_key(keys, f"node-{pid}")
    port = free_port()
    dep = Deployment(PROJECT_ROOT, tmp_path / "flwr", tmp_path / "link", f"127.0.0.1:{port}",
                     Security(certs, auth=True))  # fmt: skip
    procs = []
    try:
        dep.start_superlink()
        dep.register(keys / "node-0.pub", "node-0")
        for i, (addr, extra) in enumerate([
            ("127.0.0.1", ["--certs", str(certs), "--keys", str(keys), "--partitions", "0-1"]),
            ("127.0.0.1", ["--certs", str(stranger_ca), "--keys", str(keys), "--partitions", "2"]),
            ("localhost", ["--certs", str(certs), "--keys", str(keys), "--partitions", "3"]),
            ("127.0.0.1", ["--insecure", "--partitions", "4", "--timeout", "8"]),
        ]):  # fmt: skip
            procs.append(deploy("supernodes", "--superlink", f"{addr}:{port}", *extra,
                                "--num-partitions", "5", "--state", str(tmp_path / f"n{i}"),
                                "--flwr-home", str(tmp_path / f"h{i}")))  # fmt: skip
        outs = [p.communicate(timeout=180) for p in procs]
        codes = [p.returncode for p in procs]
        assert codes == [1, 1, 1, 1], outs
        assert "SuperNode supernode-0 (benign) online at 127.0.0.1" in outs[0][0], outs[0]
        assert (
            "SuperNode supernode-1 refused: SuperNode authentication: the SuperLink does "
            f"not know this node's key ({keys}/node-1.pub is not registered"
        ) in outs[0][1]
        assert "1 of 2 SuperNodes not online: supernode-1" in outs[0][1]
        assert ("supernode-2 refused: TLS: the SuperLink's certificate is not signed by the CA "
                f"you gave (--certs {stranger_ca}") in outs[1][1], outs[1]  # fmt: skip
        assert ("supernode-3 refused: TLS: certificate name mismatch: the SuperLink's "
                "certificate is not valid for 'localhost'") in outs[2][1], outs[2]  # fmt: skip
        assert (f"supernode-4 refused: TLS: the SuperLink at 127.0.0.1:{port} speaks TLS but this "
                "node was started with --insecure") in outs[3][1], outs[3]  # fmt: skip
        for out in outs:
            assert "check your network" not in out[1] and "Traceback" not in out[1]
        # the refused nodes were stopped and forgotten; the online one runs on
        assert dep.online_nodes() == 1
        assert "supernode-1" not in (tmp_path / "n0" / "processes.json").read_text()
        assert "supernode-4" not in (tmp_path / "n3" / "processes.json").read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for i in range(4):
            deploy("down", "--state", str(tmp_path / f"n{i}")).communicate(timeout=120)
        dep.stop()
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout == b""


@pytest.mark.slow
@needs_openssl
def test_a_superexec_without_the_secret_is_refused(tmp_path: Path) -> None:
    """A real flower-superlink with the secret: ours is served, a stranger's SuperExec (no
    secret, or another one) gets HTTP 401 on the ServerApp's task and exits."""
    certs = generate_certs(tmp_path / "certs")
    secret = generate_secret(tmp_path / "link" / "superexec.secret")
    other = generate_secret(tmp_path / "other.secret")
    dep = Deployment(PROJECT_ROOT, tmp_path / "flwr", tmp_path / "link",
                     f"127.0.0.1:{free_port()}", Security(certs))  # fmt: skip
    strangers = []
    try:
        dep.start_superlink(secret=secret)
        command = [find_bin("flower-superexec"), "--runtime-api-address", dep.superlink,
                   "--root-certificates", str(certs / "ca.crt")]  # fmt: skip
        env = flwr_env(tmp_path / "stranger-home")
        for extra in ([], ["--superexec-auth-secret-file", str(other)]):
            strangers.append(
                subprocess.Popen(
                    [*command, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
                )
            )
        for s in strangers:
            s.wait(timeout=60)  # refused: Flower's SuperExec exits on HTTP 401
        log = (tmp_path / "link" / "superlink.log").read_text()
        assert log.count("SuperExec authentication failed for /flwr.proto.Runtime/AcquireTask") >= 2
        time.sleep(1)
        assert tagged_pids(dep.tags["superexec"]), "our SuperExec (with the secret) was refused"
    finally:
        for s in strangers:
            if s.poll() is None:
                s.kill()
        dep.stop()


def test_every_supernode_gets_its_own_flwr_home(tmp_path: Path, monkeypatch) -> None:
    """Flower installs the app a SuperNode (or the ServerApp's SuperExec) is sent into
    FLWR_HOME/apps, creating the directory before copying into it: processes sharing one import
    each other's half-copied app."""
    seen: dict[str, str] = {}

    class Proc:
        pid = 1

        def wait(self, timeout: float) -> int:
            raise subprocess.TimeoutExpired("superexec", timeout)  # it stays up

    def fake_spawn(command, env, log_path, cwd=None):  # noqa: ANN001, ANN202
        seen[f"{log_path.parent.name}/{log_path.stem}"] = env["FLWR_HOME"]
        return Proc()

    monkeypatch.setattr("immunefl.deploy.spawn_logged", fake_spawn)
    homes = []
    for state in ("state", "other"):  # two deployments of one host, the same partitions
        dep = Deployment(PROJECT_ROOT, tmp_path / "flwr", tmp_path / state, "127.0.0.1:9092",
                         Security(None, auth=False))  # fmt: skip
        for pid in (0, 1, 2):
            dep.start_supernode(pid, 3, "benign", 9100 + pid)
            homes.append(Path(seen[f"{state}/supernode-{pid}"]))
        dep._start_superexec(tmp_path / "secret")
        homes.append(Path(seen[f"{state}/superexec"]))
    assert len(set(homes)) == 8
    assert all(h.parent.parent in {(tmp_path / s).resolve() for s in ("state", "other")}
               for h in homes)  # fmt: skip
    assert dep.env["FLWR_HOME"] == str((tmp_path / "flwr").resolve())  # the CLI's stays shared
