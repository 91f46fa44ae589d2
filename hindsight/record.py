"""What the commit log and a sidecar say about a kept call: one frozen record, no I/O.

``Committed`` is the payload of a ``call_committed`` line. The worker builds it
when a recording has landed, the daemon logs it, recovery rebuilds it from a
sidecar after a crash; every sidecar holds these fields too. Lists travel as
tuples here and as JSON arrays on the wire and in the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Committed:
    call_id: str
    line: str
    agent: str | None
    reasons: tuple[str, ...]  # sampled, marked
    purposes: tuple[str, ...]
    retention: Mapping[str, str]  # purpose -> retain_until (UTC, ISO 8601)
    retain_until: str  # the latest of them
    path: str  # relative to state_dir
    sha256: str  # of the file as stored
    seconds: float
    rolled_seconds: float
    lost_seconds: float
    status_flags: int

    def to_log(self) -> dict[str, Any]:
        """The fields of ``call_committed``, in their order, as JSON values."""
        data = {field: getattr(self, field) for field in COMMITTED_FIELDS}
        data["reasons"], data["purposes"] = list(self.reasons), list(self.purposes)
        data["retention"] = dict(self.retention)
        return data

    @classmethod
    def from_log(cls, data: Mapping[str, Any]) -> Committed:
        """From a log line or sidecar; KeyError or TypeError when one is missing or mistyped."""
        values = {field: data[field] for field in COMMITTED_FIELDS}
        for field in ("reasons", "purposes"):
            values[field] = tuple(values[field])
        values["retention"] = dict(values["retention"])
        return cls(**values)


COMMITTED_FIELDS = tuple(field.name for field in dataclasses.fields(Committed))
