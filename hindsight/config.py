"""The configuration: one TOML file parsed into frozen dataclasses.

Rules of this module:

- The schema is declared once (the ``_Key`` tables below, in the style of Mopidy's config
  schemas); every type, default, range and "unknown key" check is driven from it.
- Pure: no I/O beyond reading the one file and checking that ``audio.file`` exists.
- Never partially valid: every problem is collected as ``section.key: message`` (``lines[2].x``
  inside an array, 0-based) and all of them are raised together in one ``ConfigError``; a broken
  file never yields a ``Config``. A name that is not one of the known ones (a key, a section, a
  choice, a declared device or purpose) comes with a did-you-mean suggestion when one is close.
- A purpose has exactly one retention rule: ``retention_days``, or ``until_resolved = true``.
  ``grace_days`` goes with either: ``resolve`` applies to every purpose.
- Relative paths (``daemon.state_dir``, ``audio.file``, the path of an ``ipc://`` endpoint) are
  relative to the folder of the config file (``base_dir``); resolved paths are absolute.
- Messages echo at most ~40 characters of any value from the file.
- An id (a line, device or purpose name here, and every id of the control protocol) is
  ``ID_PATTERN``: it never starts with a dot, so it can name a file beside the store's hidden
  temp files (``.NAME.xxxx.tmp``) without being mistaken for one, and is never ``.`` or ``..``.
- Only what the file alone decides is checked here; what depends on the host (free memory, the
  state folder) is ``hindsight.daemon.host``'s.

Parsing runs in three phases: each table is cleaned against its schema into a dict of the keys
that passed (failed keys are left out, already reported); cross-checks then look only at the
values that passed, so one mistake is reported once; only a problem-free parse is built into
dataclasses.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import pyrage

from hindsight.errors import ConfigError

ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
LEGAL_BASES = (
    "consent",
    "contract",
    "legal-obligation",
    "vital-interests",
    "public-task",
    "legitimate-interests",
    "legitimate-interest",  # the older spelling, kept so that existing files stay valid
)
DEFAULT_CONFIG_PATH = Path("/etc/hindsight/hindsight.toml")
CONFIG_ENV = "HINDSIGHT_CONFIG"
SOURCES = ("sounddevice", "file", "synthetic")
BACKENDS = ("local", "s3")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
# S3 bucket names: 3-63 of a-z 0-9 . -, starting and ending with a letter or digit.
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
DEFAULT_DEVICE_NAME = "default"
# A hundred years: a bound on every day count, so that a date computed from one stays in range.
MAX_DAYS = 36500
# `hindsight audit verify` fails on a recording more than a day past its retention; a purge at
# least twice a day keeps a due recording well inside that, even across a restart.
MAX_PURGE_INTERVAL_SECONDS = 43200
MAX_EPOCH_HOURS = 24 * 366  # a sampling epoch: at most a year
# An ended call waits marking.grace_seconds for a late record key, its audio still in the
# pool: a few minutes at most, so that a wipe is never put off for long.
MAX_MARK_GRACE_SECONDS = 300
# libsndfile's FLAC writer refuses more, so a wider line could never be kept.
MAX_LINE_CHANNELS = 8

_CLIP = 40
SCHEMES = ("ipc://", "tcp://")  # the ZeroMQ transports the control socket may use
# What a [[clients]] entry may be; hindsight.daemon.rights says what each may do.
ROLES = ("telephony", "agent", "reviewer", "auditor", "admin")
# A CURVE key as ZeroMQ writes it: 32 bytes in Z85 (ZeroMQ RFC 32), 40 characters.
Z85_KEY_CHARS = 40
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path
    control: str
    listen: str | None = None  # tcp:// endpoint for [[clients]]: CURVE, always authenticated
    curve_secret_key_file: Path | None = None  # the listen socket's key pair (a ZeroMQ cert)


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    device: str | int | None  # None: the PortAudio default input
    channels: int


@dataclass(frozen=True)
class AudioConfig:
    source: str
    file: Path | None
    samplerate: int
    blocksize: int
    devices: tuple[DeviceConfig, ...]


@dataclass(frozen=True)
class BufferConfig:
    max_call_seconds: float
    memory_mb: int
    require_lock: bool = False  # refuse to start when the pool cannot be locked in memory


@dataclass(frozen=True)
class MetricsConfig:
    textfile: Path | None = None  # Prometheus text format, for node_exporter's textfile collector
    interval_seconds: float = 60.0  # how often the figures are read (and the file written)


@dataclass(frozen=True)
class StorageConfig:
    recipients: tuple[str, ...] = ()  # age X25519 recipients of every recording
    require_encryption: bool = False  # refuse to start unless every purpose has a recipient
    backend: str = "local"  # one of BACKENDS: state_dir/recordings, or an S3 bucket
    # backend = "s3" (docs/configuration.md, "Scale-out storage" in the contract):
    s3_endpoint: str | None = None  # http(s)://HOST[:PORT]; required with s3
    s3_bucket: str | None = None  # created with Object Lock; required with s3
    s3_prefix: str = ""  # this host's key prefix, ending in "/"; required with s3
    s3_lock_mode: str = "GOVERNANCE"  # or COMPLIANCE
    s3_credentials_file: Path | None = None  # AWS INI [default]; None: the AWS_* variables
    s3_spool_limit_mb: int = 4096  # a spool beyond this is a loud warning (never a loss)
    s3_erase_bypass: bool = False  # erase before the lock ends (GOVERNANCE, with the right)
    s3_log_retention_days: float = 3650.0  # the lock of each shipped log segment
    s3_ship_lines: int = 10000  # a log segment is closed and shipped after this many lines
    s3_ship_seconds: float = 300.0  # ... or this long after its first line

    @property
    def s3(self) -> bool:
        return self.backend == "s3"


@dataclass(frozen=True)
class SamplingConfig:
    one_in: int
    purpose: str
    # A sampling epoch's seed decides every draw in it; a new one is drawn (and the old one
    # revealed in the log) this often, and at every start.
    epoch_hours: float = 24.0


@dataclass(frozen=True)
class AuditConfig:
    # age recipients of the auditors: each epoch's seed is sealed to them from its start, so
    # that a crash before the reveal never leaves an epoch's draws unverifiable.
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegisterConfig:
    """What the GDPR Art. 30 record of processing says beyond the purposes (``audit register``)."""

    controller: str = ""  # the organisation, its address
    contact: str = ""  # the data protection officer or the controller's contact
    data_subjects: tuple[str, ...] = ("callers", "call-centre agents")
    data_categories: tuple[str, ...] = (
        "call audio (voices and what is said)",
        "keyed pseudonyms of callers' numbers",
        "agent and line identifiers",
        "call times and durations",
        "agents' notes on marked calls",
    )
    data_recipients: tuple[str, ...] = ()  # who receives recordings (teams, processors)
    transfers: str = "none"  # transfers to third countries, and their safeguards


@dataclass(frozen=True)
class MarkingConfig:
    purpose: str
    # Seconds after a call's end during which ``mark`` still keeps it (the caller hung up
    # first); every ended call, kept or not, waits this long before its wipe or commit.
    grace_seconds: float = 0.0


@dataclass(frozen=True)
class WorkerConfig:
    hang_seconds: float


@dataclass(frozen=True)
class LineConfig:
    name: str
    device: str  # the name of a DeviceConfig
    channels: tuple[int, ...]  # 1-based, as in the file
    announced: tuple[str, ...]  # purposes the caller is told of; every purpose when not given


@dataclass(frozen=True)
class PurposeConfig:
    name: str
    legal_basis: str
    retention_days: float | None  # None exactly when until_resolved
    until_resolved: bool
    grace_days: float  # how long the purpose still holds after `resolve` (either rule)
    max_retention_days: float | None  # None: no cap
    recipients: tuple[str, ...] = ()  # age recipients added for recordings kept for it
    description: str = ""  # what the recordings are for, in the register's words


@dataclass(frozen=True)
class ClientConfig:
    """A remote client of ``daemon.listen``, known by its CURVE public key."""

    name: str
    public_key: str  # Z85, 40 characters
    role: str  # one of ROLES
    lines: tuple[str, ...]  # the lines an agent may mark and see


@dataclass(frozen=True)
class RetentionConfig:
    purge_interval_seconds: float


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    audio: AudioConfig
    buffer: BufferConfig
    sampling: SamplingConfig
    marking: MarkingConfig
    worker: WorkerConfig
    retention: RetentionConfig
    storage: StorageConfig
    lines: tuple[LineConfig, ...]
    purposes: tuple[PurposeConfig, ...]
    path: Path | None
    metrics: MetricsConfig = MetricsConfig()
    audit: AuditConfig = AuditConfig()
    register: RegisterConfig = RegisterConfig()
    clients: tuple[ClientConfig, ...] = ()  # who may use daemon.listen, and for what
    # Of the file's bytes, those parsed (load_config); logged. Not part of what the config
    # says, so not of its equality either.
    sha256: str | None = field(default=None, compare=False)

    def purpose(self, name: str) -> PurposeConfig | None:
        return next((p for p in self.purposes if p.name == name), None)

    def recipients(self, purposes: Iterable[str]) -> tuple[str, ...]:
        """Who may open a recording kept for ``purposes``: the global recipients and theirs."""
        found = list(self.storage.recipients)
        for name in purposes:
            purpose = self.purpose(name)
            found += purpose.recipients if purpose is not None else ()
        return tuple(dict.fromkeys(found))

    def unencrypted(self) -> list[str]:
        """The purposes whose recordings would be written in plain FLAC (no recipient at all)."""
        return [p.name for p in self.purposes if not self.recipients([p.name])]

    def line(self, name: str) -> LineConfig | None:
        return next((line for line in self.lines if line.name == name), None)

    def device(self, name: str) -> DeviceConfig:
        """The device called ``name``; every ``LineConfig.device`` names one. KeyError if none."""
        for device in self.audio.devices:
            if device.name == name:
                return device
        raise KeyError(name)


# --- value types: each cleans one raw TOML value or raises ValueError with the message ---

T = TypeVar("T")


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[: _CLIP - 3] + "..."


def _got(raw: object) -> str:
    return f"got {type(raw).__name__} {_clip(repr(raw))}"


def _expect_int(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"expected an integer, {_got(raw)}")
    return raw


def _expect_str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, {_got(raw)}")
    return raw


class _Value(ABC, Generic[T]):
    @abstractmethod
    def parse(self, raw: object) -> T:
        """The cleaned value; ValueError(message) when ``raw`` does not fit."""


@dataclass(frozen=True)
class _Int(_Value[int]):
    low: int
    high: int | None = None

    def parse(self, raw: object) -> int:
        value = _expect_int(raw)
        if self.high is None and value < self.low:
            raise ValueError(f"must be at least {self.low}, got {_clip(str(value))}")
        if self.high is not None and not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low} and {self.high}, got {_clip(str(value))}")
        return value


@dataclass(frozen=True)
class _Float(_Value[float]):
    low: float
    at_most: float
    low_allowed: bool = False  # False: the value must be greater than ``low``

    def parse(self, raw: object) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"expected a number, {_got(raw)}")
        above_low = self.low <= raw if self.low_allowed else self.low < raw
        if not (above_low and raw <= self.at_most):  # also refuses nan
            low = "at least" if self.low_allowed else "greater than"
            raise ValueError(
                f"must be {low} {self.low:g} and at most {self.at_most:g}, got {_clip(repr(raw))}"
            )
        return float(raw)


class _Bool(_Value[bool]):
    def parse(self, raw: object) -> bool:
        if not isinstance(raw, bool):
            raise ValueError(f"expected true or false, {_got(raw)}")
        return raw


@dataclass(frozen=True)
class _Str(_Value[str]):
    choices: tuple[str, ...] = ()
    non_empty: bool = False

    def parse(self, raw: object) -> str:
        text = _expect_str(raw)
        if self.non_empty and not text:
            raise ValueError("must not be empty")
        if self.choices and text not in self.choices:
            allowed = ", ".join(repr(choice) for choice in self.choices)
            raise ValueError(
                f"must be one of {allowed}, got {_clip(repr(text))}{_suggest(text, self.choices)}"
            )
        return text


class _Id(_Value[str]):
    def parse(self, raw: object) -> str:
        text = _expect_str(raw)
        if not ID_PATTERN.fullmatch(text):
            raise ValueError(
                "must be 1 to 64 of the characters A-Z a-z 0-9 . _ - and not start with a dot, "
                f"got {_clip(repr(text))}"
            )
        return text


class _Ids(_Value[tuple[str, ...]]):
    """A list of distinct ids; ``[]`` is allowed."""

    def parse(self, raw: object) -> tuple[str, ...]:
        if not isinstance(raw, list):
            raise ValueError(f"expected a list of strings, {_got(raw)}")
        ids = tuple(_list_item(index, item, _Id().parse) for index, item in enumerate(raw))
        for index, name in enumerate(ids):
            if name in ids[:index]:
                raise ValueError(f"{_clip(repr(name))} is listed twice")
        return ids


def _list_item(index: int, raw: object, parse: Callable[[object], T]) -> T:
    try:
        return parse(raw)
    except ValueError as error:
        raise ValueError(f"item {index}: {error}") from None


class _Texts(_Value[tuple[str, ...]]):
    """A list of non-empty texts; ``[]`` is allowed."""

    def parse(self, raw: object) -> tuple[str, ...]:
        if not isinstance(raw, list):
            raise ValueError(f"expected a list of strings, {_got(raw)}")
        return tuple(
            _list_item(index, item, _Str(non_empty=True).parse) for index, item in enumerate(raw)
        )


class _Recipients(_Value[tuple[str, ...]]):
    """A list of distinct age X25519 recipients (``age1...``), checked by the age library."""

    def parse(self, raw: object) -> tuple[str, ...]:
        if not isinstance(raw, list):
            raise ValueError(f"expected a list of age recipients ('age1...'), {_got(raw)}")
        found = tuple(_list_item(index, item, _recipient) for index, item in enumerate(raw))
        for index, recipient in enumerate(found):
            if recipient in found[:index]:
                raise ValueError(f"item {index}: {_clip(repr(recipient))} is listed twice")
        return found


def _recipient(raw: object) -> str:
    text = _expect_str(raw).strip()
    try:
        pyrage.x25519.Recipient.from_str(text)
    except pyrage.RecipientError:
        hint = (
            " (that is a secret identity: list its public recipient)"
            if text.upper().startswith("AGE-SECRET-KEY-")
            else ""
        )
        # An identity pasted by mistake is a secret: never echo it.
        shown = "a secret key" if hint else _clip(repr(text))
        raise ValueError(f"not an age X25519 recipient ('age1...'), got {shown}{hint}") from None
    return text


class _Endpoint(_Value[str]):
    def parse(self, raw: object) -> str:
        endpoint = _expect_str(raw)
        if not endpoint.startswith(SCHEMES):
            raise ValueError(f"must start with 'ipc://' or 'tcp://', got {_clip(repr(endpoint))}")
        if endpoint in SCHEMES:
            raise ValueError(f"needs an address after {endpoint!r}")
        if endpoint.startswith("ipc://@"):
            raise ValueError(
                "an abstract socket (ipc://@...) has no file permissions, so anyone on this host "
                "could reach the daemon's admin socket; give a path, e.g. "
                "'ipc:///run/hindsight/control.sock'"
            )
        return endpoint


class _TcpEndpoint(_Value[str]):
    def parse(self, raw: object) -> str:
        endpoint = _expect_str(raw)
        if not endpoint.startswith("tcp://") or endpoint == "tcp://":
            raise ValueError(f"must be 'tcp://ADDRESS:PORT', got {_clip(repr(endpoint))}")
        return endpoint


def z85_key_problem(text: str) -> str | None:
    """Why ``text`` is not a Z85 CURVE key (40 characters, 32 bytes); None when it is one."""
    if len(text) != Z85_KEY_CHARS or any(char not in _Z85 for char in text):
        return f"must be a Z85 key of {Z85_KEY_CHARS} characters"
    for at in range(0, Z85_KEY_CHARS, 5):
        value = 0
        for char in text[at : at + 5]:
            value = value * 85 + _Z85.index(char)
        if value >= 1 << 32:
            return f"must be a Z85 key of {Z85_KEY_CHARS} characters (it does not decode)"
    return None


class _Z85Key(_Value[str]):
    def parse(self, raw: object) -> str:
        text = _expect_str(raw)
        problem = z85_key_problem(text)
        if problem is not None:
            # A key is not a secret here, but a secret key pasted by mistake would be: no echo.
            raise ValueError(f"{problem}, got {len(text)} characters")
        return text


class _S3Endpoint(_Value[str]):
    """``http://HOST[:PORT]`` or ``https://...`` (a path after it is refused); "" for unset."""

    def parse(self, raw: object) -> str:
        text = _expect_str(raw)
        if not text:
            return text
        scheme, _, rest = text.partition("://")
        host = rest.rstrip("/")
        if scheme not in ("http", "https") or not host or "/" in host or " " in host:
            raise ValueError(f"must be 'https://HOST[:PORT]' (or http://), got {_clip(repr(text))}")
        return f"{scheme}://{host}"


