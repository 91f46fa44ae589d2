"""The sampling draws recomputed: every call of every epoch whose seed is known.

Rules:

- ``sampling_epoch`` lines number the epochs 1, 2, … with no gap; each names ``one_in``, the
  sampling purpose and the seed's ``commitment``. A ``call_started`` with an ``epoch`` names
  the epoch open at that point of the log.
- A seed is known from its ``sampling_reveal`` (which must match the commitment) or, for an
  epoch a crash left unrevealed, from its ``sealed_seed`` opened with an auditor's age
  identity. The calls of an epoch wait (in memory, per epoch) until its seed is known. A
  call that settles after its epoch's reveal is a failure: its draw was public too early.
- With the seed, a call with the sampling purpose announced that the draw picked must be
  kept with reason ``sampled`` (committed, or wiped for want of audio or of a store, which
  still names its reasons), unless it was lost in a crash (``lost_in_crash``, logged by a
  later run); a call with reason ``sampled`` must have been picked with the purpose
  announced.
- A run that opened an epoch names an epoch on every ``call_started`` (the one open), and
  every ``call_started`` lists its announced purposes. An epoch is revealed only once it is
  over and none of its calls is open, and a clean stop (``daemon_stopped``) has revealed
  every epoch of its run. A sealed seed is opened only for epochs that are over: never for
  the epoch of a run that has not stopped.
- An epoch whose seed stays unknown is not a failure: ``unverified`` names it, and the
  command line says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyrage

from hindsight.commitlog import LOG_NAME
from hindsight.sampling import commitment, eligible, kept_as_sampled, picked, seed_from_hex

_HEX64 = frozenset("0123456789abcdef")


class _Settled(NamedTuple):  # a tuple: one is made for every call, and a tuple is quick
    """A call of an epoch with its outcome, as much as the draw's check needs."""

    call_id: str
    line: int  # the outcome's log line
    eligible: bool  # the sampling purpose was announced
    sampled: bool  # to be kept with reason "sampled" (committed, or wiped for want of audio
    # or of a store, which then still names its reasons)
    lost: bool  # lost_in_crash, logged by a later run: the draw could not be honoured


@dataclass
class _Epoch:
    number: int
    one_in: int
    purpose: str
    commitment: str
    sealed: str | None
    seed: bytes | None = None
    waiting: list[_Settled] = field(default_factory=list)  # until the seed is known
    open: int = 0  # its calls without an outcome yet
    run: int = 0  # the daemon run that opened it


# The events ``Draws.feed`` looks at; it ignores every other.
DRAWN_EVENTS = frozenset(
    {
        "daemon_started",
        "daemon_stopped",
        "sampling_epoch",
        "sampling_reveal",
        "call_started",
        "call_committed",
        "call_wiped",
    }
)


