"""SIGHUP: what a new config may change while calls are live, and what needs a restart.

Rules:

- The signal handler only queues SIGHUP; the main loop reads the file, decides
  and applies, between two requests. Nothing is half-applied: a config that
  is invalid, or that changes what only a restart can, is refused whole, with
  every reason logged, and the old one stays.
- A restart is needed for ``[daemon]`` (the socket, the state folder),
  ``[audio]`` (the devices, already open) and ``[buffer]`` (the pool, already
  allocated and locked).
- So does where recordings go: ``storage.backend`` and the ``storage.s3_*``
  keys (the worker, the spool and the store's versions depend on them).
- Lines, purposes, sampling, marking, retention, storage's recipients and the
  worker's hang limit change at once. A live call is never dropped: its line may not be
  removed or changed while the call lasts (change it when the line is idle),
  and a purpose that a live call announced, or that a kept recording still
  serves, may not be removed.
- An applied config is logged as ``config_reloaded`` with the file's SHA-256,
  so the auditor can tell which config kept which call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from hindsight.config import Config
from hindsight.daemon.calls import Call

RESTART_SECTIONS = ("daemon", "audio", "buffer")


def refusals(
    old: Config, new: Config, unsettled: Iterable[Call], kept_for: Callable[[str], int]
) -> list[str]:
    """Why ``new`` cannot replace ``old`` now; empty when it can. ``unsettled``: the live calls
    and the ended ones not yet described; ``kept_for(purpose)``: how many recordings are kept
    for that purpose now."""
    found = [
        f"[{section}] changed: it takes a restart (systemctl restart hindsightd)"
        for section in RESTART_SECTIONS
        if getattr(old, section) != getattr(new, section)
    ]
    if replace(old.storage, recipients=(), require_encryption=False) != replace(
        new.storage, recipients=(), require_encryption=False
    ):
        found.append(
            "[storage] backend or s3_* changed: it takes a restart (systemctl restart hindsightd)"
        )
    calls = list(unsettled)
    for call in calls:
        if call.ended is not None:
            continue  # ended: its line may change; what it is kept for may not
        name = call.line.name
        if new.line(name) is None:
            found.append(f"lines: {name} has a live call; remove the line when it is idle")
        elif new.line(name) != old.line(name):
            found.append(f"lines: {name} has a live call; change the line when it is idle")
    declared = {purpose.name for purpose in new.purposes}
    for purpose in old.purposes:
        if purpose.name in declared:
            continue
        users = sum(purpose.name in call.announced for call in calls)
        kept = kept_for(purpose.name)
        if users or kept:
            found.append(
                f"purposes.{purpose.name}: still announced to {users} unsettled call(s) and "
                f"serving {kept} recording(s); keep it declared"
            )
    return found
