"""The service under a real uvicorn on loopback: startup, SIGTERM drain, memory over many requests."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.service.conftest import png

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_dir, **env):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--port", str(port), "--log-level", "warning"],
                            env={**os.environ, "CAE_MODEL_DIR": str(model_dir), **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read().decode()
    proc.kill()
    raise AssertionError("service did not become ready")


def post(port, body=None, path="/reconstruct"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body=body or png(), headers={"Content-Type": "image/png"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_sigterm_drains_in_flight_requests(model_dir):
    # Each request waits 1.5 s in the batcher: SIGTERM arrives while it is in flight.
    proc, port = start(model_dir, CAE_MAX_BATCH_WAIT_MS="1500", CAE_BATCH_MIN_RUN_MS="0")
    results = []
    worker = threading.Thread(target=lambda: results.append(post(port)))
    worker.start()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    worker.join(30)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is "terminated by SIGTERM".
    assert proc.wait(30) in (0, -signal.SIGTERM)
    assert results and results[0][0] == 200 and results[0][1].startswith(b"\x89PNG")


def test_memory_stays_bounded_over_thousands_of_requests(model_dir):
    proc, port = start(model_dir, CAE_MAX_BATCH_WAIT_MS="0")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        bodies = [png(seed=i) for i in range(8)]

        def burst(n):
            for i in range(n):
                conn.request("POST", "/reconstruct" if i % 2 else "/colorize", body=bodies[i % 8], headers={"Content-Type": "image/png"})
                resp = conn.getresponse()
                assert resp.status == 200
                resp.read()

        burst(500)  # allocators and caches settle
        before = rss_kib(proc.pid)
        burst(3000)
        growth_mib = (rss_kib(proc.pid) - before) / 1024
        assert growth_mib < 20, f"RSS grew {growth_mib:.1f} MiB over 3000 requests"
    finally:
        proc.terminate()
        proc.wait(30)


def test_refuses_an_open_port_without_an_api_key(model_dir):
    proc = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                          env={**os.environ, "CAE_MODEL_DIR": str(model_dir)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "refusing to bind 0.0.0.0 without an API key" in proc.stderr
