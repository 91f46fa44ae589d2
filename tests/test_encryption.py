"""Recordings encrypted at rest: FLAC streamed through age into the store's sink, notes sealed,
recipients per purpose, and a daemon that says when it writes plaintext."""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyrage
import pytest
import soundfile as sf

from hindsight import audit
from hindsight.config import Config, parse_config
from hindsight.daemon import encode
from hindsight.daemon.buffer import Int16Array, Pool
from hindsight.daemon.calls import CallTable
from hindsight.daemon.encode import FlacStream, pour
from hindsight.daemon.kept import describe
from hindsight.daemon.store import Sink, Store
from hindsight.errors import ConfigError, StoreError
from tests.harness import BIN, Daemon, config_text
from tests.test_store import ended_call, files

RATE = 16000
IDENTITY = pyrage.x25519.Identity.generate()
OTHER = pyrage.x25519.Identity.generate()
RECIPIENT, OTHER_RECIPIENT = str(IDENTITY.to_public()), str(OTHER.to_public())


class Collect(io.RawIOBase):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.writes: list[int] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.data += data
        self.writes.append(len(data))
        return len(data)


def noise(frames: int, channels: int = 2, seed: int = 1) -> Int16Array:
    rng = np.random.default_rng(seed)
    audio: Int16Array = (rng.standard_normal((frames, channels)) * 3000).astype(np.int16)
    return audio


def pieces(audio: Int16Array, size: int) -> list[Int16Array]:
    return [audio[at : at + size] for at in range(0, len(audio), size)]


def flac_of(audio: Int16Array, size: int = 7000, keys: tuple[str, ...] = ()) -> bytes:
    out = Collect()
    with FlacStream(pieces(audio, size), RATE, audio.shape[1], len(audio)) as flac:
        pour(flac, out, keys, 1 << 16)
    return bytes(out.data)


@pytest.mark.parametrize("frames", [1, 4095, 4096, 4097, 100_000])
def test_a_streamed_flac_is_the_audio_and_says_its_length(frames: int) -> None:
    audio = noise(frames)
    data = flac_of(audio, size=3001)
    assert sf.info(io.BytesIO(data)).frames == frames  # written into the held header
    decoded, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    assert rate == RATE and np.array_equal(decoded, audio)


@pytest.mark.parametrize("channels", [1, 3, 8])
def test_a_line_of_up_to_8_channels_streams_to_an_exact_flac(channels: int) -> None:
    # 8 is the most a line may have (config refuses 9): FLAC's own limit.
    audio = noise(20_000, channels)
    decoded, _ = sf.read(io.BytesIO(flac_of(audio)), dtype="int16", always_2d=True)
    assert decoded.shape == (20_000, channels) and np.array_equal(decoded, audio)


def test_a_call_without_audio_is_still_a_flac_file() -> None:
    data = flac_of(noise(0))
    assert data[:4] == b"fLaC"
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels) == (RATE, 2)


def test_the_stream_holds_one_pieces_worth_of_flac_not_the_call() -> None:
    audio = noise(RATE * 120)  # two minutes, about 8 MB of FLAC
    stream = FlacStream(pieces(audio, RATE), RATE, 2, len(audio))
    held = 0
    buffer = bytearray(8192)
    total = 0
    while n := stream.readinto(buffer):
        total += n
        held = max(held, len(stream._out.ready))
    assert total > 5_000_000
    assert held < 200_000, "more than one second's FLAC held at once"


def test_a_stream_given_fewer_frames_than_announced_fails() -> None:
    audio = noise(10_000)
    with pytest.raises(encode.FlacError, match="expected 20000 frames"):
        stream = FlacStream(pieces(audio, 4000), RATE, 2, 20_000)
        pour(stream, Collect(), (), 4096)


def test_encrypted_flac_opens_with_the_identity_only() -> None:
    audio = noise(50_000)
    sealed = flac_of(audio, keys=(RECIPIENT,))
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert b"fLaC" not in sealed
    plain = pyrage.decrypt(sealed, [IDENTITY])
    assert np.array_equal(sf.read(io.BytesIO(plain), dtype="int16", always_2d=True)[0], audio)
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(sealed, [OTHER])


# --- the store ---


