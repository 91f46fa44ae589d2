"""Opening recordings: ``hindsight keygen``, ``export`` and ``play``.

Rules:

- The daemon holds public keys only. A reviewer makes an age X25519 identity with
  ``keygen`` (a file of mode 0600, in ``age-keygen``'s format, so that ``age -d -i FILE``
  takes it) and gives its recipient to the administrator, who lists it in the config.
- Nothing is opened before the daemon has logged who opens it and why: ``export`` and
  ``play`` send ``access`` and read the recording only after its ok reply, which names the
  file (relative to the state folder) and the sha256 the log holds for it. What can be
  checked without the daemon (the identity, the output) is checked first, so that a
  mistake there logs no access.
- The stored bytes are hashed as they are read, and must match the logged sha256: a
  recording that was altered or replaced, even by someone holding the recipients' public
  keys, is refused, and nothing of it is left behind.
- Plaintext goes to a temp file beside the output, created 0600, fsynced, then renamed to
  the output once decrypted whole and checked; or, with ``-o -``, to stdout only after the
  check (the stored file is read into memory first); or, for ``play``, stays in memory.
- No secret and no note is ever printed, not even from an identity file that is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pyrage

from hindsight.client.options import (
    EXIT_USAGE,
    actor_of,
    endpoint_of,
    s3_endpoint_of,
    state_dir_of,
)
from hindsight.client.transport import EXIT_REFUSED, send
from hindsight.durable import HASH_BLOCK, fsync_dir, write_all
from hindsight.errors import ClientError, StoreError
from hindsight.layout import inside
from hindsight.objectstore import SCHEME, bucket_and_key
from hindsight.protocol import Access

ENCRYPTED = ".age"
Opener = Callable[[], IO[bytes]]
SECRET_PREFIX = "AGE-SECRET-KEY-"
PROGRESS_AFTER = 10.0  # seconds of audio: shorter calls play without progress lines
PROGRESS_EVERY = 5.0  # seconds of audio between progress lines (a terminal gets every block)
Identity = Any  # pyrage.x25519.Identity, which has no type information


# ---------------------------------------------------------------------------------------------
# keygen


def keygen(out: str) -> str:
    """Write a new identity to ``out`` (never replacing a file); return its recipient."""
    if out == "-":
        raise ClientError("keygen writes a secret key: give a file (-o FILE), not -", EXIT_USAGE)
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now().astimezone().replace(microsecond=0).isoformat()
    text = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # 0600 from the first moment: the umask can only take bits away.
        fd = os.open(out, flags, 0o600)
    except FileExistsError:
        raise ClientError(
            f"{out} exists: not overwriting it (an identity may be the only key to recordings)",
            EXIT_USAGE,
        ) from None
    except OSError as exc:
        raise ClientError(f"cannot create {out}: {exc.strerror or exc}", EXIT_USAGE) from None
    try:
        try:
            os.fchmod(fd, 0o600)  # a umask such as 0277 would leave the owner unable to read it
            write_all(fd, text.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(Path(os.path.abspath(out)).parent)
    except OSError as exc:
        Path(out).unlink(missing_ok=True)
        raise ClientError(f"cannot write {out}: {exc.strerror or exc}", EXIT_REFUSED) from None
    except BaseException:
        Path(out).unlink(missing_ok=True)
        raise
    return recipient


def load_identities(path: Path) -> list[Identity]:
    """The age X25519 identities in ``path`` (``#`` comments and blank lines skipped);
    a missing, unreadable or wrong file is a usage error that never quotes the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ClientError(f"identity file {path} does not exist", EXIT_USAGE) from None
    except OSError as exc:
        raise ClientError(
            f"cannot read identity file {path}: {exc.strerror or exc}", EXIT_USAGE
        ) from None
    except UnicodeDecodeError:
        raise ClientError(f"identity file {path} is not text", EXIT_USAGE) from None
    identities = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            hint = (
                ": that is a public recipient, give the identity file keygen wrote"
                if line.startswith("age1")
                else ""
            )
            raise ClientError(
                f"identity file {path} line {number}: not an age X25519 identity "
                f"({SECRET_PREFIX}1...){hint}",
                EXIT_USAGE,
            ) from None
    if not identities:
        raise ClientError(f"identity file {path} holds no age identity", EXIT_USAGE)
    return identities


# ---------------------------------------------------------------------------------------------
# access: the daemon logs it, then says where the recording is


class Located:
    """A recording the daemon has logged an access to: where it is (a file under the state
    folder, or an object version in a bucket), how to read it, and its logged sha256."""

    def __init__(
        self, call_id: str, file: Path | str, sha256: str, opener: Opener | None = None
    ) -> None:
        self.call_id = call_id
        self.file = file
        self.sha256 = sha256
        self.opener = opener  # None: a file; else what opens the object's bytes

    @property
    def encrypted(self) -> bool:
        return str(self.file).endswith(ENCRYPTED)

    def altered(self) -> ClientError:
        return ClientError(
            f"recording of {self.call_id} does not match the sha256 its commit logged: "
            f"altered or replaced ({self.file}); not opened",
            EXIT_REFUSED,
        )

    def undecryptable(self, identity: Path, exc: Exception) -> ClientError:
        return ClientError(
            f"cannot decrypt the recording of {self.call_id} with the identity in {identity}: "
            f"it is not one of the recording's recipients ({exc})",
            EXIT_REFUSED,
        )


def locate(args: argparse.Namespace, state_dir: Path) -> Located:
    """Send ``access``: the daemon logs who opens CALL and why, then says where it is."""
    asked = Access(call_id=args.call, actor=actor_of(args), reason=args.reason)
    reply = send(endpoint_of(args), asked, args.timeout)
    if reply.path.startswith(SCHEME):
        return _in_bucket(args, reply.path, reply.sha256.lower(), reply.version_id)
    file = inside(state_dir, reply.path)
    if file is None:
        raise ClientError(
            f"the daemon named a path outside recordings/: {reply.path!r}", EXIT_REFUSED
        )
    return Located(args.call, file, reply.sha256.lower())


class _Hashing(io.RawIOBase):
    """A readable stream over ``source`` that hashes every byte read through it."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self.source = source
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        self.digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> str:
        """Hash what the reader left unread; the hex digest of the whole file."""
        while self.read(HASH_BLOCK):
            pass
        return self.digest.hexdigest()


def _in_bucket(args: argparse.Namespace, url: str, sha256: str, version_id: str | None) -> Located:
    """A recording kept in an object store (``storage.backend = "s3"``): read with the
    reader's own credentials (``--s3-credentials-file``, else the AWS environment
    variables) from ``--s3-endpoint``, else the config's ``storage.s3_endpoint``."""
    from hindsight.objectstore import ObjectStore, read_credentials

    bucket, key = bucket_and_key(url)
    if not bucket or not key or not version_id:
        raise ClientError(f"the daemon named an object it cannot be read by: {url!r}", EXIT_REFUSED)
    endpoint = args.s3_endpoint or s3_endpoint_of(args)
    path = args.s3_credentials_file
    try:
        credentials = None if path is None else read_credentials(Path(path))
        store = ObjectStore(endpoint, bucket, "", credentials=credentials)
    except StoreError as exc:
        raise ClientError(f"cannot reach the recording's bucket: {exc}", EXIT_REFUSED) from None

    def opener() -> IO[bytes]:
        return io.BufferedReader(store.get_stream(key, version_id), HASH_BLOCK)

    return Located(args.call, url, sha256, opener)


