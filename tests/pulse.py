"""Private, headless PulseAudio server for tests that drive the real PortAudio path.

The capture path under test is::

    paplay --device=<sink>  ->  null sink  ->  <sink>.monitor (default source)
        ->  ALSA "pulse" PCM (libasound2-plugins)  ->  PortAudio ALSA host API
        ->  sounddevice

PortAudio enumerates ALSA devices once, in ``Pa_Initialize`` -- which sounddevice
calls when it is *imported*.  The ALSA pulse plugin only appears as a device if the
server is reachable at that moment, so the process that captures must have
``PulseServer.env`` in its environment *before* ``import sounddevice``.  The robust
way to get that in pytest is to capture in a child process started with
``env=server.client_env()`` (see ``Capture``).

Notes found by experiment (PulseAudio 16.1, PortAudio 19.6, Debian):

* As root, ``pulseaudio --system=no`` only warns ("not intended to be run as root");
  no extra flag is needed.  HOME / XDG_RUNTIME_DIR / PULSE_RUNTIME_PATH /
  PULSE_STATE_PATH point at the work dir so nothing is shared with a real session.
* An idle ``module-null-sink`` renders in 2 s blocks.  A recorder that attaches to
  its monitor then gets its first data only after up to ~2 s and the start of the
  capture is lost.  ``keepalive=True`` (the default) loads a 10 ms
  ``module-loopback`` from the monitor into a second null sink, which keeps the
  sink at 10 ms latency so new streams get their first callback within ~10 ms
  (plus a suspend/resume of the sink at startup so the first 2 s block is dropped).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Capture",
    "PulseServer",
    "PulseServerError",
    "best_ncc",
    "espeak_wav",
    "pulse_available",
    "read_wav_int16",
    "resample",
    "tool",
    "unavailable",
    "write_tone_wav",
    "write_wav_int16",
]

FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]

_ALSA_PLUGIN_GLOBS = (
    "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so",
    "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so",
    "/usr/lib64/alsa-lib/libasound_module_pcm_pulse.so",
)
_ALSA_CONF_GLOBS = (
    "/etc/alsa/conf.d/*.conf",
    "/usr/share/alsa/alsa.conf.d/*.conf",
    "/usr/share/alsa/alsa.conf",
    "/etc/asound.conf",
)
# sockaddr_un.sun_path is 108 bytes including the NUL.
_MAX_SOCKET_PATH = 100


class PulseServerError(RuntimeError):
    """The private PulseAudio server failed to start or to answer."""


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the daemon if the test process dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _alsa_defines_pcm_pulse() -> bool:
    for pattern in _ALSA_CONF_GLOBS:
        for name in glob.glob(pattern):
            try:
                text = Path(name).read_text(errors="replace")
            except OSError:
                continue
            if "pcm.pulse" in text:
                return True
    return False


def unavailable(reason: str) -> None:
    """Skip on a developer's machine that lacks a system package; fail in CI, where
    ./run test installs them, so that a missing feature never hides behind a skip."""
    import pytest

    in_ci = bool(os.environ.get("CI"))
    stop = pytest.fail if in_ci else pytest.skip
    stop(f"test infrastructure unavailable{' in CI' if in_ci else ''}: {reason}")


def tool(name: str, package: str) -> str:
    """The path of command ``name`` (from Debian ``package``); ``unavailable`` when missing."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not found on PATH (apt-get install {package})")
    assert path is not None
    return path


