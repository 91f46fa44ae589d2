"""``verify`` and ``report`` from an S3 bucket alone: a host, or every host of a floor.

What lies in the bucket (``docs/formats.md``, "Shipped log segments", and /work/notes/
s3-layout.md): under each host's prefix, ``log/{first:012d}-{last:012d}.jsonl`` (the commit
log's closed segments, byte for byte, write-once) and ``recordings/YYYY/MM/DD/`` (each
recording and its sidecar, object versions named by the log's ``call_committed``).

Rules:

- The hosts are found, not told: every prefix under the one asked for that holds a ``log/``
  folder (with any version in it, a delete marker included: a marker hides nothing here).
- Per host, integrity before meaning, as ``verify`` does: the segments must run from line 1
  without a gap or an overlap, every version of a segment must hold the same bytes, and
  each segment's bytes must hash to its ``x-amz-meta-sha256``; its lines go through the same
  chain check as the local log's and, as they come, through the same call, retention and
  draw rules (``hindsight.audit.verify._CallRules``). Then every recording that exists by
  the log: its version, its bytes, its sidecar version, its Object Lock; every deleted
  recording's versions gone; every version under ``recordings/`` accounted for; nothing
  overdue.
- Objects are addressed by version id, never by "the latest": a second PUT to a key makes a
  second version (which is then not accounted for) and never alters the logged one; a delete
  marker removes nothing.
- Bounded memory: segments are streamed line by line, never held whole; what is held is
  what local ``verify`` holds (open calls, the recordings that exist) plus the listing of
  the host's ``recordings/`` versions, which is as long as what exists in the bucket.
- ``verify`` stops at the first problem and names its host, and its segment and log line
  where there is one. Nothing in the bucket is changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, TextIO, TypeVar

import pyrage

from hindsight.audit.common import Span
from hindsight.audit.draws import Draws
from hindsight.audit.fairness import BandTally
from hindsight.audit.progress import Bar, _is_terminal
from hindsight.audit.report import (
    _DAY_EVENTS,
    Access,
    Day,
    PurposeRetention,
    Reading,
    Report,
    Retention,
    _Draws,
    _freeze_groups,
    _group,
    _Pair,
    _pivot,
    _Tally,
)
from hindsight.audit.verify import (
    MAGIC,
    _CallRules,
    _Commit,
    _inside,
    _overdue,
    _sidecar_problem,
    _walk_entries,
)
from hindsight.clock import iso, parse_iso, utcnow
from hindsight.commitlog import LOG_NAME, LineHook
from hindsight.errors import CommitLogError, StoreError
from hindsight.layout import RECORDINGS, sidecar_path
from hindsight.objectstore import (
    SCHEME,
    Credentials,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    StoreRefused,
    VersionInfo,
    translated,
)
from hindsight.retention import Deletion, Recording
from hindsight.segments import LOG_FOLDER, SHA256_META, LineChain, SeqRange, parse_segment_key

WHOLE = Span()
RECORDINGS_FOLDER = f"{RECORDINGS}/"
# A live host ships its log every few minutes (storage.s3_ship_seconds, 300 s by default):
# an object newer than its last shipped line, and at most this old, belongs to lines not
# shipped yet (a live host's last minutes, or a restarted one's first), and is counted apart
# rather than failed. Older objects must all be accounted for by the shipped log.
TAIL_SECONDS = 900.0
_STORE_TICK = timedelta(seconds=1)  # the resolution of an object's LastModified
MAX_DEPTH = 8  # folders below the prefix asked for, where hosts are looked for
_BLOCK = 1 << 20
_LINE = re.compile(rf"{re.escape(LOG_NAME)} line (\d+)")


class BadURL(ValueError):
    """Not ``s3://BUCKET[/PREFIX]``."""


