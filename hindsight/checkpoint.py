"""Signed checkpoints of the commit log's head, for witnesses on other hosts. No I/O.

The daemon signs ``{"seq", "hash", "time", "public_key"}`` (the last line's ``seq`` and
``hash``, when it signed, and its own Ed25519 public key, hex) in the log's canonical form
(compact JSON, keys sorted, UTF-8) with the key it keeps in ``state_dir/checkpoint.key``.
A witness that stores checkpoints elsewhere can later prove that the log held a given line
with a given hash at a given time: a log cut short, or rewritten before that line, no longer
matches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hindsight.commitlog import canonical

KEY_NAME = "checkpoint.key"
KEY_BYTES = 32  # an Ed25519 private key, raw


@dataclass(frozen=True)
class SignedCheckpoint:
    seq: int
    hash: str
    time: str
    public_key: str  # Ed25519, raw, hex
    signature: str  # Ed25519 over ``signed_bytes``, hex

    def signed_bytes(self) -> bytes:
        fields = asdict(self)
        del fields["signature"]
        return canonical(fields)

    def problem(self) -> str | None:
        """Why this checkpoint cannot be trusted as it stands, or None: malformed fields, or a
        signature that is not ``public_key``'s over the other fields."""
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            return f"its seq {self.seq!r} is not a line number"
        if not _hex(self.hash, 32):
            return "its hash is not a SHA-256 in hex"
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))
            key.verify(bytes.fromhex(self.signature), self.signed_bytes())
        except (ValueError, InvalidSignature):
            return "its signature is not valid"
        return None


def public_key(private: bytes) -> str:
    """The public half of ``private``, raw, hex: what ``daemon_started`` logs."""
    key = Ed25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def sign(private: bytes, seq: int, head: str, time: str) -> SignedCheckpoint:
    """The checkpoint of line ``seq`` (whose hash is ``head``) at ``time``, signed."""
    key = Ed25519PrivateKey.from_private_bytes(private)
    public = public_key(private)
    unsigned = SignedCheckpoint(seq, head, time, public, "")
    return SignedCheckpoint(seq, head, time, public, key.sign(unsigned.signed_bytes()).hex())


def _hex(text: object, size: int) -> bool:
    if not isinstance(text, str) or len(text) != 2 * size:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return text == text.lower()
