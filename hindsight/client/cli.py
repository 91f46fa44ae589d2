"""``hindsight``: the client for agents, telephony integrations, sysadmins and auditors.

Exit codes (the contract): 0 ok, 1 the daemon refused (its message on
stderr), 2 usage error, 3 daemon unreachable within the timeout. Expected
failures print ``hindsight: <what went wrong>``, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hindsight import __version__, replies
from hindsight.client import access, audit_cli, curve, hotkey, simulate
from hindsight.client.options import (
    actor_of,
    connection_options,
    days,
    endpoint_of,
    signature_options,
    state_dir_options,
)
from hindsight.client.transport import send
from hindsight.errors import ClientError, HindsightError
from hindsight.protocol import (
    Asks,
    End,
    Erase,
    Extend,
    Hold,
    Mark,
    Pause,
    Ping,
    Purge,
    Recordings,
    Release,
    Resolve,
    Resume,
    Start,
    Status,
)
from hindsight.replies import CallReply, RecordingRow, Reply, RetentionReply, StatusReply

Command = Callable[[argparse.Namespace], int]
Adder = Callable[[str, Command, str], argparse.ArgumentParser]


R = TypeVar("R", bound=Reply)


def call(args: argparse.Namespace, request: Asks[R]) -> R:
    return send(endpoint_of(args), request, args.timeout)


def _answer(args: argparse.Namespace, request: Asks[CallReply]) -> int:
    """Send ``request`` and print the id of the call it was about."""
    print(call(args, request).call_id)
    return 0


def _retention(args: argparse.Namespace, request: Asks[RetentionReply]) -> int:
    """Send ``request`` and print the purpose's new end of retention."""
    print(call(args, request).retain_until)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    print(f"hindsightd {call(args, Ping()).version} is up")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    # () and "not given" differ: () means the caller was told of no purpose.
    announced = None if args.announce is None else tuple(args.announce)
    start = Start(
        line=args.line,
        call_id=args.call_id,
        agent=args.agent,
        caller=args.caller,
        announced=() if args.announce_none else announced,
    )
    return _answer(args, start)


def cmd_end(args: argparse.Namespace) -> int:
    return _answer(args, End(line=args.line))


def cmd_mark(args: argparse.Namespace) -> int:
    mark = Mark(line=args.line, purpose=args.purpose, note=args.note, call_id=args.call_id)
    return _answer(args, mark)


def cmd_pause(args: argparse.Namespace) -> int:
    return _answer(args, Pause(line=args.line))


def cmd_resume(args: argparse.Namespace) -> int:
    return _answer(args, Resume(line=args.line))


def _by(args: argparse.Namespace) -> dict[str, str]:
    """Who asks for a change to a recording, and why."""
    return {"actor": actor_of(args), "reason": args.reason}


def cmd_resolve(args: argparse.Namespace) -> int:
    resolve = Resolve(call_id=args.call, purpose=args.purpose, **_by(args))
    return _retention(args, resolve)


def cmd_extend(args: argparse.Namespace) -> int:
    extend = Extend(call_id=args.call, purpose=args.purpose, days=args.days, **_by(args))
    return _retention(args, extend)


def cmd_hold(args: argparse.Namespace) -> int:
    return _answer(args, Hold(call_id=args.call, **_by(args)))


def cmd_release(args: argparse.Namespace) -> int:
    return _answer(args, Release(call_id=args.call, **_by(args)))


def cmd_erase(args: argparse.Namespace) -> int:
    return _answer(args, Erase(call_id=args.call, **_by(args)))


def cmd_purge(args: argparse.Namespace) -> int:
    deleted = call(args, Purge(dry_run=args.dry_run)).deleted
    print("\n".join(deleted) if deleted else "no recording is due")
    return 0


def cmd_recordings(args: argparse.Namespace) -> int:
    reply = call(args, Recordings(purpose=args.purpose, caller=args.caller))
    if args.json:
        print(json.dumps(replies.encode(reply)["recordings"], indent=2))
    else:
        print(render_recordings(reply.recordings))
    return 0


