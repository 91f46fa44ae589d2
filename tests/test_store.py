from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from hindsight.config import Config, parse_config
from hindsight.daemon import store as store_module
from hindsight.daemon.buffer import Pool
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.kept import describe
from hindsight.daemon.store import Store
from hindsight.errors import StoreError
from hindsight.record import COMMITTED_FIELDS, Committed


@pytest.fixture
def config(tmp_path: Path) -> Config:
    data = {
        "daemon": {"state_dir": str(tmp_path / "state")},
        "audio": {"source": "synthetic", "channels": 2, "blocksize": 160},
        "sampling": {"one_in": 1},
        "lines": [{"name": "desk-01", "channels": [2, 1]}],
    }
    return parse_config(data, tmp_path)


def ended_call(config: Config, call_id: str = "c-1") -> Call:
    table = CallTable(config, Pool(1), draw=lambda _: (None, True))
    table.start("desk-01", call_id, "ann")
    block = np.stack([np.arange(160), -np.arange(160)], axis=1).astype(np.int16)
    table.feed("default", block, True)
    table.fill_silence("default", 320)
    table.feed("default", block, False)
    table.mark("desk-01", "escalation", "shouting")
    return table.end("desk-01")


def commit(config: Config, call: Call) -> Committed:
    """What the worker does with a kept call: the daemon's description, the pool's audio."""
    return Store(config.daemon.state_dir).keep(
        describe(call, config), call.buffer.views(), call.buffer.kept_frames
    )


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_commit_writes_flac_and_sidecar_holding_the_logged_fields(config: Config) -> None:
    call = ended_call(config)
    fields = commit(config, call).to_log()
    root = config.daemon.state_dir
    assert tuple(fields) == COMMITTED_FIELDS
    assert fields["path"] == f"recordings/{call.started:%Y/%m/%d}/c-1.flac"
    assert files(root) == [fields["path"], fields["path"][:-5] + ".json"]
    audio, rate = sf.read(str(root / fields["path"]), dtype="int16", always_2d=True)
    assert rate == 16000 and audio.shape == (640, 2)
    assert audio[:160, 0].tolist() == (-np.arange(160)).tolist()  # channel 2 stored first
    assert not audio[160:480].any()  # the device gap is silence in the file
    assert fields["reasons"] == ["sampled", "marked"]
    assert fields["purposes"] == ["training", "escalation"]
    assert fields["status_flags"] == 1
    assert fields["lost_seconds"] == 0.02 and fields["seconds"] == 0.04
    sidecar = json.loads((root / fields["path"]).with_suffix(".json").read_text())
    assert {k: sidecar[k] for k in COMMITTED_FIELDS} == fields
    assert sidecar["gaps"] == [{"at_seconds": 0.01, "seconds": 0.02}]
    assert sidecar["marks"][0]["note"] == "shouting"


def test_a_write_that_fails_midway_leaves_nothing_under_the_final_name(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = store_module.Sink.write
    calls = 0

    def fail_second(self: Any, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        real_write(self, data)

    monkeypatch.setattr(store_module, "COPY_BLOCK", 64)
    monkeypatch.setattr(store_module.Sink, "write", fail_second)
    with pytest.raises(StoreError, match="No space left"):
        commit(config, ended_call(config))
    assert files(config.daemon.state_dir) == []


def test_a_sidecar_that_fails_takes_its_recording_back(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store_module.write_durably

    def no_json(final: Path, fill: Any, tick: Any = None) -> tuple[Path, str]:
        if final.suffix == ".json":
            raise OSError(28, "No space left on device")
        return real(final, fill)

    monkeypatch.setattr(store_module, "write_durably", no_json)
    call = ended_call(config)
    with pytest.raises(StoreError):
        commit(config, call)
    assert files(config.daemon.state_dir) == []
    monkeypatch.setattr(store_module, "write_durably", real)
    assert commit(config, call).to_log()["path"].endswith("/c-1.flac")


def test_a_redo_replaces_the_partial_files_of_an_earlier_attempt(config: Config) -> None:
    call = ended_call(config)
    folder = config.daemon.state_dir / f"recordings/{call.started:%Y/%m/%d}"
    folder.mkdir(parents=True)
    (folder / "c-1.flac").write_bytes(b"landed, but its sidecar did not")
    (folder / ".c-1.flac.1234abcd.tmp").write_bytes(b"half a file")
    fields = commit(config, call).to_log()
    assert fields["path"].endswith("/c-1.flac")
    assert files(config.daemon.state_dir) == [fields["path"], fields["path"][:-5] + ".json"]
    audio, _ = sf.read(str(config.daemon.state_dir / fields["path"]), dtype="int16")
    assert len(audio) == 640


def test_a_redo_after_a_whole_landing_reports_it_without_writing_again(config: Config) -> None:
    call = ended_call(config)
    first = commit(config, call).to_log()
    path = config.daemon.state_dir / first["path"]
    before = path.stat().st_mtime_ns, path.stat().st_ino
    assert commit(config, call).to_log() == first
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before
    assert len(files(config.daemon.state_dir)) == 2