class _Bucket(_Value[str]):
    def parse(self, raw: object) -> str:
        text = _expect_str(raw)
        if text and (not BUCKET_PATTERN.fullmatch(text) or ".." in text):
            raise ValueError(
                "must be an S3 bucket name: 3 to 63 of a-z 0-9 . - , starting and ending with "
                f"a letter or digit, got {_clip(repr(text))}"
            )
        return text


class _Prefix(_Value[str]):
    """A key prefix of one recorder host: ``rec-01/`` or ``site-a/rec-01/``; "" for unset."""

    def parse(self, raw: object) -> str:
        text = _expect_str(raw)
        if not text:
            return text
        parts = text.split("/")
        if (
            not text.endswith("/")
            or text.startswith("/")
            or any(part in ("", ".", "..") for part in parts[:-1])
            or any(not ID_PATTERN.fullmatch(part) for part in parts[:-1])
        ):
            raise ValueError(
                "must be one or more ids, each followed by '/' (one prefix per recorder host, "
                f"e.g. 'rec-01/'), got {_clip(repr(text))}"
            )
        return text


def is_loopback(endpoint: str) -> bool:
    """Whether a ``tcp://`` endpoint binds loopback only: 127.0.0.0/8, ::1 or localhost.

    Names are not resolved: any other name (a host name, an interface, ``*``) is not loopback.
    """
    host = endpoint.removeprefix("tcp://").rpartition(":")[0]
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _DeviceSpec(_Value[str | int | None]):
    """A sounddevice device name or index; "" is the default input (None)."""

    def parse(self, raw: object) -> str | int | None:
        if isinstance(raw, str):
            return raw or None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"expected a device name (string) or index (integer), {_got(raw)}")
        if raw < 0:
            raise ValueError(f"a device index must be at least 0, got {_clip(str(raw))}")
        return raw


