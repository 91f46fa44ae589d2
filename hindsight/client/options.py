"""Options shared by the commands that talk to the daemon, how they find it, and who asks."""

from __future__ import annotations

import argparse
import getpass
import os
import tomllib
from pathlib import Path
from typing import Any

from hindsight.client.curve import client_keys
from hindsight.client.transport import Endpoint
from hindsight.config import SCHEMES, read_control_endpoint, resolve_config_path
from hindsight.errors import ClientError, ConfigError
from hindsight.protocol import EXIT_USAGE as EXIT_USAGE
from hindsight.protocol import MAX_EXTEND_DAYS

DEFAULT_STATE_DIR = "/var/lib/hindsight"  # the daemon's default daemon.state_dir
DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 3600.0


def timeout_seconds(text: str) -> float:
    """A finite number of seconds, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIMEOUT:g} s")
    return value


def days(text: str) -> float:
    """A finite number of days, more than 0 and at most the protocol's limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 < value <= MAX_EXTEND_DAYS:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_EXTEND_DAYS} days")
    return value


def signature_options(parser: argparse.ArgumentParser) -> None:
    """--actor and --reason: who asks for a change to a recording and why, for the commit log."""
    parser.add_argument("--actor", help="who asks (default: the login name)")
    parser.add_argument("--reason", required=True, help="why, e.g. a ticket or case number")


def actor_of(args: argparse.Namespace) -> str:
    return str(args.actor) if args.actor is not None else login_name()


def login_name() -> str:
    """The user running the client; the uid as text where the system knows no name for it."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # KeyError from pwd before Python 3.13, OSError since
        return str(os.getuid())


def connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--config/--endpoint/--timeout/--server-key/--client-key, accepted before and after the
    command name."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", default=default(None), help="daemon config to find its socket")
    group.add_argument("--endpoint", default=default(None), help="control endpoint, e.g. ipc://…")
    parser.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=default(DEFAULT_TIMEOUT),
        help="seconds to wait for the daemon (default 2)",
    )
    parser.add_argument(
        "--server-key",
        default=default(None),
        metavar="KEY",
        help="the daemon's CURVE public key (Z85), for a tcp:// daemon.listen endpoint",
    )
    parser.add_argument(
        "--client-key",
        default=default(None),
        metavar="FILE",
        help="this client's CURVE key pair (NAME.key_secret from keygen --curve)",
    )


def endpoint_of(args: argparse.Namespace) -> Endpoint:
    """The endpoint to ask, with the CURVE keys of ``--server-key`` and ``--client-key``."""
    if args.endpoint:
        if not str(args.endpoint).startswith(SCHEMES):
            raise ClientError(
                f"--endpoint must start with ipc:// or tcp://: {args.endpoint}", EXIT_USAGE
            )
        address = str(args.endpoint)
    else:
        path = resolve_config_path(args.config)
        try:
            address = read_control_endpoint(path)
        except ConfigError as exc:
            raise ClientError(f"cannot find the daemon's endpoint: {exc}", EXIT_USAGE) from exc
    server, key_file = getattr(args, "server_key", None), getattr(args, "client_key", None)
    if server is None and key_file is None:
        return Endpoint(address)
    if server is None or key_file is None:
        raise ClientError("--server-key and --client-key go together", EXIT_USAGE)
    if not address.startswith("tcp://"):
        raise ClientError(
            f"--server-key and --client-key are for a tcp:// daemon.listen endpoint, not {address}",
            EXIT_USAGE,
        )
    return Endpoint(address, client_keys(str(server), str(key_file)))


def state_dir_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", help="the daemon's state_dir (default: daemon.state_dir of the config)"
    )


def _config_data(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    path = resolve_config_path(args.config)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not valid TOML"
        raise ClientError(
            f"cannot read the state folder from {path} ({why or exc}); give --state-dir",
            EXIT_USAGE,
        ) from None
    return path, data


def s3_endpoint_of(args: argparse.Namespace) -> str | None:
    """``storage.s3_endpoint`` of the config, for reading a recording kept in a bucket;
    None (boto3's default, AWS) when the config has none or cannot be read."""
    try:
        _, data = _config_data(args)
    except ClientError:
        return None
    storage = data.get("storage", {})
    value = storage.get("s3_endpoint") if isinstance(storage, dict) else None
    return value if isinstance(value, str) and value else None


def state_dir_of(args: argparse.Namespace) -> Path:
    """``--state-dir``, else ``daemon.state_dir`` of the config (``--config``,
    ``$HINDSIGHT_CONFIG`` or the default path), resolved as the daemon does. Lenient, as for
    the endpoint: nothing else in the file is checked."""
    if args.state_dir:
        return Path(args.state_dir)
    path, data = _config_data(args)
    daemon = data.get("daemon", {})
    value = daemon.get("state_dir", DEFAULT_STATE_DIR) if isinstance(daemon, dict) else None
    if not isinstance(value, str) or not value:
        raise ClientError(f"{path}: daemon.state_dir is not a folder name", EXIT_USAGE)
    return Path(os.path.normpath(path.absolute().parent / value))