@dataclass
class Draws:
    """Fed every entry in log order; ``problem`` is the first draw that does not match."""

    identities: Sequence[pyrage.x25519.Identity] = ()
    epochs: dict[int, _Epoch] = field(default_factory=dict)
    current: int | None = None  # the epoch open in the current run; None before its first
    run: int = 0  # daemon runs so far (daemon_started lines)
    live: bool = False  # the last run has not stopped (it runs, or it died)
    epoched: bool = False  # the current run has opened an epoch: its calls name one
    checked: int = 0  # calls whose draw was recomputed
    # Calls without an outcome: their epoch, whether eligible, and the run that started them.
    _calls: dict[str, tuple[int, bool, int]] = field(default_factory=dict)

    def feed(self, entry: Mapping[str, Any]) -> str | None:
        event = entry["event"]
        if event == "daemon_started":
            self.run, self.current, self.live, self.epoched = self.run + 1, None, True, False
            return None
        if event == "daemon_stopped":
            self.live = False
            return self._stopped(entry)
        if event == "sampling_epoch":
            return self._opened(entry)
        if event == "sampling_reveal":
            return self._revealed(entry)
        if event == "call_started":
            return self._started(entry)
        if event in ("call_committed", "call_wiped"):
            return self._settled(entry)
        return None

    def finish(self) -> str | None:
        """At the log's end: open the sealed seeds of epochs never revealed, where an
        identity can, and check their calls. Never the epoch of a run still live: its calls
        are still being drawn, and nobody is to know a draw before its call's outcome."""
        for epoch in self.epochs.values():
            ongoing = self.live and epoch.run == self.run
            if epoch.seed is None and epoch.sealed is not None and self.identities and not ongoing:
                seed = self._unseal(epoch)
                if seed is None:
                    continue
                problem = self._know(epoch, seed, f"sampling epoch {epoch.number}'s sealed_seed")
                if problem is not None:
                    return problem
        return None

    @property
    def unverified(self) -> list[int]:
        """Epochs with calls whose seed is unknown (a crash, and no identity to unseal)."""
        return [e.number for e in self.epochs.values() if e.seed is None and e.waiting]

    def _opened(self, entry: Mapping[str, Any]) -> str | None:
        number, one_in = entry.get("epoch"), entry.get("one_in")
        expected = max(self.epochs, default=0) + 1
        if not isinstance(number, int) or isinstance(number, bool) or number != expected:
            return f"{_at(entry)}: sampling_epoch numbered {number!r}, not {expected}"
        if not isinstance(one_in, int) or isinstance(one_in, bool) or one_in < 0:
            return f"{_at(entry)}: sampling_epoch has one_in {one_in!r}"
        pledge, purpose = entry.get("commitment"), entry.get("purpose")
        if not isinstance(pledge, str) or len(pledge) != 64 or not set(pledge) <= _HEX64:
            return f"{_at(entry)}: sampling_epoch's commitment is not a SHA-256 in hex"
        if not isinstance(purpose, str):
            return f"{_at(entry)}: sampling_epoch names no purpose"
        sealed = entry.get("sealed_seed")
        self.epochs[number] = _Epoch(
            number,
            one_in,
            purpose,
            pledge,
            sealed if isinstance(sealed, str) else None,
            run=self.run,
        )
        self.current, self.epoched = number, True
        return None

    def _stopped(self, entry: Mapping[str, Any]) -> str | None:
        """A clean stop reveals every epoch of its run: every call has its outcome by then."""
        for epoch in self.epochs.values():
            if epoch.run == self.run and epoch.seed is None:
                return (
                    f"{_at(entry)}: the daemon stopped cleanly without revealing sampling "
                    f"epoch {epoch.number}"
                )
        return None

    def _revealed(self, entry: Mapping[str, Any]) -> str | None:
        number = entry.get("epoch")
        epoch = self.epochs.get(number) if _integer(number) else None  # type: ignore[arg-type]
        if epoch is None or epoch.seed is not None:
            return f"{_at(entry)}: sampling_reveal of epoch {number!r}, not open"
        if epoch.open:
            return (
                f"{_at(entry)}: sampling_reveal of epoch {number} while {epoch.open} of its "
                "calls have no outcome: their draws were public too early"
            )
        seed = seed_from_hex(entry.get("seed"))
        if seed is None:
            return f"{_at(entry)}: sampling_reveal's seed is not 32 bytes of hex"
        if epoch.number == self.current:
            self.current = None  # revealed at a clean stop: no call may start in it now
        return self._know(epoch, seed, _at(entry))

    def _know(self, epoch: _Epoch, seed: bytes, where: str) -> str | None:
        if commitment(seed) != epoch.commitment:
            return f"{where}: the seed does not match epoch {epoch.number}'s commitment"
        epoch.seed = seed
        waiting, epoch.waiting = epoch.waiting, []
        for call in waiting:
            problem = self._check(epoch, call)
            if problem is not None:
                return problem
        return None

    def _started(self, entry: Mapping[str, Any]) -> str | None:
        number = entry.get("epoch")
        if number is None and not self.epoched:
            return None  # a run from before epochs
        if not isinstance(number, int) or isinstance(number, bool) or number != self.current:
            return (
                f"{_at(entry)}: call_started names sampling epoch {number!r}, but the epoch "
                f"open there is {self.current!r}"
            )
        epoch = self.epochs[number]
        announced = entry.get("announced")
        if not isinstance(announced, list):
            return f"{_at(entry)}: call_started has no list of announced purposes"
        epoch.open += 1
        self._calls[str(entry.get("call_id"))] = (
            number,
            eligible(announced, epoch.purpose),
            self.run,
        )
        return None

    def _settled(self, entry: Mapping[str, Any]) -> str | None:
        found = self._calls.pop(str(entry.get("call_id")), None)
        if found is None:
            return None
        number, eligible, run = found
        call = _Settled(
            call_id=str(entry["call_id"]),
            line=entry["seq"],
            eligible=eligible,
            sampled=kept_as_sampled(entry),
            lost=entry.get("why") == "lost_in_crash" and run < self.run,
        )
        epoch = self.epochs[number]
        epoch.open -= 1
        if epoch.seed is not None:  # only a reveal makes it known while the log is read
            return (
                f"{_at(entry)}: call {call.call_id!r} settled after sampling epoch {number} "
                "was revealed: its draw was public before its outcome"
            )
        epoch.waiting.append(call)
        return None

    def _check(self, epoch: _Epoch, call: _Settled) -> str | None:
        self.checked += 1
        assert epoch.seed is not None
        pick = picked(epoch.seed, call.call_id, epoch.one_in) and call.eligible
        if pick == call.sampled or (pick and call.lost):
            return None
        where = f"{LOG_NAME} line {call.line}: call {call.call_id!r}"
        if call.sampled:
            return (
                f"{where} was kept as sampled, but the draw of sampling epoch {epoch.number} "
                "did not pick it"
            )
        return (
            f"{where} was picked by the draw of sampling epoch {epoch.number}, "
            "yet not kept as sampled"
        )

    def _unseal(self, epoch: _Epoch) -> bytes | None:
        assert epoch.sealed is not None
        try:
            text = pyrage.decrypt(epoch.sealed.encode("ascii"), list(self.identities))
        except (pyrage.DecryptError, UnicodeError):
            return None
        return seed_from_hex(text.decode("ascii", errors="replace").strip())


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at(entry: Mapping[str, Any]) -> str:
    return f"{LOG_NAME} line {entry['seq']}"
