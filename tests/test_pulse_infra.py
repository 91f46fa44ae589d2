"""End-to-end proof that the real PortAudio capture path works through a private PulseAudio.

paplay -> null sink -> monitor (default source) -> ALSA "pulse" PCM -> PortAudio -> sounddevice,
captured in a child process (PortAudio enumerates devices once, at import, so the capturing
process must start with the server's environment).

Missing system packages skip these tests locally; with CI set they fail instead.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from tests.pulse import (
    Capture,
    PulseServer,
    best_ncc,
    espeak_wav,
    read_wav_int16,
    unavailable,
    write_tone_wav,
)

RATE = 16000


def _play(server: PulseServer, wav: Path) -> None:
    proc = server.play(wav)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, f"paplay failed: {err.decode(errors='replace')}"


def test_tone_capture_matches_and_channels_not_swapped(pulse: PulseServer, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    ref = write_tone_wav(wav, RATE, freqs=(440.0, 1000.0), seconds=0.5).astype(np.float64)

    with Capture(pulse, tmp_path / "tone.npy") as cap:
        _play(pulse, wav)
        time.sleep(0.1)
        data = cap.stop()
    got = data.astype(np.float64)

    assert data.shape[1] == 2
    assert len(data) >= len(ref), f"captured only {len(data)} frames"
    left, lag_l = best_ncc(got[:, 0], ref[:, 0])
    right, lag_r = best_ncc(got[:, 1], ref[:, 1])
    crossed, _ = best_ncc(got[:, 0], ref[:, 1])
    assert left > 0.9, f"left NCC {left:.3f}"
    assert right > 0.9, f"right NCC {right:.3f}"
    assert abs(crossed) < 0.3, f"left channel correlates with the right tone ({crossed:.3f})"
    assert lag_l == lag_r, "channels captured at different offsets: frames were lost"


def test_speech_capture_through_server_resampler(pulse: PulseServer, tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        unavailable("espeak-ng not found (apt-get install espeak-ng)")
    raw = tmp_path / "speech22k.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "one two three"], check=True, timeout=30)
    _, native_rate = read_wav_int16(raw)
    assert native_rate == 22050  # espeak-ng writes 22050 Hz mono s16
    ref = espeak_wav("one two three", tmp_path / "speech16k.wav", samplerate=RATE)

    with Capture(pulse, tmp_path / "speech.npy") as cap:
        _play(pulse, raw)  # 22050 Hz mono: PulseAudio resamples and upmixes to the sink
        time.sleep(0.1)
        got = cap.stop().astype(np.float64)

    for ch in range(2):
        ncc, _ = best_ncc(got[:, ch], ref[:, 0].astype(np.float64))
        assert ncc > 0.9, f"channel {ch}: NCC {ncc:.3f} against numpy-resampled reference"


def test_server_kill_ends_stream_and_restart_allows_reopen(
    pulse: PulseServer, tmp_path: Path
) -> None:
    with Capture(pulse, tmp_path / "fault.npy") as cap:
        before = cap.status()
        assert before["active"] and before["callbacks"] > 0

        pulse.kill()
        deadline = time.monotonic() + 3.0
        after = cap.status()
        while not after["finished"] and time.monotonic() < deadline:
            time.sleep(0.05)
            after = cap.status()
        # PortAudio's ALSA thread sees a poll error: the stream finishes, no status flag.
        assert after["finished"], after
        assert after["active"] is False, after
        assert after["statuses"] == [], after

        dead = cap.reopen()
        assert not dead["ok"] and "PortAudioError" in dead["error"], dead

        pulse.start()
        again = cap.reopen()  # no PortAudio re-initialisation needed
        assert again["ok"], again
        assert cap.status()["active"]
        cap.stop()
