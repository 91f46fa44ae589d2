"""Figures for the sysadmin: the pool, the worker's queue, dropped audio, devices, store errors.

Rules:

- No figure may tell whether any one call was kept. So there are no counts of
  kept or wiped calls, and what moves with the worker's work (its queue, its
  retries, the last store error) is sampled once per ``interval`` by the main
  loop, not read live: a kept call's longer job cannot be timed through them.
  ``status`` and the textfile both show that same snapshot.
- With ``[metrics] textfile``, the snapshot is also written there in the
  Prometheus text format (for node_exporter's textfile collector), atomically:
  a temp file beside it, renamed over it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from hindsight.replies import MetricsSnapshot

log = logging.getLogger(__name__)


_METRICS = (
    ("pool_chunks", "gauge", "Chunks in the in-memory pool (64 KiB each)."),
    ("pool_free", "gauge", "Chunks of the pool that no call holds."),
    ("pool_steals", "counter", "Chunks taken from live calls because the pool ran dry."),
    ("dropped_frames", "counter", "Audio frames no chunk could hold (the pool was dry)."),
    ("live_calls", "gauge", "Calls live now."),
    ("worker_restarts", "counter", "Times the worker process was restarted."),
    ("backlog", "gauge", "Jobs waiting for the worker, retries included."),
    ("store_failures", "counter", "Worker jobs that failed and were retried."),
)


def prometheus(snapshot: MetricsSnapshot) -> str:
    lines = []
    for name, kind, text in _METRICS:
        lines += [
            f"# HELP hindsight_{name} {text}",
            f"# TYPE hindsight_{name} {kind}",
            f"hindsight_{name} {getattr(snapshot, name)}",
        ]
    lines += [
        "# HELP hindsight_device_up Whether a capture device is running (1) or not (0).",
        "# TYPE hindsight_device_up gauge",
    ]
    for device, state in sorted(snapshot.devices.items()):
        lines.append(f'hindsight_device_up{{device="{_label(device)}"}} {int(state == "running")}')
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Takes a snapshot every ``interval`` seconds (from the main loop); writes the textfile."""

    def __init__(
        self, read: Callable[[], MetricsSnapshot], interval: float, textfile: Path | None
    ) -> None:
        self.read = read
        self.interval = interval
        self.textfile = textfile
        self.snapshot = MetricsSnapshot()
        self.next = 0.0
        self._warned = False

    def check(self, now: float) -> None:
        if now < self.next:
            return
        self.next = now + self.interval
        self.snapshot = self.read()
        if self.textfile is not None:
            self._write(prometheus(self.snapshot))

    def _write(self, text: str) -> None:
        assert self.textfile is not None
        temp = self.textfile.with_name(f".{self.textfile.name}.tmp")
        try:
            # 0644: node_exporter runs as a user of its own; the file holds counts only.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                os.fchmod(fd, 0o644)
                out.write(text)
            os.replace(temp, self.textfile)
            self._warned = False
        except OSError as exc:
            if not self._warned:  # once, not every interval
                log.error("cannot write the metrics file %s: %s", self.textfile, exc)
                self._warned = True