class _Channels(_Value[tuple[int, ...]]):
    """1 to 8 distinct 1-based channel numbers (the upper bound is also the device's)."""

    def parse(self, raw: object) -> tuple[int, ...]:
        if not isinstance(raw, list):
            raise ValueError(f"expected a list of integers, {_got(raw)}")
        if not raw:
            raise ValueError("must list at least one channel")
        if len(raw) > MAX_LINE_CHANNELS:
            raise ValueError(
                f"lists {len(raw)} channels, but a FLAC recording holds at most {MAX_LINE_CHANNELS}"
            )
        channels = tuple(_channel(index, item) for index, item in enumerate(raw))
        for index, channel in enumerate(channels):
            if channel in channels[:index]:
                raise ValueError(f"channel {channel} is listed twice")
        return channels


def _channel(index: int, raw: object) -> int:
    channel = _list_item(index, raw, _expect_int)
    if channel < 1:
        raise ValueError(f"channel {_clip(str(channel))} is out of range: channels count from 1")
    return channel


# --- the schema, declared once; defaults are written as they would be in the file ---

_REQUIRED: Final = object()


@dataclass(frozen=True)
class _Key:
    value: _Value[Any]
    default: object = _REQUIRED  # None: optional, stays None when absent


_Schema = Mapping[str, _Key]