def parse_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` as (bucket, prefix); the prefix is empty (the whole bucket) or
    ends in ``/`` (one is added)."""
    if not url.startswith(SCHEME):
        raise BadURL(f"{url!r} is not an s3:// URL (s3://BUCKET/PREFIX)")
    bucket, _, prefix = url[len(SCHEME) :].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise BadURL(f"{url!r}: {bucket!r} is not an S3 bucket name")
    parts = prefix.rstrip("/").split("/") if prefix.strip("/") else []
    if prefix.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise BadURL(f"{url!r}: the prefix must be folder names separated by single '/'")
    return bucket, "".join(f"{part}/" for part in parts)


def open_bucket(endpoint: str | None, bucket: str, credentials: Credentials | None) -> ObjectStore:
    """The whole bucket, read-only use; raises unless it answers and has Object Lock on."""
    store = ObjectStore(endpoint, bucket, "", credentials=credentials)
    try:
        store.check()
    except StoreRefused as exc:
        if exc.code != "ObjectLockConfigurationNotFoundError":  # SeaweedFS's, for no lock
            raise
        raise StoreRefused(f"{exc}: Object Lock is not enabled", "NoLock", exc.status) from exc
    return store


# ---------------------------------------------------------------------------------------------
# hosts and segments


def find_hosts(store: ObjectStore, prefix: str) -> list[str]:
    """Every host prefix at or under ``prefix``: those holding a ``log/`` folder."""
    hosts: list[str] = []
    todo = [(prefix, 0)]
    while todo:
        folder, depth = todo.pop(0)
        subfolders = _subfolders(store, folder)
        host = f"{folder}{LOG_FOLDER}" in subfolders
        if host:
            hosts.append(folder)
        if depth >= MAX_DEPTH:
            continue
        for sub in sorted(subfolders):
            if host and sub in (f"{folder}{LOG_FOLDER}", f"{folder}{RECORDINGS_FOLDER}"):
                continue
            todo.append((sub, depth + 1))
    return sorted(hosts)


def _subfolders(store: ObjectStore, folder: str) -> set[str]:
    args: dict[str, Any] = {"Bucket": store.bucket, "Prefix": folder, "Delimiter": "/"}
    found: set[str] = set()
    while True:
        with translated(f"list s3://{store.bucket}/{folder}"):
            page = store.client.list_object_versions(**args)
        found.update(str(item["Prefix"]) for item in page.get("CommonPrefixes", []) or [])
        if not page.get("IsTruncated"):
            return found
        args["KeyMarker"] = page.get("NextKeyMarker")
        args["VersionIdMarker"] = page.get("NextVersionIdMarker")


@dataclass(frozen=True)
class Segment:
    """One shipped segment: its lines and every version of its key (the first written last)."""

    span: SeqRange
    key: str  # full key
    versions: tuple[VersionInfo, ...]

    @property
    def size(self) -> int:
        return self.versions[-1].size

    @property
    def original(self) -> VersionInfo:
        return self.versions[-1]


class HostProblem(Exception):
    """The first problem found on a host, in one sentence."""


def list_segments(store: ObjectStore, host: str) -> list[Segment]:
    """The host's segments in order; HostProblem unless they run from line 1 without a gap
    or an overlap and every name under ``log/`` is a segment's."""
    grouped: dict[SeqRange, list[VersionInfo]] = {}
    for version in store.versions(f"{host}{LOG_FOLDER}"):
        if version.delete_marker:
            continue  # hides nothing: the versions are still there, and are read by id
        span = parse_segment_key(version.key[len(host) :])
        if span is None:
            raise HostProblem(f"s3://{store.bucket}/{version.key} is not a log segment's name")
        grouped.setdefault(span, []).append(version)
    segments = [
        Segment(span, grouped[span][0].key, tuple(grouped[span])) for span in sorted(grouped)
    ]
    if not segments:
        raise HostProblem(f"s3://{store.bucket}/{host}{LOG_FOLDER} holds no log segment")
    expected = 1
    for segment in segments:
        first, last = segment.span
        if first > expected:
            raise HostProblem(
                f"lines {expected}..{first - 1} of {LOG_NAME} are missing: no segment holds "
                f"them (the next is s3://{store.bucket}/{segment.key})"
            )
        if first < expected:
            raise HostProblem(
                f"segment s3://{store.bucket}/{segment.key} overlaps the one before it, which "
                f"ends at line {expected - 1}"
            )
        expected = last + 1
    return segments


def _digest_of(store: ObjectStore, key: str, version_id: str) -> str:
    digest = hashlib.sha256()
    with store.get_stream(key, version_id) as reader:
        while block := reader.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def segment_entries(
    store: ObjectStore, segments: Sequence[Segment], on_line: LineHook | None = None
) -> Iterator[dict[str, Any]]:
    """Every line of the segments, in order, through one chain check (``read_chain``'s);
    each segment must hold exactly its lines, and its bytes hash to its metadata's SHA-256
    and to every other version's. A problem is a CommitLogError naming the segment."""
    chain = LineChain()
    lines, done = 0, 0
    for segment in segments:
        where = f"segment s3://{store.bucket}/{segment.key}"
        version = segment.original
        digest = hashlib.sha256()
        try:
            with store.get_stream(segment.key, version.version_id) as raw:
                for data in io.BufferedReader(raw, _BLOCK):
                    digest.update(data)
                    entry = chain.check(data)
                    if entry["seq"] > segment.span.last:
                        raise CommitLogError(
                            f"{LOG_NAME} line {entry['seq']}: beyond the segment's last line, "
                            f"{segment.span.last}"
                        )
                    lines, done = lines + 1, done + len(data)
                    if on_line is not None:
                        on_line(lines, done)
                    yield entry
        except CommitLogError as exc:
            raise CommitLogError(f"{where}: {exc}") from exc
        except StoreError as exc:
            raise CommitLogError(f"{where} cannot be read ({exc})") from exc
        if chain.seq != segment.span.last:
            raise CommitLogError(
                f"{where} ends at line {chain.seq}, but its name says it holds lines up to "
                f"{segment.span.last}"
            )
        _segment_hashes(store, segment, digest.hexdigest(), where)


def _segment_hashes(store: ObjectStore, segment: Segment, digest: str, where: str) -> None:
    try:
        stated = store.head(segment.key, segment.original.version_id).metadata.get(SHA256_META)
        if stated != digest:
            raise CommitLogError(
                f"{where}: its bytes hash to {digest[:16]}…, its x-amz-meta-sha256 says "
                f"{str(stated)[:16]}…"
            )
        for other in segment.versions[:-1]:
            if _digest_of(store, segment.key, other.version_id) != digest:
                raise CommitLogError(
                    f"{where} has a later version {other.version_id} with other bytes than "
                    "the one first shipped (a rewrite of the shipped log)"
                )
    except StoreError as exc:
        raise CommitLogError(f"{where} cannot be read ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# verify


@dataclass(frozen=True)
class HostResult:
    """One host's verification: ``problem`` None when it holds."""

    host: str
    problem: str | None
    entries: int = 0
    segments: int = 0
    recordings: int = 0  # hashed
    draws: int = 0
    unverified_epochs: tuple[int, ...] = ()
    tail: int = 0  # objects newer than the shipped log (a live host's lines not shipped yet)
    on_disk: int = 0  # recordings the log keeps on the host's disk (local backend), not here

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class FloorResult:
    """Every host checked, in order, up to the first that failed."""

    url: str
    hosts: tuple[HostResult, ...]

    @property
    def ok(self) -> bool:
        return bool(self.hosts) and all(host.ok for host in self.hosts)

    @property
    def problem(self) -> str | None:
        if not self.hosts:
            return f"no host's {LOG_FOLDER} folder under {self.url}"
        return next((host.problem for host in self.hosts if host.problem), None)


@dataclass(frozen=True)
class _Object:
    """Where a logged recording lies in the bucket."""

    key: str
    version_id: str


@dataclass
class _HostCheck:
    store: ObjectStore
    host: str
    now: datetime
    span: Span
    listed: dict[tuple[str, str], VersionInfo] = field(default_factory=dict)
    lingering: list[tuple[Deletion, str, _Object]] = field(default_factory=list)

    @property
    def url_prefix(self) -> str:
        return f"{SCHEME}{self.store.bucket}/{self.host}{RECORDINGS_FOLDER}"

    def path_ok(self, path: object) -> bool:
        """A path inside the state dir (a recording kept on the host's disk), or an s3:// URL
        under this host's recordings/ in this bucket."""
        if not isinstance(path, str):
            return False
        if not path.startswith(SCHEME):
            return _inside(path)
        rest = path[len(self.url_prefix) :]
        return path.startswith(self.url_prefix) and _inside(rest) and rest != ""

    def key_of(self, path: str) -> str | None:
        """The key of a logged s3:// path (None: a path on the host's disk)."""
        return path[len(SCHEME) + len(self.store.bucket) + 1 :] if path.startswith(SCHEME) else None

    def objects(self, commit: _Commit) -> dict[str, _Object] | str:
        """The recording's and sidecar's versions a commit names, or why it names none."""
        key = self.key_of(commit.path)
        assert key is not None
        at = f"{LOG_NAME} line {commit.seq}"
        versions = {name: commit.fields.get(name) for name in ("version_id", "sidecar_version_id")}
        for name, value in versions.items():
            if not isinstance(value, str) or not value:
                return f"{at}: call_committed of call {commit.call_id!r} has no {name}"
        sidecar = sidecar_path(PurePosixPath(key), commit.call_id).as_posix()
        return {
            "recording": _Object(key, str(versions["version_id"])),
            "sidecar": _Object(sidecar, str(versions["sidecar_version_id"])),
        }

    def gone(self, deletion: Deletion, commit: _Commit | None) -> None:
        """A deletion as the walk meets it: its versions, if listed, still exist."""
        if commit is None or self.key_of(commit.path) is None:
            return
        objects = self.objects(commit)
        if isinstance(objects, str):
            return  # the commit's own line was checked when it came
        for kind, obj in objects.items():
            if (obj.key, obj.version_id) in self.listed:
                self.lingering.append((deletion, kind, obj))


def _where(problem: str, host: str, segments: Sequence[Segment]) -> str:
    """``problem`` naming its host, and the segment of the log line it names."""
    match = _LINE.search(problem)
    if match is not None and not problem.startswith("segment "):
        seq = int(match[1])
        for segment in segments:
            if segment.span.first <= seq <= segment.span.last:
                return f"host {host}: segment {segment.key[len(host) :]}: {problem}"
    return f"host {host}: {problem}"


def verify_host(
    store: ObjectStore,
    host: str,
    *,
    identities: Sequence[pyrage.x25519.Identity] = (),
    now: datetime | None = None,
    span: Span = WHOLE,
    progress: Callable[[str, int], LineHook | None] | None = None,
) -> HostResult:
    """Verify one host's prefix of the bucket (see the module's rules)."""
    check = _HostCheck(store, host, utcnow() if now is None else now, span)
    try:
        segments = list_segments(store, host)
    except HostProblem as exc:
        return HostResult(host, f"host {host}: {exc}")
    for version in store.versions(f"{host}{RECORDINGS_FOLDER}"):
        if not version.delete_marker:
            check.listed[version.key, version.version_id] = version
    rules = _CallRules(
        None,
        draws=Draws(identities),
        path_ok=check.path_ok,
        path_rule=f"a path inside the state dir or an s3:// URL under {check.url_prefix}",
        on_gone=check.gone,
    )
    on_line = None if progress is None else progress(host, sum(s.size for s in segments))
    last: dict[str, Any] = {}

    def entries() -> Iterator[dict[str, Any]]:
        for entry in segment_entries(store, segments, on_line):
            last["entry"] = entry
            yield entry

    problem = _walk_entries(entries(), rules)
    rules.calls.close()
    if problem is not None:
        return HostResult(host, _where(problem, host, segments), rules.entries, len(segments))
    hashed, on_disk, problem = _check_objects(check, rules)
    tail = 0
    if problem is None:
        tail, problem = _accounted(check, rules, last.get("entry"))
    if problem is None:
        problem = _overdue(rules.retention, check.now)
    draws = rules.draws
    return HostResult(
        host,
        None if problem is None else _where(problem, host, segments),
        rules.entries,
        len(segments),
        hashed,
        draws.checked,
        tuple(draws.unverified),
        tail,
        on_disk,
    )


def _check_objects(check: _HostCheck, rules: _CallRules) -> tuple[int, int, str | None]:
    """Every recording that exists by the log: its versions, bytes, sidecar and locks."""
    hashed = on_disk = 0
    for commit in rules.live_commits():
        if check.key_of(commit.path) is None:
            on_disk += 1
            continue
        recording = rules.retention.get(commit.call_id)
        assert recording is not None  # a live commit
        hash_it = check.span.place(commit.fields) == 0
        try:
            problem = _check_commit(check, commit, recording, hash_it)
        except StoreError as exc:
            problem = f"{LOG_NAME} line {commit.seq}: the store failed ({exc})"
        if problem is not None:
            return hashed, on_disk, problem
        hashed += int(hash_it)
    return hashed, on_disk, None


def _check_commit(
    check: _HostCheck, commit: _Commit, recording: Recording, hash_it: bool
) -> str | None:
    store, at = check.store, f"{LOG_NAME} line {commit.seq}"
    objects = check.objects(commit)
    if isinstance(objects, str):
        return objects
    for kind, obj in objects.items():
        url = f"s3://{store.bucket}/{obj.key}"
        try:
            info = store.head(obj.key, obj.version_id)
        except ObjectMissing:
            return (
                f"{at}: {kind} {url} version {obj.version_id} of call {commit.call_id!r} is "
                "missing (deleted behind the log's back)"
            )
        problem = _lock_problem(info, recording, f"{at}: {kind} {url} version {obj.version_id}")
        if problem is not None:
            return problem
    if not hash_it:
        return None
    rec, side = objects["recording"], objects["sidecar"]
    magic = MAGIC.get(PurePosixPath(rec.key).suffix)
    digest, head = hashlib.sha256(), b""
    with store.get_stream(rec.key, rec.version_id) as reader:
        while block := reader.read(_BLOCK):
            head = head or block[:32]
            digest.update(block)
    url = f"s3://{store.bucket}/{rec.key}"
    if digest.hexdigest() != commit.sha256:
        return (
            f"{at}: recording {url} version {rec.version_id} of call {commit.call_id!r} does "
            "not match its logged sha256 (altered or replaced)"
        )
    if magic is not None and not head.startswith(magic):
        return f"{at}: recording {url} of call {commit.call_id!r} is not a {magic!r} file"
    with store.get_stream(side.key, side.version_id) as reader:
        raw = reader.read()
    try:
        data = json.loads(raw)
    except ValueError:
        return f"{at}: sidecar s3://{store.bucket}/{side.key} version {side.version_id} is not JSON"
    return _sidecar_problem(data, _as_sidecar_sees(commit, data, check), side.key)


def _as_sidecar_sees(commit: _Commit, data: object, check: _HostCheck) -> _Commit:
    """The commit as its sidecar repeats it: the sidecar names the recording by its path in
    the state dir or by its s3:// URL, and cannot hold its own version id."""
    if not isinstance(data, dict):
        return commit
    fields = dict(commit.fields)
    for name in ("version_id", "sidecar_version_id"):
        if name not in data:
            fields.pop(name, None)
    said = data.get("path")
    key = check.key_of(commit.path)
    if isinstance(said, str) and key is not None and said == key[len(check.host) :]:
        fields["path"] = said
    return dataclasses.replace(commit, fields=fields)


def _lock_problem(info: ObjectInfo, recording: Recording, what: str) -> str | None:
    until = recording.retain_until
    if until is not None:
        floor = until.replace(microsecond=0)
        if info.retain_until is None or info.mode is None:
            return f"{what} has no Object Lock retention, yet the log keeps it until {iso(until)}"
        if info.retain_until < floor:
            return (
                f"{what} is locked only until {iso(info.retain_until)}, but the log keeps it "
                f"until {iso(until)}"
            )
    held = recording.hold is not None
    if info.legal_hold != held:
        said = "holds it (recording_held)" if held else "holds it not"
        state = "on" if info.legal_hold else "off"
        return f"{what} has its legal hold {state}, but the log {said}"
    return None


def _accounted(
    check: _HostCheck, rules: _CallRules, last: Mapping[str, Any] | None
) -> tuple[int, str | None]:
    """Deleted recordings' versions gone; every version under recordings/ accounted for by
    the log, or a live call's, or newer than the shipped log (a live host's last minutes)."""
    for deletion, kind, obj in check.lingering:
        return 0, (
            f"{LOG_NAME} line {deletion.seq}: {kind} s3://{check.store.bucket}/{obj.key} version "
            f"{obj.version_id} of call {deletion.call_id!r} is logged as deleted "
            f"({deletion.why}) but still exists"
        )
    accounted: set[tuple[str, str]] = set()
    for commit in rules.live_commits():
        if check.key_of(commit.path) is not None:
            objects = check.objects(commit)
            if not isinstance(objects, str):
                accounted.update((obj.key, obj.version_id) for obj in objects.values())
    shipped = parse_iso(last["time"]) if last is not None else None
    open_calls = rules.open_calls()
    logged = {key for key, _ in accounted}
    tail = 0
    for (key, version_id), version in check.listed.items():
        if (key, version_id) in accounted:
            continue
        name = PurePosixPath(key).name
        if any(name.startswith((f"{call}.", f"{call}-")) for call in open_calls):
            continue  # a live call's, being uploaded
        modified = version.last_modified
        if (
            key not in logged  # a second version of a logged key is never the daemon's
            and shipped is not None
            and modified is not None
            # (a store's times are whole seconds: one in the shipped line's second may be later)
            and modified + _STORE_TICK > shipped
            and check.now - modified <= timedelta(seconds=TAIL_SECONDS)
        ):
            tail += 1
            continue
        return tail, (
            f"s3://{check.store.bucket}/{key} version {version_id} is not accounted for by the "
            "log: it is not the recording or sidecar version of a committed call that was not "
            "deleted since"
        )
    return tail, None


def verify_floor(
    store: ObjectStore,
    prefix: str,
    *,
    identities: Sequence[pyrage.x25519.Identity] = (),
    now: datetime | None = None,
    span: Span = WHOLE,
    progress: Callable[[str, int], LineHook | None] | None = None,
) -> FloorResult:
    """Every host under ``prefix``, in order, stopping at the first that fails."""
    results: list[HostResult] = []
    for host in find_hosts(store, prefix):
        result = verify_host(
            store, host, identities=identities, now=now, span=span, progress=progress
        )
        results.append(result)
        if not result.ok:
            break
    return FloorResult(f"s3://{store.bucket}/{prefix}", tuple(results))


# ---------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class HostReport:
    host: str
    segments: int
    report: Report

    def to_json(self) -> dict[str, Any]:
        return {
            "segments": self.segments,
            "entries": self.report.entries,
            "first_time": self.report.first_time,
            "last_time": self.report.last_time,
            "totals": self.report.totals.to_json(),
        }


@dataclass(frozen=True)
class FloorReport:
    """One report over every host's log: ``report`` sums the floor (see ``merge``), ``hosts``
    has each host's own totals."""

    url: str
    report: Report
    hosts: tuple[HostReport, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "floor": self.url,
            "hosts": {host.host: host.to_json() for host in self.hosts},
            **self.report.to_json(),
        }


def report_floor(
    store: ObjectStore,
    prefix: str,
    *,
    now: datetime | None = None,
    span: Span = WHOLE,
    progress: Callable[[str, int], LineHook | None] | None = None,
) -> FloorReport:
    """Figures over every host's shipped log under ``prefix`` (the chain of each is checked,
    as ``report`` does; the objects are not: ``verify`` does that). CommitLogError when a
    host's log is broken, StoreError when the store fails."""
    readings: dict[str, Reading] = {}
    hosts: list[HostReport] = []
    as_of = utcnow() if now is None else now
    found = find_hosts(store, prefix)
    if not found:
        raise CommitLogError(f"no host's {LOG_FOLDER} folder under s3://{store.bucket}/{prefix}")
    for host in found:
        try:
            segments = list_segments(store, host)
        except HostProblem as exc:
            raise CommitLogError(f"host {host}: {exc}") from exc
        reading = Reading(span)
        on_line = None if progress is None else progress(host, sum(s.size for s in segments))
        try:
            for entry in segment_entries(store, segments, on_line):
                reading.feed(entry)
        except CommitLogError as exc:
            raise CommitLogError(_where(str(exc), host, segments)) from exc
        readings[host] = reading
        hosts.append(HostReport(host, len(segments), reading.finish(as_of)))
    return FloorReport(f"s3://{store.bucket}/{prefix}", merge(readings, as_of), tuple(hosts))


_G = TypeVar("_G", _Tally, BandTally)


def _add_host(host: str, pairs: Mapping[_Pair, _G], into: dict[_Pair, _G], make: type[_G]) -> None:
    """One host's tallies by line and agent into the floor's: a line is the host's own
    (``HOST/desk-01``), an agent may work on several hosts."""
    for (line, agent), tally in pairs.items():
        _group(into, (f"{host}{line}", agent), make).merge(tally)


def _merge_purpose(a: PurposeRetention, b: PurposeRetention) -> PurposeRetention:
    def pick(f: Callable[..., datetime], x: datetime | None, y: datetime | None) -> datetime | None:
        both = [moment for moment in (x, y) if moment is not None]
        return f(both) if both else None

    return PurposeRetention(
        recordings=a.recordings + b.recordings,
        held=a.held + b.held,
        resolved=a.resolved + b.resolved,
        due_now=a.due_now + b.due_now,
        no_end=a.no_end + b.no_end,
        earliest=pick(min, a.earliest, b.earliest),
        latest=pick(max, a.latest, b.latest),
    )


def merge(readings: Mapping[str, Reading], now: datetime) -> Report:
    """One report over several hosts' readings (by host prefix):

    - ``totals``, ``per_day``, ``retention`` (totals and per purpose) and the fairness
      ``totals`` are summed over the floor;
    - ``per_line`` is by host: ``rec-01/desk-01`` (a line is a host's own);
    - ``per_agent`` is summed over the hosts: an agent is a person, who may have worked on
      several hosts, and the fairness promise is to the person;
    - ``deletions`` and ``accesses`` name the call as ``HOST/CALL`` (call ids are unique per
      host only), host by host, each host's in log order;
    - ``entries`` is the sum, ``first_time``/``last_time`` the earliest and latest.
    """
    pairs, band_pairs, unowned = dict[_Pair, _Tally](), dict[_Pair, BandTally](), _Tally()
    days: Counter[tuple[Any, str]] = Counter()
    deletions: list[Deletion] = []
    accesses: list[Access] = []
    entries, firsts, lasts = 0, [], []
    purposes: dict[str, PurposeRetention] = {}
    recordings = held = due_now = overdue = 0
    span = Span()
    for host, reading in readings.items():
        census, draws, span = reading.census, reading.draws, reading.span
        entries += census.entries
        firsts += [census.first_time] if census.first_time else []
        lasts += [census.last_time] if census.last_time else []
        _add_host(host, census.pairs, pairs, _Tally)
        unowned.merge(census.unowned)
        days.update(census.days)
        _add_host(host, draws.pairs, band_pairs, BandTally)
        deletions += [
            dataclasses.replace(deletion, call_id=f"{host}{deletion.call_id}")
            for deletion in census.deletions
        ]
        accesses += [
            dataclasses.replace(access, call_id=f"{host}{access.call_id}")
            for access in reading.accesses
        ]
        retention = Retention.of(reading.ledger, reading.as_of(now), ())
        recordings += retention.recordings
        held += retention.held
        due_now += retention.due_now
        overdue += retention.overdue
        for name, purpose in retention.by_purpose.items():
            purposes[name] = (
                _merge_purpose(purposes[name], purpose) if name in purposes else purpose
            )
    as_of = now if span.until is None else min(now, span.until)
    merged = Retention(
        as_of=as_of,
        recordings=recordings,
        held=held,
        due_now=due_now,
        overdue=overdue,
        by_purpose=dict(sorted(purposes.items())),
        deletions=deletions,
    )
    per_day = {}
    for day in sorted({day for day, _ in days}):
        try:
            when = date.fromisoformat(day)
        except ValueError:
            continue
        per_day[when] = Day(*(days[day, event] for event in _DAY_EVENTS))
    totals, lines, agents = _pivot(pairs, _Tally, unowned)
    return Report(
        since=span.since,
        until=span.until,
        entries=entries,
        first_time=min(firsts, default=None),
        last_time=max(lasts, default=None),
        totals=totals.freeze(),
        per_line=_freeze_groups(lines),
        per_agent=_freeze_groups(agents),
        retention=merged,
        accesses=accesses,
        per_day=per_day,
        fairness=_Draws(pairs=band_pairs).freeze(),
    )


# ---------------------------------------------------------------------------------------------
# progress


@contextmanager
def bars(
    label: str, stream: TextIO | None = None
) -> Iterator[Callable[[str, int], LineHook | None] | None]:
    """A progress bar per host on a terminal (``hindsight.audit.progress``'s rules), as a
    ``progress`` argument: called with the host and its segments' bytes; None elsewhere."""
    out = sys.stderr if stream is None else stream
    if not _is_terminal(out):
        yield None
        return
    drawn: list[Bar] = []

    def start(host: str, total: int) -> LineHook:
        if drawn:
            drawn[-1].erase()
        drawn.append(Bar(f"{label} {host}", total, out))
        return drawn[-1].update

    try:
        yield start
    finally:
        if drawn:
            drawn[-1].erase()


__all__ = [
    "BadURL",
    "FloorReport",
    "FloorResult",
    "HostResult",
    "StoreRefused",
    "find_hosts",
    "open_bucket",
    "parse_url",
    "report_floor",
    "verify_floor",
    "verify_host",
]
