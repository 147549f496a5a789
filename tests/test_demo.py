"""`cdiwatch demo` end to end: broker, worker and simulated control room start,
alerts are printed, and everything stops cleanly; a busy port is one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pipeline.kafka.local import free_port
from support import ROOT

pytestmark = pytest.mark.integration


def test_demo_prints_urls_and_live_alerts_then_stops_everything(tansu_binary, tmp_path):
    port = free_port()
    env_data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--web-port", str(port), "--hours", "30", "--duration", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
        env={**os.environ, "CDI_DATA_DIR": str(env_data)})
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:] + out[-3000:]
    assert f"board          http://127.0.0.1:{port}/" in out
    assert "messages of the past 30 h published; now live" in out
    # 30 simulated hours up to now published at once: incidents reported 24-30 h
    # ago are overdue, those reported 20-24 h ago at risk
    assert "OVERDUE" in out and "AT RISK" in out, out[-3000:]
    assert "stopped the worker and the broker" in out
    with socket.socket() as s:  # the worker is gone: nothing listens on its web port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (closed connections may linger)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_demo_with_its_web_port_busy_says_so_in_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--web-port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "CDI_DATA_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and f"web port {port} is already in use" in proc.stderr


def test_a_demo_killed_outright_leaves_no_broker_or_worker_behind(tansu_binary, tmp_path):
    """SIGKILL gives the demo no chance to stop its children: they must end with it."""
    import signal
    import time

    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "pipeline", "demo", "--web-port", str(port), "--hours", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "CDI_DATA_DIR": str(tmp_path)})
    try:
        for line in demo.stdout:
            if "cdiwatch demo is running" in line:
                break
        children = [int(p) for p in open(f"/proc/{demo.pid}/task/{demo.pid}/children").read().split()]
        assert len(children) == 2, children  # the broker and the worker
    finally:
        demo.send_signal(signal.SIGKILL)
        demo.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in children):
        time.sleep(0.2)
    left = [p for p in children if os.path.exists(f"/proc/{p}")]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"left behind: {left}"