_DAEMON: Final[_Schema] = {
    "state_dir": _Key(_Str(non_empty=True), "/var/lib/hindsight"),
    "control": _Key(_Endpoint(), "ipc:///run/hindsight/control.sock"),
    "listen": _Key(_TcpEndpoint(), None),  # needs curve_secret_key_file: a cross-check
    "curve_secret_key_file": _Key(_Str(non_empty=True), None),
}
_AUDIO: Final[_Schema] = {
    "source": _Key(_Str(SOURCES), "sounddevice"),
    "device": _Key(_DeviceSpec(), ""),
    "file": _Key(_Str(), ""),
    "samplerate": _Key(_Int(8000, 192000), 16000),
    "channels": _Key(_Int(1, 256), 2),
    "blocksize": _Key(_Int(16), 320),  # at most audio.samplerate: a cross-check
}
_BUFFER: Final[_Schema] = {
    "max_call_seconds": _Key(_Float(0, 86400), 7200),
    "memory_mb": _Key(_Int(1, 1048576), 1024),
    "require_lock": _Key(_Bool(), False),
}
_SAMPLING: Final[_Schema] = {
    "one_in": _Key(_Int(0), 10),
    "purpose": _Key(_Id(), "training"),
    "epoch_hours": _Key(_Float(0, MAX_EPOCH_HOURS), 24),
}
_MARKING: Final[_Schema] = {
    "purpose": _Key(_Id(), "escalation"),
    "grace_seconds": _Key(_Float(0, MAX_MARK_GRACE_SECONDS, low_allowed=True), 0),
}
# The worker says alive twice a second; a long silence means it hangs (or starves: it runs
# at idle priority, so a host whose CPUs are all busy for that long is taken for the same).
_WORKER: Final[_Schema] = {"hang_seconds": _Key(_Float(0, 3600), 60)}
_RETENTION: Final[_Schema] = {
    "purge_interval_seconds": _Key(_Float(0, MAX_PURGE_INTERVAL_SECONDS), 3600),
}
_STORAGE: Final[_Schema] = {
    "recipients": _Key(_Recipients(), []),
    "require_encryption": _Key(_Bool(), False),
    "backend": _Key(_Str(BACKENDS), "local"),
    # Required with backend = "s3": a cross-check.
    "s3_endpoint": _Key(_S3Endpoint(), ""),
    "s3_bucket": _Key(_Bucket(), ""),
    "s3_prefix": _Key(_Prefix(), ""),
    "s3_lock_mode": _Key(_Str(LOCK_MODES), "GOVERNANCE"),
    "s3_credentials_file": _Key(_Str(), ""),
    "s3_spool_limit_mb": _Key(_Int(1, 1048576), 4096),
    "s3_erase_bypass": _Key(_Bool(), False),  # not with COMPLIANCE: a cross-check
    "s3_log_retention_days": _Key(_Float(0, MAX_DAYS), 3650),
    "s3_ship_lines": _Key(_Int(1, 10_000_000), 10000),
    "s3_ship_seconds": _Key(_Float(0, 86400), 300),
}
_METRICS: Final[_Schema] = {
    "textfile": _Key(_Str(), ""),
    "interval_seconds": _Key(_Float(0, 3600), 60),
}
_AUDIT: Final[_Schema] = {"recipients": _Key(_Recipients(), [])}
_REGISTER_DEFAULTS = RegisterConfig()
_REGISTER: Final[_Schema] = {
    "controller": _Key(_Str(), ""),
    "contact": _Key(_Str(), ""),
    "data_subjects": _Key(_Texts(), list(_REGISTER_DEFAULTS.data_subjects)),
    "data_categories": _Key(_Texts(), list(_REGISTER_DEFAULTS.data_categories)),
    "data_recipients": _Key(_Texts(), []),
    "transfers": _Key(_Str(non_empty=True), "none"),
}
_SECTIONS: Final[Mapping[str, _Schema]] = {
    "daemon": _DAEMON,
    "audio": _AUDIO,
    "buffer": _BUFFER,
    "sampling": _SAMPLING,
    "marking": _MARKING,
    "worker": _WORKER,
    "retention": _RETENTION,
    "storage": _STORAGE,
    "metrics": _METRICS,
    "audit": _AUDIT,
    "register": _REGISTER,
}
_DEVICE: Final[_Schema] = {
    "name": _Key(_Id()),
    "device": _Key(_DeviceSpec(), ""),
    "channels": _Key(_Int(1, 256)),
}
_LINE: Final[_Schema] = {
    "name": _Key(_Id()),
    "device": _Key(_Id(), None),
    "channels": _Key(_Channels()),
    "announced": _Key(_Ids(), None),  # None: every declared purpose (a cross-check fills it in)
}
# Exactly one of retention_days and until_resolved = true: a cross-check.
_PURPOSE: Final[_Schema] = {
    "legal_basis": _Key(_Str(LEGAL_BASES)),
    "retention_days": _Key(_Float(0, MAX_DAYS), None),
    "until_resolved": _Key(_Bool(), False),
    "grace_days": _Key(_Float(0, MAX_DAYS, low_allowed=True), 0),
    "max_retention_days": _Key(_Float(0, MAX_DAYS), None),  # >= retention_days: a cross-check
    "recipients": _Key(_Recipients(), []),
    "description": _Key(_Str(), ""),
}
_DEFAULT_PURPOSES: Final[Mapping[str, object]] = {
    "training": {"legal_basis": "legitimate-interest", "retention_days": 92},
    "escalation": {"legal_basis": "contract", "retention_days": 730},
}
_CLIENT: Final[_Schema] = {
    "name": _Key(_Id()),
    "public_key": _Key(_Z85Key()),
    "role": _Key(_Str(ROLES)),
    "lines": _Key(_Ids(), []),  # declared lines: a cross-check
}
_TOP_LEVEL: Final = (*_SECTIONS, "devices", "lines", "purposes", "clients")


