"""Figures for the sysadmin: status and a Prometheus textfile, sampled, telling no call apart."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from hindsight.daemon.metrics import Metrics, prometheus
from hindsight.replies import MetricsSnapshot
from tests.harness import Daemon, cli
from tests.test_worker import wait_until


def test_the_textfile_is_prometheus_text_with_every_figure() -> None:
    text = prometheus(MetricsSnapshot(pool_chunks=256, pool_free=200, devices={"floor": "running"}))
    assert "# TYPE hindsight_pool_chunks gauge\nhindsight_pool_chunks 256\n" in text
    assert "hindsight_pool_free 200\n" in text
    assert "# TYPE hindsight_store_failures counter" in text
    assert 'hindsight_device_up{device="floor"} 1\n' in text
    assert text.endswith("\n")


def test_figures_are_read_once_per_interval_not_on_every_look(tmp_path: Path) -> None:
    reads: list[int] = []

    def read() -> MetricsSnapshot:
        reads.append(1)
        return MetricsSnapshot(backlog=len(reads))

    metrics = Metrics(read, 60.0, tmp_path / "m.prom")
    metrics.check(1000.0)
    metrics.check(1030.0)
    assert metrics.snapshot.backlog == 1
    metrics.check(1060.0)
    assert metrics.snapshot.backlog == 2 and len(reads) == 2
    assert "hindsight_backlog 2" in (tmp_path / "m.prom").read_text()


def test_status_and_the_textfile_show_the_pool_and_the_worker(tmp_path: Path) -> None:
    extra = '[metrics]\ntextfile = "metrics.prom"\ninterval_seconds = 0.2\n'
    with Daemon(tmp_path, extra=extra) as d:
        d.ok({"op": "start", "line": "desk-01"})
        seen: list[dict[str, Any]] = []

        def sampled() -> bool:
            # Sampled every interval by the main loop: wait for one taken during the call.
            seen.append(d.ok({"op": "status"})["metrics"])
            return bool(seen[-1]["live_calls"] == 1 and seen[-1]["pool_free"] < 256)

        wait_until(sampled, what="a metrics snapshot taken during the call")
        metrics = seen[-1]
        assert metrics["pool_chunks"] == 256 and 0 < metrics["pool_free"] < 256
        assert metrics["live_calls"] == 1 and metrics["devices"] == {"default": "running"}
        prom = tmp_path / "metrics.prom"
        wait_until(lambda: "hindsight_live_calls 1" in prom.read_text(), what="the textfile")
        assert stat.S_IMODE(prom.stat().st_mode) == 0o644
        shown = cli("--endpoint", d.endpoint, "status")
        assert "chunks free" in shown.stdout and "worker backlog" in shown.stdout
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_wiped", timeout=15)
        wait_until(lambda: "hindsight_pool_free 256" in prom.read_text(), what="chunks back")
    text = prom.read_text()
    for hidden in ("kept", "wiped", "committed", "sampled", "marked"):
        assert hidden not in text, "no figure counts kept or wiped calls"
