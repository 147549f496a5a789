"""`cdiwatch demo` end to end: broker, worker and simulated control room start,
alerts are printed, and everything stops cleanly (issue 3, item 4)."""

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
        [sys.executable, "-m", "pipeline", "demo", "--web-port", str(port), "--hours", "30",
         "--backlog", "27", "--duration", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
        env={**os.environ, "CDI_DATA_DIR": str(env_data)})
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:] + out[-3000:]
    assert f"live page      http://127.0.0.1:{port}/" in out
    assert "backlog of" in out and "now live at 60x" in out
    # 27 of 30 simulated hours published at once: incidents reported 24-27 h
    # ago are overdue, the next 4 h at risk
    assert "OVERDUE" in out and "AT RISK" in out, out[-3000:]
    assert "stopped the worker and the broker" in out
    with socket.socket() as s:  # the worker is gone: nothing listens on its web port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (closed connections may linger)
        s.bind(("127.0.0.1", port))
        s.listen()