# --- phase 1: clean each table against its schema ---


class _Problems:
    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.found.append(f"{key}: {message}")

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(list(self.found))


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check_unknown(
    where: str, table: Mapping[str, object], known: Iterable[str], what: str, problems: _Problems
) -> None:
    names = list(known)
    for name in table:
        if name not in names:
            problems.add(_join(where, _clip(name)), f"unknown {what}{_suggest(name, names)}")


def _parse_table(where: str, raw: object, schema: _Schema, problems: _Problems) -> dict[str, Any]:
    """The keys of ``raw`` that passed ``schema``, defaults filled in; failures are reported."""
    if not isinstance(raw, dict):
        problems.add(where, f"expected a table, {_got(raw)}")
        return {}
    _check_unknown(where, raw, schema, "key", problems)
    values: dict[str, Any] = {}
    for name, key in schema.items():
        if name not in raw and key.default is _REQUIRED:
            problems.add(f"{where}.{name}", "required, but missing")
        elif name not in raw and key.default is None:
            values[name] = None
        else:
            try:
                values[name] = key.value.parse(raw.get(name, key.default))
            except ValueError as error:
                problems.add(f"{where}.{name}", str(error))
    return values


def _parse_array(
    where: str, raw: object, schema: _Schema, problems: _Problems
) -> list[dict[str, Any]]:
    """One dict per entry of ``[[where]]``, index for index (a broken entry gives {})."""
    if not isinstance(raw, list):
        problems.add(where, f"expected an array of tables ([[{where}]]), {_got(raw)}")
        return []
    if not raw:
        problems.add(where, f"at least one [[{where}]] entry is required")
    return [
        _parse_table(f"{where}[{index}]", item, schema, problems) for index, item in enumerate(raw)
    ]


