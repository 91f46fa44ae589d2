"""The demo behind ``./run demo``: a daemon on config/demo.toml and a simulated call floor.

It starts ``hindsightd`` on a synthetic signal (no sound card), drives 40
calls over 4 desks with ``hindsight simulate`` (the record key pressed on a
few), keeps one more call for the ``demo`` purpose, whose retention ends
seconds after the call, and waits for the daemon's own purge to delete it;
then it stops the daemon with SIGTERM, checks the log with ``hindsight audit
verify`` and prints the audit report and where the recordings are.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "demo.toml"
STATE = ROOT / "demo-state"
BIN = Path(sys.executable).parent


def hindsight(*args: str) -> int:
    return subprocess.call([str(BIN / "hindsight"), *args])


def wait_until_up(daemon: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if daemon.poll() is not None:
            sys.exit(f"demo: hindsightd exited with {daemon.returncode}")
        ping = [str(BIN / "hindsight"), "--config", str(CONFIG), "--timeout", "0.3", "ping"]
        if subprocess.call(ping, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
            return
        time.sleep(0.1)
    sys.exit("demo: hindsightd did not come up")


def client(*args: str) -> str:
    command = [str(BIN / "hindsight"), "--config", str(CONFIG), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def show_a_purge() -> bool:
    """Keep one call for the demo purpose, then watch the daemon's purge delete it."""
    print("\ndemo: one more call on desk-01, kept for the 'demo' purpose (retention ~9 s)")
    call_id = client("start", "desk-01", "--agent", "agent-01")
    time.sleep(2.0)
    client("mark", "desk-01", "--purpose", "demo", "--note", "retention demo")
    client("end", "desk-01")
    time.sleep(1.5)  # the keeper settles a call a moment after it ends
    hindsight("--config", str(CONFIG), "recordings", "--purpose", "demo")
    print("demo: waiting for the daemon's purge (every 5 s) to delete it when it expires")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if call_id not in client("recordings", "--purpose", "demo", "--json"):
            print(f"demo: {call_id} expired and was deleted by the purge (see the report)")
            return True
        time.sleep(1.0)
    print(f"demo: {call_id} was not purged in time")
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="40")
    parser.add_argument("--lines", default="4")
    args = parser.parse_args()
    if STATE.exists():
        print(f"demo: clearing the previous demo's {STATE}")
        shutil.rmtree(STATE)
    STATE.mkdir()
    daemon_log = STATE / "hindsightd.log"
    print(f"demo: starting hindsightd on config/demo.toml (synthetic audio), log in {daemon_log}")
    with open(daemon_log, "wb") as log:
        daemon = subprocess.Popen([str(BIN / "hindsightd"), "--config", str(CONFIG)], stderr=log)
    try:
        wait_until_up(daemon)
        hindsight("--config", str(CONFIG), "status")
        print(f"\ndemo: simulating {args.calls} calls on {args.lines} desks")
        floor = hindsight(
            "--config", str(CONFIG), "simulate", "--calls", args.calls, "--lines", args.lines
        )
        purged = show_a_purge()
    finally:
        daemon.send_signal(signal.SIGTERM)
        stopped = daemon.wait(60)
    print(f"\ndemo: hindsightd stopped with exit code {stopped}\n")
    verified = hindsight("audit", "verify", "--state-dir", str(STATE))
    print()
    hindsight("audit", "report", "--state-dir", str(STATE))
    recordings = sorted((STATE / "recordings").rglob("*.flac"))
    print(f"\ndemo: {len(recordings)} recordings under {STATE / 'recordings'}")
    for path in recordings[:5]:
        print(f"  {path.relative_to(ROOT)}  (+ {path.with_suffix('.json').name})")
    print(f"demo: commit log at {STATE / 'commit.log'}")
    return 0 if floor == 0 and purged and stopped == 0 and verified == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
