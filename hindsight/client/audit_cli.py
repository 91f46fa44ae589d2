"""``hindsight audit VERB``: the auditor's commands. Each verb is a ``_add_VERB`` that
declares its options and a ``cmd_VERB`` that runs it; none needs the daemon but
``witness``, which only asks it for checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hindsight.client.access import load_identities
from hindsight.client.options import connection_options, endpoint_of, timeout_seconds
from hindsight.client.transport import send
from hindsight.clock import iso
from hindsight.commitlog import LOG_NAME
from hindsight.errors import ClientError, StoreError
from hindsight.protocol import EXIT_USAGE, Checkpoint

if TYPE_CHECKING:
    from hindsight.audit.common import Span

# ``hindsight.audit`` (the rules, numpy, SciPy) is imported by the verbs that run it, not
# here: every other command of the CLI, an agent's ``mark`` among them, starts without it.


def add_audit(commands: Any) -> None:
    audit_parser = commands.add_parser("audit", help="check and report on a state dir")
    verbs = audit_parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_verify(verbs)
    _add_witness(verbs)
    _add_report(verbs)
    _add_register(verbs)
    _add_repair(verbs)
    _add_show(verbs)


def _state_dir(verb: argparse.ArgumentParser) -> None:
    verb.add_argument("--state-dir", required=True, help="the daemon's state_dir")


def _source(verb: argparse.ArgumentParser) -> None:
    """``--state-dir DIR`` or ``--s3 s3://BUCKET/PREFIX`` (with where and as whom)."""
    where = verb.add_mutually_exclusive_group(required=True)
    where.add_argument("--state-dir", help="the daemon's state_dir")
    where.add_argument(
        "--s3",
        metavar="URL",
        help="s3://BUCKET/PREFIX: one host's prefix, or a floor's (every host under it), "
        "read from the bucket alone (shipped log segments and recordings)",
    )
    verb.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="the S3 endpoint, e.g. https://s3.internal:8333 (default: AWS, or $AWS_ENDPOINT_URL)",
    )
    verb.add_argument(
        "--s3-credentials-file",
        type=Path,
        metavar="FILE",
        help="an AWS shared credentials file ([default] profile); else the AWS_* environment "
        "variables. Read access is all the audit needs",
    )


def _local(args: argparse.Namespace) -> bool:
    """True for ``--state-dir``; the S3 options go only with ``--s3``."""
    if args.state_dir is None:
        return False
    if args.s3_endpoint is not None or args.s3_credentials_file is not None:
        raise ClientError("--s3-endpoint and --s3-credentials-file go with --s3", EXIT_USAGE)
    return True


def _bucket(args: argparse.Namespace) -> tuple[Any, str]:
    """The bucket ``--s3`` names, opened and checked (Object Lock on), and the prefix."""
    from hindsight.audit import s3
    from hindsight.objectstore import StoreRefused, StoreUnavailable, read_credentials
    from hindsight.protocol import EXIT_REFUSED, EXIT_UNREACHABLE

    try:
        bucket, prefix = s3.parse_url(args.s3)
    except s3.BadURL as exc:
        raise ClientError(f"--s3: {exc}", EXIT_USAGE) from exc
    credentials = None
    if args.s3_credentials_file is not None:
        try:
            credentials = read_credentials(args.s3_credentials_file)
        except StoreError as exc:
            raise ClientError(str(exc), EXIT_USAGE) from exc
    where = f"s3://{bucket}" + (f" at {args.s3_endpoint}" if args.s3_endpoint else "")
    try:
        return s3.open_bucket(args.s3_endpoint, bucket, credentials), prefix
    except StoreUnavailable as exc:
        raise ClientError(
            f"the object store {where} cannot be reached: {exc}", EXIT_UNREACHABLE
        ) from exc
    except StoreRefused as exc:
        if exc.code == "NoLock":
            raise ClientError(
                f"{where} does not have Object Lock enabled: its objects could be deleted or "
                "overwritten, so it cannot prove anything (a floor's bucket is created with "
                "Object Lock)",
                EXIT_REFUSED,
            ) from exc
        raise ClientError(f"{where} refused: {exc}", EXIT_REFUSED) from exc
    except StoreError as exc:
        raise ClientError(f"{where}: {exc}", EXIT_USAGE) from exc