def _check_unique(
    where: str, entries: list[dict[str, Any]], what: str, problems: _Problems
) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = entry.get("name")
        if name in seen:
            problems.add(f"{where}[{index}].name", f"duplicate {what} name {name!r}")
        if name is not None:
            seen.add(name)


def _parse_devices(
    data: Mapping[str, Any], audio: dict[str, Any], problems: _Problems
) -> list[dict[str, Any]]:
    if "devices" not in data:
        implicit = {key: audio[key] for key in ("device", "channels") if key in audio}
        return [{"name": DEFAULT_DEVICE_NAME} | implicit]
    raw_audio = data.get("audio")
    for key in ("device", "channels"):
        if isinstance(raw_audio, dict) and key in raw_audio:
            problems.add(f"audio.{key}", "not allowed with [[devices]]; describe each device there")
    entries = _parse_array("devices", data["devices"], _DEVICE, problems)
    _check_unique("devices", entries, "device", problems)
    return entries


def _parse_purposes(raw: object, problems: _Problems) -> list[dict[str, Any]]:
    if not isinstance(raw, dict):
        problems.add("purposes", f"expected a table, {_got(raw)}")
        return []
    entries = []
    for name, table in raw.items():
        try:
            _Id().parse(name)
        except ValueError as error:
            problems.add("purposes", f"a purpose name {error}")
            continue
        entries.append({"name": name} | _parse_table(f"purposes.{name}", table, _PURPOSE, problems))
    return entries


# --- phase 2: cross-checks, on the values that passed phase 1 only ---


def _check_audio(audio: dict[str, Any], base: Path, problems: _Problems) -> None:
    blocksize, samplerate = audio.get("blocksize"), audio.get("samplerate")
    if blocksize is not None and samplerate is not None and blocksize > samplerate:
        problems.add(
            "audio.blocksize", f"must be at most audio.samplerate ({samplerate}), got {blocksize}"
        )
    if audio.get("source") != "file" or "file" not in audio:
        return
    if not audio["file"]:
        problems.add("audio.file", "required when audio.source is 'file'")
    elif not _resolve(base, audio["file"]).is_file():
        problems.add("audio.file", f"no such file: {_resolve(base, audio['file'])}")


def _channel_counts(devices: list[dict[str, Any]]) -> dict[str, int | None]:
    """Declared device name -> its channel count (None when that count itself is broken)."""
    return {entry["name"]: entry.get("channels") for entry in devices if "name" in entry}


def _unknown_device(name: str, counts: Mapping[str, int | None]) -> str:
    if list(counts) == [DEFAULT_DEVICE_NAME]:
        return f"unknown device {name!r}; without [[devices]] the only device is 'default'"
    return f"{name!r} is not declared under [[devices]]{_suggest(name, counts)}"


def _check_line_device(
    where: str, line: dict[str, Any], counts: Mapping[str, int | None], problems: _Problems
) -> None:
    """Fill in an omitted ``device`` when there is only one, and check the channels against it."""
    if "device" not in line or not counts:
        return
    if line["device"] is None and len(counts) > 1:
        problems.add(f"{where}.device", "required when more than one device is declared")
        return
    if line["device"] is None:
        line["device"] = next(iter(counts))
    if line["device"] not in counts:
        problems.add(f"{where}.device", _unknown_device(line["device"], counts))
        return
    count = counts[line["device"]]
    beyond = [channel for channel in line.get("channels", ()) if count and channel > count]
    if beyond:
        plural = "channel" if count == 1 else "channels"
        problems.add(
            f"{where}.channels",
            f"channel {beyond[0]} is beyond the {count} {plural} of device {line['device']!r}",
        )


def _parse_lines(
    raw: object, counts: Mapping[str, int | None], problems: _Problems
) -> list[dict[str, Any]]:
    entries = _parse_array("lines", raw, _LINE, problems)
    _check_unique("lines", entries, "line", problems)
    for index, entry in enumerate(entries):
        _check_line_device(f"lines[{index}]", entry, counts, problems)
    return entries


