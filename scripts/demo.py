"""The demo behind ``./run demo``: a daemon on config/demo.toml and a simulated call floor.

It makes a reviewer's age identity (``hindsight keygen``) and runs
``hindsightd`` on config/demo.toml with that reviewer as the recipient of every
recording, on a synthetic signal (no sound card). It drives 40 calls over 4
desks with ``hindsight simulate`` (the record key pressed on a few), keeps one
more call for the ``demo`` purpose, whose retention ends seconds after the
call, and waits for the daemon's own purge to delete it; it exports one
recording for the reviewer (``hindsight export``, an access the log records);
then it stops the daemon with SIGTERM, checks the log with ``hindsight audit
verify`` and prints the audit report and where the recordings are.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "demo-state"
CONFIG = STATE / "hindsight.toml"  # config/demo.toml, made to encrypt to the demo reviewer
REVIEWER = STATE / "reviewer.key"
BIN = Path(sys.executable).parent


def write_config() -> None:
    """config/demo.toml, with paths for a file inside demo-state/ and the reviewer's key as
    the recipient of every recording."""
    made = subprocess.run(
        [str(BIN / "hindsight"), "keygen", "-o", str(REVIEWER)],
        check=True,
        capture_output=True,
        text=True,
    )
    recipient = made.stdout.strip()
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('state_dir = "../demo-state"', 'state_dir = "."')
    text = text.replace('"ipc://../demo-state/control.sock"', '"ipc://control.sock"')
    text += f'\n[storage]\nrecipients = ["{recipient}"]  # the demo reviewer\n'
    CONFIG.write_text(text, encoding="utf-8")
    print(f"demo: reviewer identity in {REVIEWER}; recordings are encrypted to {recipient}")


def export_one() -> bool:
    """Open one recording as the reviewer would: the access is logged first."""
    listed = json.loads(client("recordings", "--purpose", "escalation", "--json"))
    ids = [recording["call_id"] for recording in listed]
    if not ids:
        print("demo: no escalation recording to export")
        return True
    out = STATE / "exported.flac"
    code = hindsight(
        "--config", str(CONFIG), "export", ids[0], "--identity", str(REVIEWER),
        "-o", str(out), "--reason", "demo review",
    )  # fmt: skip
    print(f"demo: {ids[0]} exported for the reviewer to {out.relative_to(ROOT)} (exit {code})")
    return code == 0


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
    STATE.mkdir(mode=0o750)
    write_config()
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
        exported = export_one()
    finally:
        daemon.send_signal(signal.SIGTERM)
        stopped = daemon.wait(60)
    print(f"\ndemo: hindsightd stopped with exit code {stopped}\n")
    verified = hindsight("audit", "verify", "--state-dir", str(STATE))
    print()
    hindsight("audit", "report", "--state-dir", str(STATE))
    recordings = sorted((STATE / "recordings").rglob("*.flac.age"))
    print(f"\ndemo: {len(recordings)} encrypted recordings under {STATE / 'recordings'}")
    for path in recordings[:5]:
        sidecar = path.name.removesuffix(".flac.age") + ".json"
        print(f"  {path.relative_to(ROOT)}  (+ {sidecar})")
    print(f"demo: open one with: age -d -i {REVIEWER.relative_to(ROOT)} FILE > call.flac")
    print(f"demo: commit log at {STATE / 'commit.log'}")
    ok = floor == 0 and purged and exported and stopped == 0 and verified == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
