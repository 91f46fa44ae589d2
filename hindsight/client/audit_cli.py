"""``hindsight audit VERB``: the auditor's commands. Each verb is a ``_add_VERB`` that
declares its options and a ``cmd_VERB`` that runs it; none needs the daemon but
``witness``, which only asks it for checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hindsight import audit
from hindsight.audit import text as audit_text


def add_audit(commands: Any) -> None:
    audit_parser = commands.add_parser("audit", help="check and report on a state dir")
    verbs = audit_parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_verify(verbs)
    _add_report(verbs)


def _state_dir(verb: argparse.ArgumentParser) -> None:
    verb.add_argument("--state-dir", required=True, help="the daemon's state_dir")


def _add_verify(verbs: Any) -> None:
    verify = verbs.add_parser("verify", help="check the commit log and recordings")
    _state_dir(verify)
    verify.set_defaults(run=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    result = audit.verify(Path(args.state_dir))
    if not result.ok:
        print(f"hindsight: audit failed: {result.problem}", file=sys.stderr)
        return 1
    print(f"ok: {result.entries} log entries chained, {result.recordings} recordings intact")
    return 0


def _add_report(verbs: Any) -> None:
    report = verbs.add_parser("report", help="what was committed, wiped, deleted and why")
    _state_dir(report)
    report.add_argument("--json", action="store_true")
    report.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    result = audit.report(Path(args.state_dir))
    print(json.dumps(result.to_json(), indent=2) if args.json else audit_text.render(result))
    return 0