def render_recordings(recordings: Sequence[RecordingRow]) -> str:
    """One row per purpose of each recording, so that a call id finds all of its rows."""
    if not recordings:
        return "no recordings"
    rows = [("CALL", "LINE", "AGENT", "PURPOSE", "RETAIN UNTIL", "RESOLVED", "HELD")]
    for rec in recordings:
        common = (rec.call_id, rec.line, rec.agent or "-")
        held = "yes" if rec.held else "no"
        if not rec.purposes:
            rows.append((*common, "-", "-", "no", held))
        for name, purpose in sorted(rec.purposes.items()):
            resolved = "yes" if purpose.resolved else "no"
            rows.append((*common, name, purpose.retain_until or "-", resolved, held))
    return _table(rows)


def cmd_status(args: argparse.Namespace) -> int:
    reply = call(args, Status())
    print(json.dumps(replies.encode(reply), indent=2) if args.json else render_status(reply))
    return 0


def render_status(reply: StatusReply) -> str:
    rows = [("LINE", "DEVICE", "CALL", "SECONDS", "MARKED", "FLAGGED", "LOST S")]
    for line in reply.lines:
        rows.append(
            (
                line.line,
                line.device,
                line.call_id or "-",
                f"{line.seconds:.1f}" if line.call_id else "-",
                "yes" if line.marked else "no",
                str(line.status_flags),
                f"{line.lost_seconds:.1f}",
            )
        )
    text = _table(rows)
    if reply.devices:
        text += "\n\n" + _table(
            [("DEVICE", "STATE")] + [(d.device, d.state) for d in reply.devices]
        )
    worker = reply.worker
    if worker is not None:
        pid = worker.pid if worker.pid is not None else "restarting"
        text += f"\n\nworker: pid {pid}, {worker.restarts} restart(s)"
    metrics = reply.metrics
    if metrics is not None and metrics.taken:
        text += (
            f"\npool: {metrics.pool_free} of {metrics.pool_chunks} chunks free, "
            f"{metrics.pool_steals} taken from live calls, "
            f"{metrics.dropped_frames} frames dropped; worker backlog {metrics.backlog}, "
            f"{metrics.store_failures} failed job(s)"
        )
        if metrics.last_store_error:
            text += f"\nlast store error ({metrics.last_store_error_at}): "
            text += metrics.last_store_error
        text += f"\n(figures of {metrics.taken})"
    if reply.encryption is not None and reply.encryption.unencrypted_purposes:
        bare = ", ".join(reply.encryption.unencrypted_purposes)
        text += f"\nNOT ENCRYPTED: recordings kept for {bare}"
    return text


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows
    )


def cmd_keygen(args: argparse.Namespace) -> int:
    print(curve.keygen_curve(args.output) if args.curve else access.keygen(args.output))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return access.export(args)