def pulse_available() -> str | None:
    """Return None if the real PulseAudio capture path can be tested, else why not."""
    for tool, package in (
        ("pulseaudio", "pulseaudio"),
        ("pactl", "pulseaudio-utils"),
        ("paplay", "pulseaudio-utils"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (apt-get install {package})"
    if not any(glob.glob(pattern) for pattern in _ALSA_PLUGIN_GLOBS):
        return "ALSA pulse plugin libasound_module_pcm_pulse.so not found (libasound2-plugins)"
    if not _alsa_defines_pcm_pulse():
        return "no ALSA config defines pcm.pulse (libasound2-plugins)"
    if ctypes.util.find_library("portaudio") is None:
        return "libportaudio not found (libportaudio2)"
    return None


class PulseServer:
    """A throw-away PulseAudio daemon with one null sink whose monitor is the default source.

    Use as a context manager, or call start()/stop().  ``kill()`` sends SIGKILL, for
    fault tests; ``start()`` may be called again afterwards (same socket, same sink).
    """

    def __init__(
        self,
        workdir: Path,
        samplerate: int = 16000,
        channels: int = 2,
        *,
        sink: str = "hs_test",
        keepalive: bool = True,
        start_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.samplerate = samplerate
        self.channels = channels
        self.sink = sink
        self.keepalive = keepalive
        self.start_timeout = start_timeout
        self.home = self.workdir / "home"
        self.log_path = self.workdir / "pulseaudio.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: int | None = None
        self._own_runtime: Path | None = None
        runtime = self.workdir / "run"
        if len(str(runtime / "pulse" / "native")) > _MAX_SOCKET_PATH:
            # pytest's tmp_path can be too long for a unix socket path.
            self._own_runtime = Path(tempfile.mkdtemp(prefix="hs-pa-"))
            runtime = self._own_runtime
        self.runtime_dir = runtime
        self.pulse_runtime = runtime / "pulse"
        self.socket = self.pulse_runtime / "native"
        self.client_conf = self.workdir / "client.conf"
        self.script = self.workdir / "hindsight-test.pa"

    # -- environment -------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Variables a client process needs (merge into os.environ before importing sounddevice).

        PULSE_SERVER alone is sufficient (the socket allows anonymous auth);
        PULSE_CLIENTCONFIG disables autospawn and ignores the user's client.conf, so a
        killed server stays dead instead of being replaced behind the test's back.
        """
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.pulse_runtime),
            "PULSE_CLIENTCONFIG": str(self.client_conf),
            "PULSE_COOKIE": str(self.home / ".config" / "pulse" / "cookie"),
        }

    def _daemon_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PULSE_") and k not in ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY")
        }
        env.update(
            HOME=str(self.home),
            XDG_RUNTIME_DIR=str(self.runtime_dir),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            PULSE_RUNTIME_PATH=str(self.pulse_runtime),
            PULSE_STATE_PATH=str(self.home / ".config" / "pulse"),
        )
        return env

    def client_env(self) -> dict[str, str]:
        """os.environ with this server's variables applied: pass as ``env=`` to children."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(self.env)
        return env

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_files(self) -> None:
        for d in (self.home, self.runtime_dir, self.pulse_runtime):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        self.client_conf.write_text("autospawn = no\n")
        spec = f"rate={self.samplerate} channels={self.channels}"
        lines = [
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            f"load-module module-null-sink sink_name={self.sink} {spec}"
            f" sink_properties=device.description={self.sink}",
            f"set-default-sink {self.sink}",
            f"set-default-source {self.sink}.monitor",
        ]
        if self.keepalive:
            keep = f"{self.sink}_keepalive"
            lines += [
                f"load-module module-null-sink sink_name={keep} {spec}"
                f" sink_properties=device.description={keep}",
                f"load-module module-loopback source={self.sink}.monitor sink={keep}"
                " latency_msec=10 source_dont_move=true sink_dont_move=true",
                # loading a sink can change the default; pin it again
                f"set-default-sink {self.sink}",
                f"set-default-source {self.sink}.monitor",
                # The null sink scheduled its first 2 s render block before the loopback
                # asked for 10 ms; a suspend/resume cycle restarts its clock at once.
                f"suspend-sink {self.sink} 1",
                f"suspend-sink {self.sink} 0",
            ]
        self.script.write_text("\n".join(lines) + "\n")

    def _log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    def start(self) -> None:
        """Start the daemon and wait (bounded) until it answers with the sink as default."""
        if self.running:
            raise PulseServerError("PulseAudio server already running")
        self._write_files()
        if self.socket.exists():
            self.socket.unlink()  # stale after kill(); pulseaudio would refuse otherwise
        cmd = [
            "pulseaudio",
            "--daemonize=no",
            "--system=no",
            "--fail=yes",
            "-n",
            f"--file={self.script}",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=no",
            "--realtime=no",
            "--high-priority=no",
            "--no-cpu-limit",
            "--log-target=stderr",
            "--log-level=notice",
        ]
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=self._daemon_env(),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,  # ^C in the test runner must not reach it first
                # PDEATHSIG fires when the *thread* that started it exits: start from
                # the main thread (pytest does).
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            os.close(log_fd)
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc = None
                raise PulseServerError(
                    f"pulseaudio exited with status {rc} during startup:\n{self._log_tail()}"
                )
            try:
                info = self.pactl("info", timeout=2.0)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
            else:
                if f"Default Source: {self.sink}.monitor" in info:
                    return
                last = info
            if time.monotonic() > deadline:
                self.kill()
                raise PulseServerError(
                    f"pulseaudio did not answer within {self.start_timeout:.0f}s"
                    f" (last pactl: {last.strip()}):\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, wait up to 5 s, then SIGKILL.  Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._proc = None
        if self._own_runtime is not None:
            shutil.rmtree(self._own_runtime, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the daemon (simulates a crashed server / vanished device)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> PulseServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------

    def pactl(self, *args: str, timeout: float = 5.0) -> str:
        """Run pactl against this server and return its stdout (raises on failure)."""
        out = subprocess.run(
            ["pactl", *args],
            env=self.client_env(),
            capture_output=True,
            check=True,
            timeout=timeout,
        )
        return out.stdout.decode(errors="replace")

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        """paplay ``wav`` into the null sink (PulseAudio resamples/remixes as needed)."""
        return subprocess.Popen(
            ["paplay", f"--device={self.sink}", str(wav)],
            env=self.client_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )


# -- capture in a child process ----------------------------------------------------------------


class Capture:
    """Capture from a PortAudio device with sounddevice in a child process.

    The child is ``python tests/pulse.py capture ...`` started with ``server.client_env()``,
    so its PortAudio initialises *after* the environment points at the server, whatever
    the parent process has already imported.  It talks JSON lines over stdin/stdout::

        status  -> {"callbacks", "frames", "statuses", "active", "finished", ...}
        reopen  -> close the stream, open a new one without reinitialising PortAudio
        reinit  -> close the stream, sd._terminate(); sd._initialize(), open a new one
        stop    -> save the captured int16 frames to ``out`` (.npy) and exit
    """

    def __init__(
        self,
        server: PulseServer,
        out: Path,
        *,
        device: str = "pulse",
        channels: int | None = None,
        samplerate: int | None = None,
    ) -> None:
        self.server = server
        self.out = Path(out)
        self.device = device
        self.channels = channels if channels is not None else server.channels
        self.samplerate = samplerate if samplerate is not None else server.samplerate
        self.stderr_path = self.out.with_suffix(".stderr.txt")
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes] = queue.Queue()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def _stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "<no stderr>"

    def _reply(self, what: str, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"capture child gave no reply to {what!r} within {timeout}s:\n{self._stderr()}"
            ) from None
        if not line:
            rc = self._proc.wait(timeout=5) if self._proc is not None else None
            raise RuntimeError(f"capture child exited ({rc}) during {what!r}:\n{self._stderr()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def start(self, timeout: float = 10.0) -> dict[str, Any]:
        """Start the child; returns once its stream delivered the first callback."""
        err = self.stderr_path.open("wb")
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "capture",
                    self.device,
                    str(self.channels),
                    str(self.samplerate),
                    str(self.out),
                ],
                env=self.server.client_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        finally:
            err.close()
        assert self._proc.stdout is not None
        threading.Thread(target=self._pump, args=(self._proc.stdout,), daemon=True).start()
        reply = self._reply("start", timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"capture child could not open {self.device!r}: {reply}")
        return reply

    def request(self, cmd: str, timeout: float = 10.0) -> dict[str, Any]:
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("capture child not started")
        self._proc.stdin.write(cmd.encode() + b"\n")
        self._proc.stdin.flush()
        return self._reply(cmd, timeout)

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def reopen(self) -> dict[str, Any]:
        return self.request("reopen")

    def reinit(self) -> dict[str, Any]:
        return self.request("reinit")

    def stop(self, timeout: float = 10.0) -> Int16Array:
        """Stop capturing and return the frames as (frames, channels) int16."""
        self.request("stop", timeout)
        self.close()
        data: Int16Array = np.load(self.out)
        return data

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _capture_child(device: str, channels: int, samplerate: int, out: Path) -> int:
    """Child side of Capture.  Imports sounddevice only now, with the env already set."""
    import sounddevice as sd

    chunks: list[Int16Array] = []
    statuses: list[str] = []
    counters = {"callbacks": 0, "frames": 0}
    finished = threading.Event()
    t0 = time.monotonic()
    times: dict[str, float | None] = {"first": None, "last": None, "finished": None}

    def callback(indata: Int16Array, frames: int, when: Any, status: Any) -> None:
        now = time.monotonic() - t0
        chunks.append(indata.copy())
        counters["callbacks"] += 1
        counters["frames"] += frames
        if times["first"] is None:
            times["first"] = now
        times["last"] = now
        if status:
            statuses.append(str(status))

    def on_finished() -> None:
        times["finished"] = time.monotonic() - t0
        finished.set()

    stream: Any = None

    def reply(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def open_stream() -> dict[str, Any]:
        nonlocal stream
        finished.clear()
        times["first"] = times["finished"] = None
        begin = time.monotonic()
        try:
            stream = sd.InputStream(
                device=device,
                channels=channels,
                samplerate=samplerate,
                dtype="int16",
                callback=callback,
                finished_callback=on_finished,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            stream = None
            names = [d["name"] for d in sd.query_devices()]
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "devices": names}
        opened = time.monotonic() - begin
        deadline = time.monotonic() + 5.0
        while times["first"] is None and time.monotonic() < deadline:
            time.sleep(0.002)
        first = None if times["first"] is None else time.monotonic() - begin
        return {"ok": first is not None, "open_s": opened, "first_callback_s": first}

    def state() -> dict[str, Any]:
        active = stopped = None
        if stream is not None:
            active, stopped = bool(stream.active), bool(stream.stopped)
        return {
            "ok": True,
            **counters,
            "statuses": statuses[-10:],
            "active": active,
            "stopped": stopped,
            "finished": finished.is_set(),
            "t": time.monotonic() - t0,
            **{f"{k}_t": v for k, v in times.items()},
        }

    def close_stream() -> None:
        nonlocal stream
        if stream is not None:
            stream.close(ignore_errors=True)
            stream = None

    reply(**open_stream())
    for raw in sys.stdin:
        cmd = raw.strip()
        if cmd == "status":
            reply(**state())
        elif cmd in ("reopen", "reinit"):
            close_stream()
            if cmd == "reinit":
                sd._terminate()
                sd._initialize()
            reply(**open_stream())
        elif cmd == "stop":
            close_stream()
            data = np.concatenate(chunks) if chunks else np.zeros((0, channels), np.int16)
            np.save(out, data)
            reply(**state())
            return 0
        else:
            reply(ok=False, error=f"unknown command {cmd!r}")
    close_stream()
    return 0


# -- signals ---------------------------------------------------------------------------------


def write_wav_int16(path: Path, data: Int16Array, samplerate: int) -> None:
    """Write a (frames,) or (frames, channels) int16 array as a PCM WAV (stdlib only)."""
    frames = data.reshape(len(data), -1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(2)
        w.setframerate(samplerate)
        w.writeframes(frames.astype("<i2").tobytes())


def read_wav_int16(path: Path) -> tuple[Int16Array, int]:
    """Read a 16-bit PCM WAV as (frames, channels) int16 and its sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        raw = w.readframes(w.getnframes())
        data = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        return data.reshape(-1, w.getnchannels()), w.getframerate()


def write_tone_wav(
    path: Path,
    samplerate: int,
    freqs: tuple[float, ...] = (440.0, 1000.0),
    seconds: float = 1.0,
    amplitude: float = 0.5,
) -> Int16Array:
    """One sine per channel (freqs[i] on channel i) with a rising envelope; returns the data."""
    t = np.arange(round(samplerate * seconds)) / samplerate
    env = np.linspace(0.2, 1.0, len(t))
    chans = [amplitude * env * np.sin(2 * np.pi * f * t) for f in freqs]
    data = np.round(np.stack(chans, axis=1) * 32767).astype(np.int16)
    write_wav_int16(path, data, samplerate)
    return data


def resample(x: FloatArray, sr_in: int, sr_out: int) -> FloatArray:
    """Band-limited FFT resampling along axis 0 (numpy only; fine for short test clips)."""
    if sr_in == sr_out:
        return x.astype(np.float64)
    n_in = x.shape[0]
    n_out = round(n_in * sr_out / sr_in)
    spec = np.fft.rfft(x, axis=0)
    keep = min(spec.shape[0], n_out // 2 + 1)
    out_spec = np.zeros((n_out // 2 + 1, *spec.shape[1:]), dtype=complex)
    out_spec[:keep] = spec[:keep]
    y: FloatArray = np.fft.irfft(out_spec, n=n_out, axis=0) * (n_out / n_in)
    return y


def espeak_wav(text: str, path: Path, samplerate: int = 16000, channels: int = 1) -> Int16Array:
    """Synthesize ``text`` with espeak-ng (22050 Hz mono) and store it at ``samplerate``."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    data, sr = read_wav_int16(raw)
    raw.unlink()
    y = resample(data.astype(np.float64), sr, samplerate)
    if channels > 1:
        y = np.repeat(y[:, :1], channels, axis=1)
    out = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    write_wav_int16(path, out, samplerate)
    return out


def best_ncc(captured: npt.ArrayLike, reference: npt.ArrayLike) -> tuple[float, int]:
    """Max normalised cross-correlation of ``reference`` inside ``captured`` (1-D), and lag."""
    a = np.asarray(captured, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if len(a) < len(b):
        a = np.concatenate([a, np.zeros(len(b) - len(a))])
    n = len(a) + len(b)
    nfft = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, nfft) * np.conj(np.fft.rfft(b, nfft)), nfft)
    corr = corr[: len(a) - len(b) + 1]  # lags where b fits entirely inside a
    csum = np.concatenate([[0.0], np.cumsum(a * a)])
    energy = csum[len(b) :] - csum[: len(a) - len(b) + 1]
    denom = np.sqrt(np.maximum(energy, 1e-12) * float(np.dot(b, b)))
    ncc = corr / denom
    lag = int(np.argmax(ncc))
    return float(ncc[lag]), lag


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "capture":
        sys.exit(_capture_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])))
    sys.exit(f"usage: {sys.argv[0]} capture DEVICE CHANNELS SAMPLERATE OUT.npy")
