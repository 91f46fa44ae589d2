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
    # purpose -> retain_until (UTC, ISO 8601); null for an until_resolved purpose without
    # a cap, which only a resolve ends
    retention: Mapping[str, str | None]
    retain_until: str | None  # the latest of them; null when any is null
    path: str  # relative to state_dir
    sha256: str  # of the file as stored
    seconds: float
    rolled_seconds: float
    lost_seconds: float
    status_flags: int
    ended: str | None = None  # when the call ended (absent from records of before 0.2)
    caller_ref: str | None = None  # the caller's keyed pseudonym, when start named a caller
    # The recording object's version in the store (backend "s3" only: ``path`` is then
    # ``s3://BUCKET/KEY``); absent from the log and sidecar of a local recording.
    version_id: str | None = None

    def to_log(self) -> dict[str, Any]:
        """The fields of ``call_committed``, in their order, as JSON values."""
        data = {field: getattr(self, field) for field in COMMITTED_FIELDS}
        data["reasons"], data["purposes"] = list(self.reasons), list(self.purposes)
        data["retention"] = dict(self.retention)
        if self.version_id is not None:  # a local recording's line is as it always was
            data["version_id"] = self.version_id
        return data

    @classmethod
    def from_log(cls, data: Mapping[str, Any]) -> Committed:
        """From a log line or sidecar; KeyError or TypeError when one is missing or mistyped."""
        values = {
            field.name: data[field.name]
            if field.default is dataclasses.MISSING
            else data.get(field.name, field.default)
            for field in dataclasses.fields(cls)
        }
        for field in ("reasons", "purposes"):
            values[field] = tuple(values[field])
        values["retention"] = dict(values["retention"])
        return cls(**values)


# Every local recording's fields; the S3 backend's ``version_id`` comes after them.
COMMITTED_FIELDS = tuple(
    field.name for field in dataclasses.fields(Committed) if field.name != "version_id"
)