def cmd_play(args: argparse.Namespace) -> int:
    return access.play(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hindsight", description="Control and audit Hindsight.")
    parser.add_argument("--version", action="version", version=f"hindsight {__version__}")
    connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        connection_options(sub, suppress=True)
        sub.set_defaults(run=run)
        return sub

    add("ping", cmd_ping, "exit 0 when the daemon answers")
    start = add("start", cmd_start, "a call begins on LINE; prints its call id")
    start.add_argument("line")
    start.add_argument("--call-id")
    start.add_argument("--agent")
    start.add_argument(
        "--caller", help="the caller's number (never stored: only its keyed pseudonym is kept)"
    )
    told = start.add_mutually_exclusive_group()
    told.add_argument(
        "--announce",
        action="append",
        metavar="P",
        help="a purpose the caller was told of (repeatable); replaces the line's list",
    )
    told.add_argument(
        "--announce-none", action="store_true", help="the caller was told of no purpose"
    )
    add("end", cmd_end, "the call on LINE ends").add_argument("line")
    mark = add("mark", cmd_mark, "the retroactive record key: keep the whole current call")
    mark.add_argument("line")
    mark.add_argument("--purpose")
    mark.add_argument("--note", help="kept with the recording, never in the log")
    mark.add_argument(
        "--call-id", help="which call: the live one, or one that ended within the grace"
    )
    add("pause", cmd_pause, "the call on LINE is paused: its audio is not kept").add_argument(
        "line"
    )
    add("resume", cmd_resume, "the call on LINE is recorded again").add_argument("line")
    add("status", cmd_status, "live lines and calls").add_argument("--json", action="store_true")
    _add_retention(add)
    _add_access(add, commands)
    simulate.add_parser(add("simulate", simulate.run, "drive a simulated call floor"))
    hotkey.add_parser(
        add("hotkey", hotkey.run, "the record key as a global key of the X11 session")
    )
    audit_cli.add_audit(commands)
    return parser


def _add_retention(add: Adder) -> None:
    recordings = add("recordings", cmd_recordings, "the recordings that exist now")
    recordings.add_argument("--purpose", help="only those kept for this purpose")
    recordings.add_argument("--caller", help="only this caller's (a subject access request)")
    recordings.add_argument("--json", action="store_true")
    resolve = _add_change(
        add, "resolve", cmd_resolve, "a purpose of CALL is served; prints its new retain_until"
    )
    resolve.add_argument("--purpose", required=True)
    extend = _add_change(
        add, "extend", cmd_extend, "keep CALL longer for a purpose; prints its new retain_until"
    )
    extend.add_argument("--purpose", required=True)
    extend.add_argument("--days", type=days, required=True, help="counted from now")
    _add_change(add, "hold", cmd_hold, "put CALL under legal hold: nothing deletes it")
    _add_change(add, "release", cmd_release, "lift the legal hold on CALL")
    _add_change(add, "erase", cmd_erase, "delete CALL now (an erasure request)")
    purge = add("purge", cmd_purge, "delete the recordings that are due; prints their ids")
    purge.add_argument("--dry-run", action="store_true", help="only list what would go")


def _add_change(add: Adder, name: str, run: Command, help: str) -> argparse.ArgumentParser:
    """A command that changes the recording CALL, and says who asks and why."""
    sub = add(name, run, help)
    sub.add_argument("call", metavar="CALL")
    signature_options(sub)
    return sub


def _add_access(add: Adder, commands: Any) -> None:
    keygen = commands.add_parser(
        "keygen",
        help="make an age identity for opening recordings (prints its recipient), or with "
        "--curve a CURVE key pair for daemon.listen (prints its public key)",
        description="Write a new age X25519 identity to FILE (mode 0600, never replacing a "
        "file) and print its recipient (age1...) for the daemon's config. With --curve, write "
        "a ZeroMQ CURVE key pair to FILE.key_secret (mode 0600) and FILE.key, and print the "
        "public key: a client's goes into its [[clients]] entry, the daemon's to its clients.",
    )
    keygen.add_argument("-o", "--output", required=True, metavar="FILE", help="the new file")
    keygen.add_argument(
        "--curve", action="store_true", help="a CURVE key pair for daemon.listen instead"
    )
    keygen.set_defaults(run=cmd_keygen)
    export = _add_opening(add, "export", cmd_export, "decrypt recording CALL into a FLAC file")
    export.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the FLAC to write; - for stdout"
    )
    play = _add_opening(add, "play", cmd_play, "play recording CALL on an output device")
    play.add_argument("--device", help="output device: a (part of a) name or an index")


def _add_opening(add: Adder, name: str, run: Command, help: str) -> argparse.ArgumentParser:
    """A command that opens the recording CALL: the daemon logs who and why first."""
    sub = add(name, run, help + " (the access is logged first)")
    sub.add_argument("call", metavar="CALL")
    sub.add_argument(
        "--identity", required=True, metavar="FILE", help="the age identity keygen wrote"
    )
    signature_options(sub)
    state_dir_options(sub)
    sub.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="for a recording kept in an object store: its S3 endpoint (default: the "
        "config's storage.s3_endpoint)",
    )
    sub.add_argument(
        "--s3-credentials-file",
        metavar="FILE",
        help="for a recording kept in an object store: your read credentials (AWS INI, "
        "[default]); default: the AWS_* environment variables",
    )
    return sub


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ClientError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return exc.exit_code
    except HindsightError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (say `| head`) left early: nothing more to say, and no traceback
        # when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
