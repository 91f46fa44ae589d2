"""The daemon on the real PortAudio path: paplay -> PulseAudio null sink -> monitor -> "pulse".

The daemon is a subprocess with the PulseAudio server's environment, capturing
with ``source = "sounddevice"`` from device ``pulse``, exactly as on a floor.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from tests.harness import Daemon
from tests.pulse import PulseServer, best_ncc, espeak_wav, write_wav_int16

RATE = 16000


def stereo_reference(tmp: Path) -> tuple[Path, np.ndarray[Any, np.dtype[np.float64]]]:
    """Speech on the left (agent), a gliding tone on the right (customer)."""
    speech = espeak_wav("hindsight keeps the whole call", tmp / "speech.wav", RATE)[:, 0]
    t = np.arange(len(speech)) / RATE
    glide = 0.4 * np.sin(2 * np.pi * (300 + 200 * t) * t) * 32767
    data = np.stack([speech, glide.astype(np.int16)], axis=1).astype(np.int16)
    wav = tmp / "stereo.wav"
    write_wav_int16(wav, data, RATE)
    return wav, data.astype(np.float64)


def play(server: PulseServer, wav: Path) -> None:
    proc = server.play(wav)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode(errors="replace")


def pulse_daemon(tmp: Path, server: PulseServer) -> Daemon:
    return Daemon(tmp, env=server.client_env(), source="sounddevice", device="pulse", channels=2)


def device_states(d: Daemon) -> set[str]:
    return {str(device["state"]) for device in d.ok({"op": "status"})["devices"]}


def wait_state(d: Daemon, state: str, timeout: float = 15.0) -> None:
    """Wait until every device of the daemon is in ``state``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if device_states(d) == {state}:
            return
        time.sleep(0.1)
    raise AssertionError(f"device never became {state}: {d.stderr()}")


def recording(d: Daemon, committed: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    data, rate = sf.read(str(d.state / committed["path"]), dtype="int16", always_2d=True)
    assert rate == RATE
    return np.asarray(data, dtype=np.float64)


def call_during(
    d: Daemon, server: PulseServer, wav: Path, lines: tuple[str, ...], mark: bool
) -> None:
    """Calls on ``lines`` that hold ``wav`` played with a margin on both sides; then end."""
    for line in lines:
        d.ok({"op": "start", "line": line})
    time.sleep(0.3)
    play(server, wav)
    time.sleep(1.0)  # the capture path's latency: the tail of the sound must reach the call
    for line in lines:
        if mark:
            d.ok({"op": "mark", "line": line})
        d.ok({"op": "end", "line": line})


def test_a_marked_call_holds_what_was_played_with_channels_in_order(
    pulse: PulseServer, tmp_path: Path
) -> None:
    wav, ref = stereo_reference(tmp_path)
    with pulse_daemon(tmp_path, pulse) as d:
        wait_state(d, "running")
        call_during(d, pulse, wav, ("desk-01",), mark=True)
        (committed,) = d.wait_for_event("call_committed")
    got = recording(d, committed)
    left, lag_left = best_ncc(got[:, 0], ref[:, 0])
    right, lag_right = best_ncc(got[:, 1], ref[:, 1])
    crossed, _ = best_ncc(got[:, 0], ref[:, 1])
    assert left > 0.9 and right > 0.9, (left, right)
    assert abs(crossed) < 0.5, crossed
    assert abs(lag_left - lag_right) <= 1
    assert committed["lost_seconds"] == 0


def test_an_unmarked_call_from_a_real_device_leaves_no_file(
    pulse: PulseServer, tmp_path: Path
) -> None:
    wav, _ = stereo_reference(tmp_path)
    with pulse_daemon(tmp_path, pulse) as d:
        wait_state(d, "running")
        call_during(d, pulse, wav, ("desk-01",), mark=False)
        (wiped,) = d.wait_for_event("call_wiped")
    assert wiped["seconds"] > 1.0
    names = sorted(p.name for p in d.state.rglob("*") if p.is_file())
    assert names == ["caller.key", "checkpoint.key", "commit.index", "commit.log"]


def test_losing_pulseaudio_mid_call_keeps_the_daemon_up_and_recording_resumes(
    pulse: PulseServer, tmp_path: Path
) -> None:
    wav, ref = stereo_reference(tmp_path)
    with pulse_daemon(tmp_path, pulse) as d:
        wait_state(d, "running")
        d.ok({"op": "start", "line": "desk-01"})
        d.ok({"op": "mark", "line": "desk-01"})
        time.sleep(0.5)
        pulse.kill()
        wait_state(d, "lost")
        assert d.ok({"op": "ping"})
        time.sleep(1.0)
        pulse.start()
        wait_state(d, "running", timeout=40)
        time.sleep(0.3)
        play(pulse, wav)
        time.sleep(0.3)
        status = d.ok({"op": "status"})["lines"][0]
        d.ok({"op": "end", "line": "desk-01"})
        (committed,) = d.wait_for_event("call_committed")
    assert status["lost_seconds"] > 1.0
    assert committed["lost_seconds"] >= status["lost_seconds"]
    sidecar = json.loads((d.state / committed["path"]).with_suffix(".json").read_text())
    assert len(sidecar["gaps"]) == 1 and sidecar["gaps"][0]["seconds"] > 1.0
    got = recording(d, committed)
    assert abs(len(got) / RATE - committed["seconds"]) < 0.01
    left, _ = best_ncc(got[:, 0], ref[:, 0])
    assert left > 0.9, left
    log = d.stderr()
    assert log.count("device default lost") == 1, log
    assert log.count("device default is back") == 1, log


def test_list_devices_shows_what_portaudio_sees(pulse: PulseServer, tmp_path: Path) -> None:
    from tests.harness import BIN

    listed = subprocess.run(
        [str(BIN / "hindsightd"), "--list-devices"],
        capture_output=True,
        text=True,
        env=pulse.client_env(),
        timeout=30,
    )
    assert listed.returncode == 0 and "pulse" in listed.stdout


def test_an_unknown_device_stops_start_up_and_lists_the_devices(
    pulse: PulseServer, tmp_path: Path
) -> None:
    d = Daemon(tmp_path, env=pulse.client_env(), source="sounddevice", device="no-such-card")
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) == 1
    err = d.stderr()
    assert "no-such-card" in err and "pulse" in err
    assert "Traceback" not in err


def test_several_devices_each_feed_their_own_lines(pulse: PulseServer, tmp_path: Path) -> None:
    wav, ref = stereo_reference(tmp_path)
    d = Daemon(
        tmp_path,
        env=pulse.client_env(),
        source="sounddevice",
        devices=[("headset", "pulse", 2), ("softphone", "pulse", 2)],
        lines=[("desk-01", [1, 2], "headset"), ("desk-02", [2, 1], "softphone")],
    )
    with d:
        devices = d.ok({"op": "status"})["devices"]
        assert [x["device"] for x in devices] == ["headset", "softphone"]
        wait_state(d, "running")
        call_during(d, pulse, wav, ("desk-01", "desk-02"), mark=True)
        committed = {c["line"]: c for c in d.wait_for_event("call_committed", 2)}
    first = recording(d, committed["desk-01"])
    second = recording(d, committed["desk-02"])
    assert best_ncc(first[:, 0], ref[:, 0])[0] > 0.9
    assert best_ncc(second[:, 0], ref[:, 1])[0] > 0.9  # desk-02 stores channel 2 first
    assert best_ncc(second[:, 1], ref[:, 0])[0] > 0.9