def _open(found: Located) -> IO[bytes]:
    try:
        if found.opener is not None:
            return found.opener()
        return Path(found.file).open("rb")
    except StoreError as exc:
        raise ClientError(
            f"cannot read the recording of {found.call_id} from the bucket: {exc}", EXIT_REFUSED
        ) from None
    except OSError as exc:
        raise ClientError(
            f"cannot open the recording of {found.call_id} ({found.file}): {exc.strerror or exc}",
            EXIT_REFUSED,
        ) from None


def read_checked(found: Located) -> bytes:
    """The stored file, read once into memory and checked against the logged sha256."""
    with _open(found) as source:
        data = source.read()
    if hashlib.sha256(data).hexdigest() != found.sha256:
        raise found.altered()
    return data


def decrypt_to(found: Located, identities: list[Identity], identity: Path, out: IO[bytes]) -> None:
    """Stream the recording into ``out``, decrypted, hashing the stored bytes as they are read;
    raise ``altered`` or ``undecryptable`` (``out`` then holds a part, which the caller drops).
    """
    with _open(found) as source:
        reader = _Hashing(source)
        failure: Exception | None = None
        try:
            if found.encrypted:
                pyrage.decrypt_io(reader, out, identities)
            else:
                while block := reader.read(HASH_BLOCK):
                    out.write(block)
        except (pyrage.DecryptError, OSError) as exc:  # age reports a bad chunk as an OSError
            failure = exc
        digest = reader.drain()
    if digest != found.sha256:
        raise found.altered()  # an altered file fails to decrypt too: say what matters
    if isinstance(failure, pyrage.DecryptError):
        raise found.undecryptable(identity, failure)
    if failure is not None:
        raise failure  # the stored file is intact: writing the output failed


def decrypt_in_memory(found: Located, identities: list[Identity], identity: Path) -> bytes:
    """The recording's FLAC, checked then decrypted, in memory."""
    data = read_checked(found)
    if not found.encrypted:
        return data
    try:
        flac: bytes = pyrage.decrypt(data, identities)
    except pyrage.DecryptError as exc:
        raise found.undecryptable(identity, exc) from None
    return flac


# ---------------------------------------------------------------------------------------------
# export


