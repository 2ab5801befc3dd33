"""ADB protocol v1 framing and the Android RSA public-key format, as adbd implements them.

A message is a 24-byte little-endian header (command, arg0, arg1, data length, data checksum,
magic = command ^ 0xffffffff) followed by the data. The checksum is the byte sum of the data;
peers at version 0x01000001 may send 0 and skip it, so a zero checksum is accepted from them.
"""

from __future__ import annotations

import base64
import socket
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

A_SYNC, A_CNXN, A_OPEN, A_OKAY = b"SYNC", b"CNXN", b"OPEN", b"OKAY"
A_CLSE, A_WRTE, A_AUTH, A_STLS = b"CLSE", b"WRTE", b"AUTH", b"STLS"
VERSION = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
TOKEN_SIZE = 20
_HEADER = struct.Struct("<6I")
_PUBKEY = struct.Struct("<II256s256sI")


class ProtocolError(Exception):
    """The peer broke the framing (bad magic, bad checksum, unknown command)."""


@dataclass(frozen=True)
class Message:
    command: bytes
    arg0: int
    arg1: int
    data: bytes = b""

    def pack(self, with_checksum: bool = True) -> bytes:
        cmd = struct.unpack("<I", self.command)[0]
        checksum = sum(self.data) & 0xFFFFFFFF if with_checksum else 0
        return _HEADER.pack(cmd, self.arg0, self.arg1, len(self.data), checksum,
                            cmd ^ 0xFFFFFFFF) + self.data


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks += chunk
    return bytes(chunks)


def read_message(sock: socket.socket, max_data: int = 1 << 20) -> Message:
    cmd, arg0, arg1, length, checksum, magic = _HEADER.unpack(recv_exact(sock, _HEADER.size))
    if magic != cmd ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic {magic:#x} for command {cmd:#x}")
    command = struct.pack("<I", cmd)
    if command not in (A_SYNC, A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_AUTH, A_STLS):
        raise ProtocolError(f"unknown command {command!r}")
    if length > max_data:
        raise ProtocolError(f"{command.decode()} carries {length} bytes, more than {max_data}")
    data = recv_exact(sock, length) if length else b""
    if checksum and sum(data) & 0xFFFFFFFF != checksum:
        raise ProtocolError(f"bad checksum on {command.decode()}")
    return Message(command, arg0, arg1, data)


def decode_android_pubkey(blob: bytes) -> rsa.RSAPublicKey:
    """`base64(struct RSAPublicKey) user@host` (what adb sends and keeps in adbkey.pub) -> key."""
    text = blob.split(b"\0", 1)[0].strip().split(b" ", 1)[0]
    words, _n0inv, modulus, _rr, exponent = _PUBKEY.unpack(base64.b64decode(text))
    if words != 64:
        raise ValueError(f"RSA public key of {words * 32} bits; adb keys are 2048 bits")
    return rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "little")).public_key()


def verify_token_signature(key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """adbd checks RSA_verify(NID_sha1, token, ...): PKCS#1 v1.5 over the token as a SHA-1 digest."""
    try:
        key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
    except Exception:  # noqa: BLE001 - any failure means "not this key"
        return False
    return True