def _moment(text: str) -> datetime:
    """A date (``2026-11-01``: its midnight) or a time (``2026-11-01T08:00``, ``…Z``, ``…+01:00``);
    one without a zone is UTC, as the log's times are."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM[:SS][Z])"
        ) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _span_options(verb: argparse.ArgumentParser, what: str) -> None:
    verb.add_argument(
        "--since",
        type=_moment,
        metavar="WHEN",
        help=f"{what} from this date or time on (UTC unless it says; the chain is still checked "
        "from the log's first line)",
    )
    verb.add_argument(
        "--until", type=_moment, metavar="WHEN", help=f"{what} before this date or time"
    )


def _span(args: argparse.Namespace) -> Span:
    from hindsight.audit.common import Span

    span = Span(args.since, args.until)
    if span.since is not None and span.until is not None and span.since >= span.until:
        raise ClientError(
            f"--since ({iso(span.since)}) must be before --until ({iso(span.until)})", EXIT_USAGE
        )
    return span


def _add_verify(verbs: Any) -> None:
    verify = verbs.add_parser("verify", help="check the commit log and recordings")
    _source(verify)
    verify.add_argument(
        "--identity",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="an auditor's age identity: opens the sealed seeds of sampling epochs that a "
        "crash left unrevealed (repeatable)",
    )
    verify.add_argument(
        "--witness",
        type=Path,
        metavar="DIR",
        help="a witness's store (audit witness --store): fail when the log no longer holds "
        "a line the witness saw, with the hash it saw",
    )
    _span_options(verify, "hash the recordings of the calls committed")
    verify.set_defaults(run=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from hindsight import audit
    from hindsight.audit import witness
    from hindsight.audit.progress import bar

    identities = [key for path in args.identity for key in load_identities(path)]
    if not _local(args):
        if args.witness is not None:
            raise ClientError("--witness goes with --state-dir, not --s3", EXIT_USAGE)
        return _verify_s3(args, identities)
    witnessed = None if args.witness is None else witness.Store(args.witness).witnessed()
    state_dir, span = Path(args.state_dir), _span(args)
    with bar(state_dir / LOG_NAME, "verifying") as on_line:
        result = audit.verify(
            state_dir, identities=identities, witnessed=witnessed, on_line=on_line, span=span
        )
    if not result.ok:
        print(f"hindsight: audit failed: {result.problem}", file=sys.stderr)
        return 1
    committed = "" if span.whole else f" (those committed {span.describe()})"
    print(
        f"ok: {result.entries} log entries chained, {result.recordings} recordings "
        f"intact{committed}, {result.draws} sampling draws recomputed"
    )
    if witnessed is not None:
        last = max(witnessed)
        print(f"witnessed: {len(witnessed)} checkpoint(s) up to line {last}, all in the log")
    if result.unverified_epochs:
        epochs = ", ".join(map(str, result.unverified_epochs))
        print(
            f"not verified: the draws of sampling epoch(s) {epochs}, whose seed a crash kept "
            "from being revealed (give an auditor's --identity to open their sealed seeds)"
        )
    return 0


def _verify_s3(args: argparse.Namespace, identities: list[Any]) -> int:
    from hindsight.audit import s3

    span = _span(args)
    store, prefix = _bucket(args)
    try:
        with s3.bars("verifying") as progress:
            result = s3.verify_floor(
                store, prefix, identities=identities, span=span, progress=progress
            )
    except StoreError as exc:
        raise ClientError(f"the object store failed: {exc}", 1) from exc
    committed = "" if span.whole else f" (those committed {span.describe()})"
    for host in result.hosts:
        if not host.ok:
            break
        notes = []
        if host.tail:
            notes.append(f"{host.tail} newer object(s) not in the shipped log yet")
        if host.on_disk:
            notes.append(f"{host.on_disk} recording(s) on the host's disk, not checked here")
        if host.unverified_epochs:
            epochs = ", ".join(map(str, host.unverified_epochs))
            notes.append(f"the draws of sampling epoch(s) {epochs} not verified (seed unknown)")
        more = "" if not notes else f"; {'; '.join(notes)}"
        print(
            f"ok: {host.host}: {host.entries} log entries chained in {host.segments} "
            f"segment(s), {host.recordings} recordings intact{committed}, {host.draws} "
            f"sampling draws recomputed{more}"
        )
    if not result.ok:
        print(f"hindsight: audit failed: {result.problem}", file=sys.stderr)
        return 1
    hosts = result.hosts
    print(
        f"ok: {result.url}: {len(hosts)} host(s), {sum(h.entries for h in hosts)} log entries, "
        f"{sum(h.recordings for h in hosts)} recordings intact, "
        f"{sum(h.draws for h in hosts)} sampling draws recomputed"
    )
    return 0


def _add_witness(verbs: Any) -> None:
    sub = verbs.add_parser(
        "witness", help="keep signed checkpoints of a recorder's log, on another host"
    )
    connection_options(sub, suppress=True)
    sub.add_argument("--store", type=Path, required=True, metavar="DIR", help="where to keep them")
    when = sub.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one checkpoint, then exit (default)")
    when.add_argument(
        "--every", type=timeout_seconds, metavar="SECONDS", help="a checkpoint every SECONDS"
    )
    sub.set_defaults(run=cmd_witness)


def cmd_witness(args: argparse.Namespace) -> int:
    from hindsight.audit import witness

    endpoint, timeout = endpoint_of(args), args.timeout
    store = witness.Store(args.store)
    return witness.run(lambda: send(endpoint, Checkpoint(), timeout).checkpoint, store, args.every)


def _add_report(verbs: Any) -> None:
    report = verbs.add_parser("report", help="what was committed, wiped, deleted and why")
    _source(report)
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the report as one self-contained HTML page with charts, instead of text",
    )
    _span_options(report, "count the calls started")
    report.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from hindsight import audit
    from hindsight.audit.progress import bar

    if not _local(args):
        return _report_s3(args)
    state_dir, span = Path(args.state_dir), _span(args)
    with bar(state_dir / LOG_NAME, "reading") as on_line:
        result = audit.report(state_dir, on_line=on_line, span=span)
    return _print_report(args, result)


def _report_s3(args: argparse.Namespace) -> int:
    from hindsight.audit import s3

    span = _span(args)
    store, prefix = _bucket(args)
    try:
        with s3.bars("reading") as progress:
            floor = s3.report_floor(store, prefix, span=span, progress=progress)
    except StoreError as exc:
        raise ClientError(f"the object store failed: {exc}", 1) from exc
    if args.json:
        print(json.dumps(floor.to_json(), indent=2))
        return 0
    if args.html is None:
        print(f"Floor {floor.url}: {len(floor.hosts)} host(s)")
        for host in floor.hosts:
            totals = host.report.totals
            print(
                f"  {host.host}: {host.report.entries} log entries in {host.segments} "
                f"segment(s), {totals.started} calls started, {totals.committed} committed, "
                f"{totals.wiped} wiped"
            )
        print()
    return _print_report(args, floor.report)


def _print_report(args: argparse.Namespace, result: Any) -> int:
    if args.html is not None:
        # Imported here: matplotlib takes a while to load, and only the page needs it.
        from hindsight.audit import html as audit_html

        audit_html.write(result, args.html)
        print(f"wrote the report to {args.html.resolve()}")
        return 0
    from hindsight.audit import text as audit_text

    print(json.dumps(result.to_json(), indent=2) if args.json else audit_text.render(result))
    return 0


def _add_register(verbs: Any) -> None:
    register = verbs.add_parser(
        "register", help="the GDPR Art. 30 record of processing, from the config and the log"
    )
    # SUPPRESS: an absent --config leaves the one given before the command name in force.
    register.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="the daemon's config (default: $HINDSIGHT_CONFIG, else /etc/hindsight/hindsight.toml)",
    )
    register.add_argument("--state-dir", help="also report from this state_dir's commit log")
    register.add_argument("--json", action="store_true")
    register.set_defaults(run=cmd_register)


def cmd_register(args: argparse.Namespace) -> int:
    # Imported here, not at the top, so that this verb stays one block at the end of the file.
    from hindsight.audit import register
    from hindsight.config import load_config, resolve_config_path
    from hindsight.errors import ConfigError

    path = resolve_config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise ClientError(f"audit register needs a valid config: {exc}", EXIT_USAGE) from exc
    record = register.register(config, None if args.state_dir is None else Path(args.state_dir))
    for missing in record.missing:
        print(f"hindsight: warning: {missing} is not set; the record says so", file=sys.stderr)
    print(json.dumps(record.to_json(), indent=2) if args.json else register.render(record))
    return 0


def _add_repair(verbs: Any) -> None:
    repair = verbs.add_parser(
        "repair",
        help="move a commit log's torn tail (a crash's) aside, so that the daemon starts again",
    )
    _state_dir(repair)
    repair.set_defaults(run=cmd_repair)


def cmd_repair(args: argparse.Namespace) -> int:
    # Imported here, not at the top, so that this verb stays one block at the end of the file.
    from hindsight.audit.repair import repair

    done = repair(Path(args.state_dir))
    kept = done.repair
    state_dir = Path(args.state_dir)
    print(f"repaired: {done.tear}")
    finished = " (finishing a repair a crash had cut short)" if done.resumed else ""
    print(
        f"moved {kept.torn_bytes} torn byte(s) (sha256 {kept.torn_sha256}) into "
        f"{state_dir / kept.kept_as}{finished}; {state_dir / 'commit.log'} now ends at seq "
        f"{kept.after_seq}"
    )
    print("the daemon logs it (log_repaired) at its next start; keep the copy for the auditor")
    return 0


def _add_show(verbs: Any) -> None:
    show = verbs.add_parser("show", help="one call's whole story, from the log and its files")
    show.add_argument("call_id", metavar="CALL", help="the call's id")
    _state_dir(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    # Imported here, not at the top, so that this verb stays one block at the end of the file.
    from hindsight.audit.common import shown
    from hindsight.audit.progress import bar
    from hindsight.audit.show import render, show
    from hindsight.protocol import EXIT_REFUSED

    state_dir = Path(args.state_dir)
    with bar(state_dir / LOG_NAME, "reading") as on_line:
        story = show(state_dir, args.call_id, on_line)
    if story is None:
        raise ClientError(f"no call {shown(args.call_id)} in commit.log", EXIT_REFUSED)
    print(json.dumps(story.to_json(), indent=2) if args.json else render(story))
    return 0