def _check_retention_rule(where: str, purpose: dict[str, Any], problems: _Problems) -> None:
    """Exactly one of retention_days and until_resolved = true; a cap not below retention_days."""
    if "retention_days" not in purpose or "until_resolved" not in purpose:
        return
    days, until_resolved = purpose["retention_days"], purpose["until_resolved"]
    if days is not None and until_resolved:
        problems.add(where, "has both retention_days and until_resolved = true; give exactly one")
    elif days is None and not until_resolved:
        problems.add(where, "needs retention_days or until_resolved = true (exactly one of them)")
    cap = purpose.get("max_retention_days")
    if days is not None and cap is not None and cap < days:
        problems.add(
            f"{where}.max_retention_days",
            f"must be at least retention_days ({days:g}), got {cap:g}",
        )


def _check_declared(
    key: str, name: str | None, declared: Collection[str], problems: _Problems
) -> None:
    if name is not None and name not in declared:
        problems.add(key, f"{name!r} is not declared under [purposes]{_suggest(name, declared)}")


def _check_purpose_refs(
    sections: Mapping[str, dict[str, Any]], declared: Collection[str], problems: _Problems
) -> None:
    sampling = sections["sampling"]
    if sampling.get("one_in", 0) > 0:
        _check_declared("sampling.purpose", sampling.get("purpose"), declared, problems)
    _check_declared("marking.purpose", sections["marking"].get("purpose"), declared, problems)


def _check_announced(
    lines: list[dict[str, Any]], declared: Collection[str], problems: _Problems
) -> None:
    """Each line's ``announced`` names declared purposes; when not given, it is all of them."""
    for index, line in enumerate(lines):
        if "announced" not in line:
            continue
        if line["announced"] is None:
            line["announced"] = tuple(declared)
        for name in line["announced"]:
            _check_declared(f"lines[{index}].announced", name, declared, problems)


def _check_encryption(
    storage: dict[str, Any], purposes: list[dict[str, Any]], problems: _Problems
) -> None:
    """With ``require_encryption``, every purpose has a recipient, global or its own."""
    if not storage.get("require_encryption") or "recipients" not in storage:
        return
    bare = [p["name"] for p in purposes if not storage["recipients"] and not p.get("recipients")]
    if bare:
        names = ", ".join(repr(name) for name in bare)
        problems.add(
            "storage.require_encryption",
            f"no age recipient for purpose {names}: list one in storage.recipients "
            f"or purposes.{bare[0]}.recipients",
        )


def _check_s3(storage: dict[str, Any], problems: _Problems) -> None:
    """With ``backend = "s3"``: the endpoint, bucket and prefix are required; an early erasure
    cannot bypass a COMPLIANCE lock."""
    if storage.get("backend") == "s3":
        for key, example in (
            ("s3_endpoint", "https://s3.internal:8333"),
            ("s3_bucket", "hindsight"),
            ("s3_prefix", "rec-01/"),
        ):
            if storage.get(key) == "":
                problems.add(f"storage.{key}", f"required with backend = 's3' (e.g. {example!r})")
    if storage.get("s3_erase_bypass") and storage.get("s3_lock_mode") == "COMPLIANCE":
        problems.add(
            "storage.s3_erase_bypass",
            "not possible with s3_lock_mode = 'COMPLIANCE': no one can delete a COMPLIANCE "
            "version before its retention ends; use GOVERNANCE, or leave this false",
        )


def _parse_clients(
    raw: object, lines: list[dict[str, Any]], problems: _Problems
) -> list[dict[str, Any]]:
    """``[[clients]]``: names and keys unique, an agent's lines declared under [[lines]]."""
    entries = _parse_array("clients", raw, _CLIENT, problems)
    _check_unique("clients", entries, "client", problems)
    declared = [line["name"] for line in lines if "name" in line]
    keys: dict[str, str] = {}
    for index, entry in enumerate(entries):
        key, name = entry.get("public_key"), entry.get("name", f"clients[{index}]")
        if key is not None and key in keys:
            problems.add(f"clients[{index}].public_key", f"the same key as client {keys[key]!r}")
        elif key is not None:
            keys[key] = name
        for line in entry.get("lines", ()):
            if line not in declared:
                problems.add(
                    f"clients[{index}].lines",
                    f"{line!r} is not declared under [[lines]]{_suggest(line, declared)}",
                )
    return entries


def _check_listen(daemon: dict[str, Any], clients: list[Any], problems: _Problems) -> None:
    """``listen`` needs its key pair; an unauthenticated ``control`` stays on loopback until a
    client key is configured."""
    if daemon.get("listen") is not None and daemon.get("curve_secret_key_file", "") is None:
        problems.add(
            "daemon.curve_secret_key_file",
            "required with daemon.listen: the key pair 'hindsight keygen --curve -o NAME' "
            "writes (NAME.key_secret)",
        )
    control = daemon.get("control") or ""
    if control.startswith("tcp://") and not is_loopback(control) and not clients:
        problems.add(
            "daemon.control",
            f"{_clip(repr(control))} is not loopback, and this socket has no authentication: "
            "anyone who can reach it could keep or end every call; bind it to 127.0.0.1 and "
            "give remote clients daemon.listen (CURVE) and [[clients]] keys",
        )


# --- phase 3: build, only from a problem-free parse ---


def _resolve(base: Path, path: str) -> Path:
    """``path`` made absolute against ``base``; ``..`` folded lexically, symlinks left alone."""
    return Path(os.path.normpath(base / path))


