"""What a kept call's recording says, all but its audio: built in the daemon after a call ends.

``describe`` turns an ended call into a ``Keep``: the fields of its ``call_committed``
(reasons, purposes, retention), what its sidecar holds beyond them, and who may open it
(its age recipients, from the config). The keeper calls it only once the call's grace
(``marking.grace_seconds``) and settle delay are over and the table has closed it, so that
a mark after the hang-up, with its purpose and note, is in the recording. The worker gets
the ``Keep`` over its channel and hands it to the ``Store``, which knows only how bytes land
on disk. Retention at commit comes from the ledger's own rule (``Terms``), so that the log
and the ledger can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hindsight import __version__
from hindsight.clock import iso
from hindsight.config import Config
from hindsight.daemon.calls import Call
from hindsight.layout import day_folder
from hindsight.retention import Terms


@dataclass(frozen=True)
class Keep:
    """A kept call as the worker needs it, all but the audio: built by ``describe``."""

    call_id: str
    folder: str  # YYYY/MM/DD under recordings/, from the call's start
    samplerate: int
    channels: int
    fields: dict[str, Any]  # call_committed's fields but path and sha256
    extra: dict[str, Any]  # what the sidecar holds beyond those
    recipients: tuple[str, ...]  # age recipients; none: a plain FLAC

    def to_wire(self) -> dict[str, Any]:
        return dict(vars(self), recipients=list(self.recipients))

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Keep:
        return cls(**dict(data, recipients=tuple(data["recipients"])))


def describe(call: Call, config: Config) -> Keep:
    """Everything a kept call's recording says but its audio, path and hash (daemon side)."""
    assert call.ended is not None
    retention = _retention(call, config)
    rate = call.samplerate
    ends = list(retention.values())
    fields = {
        "call_id": call.call_id,
        "line": call.line.name,
        "agent": call.agent,
        "reasons": reasons(call),
        "purposes": list(retention),
        "retention": retention,
        "retain_until": None if None in ends else max(e for e in ends if e is not None),
        "seconds": round(call.buffer.kept_frames / rate, 3),
        "rolled_seconds": round(call.buffer.rolled_total / rate, 3),
        "lost_seconds": round(call.gap_frames / rate, 3),
        "status_flags": call.status_flags,
        "ended": iso(call.ended),
        "caller_ref": call.caller_ref,
    }
    channels = len(call.line.channels)
    extra = _sidecar_extra(call, config, retention)
    recipients = config.recipients(retention)
    folder = day_folder(call.started)
    return Keep(call.call_id, folder, rate, channels, fields, extra, recipients)


def _retention(call: Call, config: Config) -> dict[str, str | None]:
    assert call.ended is not None
    retention: dict[str, str | None] = {}
    for name in purposes(call, call.sampling_purpose or config.sampling.purpose):
        purpose = config.purpose(name)
        assert purpose is not None
        # The ledger's own rule, so that the log and the ledger can never disagree.
        until = Terms.of(purpose).first_retain_until(call.ended)
        retention[name] = None if until is None else iso(until)
    return retention


def _sidecar_extra(call: Call, config: Config, retention: dict[str, str | None]) -> dict[str, Any]:
    assert call.ended is not None
    rate = call.samplerate
    terms = {}
    for name, until in retention.items():
        purpose = config.purpose(name)
        assert purpose is not None
        terms[name] = {
            "legal_basis": purpose.legal_basis,
            "retention_days": purpose.retention_days,
            "until_resolved": purpose.until_resolved,
            "grace_days": purpose.grace_days,
            "max_retention_days": purpose.max_retention_days,
            "retain_until": until,
        }
    return {
        "start": iso(call.started),
        "end": iso(call.ended),
        "samplerate": call.samplerate,
        "channels": len(call.line.channels),
        "device": call.line.device,
        "device_channels": list(call.line.channels),
        "format": "FLAC/PCM_16",
        "announced": list(call.announced),
        "purpose_terms": terms,
        "marks": [{"purpose": m.purpose, "time": iso(m.time), "note": m.note} for m in call.marks],
        "gaps": _runs(call.gaps, rate),
        "pauses": _runs(call.pauses, rate),
        "hindsight_version": __version__,
    }


def _runs(runs: list[list[int]], rate: int) -> list[dict[str, float]]:
    return [{"at_seconds": round(at / rate, 3), "seconds": round(n / rate, 3)} for at, n in runs]


def reasons(call: Call) -> list[str]:
    return [r for r, yes in (("sampled", call.sampled), ("marked", call.marked)) if yes]


def purposes(call: Call, sampling_purpose: str) -> list[str]:
    names = [sampling_purpose] if call.sampled else []
    return list(dict.fromkeys(names + call.mark_purposes))