def export(args: argparse.Namespace) -> int:
    to_stdout = args.output == "-"
    if to_stdout and sys.stdout.isatty():
        raise ClientError(
            "not writing a recording to a terminal: pipe -o - into a player, or give a file",
            EXIT_USAGE,
        )
    identity = Path(args.identity)
    identities = load_identities(identity)
    state_dir = state_dir_of(args)
    if to_stdout:
        found = locate(args, state_dir)
        data = read_checked(found)
        stdout = sys.stdout.buffer
        if found.encrypted:
            try:
                pyrage.decrypt_io(io.BytesIO(data), stdout, identities)
            except pyrage.DecryptError as exc:
                raise found.undecryptable(identity, exc) from None
        else:
            stdout.write(data)
        stdout.flush()
        return 0
    output = Path(args.output)
    if output.is_dir():
        raise ClientError(f"{output} is a folder: give the file to write", EXIT_USAGE)
    temp = _temp_beside(output)
    try:
        found = locate(args, state_dir)
        with temp.open("wb") as out:
            decrypt_to(found, identities, identity, out)
            out.flush()
            os.fsync(out.fileno())
        os.rename(temp, output)
        fsync_dir(output.absolute().parent)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ClientError(
            f"cannot export to {output}: {exc.strerror or exc}", EXIT_REFUSED
        ) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return 0


def _temp_beside(output: Path) -> Path:
    """A new, empty file of mode 0600 in ``output``'s folder (mkstemp's mode, whatever the
    umask): plaintext is never readable by others, not even half-written."""
    folder = output.absolute().parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ClientError(f"cannot write to {folder}: {exc.strerror or exc}", EXIT_USAGE) from None
    os.close(fd)
    return Path(name)


# ---------------------------------------------------------------------------------------------
# play


def play(args: argparse.Namespace) -> int:
    identity = Path(args.identity)
    identities = load_identities(identity)
    state_dir = state_dir_of(args)
    import sounddevice as sd  # here: importing it starts PortAudio
    import soundfile as sf

    device = _device(args.device)
    try:
        sd.query_devices(device, "output")
    except (ValueError, sd.PortAudioError) as exc:
        wanted = "default output device" if device is None else f"output device {args.device!r}"
        raise ClientError(f"no {wanted}: {exc}", EXIT_USAGE) from None
    found = locate(args, state_dir)
    flac = decrypt_in_memory(found, identities, identity)
    try:
        audio, rate = sf.read(io.BytesIO(flac), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ClientError(
            f"the recording of {found.call_id} is not FLAC: {exc}", EXIT_REFUSED
        ) from None
    del flac
    try:
        stream = sd.OutputStream(
            samplerate=rate, channels=audio.shape[1], dtype="int16", device=device
        )
    except (ValueError, sd.PortAudioError) as exc:
        raise ClientError(
            f"cannot play on {args.device or 'the default output'}: {exc}", EXIT_REFUSED
        ) from None
    progress = Progress(found.call_id, len(audio) / rate)
    block = max(1, rate // 10)
    at = 0
    with stream:
        try:
            for at in range(0, len(audio), block):
                stream.write(audio[at : at + block])
                progress.show((at + block) / rate)
        except KeyboardInterrupt:
            stream.abort()
            progress.stopped(at / rate)
            return 130
        except sd.PortAudioError as exc:
            raise ClientError(f"playing stopped: {exc}", EXIT_REFUSED) from None
        finally:
            audio.fill(0)
    progress.done()
    return 0


def _device(text: str | None) -> int | str | None:
    """``--device``: an index, a (part of a) name, or None for the default output."""
    if text is None or text == "":
        return None
    return int(text) if text.isdigit() else text


class Progress:
    """Where playback is, on stderr, for calls longer than ``PROGRESS_AFTER``: a line that
    updates in place on a terminal, else a line every ``PROGRESS_EVERY`` seconds."""

    def __init__(self, call_id: str, total: float, err: IO[str] | None = None) -> None:
        self.call_id = call_id
        self.total = total
        self.err = err or sys.stderr
        self.live = self.err.isatty()
        self.shown = 0.0
        self.on = total > PROGRESS_AFTER

    def show(self, seconds: float) -> None:
        seconds = min(seconds, self.total)
        if not self.on:
            return
        if self.live:
            self.err.write(f"\r{self._where(seconds)}")
        elif seconds - self.shown >= PROGRESS_EVERY:
            self.err.write(self._where(seconds) + "\n")
            self.shown = seconds
        else:
            return
        self.err.flush()

    def stopped(self, seconds: float) -> None:
        start = "\n" if self.on and self.live else ""
        self.err.write(f"{start}hindsight: stopped at {_clock(seconds)} of {_clock(self.total)}\n")

    def done(self) -> None:
        if self.on and self.live:
            self.err.write("\n")

    def _where(self, seconds: float) -> str:
        return f"hindsight: playing {self.call_id} {_clock(seconds)} / {_clock(self.total)}"


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
