"""Joining a Ray cluster is bounded and fails in one line (``BackendConnectionError``), and a local
cluster the backend started goes away with its driver. Real addresses, real clusters, real
signals; the local-cluster and token-auth tests start clusters of their own and are slow.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray")

from backend_scenario import config  # noqa: E402
from conftest import wait_gone  # noqa: E402

from dmaml_core.backends import BackendConnectionError  # noqa: E402
from dmaml_core.backends.ray_backend import RayBackend, connect  # noqa: E402

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


def one_line_within(err: BackendConnectionError, started: float, limit_s: float) -> str:
    message = str(err)
    assert "\n" not in message and "Traceback" not in message
    assert time.monotonic() - started < limit_s
    return message


def test_nothing_listening_fails_at_once_in_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(BackendConnectionError) as err:
        connect("127.0.0.1:1", 30.0, tmp_path / "ray.log")
    message = one_line_within(err.value, started, 30.0)
    assert message.startswith("ray: nothing answers at 127.0.0.1:1 ")
    assert "(connection refused); is a cluster running there? check with `ray status" in message


def test_auto_without_a_cluster_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._private.services import find_bootstrap_address, find_gcs_addresses

    if ray.is_initialized() or find_gcs_addresses() or find_bootstrap_address(None):
        pytest.skip("a Ray cluster is running on this machine, so 'auto' would find it")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started = time.monotonic()
    with pytest.raises(BackendConnectionError) as err:
        RayBackend(config(), 1, address="auto")
    message = one_line_within(err.value, started, 30.0)
    assert message.startswith("ray: no cluster found for address 'auto' (")
    assert "start one with `ray start --head` or give its HOST:PORT" in message
    assert not ray.is_initialized()


def test_an_address_that_never_answers_gives_up_at_the_deadline(tmp_path: Path) -> None:
    # A TCP listener that accepts and never speaks: the connection opens, Ray's handshake hangs.
    with socket.create_server(("", 0)) as server:  # every interface: Ray resolves 127.0.0.1
        port = server.getsockname()[1]
        log = tmp_path / "ray.log"
        started = time.monotonic()
        with pytest.raises(BackendConnectionError) as err:
            connect(f"127.0.0.1:{port}", 6.0, log)
        message = one_line_within(err.value, started, 15.0)
    assert time.monotonic() - started >= 6.0
    assert f"no Ray cluster answered at 127.0.0.1:{port} " in message
    assert "within 6 s; is one running there? check with `ray status --address" in message
    assert message.endswith(f"Ray's output: {log}")
    assert "joining the Ray cluster at" in log.read_text()  # Ray's retries went there


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def token_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A head node started with token authentication in its own temp dir; stopped by killing
    exactly the processes that name that dir (``ray stop`` would stop every cluster here)."""
    # Ray's unix sockets live under it: pytest's tmp_path is too long for a socket path.
    temp_dir = Path(tempfile.mkdtemp(prefix="dmaml-ray-"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "RAY_AUTH_MODE": "token",
        # Not the token a client may find in ~/.ray/auth_token (Ray writes one for local clusters).
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = ["--head", f"--port={port}", f"--temp-dir={temp_dir}", "--num-cpus=1"]
    started = subprocess.run(
        [ray_cli, "start", *head, "--include-dashboard=false", "--disable-usage-stats"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        pytest.fail(f"`ray start` failed:\n{started.stdout}{started.stderr}")
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        heads = [
            p
            for p in psutil.process_iter(["cmdline"])
            if any(str(temp_dir) in part for part in (p.info["cmdline"] or []))
        ]
        # The agents rename themselves (ray::DashboardAgent): found as the raylet's children.
        ours = {c for p in heads for c in p.children(recursive=True)} | set(heads)
        for proc in ours:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(list(ours), timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_token_cluster_without_the_token_names_the_variable(
    token_cluster: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(BackendConnectionError) as err:
        connect(token_cluster, 30.0, tmp_path / "ray.log")
    message = one_line_within(err.value, started, 30.0)
    assert f"ray: the cluster at {token_cluster} " in message
    assert "token authentication and no valid token was given: set RAY_AUTH_TOKEN" in message
    assert "InvalidAuthToken" in (tmp_path / "ray.log").read_text()


# A driver that starts a local cluster through the backend, prints the actors' pids and every
# process under it (Ray's GCS, raylet, agents, actors), then waits to be killed or exits.
DRIVER = f"""
import sys, time, psutil
sys.path.insert(0, {str(HERE)!r})
from backend_scenario import config, theta
from dmaml_core.backends.ray_backend import RayBackend
backend = RayBackend(config(epochs=1), 2, num_cpus=2)
backend.run(theta(), 0)
print(*backend.pids, flush=True)
print(*[p.pid for p in psutil.Process().children(recursive=True)], flush=True)
if sys.argv[1] == "wait":
    time.sleep(600)
"""


def start_driver(mode: str) -> tuple[subprocess.Popen[bytes], list[int], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    # Raw reads of the pipe: a buffered readline may swallow both lines at once, and a select on
    # the pipe then waits for a third that a driver sleeping in "wait" mode never writes.
    out, deadline = b"", time.monotonic() + 180.0
    while out.count(b"\n") < 2 and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([proc.stdout], [], [], left)
        chunk = os.read(proc.stdout.fileno(), 4096) if readable else b""
        if not chunk:
            break
        out += chunk
    lines = out.decode().splitlines()
    if len(lines) < 2:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail("the driver did not start its Ray cluster within 180 s")
    actors, everything = ([int(p) for p in line.split()] for line in lines[:2])
    return proc, actors, everything


@pytest.mark.slow
def test_a_local_cluster_ends_with_a_driver_that_exits() -> None:
    proc, actors, everything = start_driver("exit")  # no close(): Ray's atexit shutdown
    proc.communicate(timeout=60)
    assert set(actors) <= set(everything)
    assert wait_gone(everything, within_s=15.0) == []


@pytest.mark.slow
def test_the_local_cluster_ends_within_seconds_of_a_killed_driver() -> None:
    proc, actors, everything = start_driver("wait")
    assert set(actors) <= set(everything)  # the reaper is among them too: it must leave as well
    started = [psutil.Process(pid) for pid in everything]  # identity kept against pid reuse
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    killed = time.monotonic()
    try:
        # Left to Ray, its agents linger 61 s (measured): the backend's reaper ends them.
        assert wait_gone(everything, within_s=10.0) == []
        assert time.monotonic() - killed < 10.0
    finally:
        lingering = [p for p in started if p.is_running()]
        for leftover in lingering:  # this test's driver started them
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        psutil.wait_procs(lingering, timeout=10)
