from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hindsight.config import load_config, parse_config
from hindsight.daemon.buffer import Pool
from hindsight.daemon.calls import CallTable
from hindsight.daemon.main import PoolWatch
from tests.harness import BIN

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["demo.toml", "hindsight.toml"])
def test_the_shipped_configs_are_valid(name: str) -> None:
    checked = subprocess.run(
        [str(BIN / "hindsightd"), "--config", str(ROOT / "config" / name), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert load_config(ROOT / "config" / name).lines


def test_a_dry_pool_is_logged_from_the_control_loop_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config(
        {
            "audio": {"source": "synthetic", "blocksize": 16},
            "lines": [{"name": "a", "channels": [1, 2]}],
        },
        Path("/tmp"),
    )
    pool = Pool(memory_mb=1, chunk_samples=64)
    pool._free = pool._free[-2:]
    table = CallTable(config, pool, draw=lambda _: (None, False))
    watch = PoolWatch(table)
    table.start("a", None, None)
    caplog.set_level(logging.WARNING)
    for _ in range(8):
        table.feed("default", np.ones((16, 2), dtype=np.int16), False)
    assert table.pool_steals > 0
    watch.check()
    watch.check()
    assert [r.getMessage().startswith("chunk pool exhausted") for r in caplog.records] == [True]
