"""Sampling epochs: the seed that decides every draw, committed before, revealed after.

Rules:

- An epoch opens at every start, every ``sampling.epoch_hours``, and when a reload changes
  ``one_in`` or the sampling purpose (an epoch has one of each). Opening draws a seed with
  ``secrets`` and logs ``sampling_epoch`` (its number, ``one_in``, the purpose, the seed's
  ``commitment`` and, with ``[audit] recipients``, ``sealed_seed``: the seed in hex, age-
  encrypted to the auditors) before any call of the epoch can start.
- A call's draw is ``hindsight.sampling.picked`` of its id under the current epoch's seed;
  ``call_started`` carries the epoch's number.
- The seed leaves memory unsealed only when the epoch is over AND every call it drew for has
  its outcome in the log: only then is ``sampling_reveal`` logged (by the main loop's
  ``tick``, and at a clean stop). A call still live, or ended but not settled, keeps its
  epoch's seed secret: nobody can recompute a draw whose outcome is still to come.
- An epoch that a crash ends is never revealed: its seed died with the process. With
  ``[audit] recipients`` the auditors open ``sealed_seed`` instead.
- Nothing here is in a reply: the draw and the seed stay between the daemon and its log.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hindsight.commitlog import OUTCOME_EVENTS, CommitLog
from hindsight.config import Config
from hindsight.daemon.encode import seal_text
from hindsight.errors import HindsightError
from hindsight.sampling import SEED_BYTES, commitment, picked

log = logging.getLogger(__name__)


RETRY_SECONDS = 30.0  # after the log refused an epoch or a reveal


@dataclass(frozen=True)
class Epoch:
    number: int
    one_in: int
    purpose: str
    opened: float  # time.monotonic()
    seed: bytes = field(repr=False)  # never in a traceback or a log line
    sealed_to: tuple[str, ...] = ()  # the auditors' recipients its seed was sealed to

    def serves(self, config: Config) -> bool:
        """Whether this epoch draws as ``config`` says (else a new one must open)."""
        sampling = config.sampling
        wanted = (sampling.one_in, sampling.purpose, config.audit.recipients)
        return (self.one_in, self.purpose, self.sealed_to) == wanted

    def picks(self, call_id: str) -> bool:
        return picked(self.seed, call_id, self.one_in)


class Sampler:
    def __init__(self, commit_log: CommitLog, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = commit_log
        self._clock = clock
        self._lock = threading.Lock()
        self._epoch: Epoch | None = None
        self._ended: dict[int, Epoch] = {}  # over, not revealed yet
        self._unsettled: Counter[int] = Counter()  # epoch -> its calls without an outcome
        self._epoch_of: dict[str, int] = {}  # call id -> epoch, for calls without an outcome
        self._quiet_until = 0.0  # no new try before this (time.monotonic()) after a refusal
        commit_log.listen(self._seen)

    @property
    def epoch(self) -> Epoch | None:
        return self._epoch

    def open(self, config: Config) -> Epoch:
        """Open the next epoch (the current one ends) and log it; CommitLogError when the log
        refuses, and then the current epoch stays."""
        seed = secrets.token_bytes(SEED_BYTES)
        number = self._log.last_epoch + 1
        sampling = config.sampling
        fields: dict[str, Any] = {
            "epoch": number,
            "one_in": sampling.one_in,
            "purpose": sampling.purpose,
            "commitment": commitment(seed),
        }
        if config.audit.recipients:
            fields["sealed_seed"] = seal_text(seed.hex(), config.audit.recipients)
        self._log.append("sampling_epoch", **fields)
        epoch = Epoch(
            number,
            sampling.one_in,
            sampling.purpose,
            self._clock(),
            seed,
            config.audit.recipients,
        )
        with self._lock:
            if self._epoch is not None:
                self._ended[self._epoch.number] = self._epoch
            self._epoch = epoch
        log.info("sampling epoch %d open: 1 call in %d", number, sampling.one_in)
        return epoch

    def draw(self, call_id: str) -> tuple[int | None, bool]:
        """The current epoch's number and whether it picks ``call_id``."""
        epoch = self._epoch
        if epoch is None:
            return None, False
        return epoch.number, epoch.picks(call_id)

    def reconfigure(self, config: Config) -> None:
        """After a reload: a new epoch when ``one_in``, the purpose or the auditors changed."""
        epoch = self._epoch
        if epoch is not None and not epoch.serves(config):
            self._open_or_warn(config)

    def tick(self, config: Config) -> None:
        """From the main loop: rotate when the epoch is old (or no longer draws as the config
        says: a reload whose epoch the log refused), reveal what may be revealed. After the
        log refused either, the next try waits ``RETRY_SECONDS``."""
        now = self._clock()
        if now < self._quiet_until:
            return
        epoch = self._epoch
        if epoch is not None and (
            now - epoch.opened >= config.sampling.epoch_hours * 3600 or not epoch.serves(config)
        ):
            self._open_or_warn(config)
        self.reveal()

    def end(self) -> None:
        """At a clean stop, once every call is settled: the current epoch ends too."""
        with self._lock:
            if self._epoch is not None:
                self._ended[self._epoch.number] = self._epoch
                self._epoch = None
        self.reveal()
        if self._ended:
            log.warning(
                "sampling epoch(s) %s not revealed: calls of theirs have no outcome",
                ", ".join(map(str, sorted(self._ended))),
            )

    def reveal(self) -> None:
        with self._lock:
            due = [e for n, e in sorted(self._ended.items()) if not self._unsettled[n]]
        for epoch in due:
            try:
                self._log.append("sampling_reveal", epoch=epoch.number, seed=epoch.seed.hex())
            except HindsightError as exc:
                log.error("sampling epoch %d not revealed yet: %s", epoch.number, exc)
                self._quiet_until = self._clock() + RETRY_SECONDS
                return
            with self._lock:
                del self._ended[epoch.number]
            log.info("sampling epoch %d revealed", epoch.number)

    def _open_or_warn(self, config: Config) -> None:
        try:
            self.open(config)
        except HindsightError as exc:
            log.error("a new sampling epoch could not be opened, the current one goes on: %s", exc)
            self._quiet_until = self._clock() + RETRY_SECONDS

    def _seen(self, entry: Mapping[str, Any]) -> None:
        """Every line appended (under the log's lock): which epochs still have calls to settle."""
        event, call_id = entry["event"], entry.get("call_id")
        if not isinstance(call_id, str):
            return
        with self._lock:
            if event == "call_started" and isinstance(entry.get("epoch"), int):
                self._epoch_of[call_id] = entry["epoch"]
                self._unsettled[entry["epoch"]] += 1
            elif event in OUTCOME_EVENTS and call_id in self._epoch_of:
                number = self._epoch_of.pop(call_id)
                self._unsettled[number] -= 1
                if not self._unsettled[number]:
                    del self._unsettled[number]
