"""CURVE keys for ``daemon.listen``: ``hindsight keygen --curve``, and the client's own keys.

Rules:

- A key pair is two ZeroMQ certificates, as pyzmq's ``zmq.auth.create_certificates`` writes
  them and ``zmq.auth.load_certificate`` reads them: ``NAME.key_secret`` (both keys; mode
  0600 from the moment it exists, whatever the umask) and ``NAME.key`` (the public key
  alone, to hand out). Neither replaces a file: an existing one is refused before anything
  is written, and a half-made pair is removed.
- ``keygen --curve`` prints the public key (Z85, 40 characters): the administrator puts a
  client's into its ``[[clients]]`` entry, and hands the daemon's to its clients
  (``--server-key``).
- No secret key is ever printed, not even from a file that is wrong.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import zmq
import zmq.auth

from hindsight.client.transport import EXIT_REFUSED, CurveKeys
from hindsight.config import z85_key_problem
from hindsight.durable import fsync_dir, write_all
from hindsight.errors import ClientError
from hindsight.protocol import EXIT_USAGE

SECRET_SUFFIX = ".key_secret"
PUBLIC_SUFFIX = ".key"

_SECRET_BANNER = """#   ****  Generated on {0} by hindsight keygen --curve  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""
_PUBLIC_BANNER = """#   ****  Generated on {0} by hindsight keygen --curve  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange.

"""


def keygen_curve(name: str) -> str:
    """Write a new key pair to ``NAME.key_secret`` and ``NAME.key``; return the public key."""
    if name in ("", "-"):
        raise ClientError(
            "keygen --curve writes a secret key: give a file name (-o NAME), not -", EXIT_USAGE
        )
    secret_file, public_file = Path(name + SECRET_SUFFIX), Path(name + PUBLIC_SUFFIX)
    for path in (secret_file, public_file):
        if os.path.lexists(path):
            raise ClientError(
                f"{path} exists: not overwriting it (a key pair may be a client's only way in)",
                EXIT_USAGE,
            )
    public, secret = zmq.curve_keypair()
    created = datetime.now().astimezone().replace(microsecond=0).isoformat()
    body = f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
    made: list[Path] = []
    try:
        _create(secret_file, 0o600, _SECRET_BANNER.format(created) + body, secret, made)
        _create(public_file, 0o644, _PUBLIC_BANNER.format(created) + body, None, made)
        fsync_dir(secret_file.absolute().parent)
    except OSError as exc:
        _remove(made)
        raise ClientError(f"cannot write {name}: {exc.strerror or exc}", EXIT_REFUSED) from None
    except BaseException:
        _remove(made)
        raise
    return public.decode("ascii")


def _create(path: Path, mode: int, text: str, secret: bytes | None, made: list[Path]) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # The mode from the first moment: the umask can only take bits away.
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise ClientError(f"{path} exists: not overwriting it", EXIT_USAGE) from None
    made.append(path)
    try:
        os.fchmod(fd, mode)  # exactly: a umask such as 0277 would leave the owner unable to read
        data = text.encode("ascii")
        if secret is not None:
            data += b'    secret-key = "' + secret + b'"\n'
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def server_key(text: str) -> bytes:
    """``--server-key``: the daemon's public key, Z85, 40 characters."""
    problem = z85_key_problem(text)
    if problem is not None:
        raise ClientError(
            f"--server-key {problem} (the public key keygen --curve printed for the daemon)",
            EXIT_USAGE,
        )
    return text.encode("ascii")


def client_keys(server: str, key_file: str) -> CurveKeys:
    """``--server-key`` and ``--client-key``: the keys to reach a ``listen`` endpoint."""
    path = Path(key_file)
    try:
        path.read_bytes()  # for the reason when it cannot be read
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ClientError(
            f"cannot read --client-key {path}: {exc.strerror or exc}", EXIT_USAGE
        ) from None
    except ValueError:
        raise ClientError(
            f"--client-key {path} is not a ZeroMQ certificate (NAME.key_secret)", EXIT_USAGE
        ) from None
    if secret is None:
        raise ClientError(
            f"--client-key {path} holds no secret key: give NAME.key_secret, not NAME.key",
            EXIT_USAGE,
        )
    broken = any(z85_key_problem(key.decode("ascii", "replace")) for key in (public, secret))
    if broken or zmq.curve_public(secret) != public:
        raise ClientError(
            f"--client-key {path} does not hold a matching CURVE key pair", EXIT_USAGE
        )
    return CurveKeys(server=server_key(server), public=public, secret=secret)