def _resolve_endpoint(endpoint: str, base: Path) -> str:
    """A relative ``ipc://`` path is relative to ``base`` (abstract ``@`` names are refused)."""
    scheme, _, address = endpoint.partition("://")
    if scheme != "ipc":
        return endpoint
    return f"ipc://{_resolve(base, address)}"


def _build_audio(audio: dict[str, Any], devices: list[dict[str, Any]], base: Path) -> AudioConfig:
    return AudioConfig(
        source=audio["source"],
        file=_resolve(base, audio["file"]) if audio["file"] else None,
        samplerate=audio["samplerate"],
        blocksize=audio["blocksize"],
        devices=tuple(DeviceConfig(**entry) for entry in devices),
    )


def _build_metrics(metrics: dict[str, Any], base: Path) -> MetricsConfig:
    textfile = _resolve(base, metrics["textfile"]) if metrics["textfile"] else None
    return MetricsConfig(textfile=textfile, interval_seconds=metrics["interval_seconds"])


def _build_storage(storage: dict[str, Any], base: Path) -> StorageConfig:
    values = dict(storage)
    for key in ("s3_endpoint", "s3_bucket"):
        values[key] = values[key] or None
    credentials = values["s3_credentials_file"]
    values["s3_credentials_file"] = _resolve(base, credentials) if credentials else None
    return StorageConfig(**values)


def _build(
    sections: Mapping[str, dict[str, Any]],
    devices: list[dict[str, Any]],
    lines: list[dict[str, Any]],
    purposes: list[dict[str, Any]],
    base: Path,
    path: Path | None,
) -> Config:
    daemon = sections["daemon"]
    return Config(
        daemon=DaemonConfig(
            state_dir=_resolve(base, daemon["state_dir"]),
            control=_resolve_endpoint(daemon["control"], base),
            listen=daemon["listen"],
            curve_secret_key_file=(
                _resolve(base, daemon["curve_secret_key_file"])
                if daemon["curve_secret_key_file"]
                else None
            ),
        ),
        audio=_build_audio(sections["audio"], devices, base),
        buffer=BufferConfig(**sections["buffer"]),
        sampling=SamplingConfig(**sections["sampling"]),
        marking=MarkingConfig(**sections["marking"]),
        worker=WorkerConfig(**sections["worker"]),
        retention=RetentionConfig(**sections["retention"]),
        storage=_build_storage(sections["storage"], base),
        metrics=_build_metrics(sections["metrics"], base),
        audit=AuditConfig(**sections["audit"]),
        register=RegisterConfig(**sections["register"]),
        lines=tuple(LineConfig(**entry) for entry in lines),
        purposes=tuple(PurposeConfig(**entry) for entry in purposes),
        path=path,
    )


# --- public entry points ---


def parse_config(data: dict[str, Any], base_dir: Path, path: Path | None = None) -> Config:
    """Validate parsed TOML ``data``; ConfigError with every problem, or a whole Config."""
    base = base_dir.absolute()
    problems = _Problems()
    _check_unknown("", data, _TOP_LEVEL, "section", problems)
    sections = {
        name: _parse_table(name, data.get(name, {}), schema, problems)
        for name, schema in _SECTIONS.items()
    }
    _check_audio(sections["audio"], base, problems)
    devices = _parse_devices(data, sections["audio"], problems)
    lines = _parse_lines(data.get("lines", []), _channel_counts(devices), problems)
    purposes = _parse_purposes(data.get("purposes", _DEFAULT_PURPOSES), problems)
    for entry in purposes:
        _check_retention_rule(f"purposes.{entry['name']}", entry, problems)
    declared = [entry["name"] for entry in purposes]
    _check_purpose_refs(sections, declared, problems)
    _check_announced(lines, declared, problems)
    _check_encryption(sections["storage"], purposes, problems)
    _check_s3(sections["storage"], problems)
    clients = _parse_clients(data["clients"], lines, problems) if "clients" in data else []
    _check_listen(sections["daemon"], clients, problems)
    problems.raise_if_any()
    config = _build(sections, devices, lines, purposes, base, path)
    return replace(config, clients=tuple(ClientConfig(**entry) for entry in clients))


def _read_toml(path: Path) -> dict[str, Any]:
    return _parse_toml(path, _read_bytes(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from error


def _parse_toml(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: invalid TOML: not UTF-8 ({error.reason})"]) from error
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: invalid TOML: {error}"]) from error


def load_config(path: Path) -> Config:
    """Read and validate the config file at ``path``; relative paths are relative to its folder."""
    raw = _read_bytes(path)  # read once: the SHA-256 is of exactly what was parsed
    config = parse_config(_parse_toml(path, raw), path.absolute().parent, path)
    return replace(config, sha256=hashlib.sha256(raw).hexdigest())


def resolve_config_path(arg: str | None) -> Path:
    """``--config`` when given, else ``$HINDSIGHT_CONFIG`` when set, else the default path."""
    if arg:
        return Path(arg)
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def read_control_endpoint(path: Path) -> str:
    """``daemon.control`` of the file at ``path``, resolved as the daemon does.

    Lenient, for the client: nothing else in the file is checked.
    """
    daemon = _read_toml(path).get("daemon")
    given = {k: v for k, v in daemon.items() if k == "control"} if isinstance(daemon, dict) else {}
    problems = _Problems()
    values = _parse_table("daemon", given, {"control": _DAEMON["control"]}, problems)
    problems.raise_if_any()
    return _resolve_endpoint(values["control"], path.absolute().parent)