@pytest.fixture
def sealed_config(tmp_path: Path) -> Config:
    data = {
        "daemon": {"state_dir": str(tmp_path / "state")},
        "audio": {"source": "synthetic", "channels": 2, "blocksize": 160},
        "sampling": {"one_in": 1},
        "lines": [{"name": "desk-01", "channels": [2, 1]}],
        "storage": {"recipients": [RECIPIENT]},
        "purposes": {
            "training": {"legal_basis": "legitimate-interests", "retention_days": 7},
            "escalation": {
                "legal_basis": "contract",
                "until_resolved": True,
                "recipients": [OTHER_RECIPIENT],
            },
        },
    }
    return parse_config(data, tmp_path)


def test_a_kept_call_lands_encrypted_to_every_recipient_of_its_purposes(
    sealed_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[bytes] = []
    real_write = Sink.write

    def spy(self: Sink, data: Any) -> int:
        written.append(bytes(data))
        return real_write(self, data)

    monkeypatch.setattr(Sink, "write", spy)
    call = ended_call(sealed_config)  # sampled (training) and marked (escalation)
    keep = describe(call, sealed_config)
    assert keep.recipients == (RECIPIENT, OTHER_RECIPIENT)
    fields = (
        Store(sealed_config.daemon.state_dir)
        .keep(keep, call.buffer.views(), call.buffer.kept_frames)
        .to_log()
    )
    root = sealed_config.daemon.state_dir
    assert fields["path"].endswith("/c-1.flac.age")
    assert files(root) == [fields["path"], fields["path"][: -len(".flac.age")] + ".json"]
    stored = (root / fields["path"]).read_bytes()
    assert b"".join(written[:-1]) == stored, "every byte of the recording came through the sink"
    for identity in (IDENTITY, OTHER):
        audio, _ = sf.read(io.BytesIO(pyrage.decrypt(stored, [identity])), dtype="int16")
        assert len(audio) == call.buffer.kept_frames
    sidecar = json.loads((root / fields["path"]).with_name("c-1.json").read_text())
    (mark,) = sidecar["marks"]
    assert "note" not in mark
    assert pyrage.decrypt(mark["note_age"].encode(), [OTHER]) == b"shouting"
    assert b"shouting" not in b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_a_sampled_call_opens_for_the_global_recipients_only(sealed_config: Config) -> None:
    table = CallTable(sealed_config, Pool(1), draw=lambda _: (None, True))
    table.start("desk-01", "c-2", None)
    table.feed("default", noise(160), True)
    keep = describe(table.end("desk-01"), sealed_config)
    assert keep.fields["purposes"] == ["training"]
    assert keep.recipients == (RECIPIENT,)


def test_without_recipients_a_recording_is_a_plain_flac(tmp_path: Path) -> None:
    data = {
        "daemon": {"state_dir": str(tmp_path / "state")},
        "audio": {"source": "synthetic", "channels": 2, "blocksize": 160},
        "sampling": {"one_in": 1},
        "lines": [{"name": "desk-01", "channels": [2, 1]}],
    }
    config = parse_config(data, tmp_path)
    call = ended_call(config)
    fields = Store(config.daemon.state_dir).keep(
        describe(call, config), call.buffer.views(), call.buffer.kept_frames
    )
    sidecar = json.loads((config.daemon.state_dir / fields.path).with_suffix(".json").read_text())
    assert fields.path.endswith("/c-1.flac")
    assert sidecar["marks"][0]["note"] == "shouting"


# --- config ---


def parse(extra: dict[str, Any], tmp_path: Path) -> Config:
    base = {"lines": [{"name": "desk-01", "channels": [1]}], "audio": {"source": "synthetic"}}
    return parse_config(base | extra, tmp_path)


def problems(extra: dict[str, Any], tmp_path: Path, about: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(extra, tmp_path)
    return [problem for problem in caught.value.problems if problem.startswith(about)]


def test_require_encryption_names_every_purpose_without_a_recipient(tmp_path: Path) -> None:
    found = problems({"storage": {"require_encryption": True}}, tmp_path)
    assert found == [
        "storage.require_encryption: no age recipient for purpose 'training', 'escalation': "
        "list one in storage.recipients or purposes.training.recipients"
    ]
    assert parse({"storage": {"require_encryption": True, "recipients": [RECIPIENT]}}, tmp_path)


def test_a_recipient_that_is_not_one_is_named_and_a_pasted_secret_is_never_echoed(
    tmp_path: Path,
) -> None:
    (wrong,) = problems({"storage": {"recipients": [RECIPIENT, "age1nope"]}}, tmp_path)
    assert wrong == (
        "storage.recipients: item 1: not an age X25519 recipient ('age1...'), got 'age1nope'"
    )
    secret = str(IDENTITY)
    (pasted,) = problems(
        {
            "purposes": {
                "x": {"legal_basis": "consent", "retention_days": 1, "recipients": [secret]}
            }
        },
        tmp_path,
        "purposes.",
    )
    assert pasted.startswith("purposes.x.recipients: item 0: not an age X25519 recipient")
    assert "that is a secret identity" in pasted
    assert secret not in pasted and secret[16:].lower() not in pasted.lower()
    (twice,) = problems({"storage": {"recipients": [RECIPIENT, RECIPIENT]}}, tmp_path)
    assert twice.endswith("is listed twice")


def test_a_purpose_may_list_its_own_recipients(tmp_path: Path) -> None:
    config = parse(
        {
            "purposes": {
                "training": {"legal_basis": "consent", "retention_days": 1},
                "escalation": {
                    "legal_basis": "contract",
                    "retention_days": 1,
                    "recipients": [OTHER_RECIPIENT],
                },
            }
        },
        tmp_path,
    )
    assert config.unencrypted() == ["training"]
    assert config.recipients(["training", "escalation"]) == (OTHER_RECIPIENT,)


# --- the daemon ---


def test_an_unencrypted_daemon_says_so_at_start_up_and_in_status(tmp_path: Path) -> None:
    extra = '[purposes.escalation]\nlegal_basis = "contract"\nretention_days = 1\n'
    extra += f'recipients = ["{RECIPIENT}"]\n'
    extra += '[purposes.training]\nlegal_basis = "consent"\nretention_days = 1\n'
    with Daemon(tmp_path, extra=extra) as d:
        status = d.ok({"op": "status"})
    assert status["encryption"] == {"encrypted": False, "unencrypted_purposes": ["training"]}
    assert "recordings kept for training are NOT encrypted" in d.stderr()


def test_an_encrypted_daemon_keeps_calls_the_auditor_can_verify(tmp_path: Path) -> None:
    with Daemon(tmp_path, extra=f'[storage]\nrecipients = ["{RECIPIENT}"]\n') as d:
        assert d.ok({"op": "status"})["encryption"]["encrypted"] is True
        d.timed_call("desk-01", 0.6, mark_after=0.1)
        (committed,) = d.wait_for_event("call_committed", timeout=15)
    assert "NOT encrypted" not in d.stderr()
    assert committed["path"].endswith(".flac.age")
    assert audit.verify(d.state).ok
    stored = (d.state / committed["path"]).read_bytes()
    flac = pyrage.decrypt(stored, [IDENTITY])
    assert sf.info(io.BytesIO(flac)).frames == round(committed["seconds"] * RATE)


def test_a_daemon_that_must_encrypt_will_not_start_without_recipients(tmp_path: Path) -> None:
    config = tmp_path / "hindsight.toml"
    config.write_text(
        config_text(tmp_path, extra="[storage]\nrequire_encryption = true\n"), encoding="utf-8"
    )
    for args in (["--check-config"], []):
        run = subprocess.run(
            [str(BIN / "hindsightd"), "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 2, run.stderr
        assert "storage.require_encryption: no age recipient for purpose" in run.stdout + run.stderr
    assert not (tmp_path / "state" / "commit.log").exists()


@contextlib.contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """Files of this process may grow to ``size`` bytes: a write past it fails with EFBIG,
    a real error from the kernel, as a full disk gives ENOSPC."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_sink_whose_write_failed_never_lands_even_if_the_writer_swallowed_it(
    tmp_path: Path,
) -> None:
    sink = Sink(tmp_path / "r.flac.age")
    with file_size_limit(4096), contextlib.suppress(OSError):
        sink.write(b"x" * 65536)  # past the buffer: written at once, and refused
    with pytest.raises(OSError, match="a write into the recording failed"):
        sink.land()
    sink.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_encrypting_leaves_nothing_and_the_retry_lands(
    sealed_config: Config,
) -> None:
    call = ended_call(sealed_config)
    store = Store(sealed_config.daemon.state_dir)
    store.root.mkdir()
    with file_size_limit(1024), pytest.raises(StoreError, match="File too large"):
        store.keep(describe(call, sealed_config), call.buffer.views(), call.buffer.kept_frames)
    assert files(sealed_config.daemon.state_dir) == []
    committed = store.keep(
        describe(call, sealed_config), call.buffer.views(), call.buffer.kept_frames
    )
    assert committed.path.endswith(".flac.age")
