"""Request handling: one table of ops, each turning a parsed request into a reply.

Every op goes through ``Service.handle``; its rights are checked there, in one
call into ``rights``, before it runs. Handlers touch the call table and the
commit log only; no handler waits on audio, encoding or the disk beyond one log
append.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from hindsight import __version__, checkpoint
from hindsight.clock import iso, utcnow
from hindsight.commitlog import CommitLog
from hindsight.config import Config
from hindsight.daemon import rights
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.lifecycle import Lifecycle
from hindsight.daemon.metrics import Metrics
from hindsight.errors import HindsightError, ProtocolError
from hindsight.protocol import (
    Access,
    Checkpoint,
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
    Request,
    Resolve,
    Resume,
    Start,
    Status,
    error_reply,
    ok_reply,
    parse_request,
)
from hindsight.replies import (
    AccessReply,
    CallReply,
    CheckpointReply,
    DeviceState,
    Encryption,
    Pong,
    PurgeReply,
    RecordingsReply,
    Reply,
    RetentionReply,
    StatusReply,
    WorkerState,
)

log = logging.getLogger(__name__)


class Settler(Protocol):
    """Where ended calls go to get their outcome: the keeper."""

    def submit(self, call: Call) -> None: ...

    def state(self) -> WorkerState: ...


class Service:
    def __init__(
        self,
        config: Config,
        table: CallTable,
        keeper: Settler,
        commit_log: CommitLog,
        device_states: Callable[[], dict[str, str]],
        lifecycle: Lifecycle,
    ) -> None:
        self.lifecycle = lifecycle
        self.config = config
        self.table = table
        self.keeper = keeper
        self.log = commit_log
        self.device_states = device_states
        self.metrics: Metrics | None = None  # set by the daemon's main loop
        self.checkpoint_key: bytes | None = None  # set by the daemon: signs ``checkpoint``
        self.accepting = True
        self._ops: dict[type[Any], Callable[[Any], Reply]] = {
            Ping: self._ping,
            Start: self._start,
            End: self._end,
            Mark: self._mark,
            Pause: self._pause,
            Resume: self._resume,
            Status: self._status,
            Recordings: self._recordings,
            Resolve: self._resolve,
            Extend: self._extend,
            Hold: self._hold,
            Release: self._release,
            Erase: self._erase,
            Purge: self._purge,
            Access: self._access,
            Checkpoint: self._checkpoint,
        }

    def handle(self, frame: bytes, client: str | None = None) -> bytes:
        """The reply to ``frame``; ``client``: the ZAP user id of a ``listen`` client, None
        on the local control socket."""
        try:
            request = parse_request(frame)
            return ok_reply(self._dispatch(request, client))
        except ProtocolError as exc:
            return error_reply(exc.code, exc.message)
        except HindsightError as exc:
            log.error("request failed: %s", exc)
            return error_reply("internal", str(exc))

    def _dispatch(self, request: Request, client: str | None) -> Reply:
        if not self.accepting and not isinstance(request, Ping | Status | Checkpoint):
            raise ProtocolError("not_allowed", "the daemon is shutting down")
        return rights.run(self.config, self.log, client, request, self._ops[type(request)])

    def _ping(self, request: Ping) -> Pong:
        return Pong(version=__version__)

    def _start(self, request: Start) -> CallReply:
        for name in request.announced or ():
            self._declared(name)
        call = self.table.start(request.line, request.call_id, request.agent, request.announced)
        # The caller's number goes no further than this line: only its keyed pseudonym is
        # kept, logged and written to the sidecar.
        if request.caller is not None:
            call.caller_ref = self.lifecycle.pseudonyms.ref(request.caller)
        extra: dict[str, Any] = {} if call.caller_ref is None else {"caller_ref": call.caller_ref}
        if call.epoch is not None:
            extra["epoch"] = call.epoch
        try:
            self.log.append(
                "call_started",
                call_id=call.call_id,
                line=call.line.name,
                agent=call.agent,
                announced=list(call.announced),
                **extra,
            )
        except HindsightError as exc:
            # A call the log does not know of must not be buffered at all.
            self.table.release(self.table.end(request.line))
            log.error("refused call on %s: %s", request.line, exc)
            raise ProtocolError("internal", "the commit log cannot be written") from exc
        log.info("call %s started on %s", call.call_id, call.line.name)
        return CallReply(call.call_id)

    def _end(self, request: End) -> CallReply:
        # Every call lingers alike, kept or not: a mark may still keep it for
        # marking.grace_seconds, and its wipe or commit waits as long (the keeper).
        call = self.table.end(request.line, linger=True)
        self.keeper.submit(call)
        log.info("call %s ended on %s", call.call_id, call.line.name)
        return CallReply(call.call_id)

    def _mark(self, request: Mark) -> CallReply:
        purpose = self._declared(request.purpose or self.config.marking.purpose)
        # The live call, or one that hung up within marking.grace_seconds. Claimed: the keeper
        # does not take it until the mark is in the log, so the log shows it before the outcome.
        call = self.table.claim(request.line, request.call_id)
        try:
            if purpose not in call.announced:
                self.log.append(
                    "mark_refused", call_id=call.call_id, line=call.line.name, purpose=purpose
                )
                # The journal names no call on a mark, refused or not.
                log.info("a mark for %s on %s refused: not announced", purpose, call.line.name)
                raise ProtocolError(
                    "not_allowed",
                    f"the caller was not told of purpose {purpose}: it cannot be kept for it",
                )
            # Logged before it takes effect: a mark the log does not hold never keeps a call.
            if purpose not in call.mark_purposes:
                # Not in the daemon's own log: a mark keeps the call, and the journal never
                # says which calls were kept (the commit log does, for the auditor).
                late = {"after_end": True} if call.ended is not None else {}
                self.log.append(
                    "call_marked",
                    call_id=call.call_id,
                    line=call.line.name,
                    purpose=purpose,
                    **late,
                )
        except BaseException:
            self.table.unclaim(call)
            raise
        self.table.add_mark(call, purpose, request.note)
        return CallReply(call.call_id)

    def _pause(self, request: Pause) -> CallReply:
        return self._pause_or_resume(self.table.pause(request.line), "call_paused")

    def _resume(self, request: Resume) -> CallReply:
        return self._pause_or_resume(self.table.resume(request.line), "call_resumed")

    def _pause_or_resume(self, call: Call, event: str) -> CallReply:
        # In effect before it is logged: a pause protects the caller (a card number), so a
        # log that cannot be written must not hold it up; the reply then says so.
        self.log.append(event, call_id=call.call_id, line=call.line.name)
        log.info("call %s %s", call.call_id, event.removeprefix("call_"))
        return CallReply(call.call_id)

    def _recordings(self, request: Recordings) -> RecordingsReply:
        return RecordingsReply(tuple(self.lifecycle.recordings(request.purpose, request.caller)))

    def _resolve(self, request: Resolve) -> RetentionReply:
        until = self.lifecycle.resolve(
            request.call_id, request.purpose, request.actor, request.reason
        )
        return RetentionReply(request.call_id, until)

    def _extend(self, request: Extend) -> RetentionReply:
        until = self.lifecycle.extend(
            request.call_id, request.purpose, request.days, request.actor, request.reason
        )
        return RetentionReply(request.call_id, until)

    def _hold(self, request: Hold) -> CallReply:
        self.lifecycle.hold(request.call_id, request.actor, request.reason)
        return CallReply(request.call_id)

    def _release(self, request: Release) -> CallReply:
        self.lifecycle.release(request.call_id, request.actor, request.reason)
        return CallReply(request.call_id)

    def _erase(self, request: Erase) -> CallReply:
        self.lifecycle.erase(request.call_id, request.actor, request.reason)
        return CallReply(request.call_id)

    def _purge(self, request: Purge) -> PurgeReply:
        return PurgeReply(tuple(self.lifecycle.purge(request.dry_run)))

    def _access(self, request: Access) -> AccessReply:
        # Logged first: nobody learns where a recording is unless the log says who and why.
        recording = self.lifecycle.access(request.call_id, request.actor, request.reason)
        version = self.lifecycle.version_of(request.call_id)
        return AccessReply(recording.path, recording.sha256, version)

    def _checkpoint(self, request: Checkpoint) -> CheckpointReply:
        if self.checkpoint_key is None:
            raise ProtocolError("internal", "this daemon has no checkpoint key")
        with self.log.still():  # the seq and hash of one line
            seq, head = self.log.last_seq, self.log.last_hash
        signed = checkpoint.sign(self.checkpoint_key, seq, head, iso(utcnow()))
        return CheckpointReply(signed)

    def _declared(self, purpose: str) -> str:
        if self.config.purpose(purpose) is None:
            raise ProtocolError("unknown_purpose", f"purpose {purpose} is not declared")
        return purpose

    def _status(self, request: Status) -> StatusReply:
        bare = self.config.unencrypted()
        devices = tuple(DeviceState(name, state) for name, state in self.device_states().items())
        return StatusReply(
            lines=tuple(self.table.status()),
            devices=devices,
            worker=self.keeper.state(),
            encryption=Encryption(not bare, tuple(bare)),
            metrics=None if self.metrics is None else self.metrics.snapshot,
        )

    def end_all(self) -> None:
        """Stop taking calls and hand every live call to the keeper."""
        self.accepting = False
        for call in self.table.end_all():
            self.keeper.submit(call)
            log.info("call %s ended by shutdown", call.call_id)
