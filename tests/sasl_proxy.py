"""A SASL-terminating Kafka proxy for tests: real SASL handshakes without a SASL broker.

Why: the test broker (Tansu) cannot create SCRAM users here, but cdiwatch's
SASL settings must be proven against a real handshake, not only by looking at
the client options. This proxy listens on a loopback port. On each
connection it forwards ``ApiVersions`` to Tansu, and it answers
``SaslHandshake`` and ``SaslAuthenticate`` itself for PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512 (RFC 5802, with the users given to it). After a successful
login it relays bytes both ways. Any other request before the login closes
the connection, as a SASL listener would. Tansu is started with
``advertised_port`` = the proxy's port, so every client connection
(bootstrap, coordinator, fetches) must log in.

It runs its own event loop in a thread; :attr:`logins` records
(mechanism, user, ok) for the tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import struct
import threading

from pipeline.kafka.local import free_port

__all__ = ["SaslProxy"]

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        if value < 0x80:
            out.append(value)
            return bytes(out)
        out.append((value & 0x7F) | 0x80)
        value >>= 7


class _Scram:
    """The server side of one SCRAM exchange (RFC 5802, no channel binding)."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = _HASHES[mechanism]
        self.users = users
        self.user = None

    def first(self, message: bytes) -> bytes:
        text = message.decode()
        gs2, self.client_first_bare = text[:text.index("n=")], text[text.index("n="):]
        assert gs2 in ("n,,", "y,,"), gs2
        attrs = dict(a.split("=", 1) for a in self.client_first_bare.split(","))
        self.user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
        self.nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
        self.salt, self.iterations = os.urandom(16), 4096
        self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
        return self.server_first.encode()

    def final(self, message: bytes) -> bytes | None:
        """The server-final message, or None when the proof is wrong."""
        text = message.decode()
        without_proof, proof = text.rsplit(",p=", 1)
        attrs = dict(a.split("=", 1) for a in without_proof.split(","))
        if attrs.get("r") != self.nonce or self.user not in self.users:
            return None
        salted = hashlib.pbkdf2_hmac(self.hash().name, self.users[self.user].encode(), self.salt, self.iterations)
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = self.hash(client_key).digest()
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, self.hash).digest()
        given = base64.b64decode(proof)
        if len(given) != len(signature) or hashlib.new(self.hash().name, bytes(
                a ^ b for a, b in zip(given, signature))).digest() != stored_key:
            return None
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        return b"v=" + base64.b64encode(hmac.new(server_key, auth_message, self.hash).digest())


class SaslProxy:
    """SASL in front of a plaintext broker on ``target_port`` (see the module doc)."""

    def __init__(self, target_port: int, users: dict[str, str], mechanisms=MECHANISMS) -> None:
        self.target_port, self.users, self.mechanisms = target_port, dict(users), tuple(mechanisms)
        self.port = free_port()
        self.logins: list[tuple[str, str, bool]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sasl-proxy", daemon=True)
        self._server = None

    def start(self) -> "SaslProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "SaslProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ one connection
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        try:
            up_reader, up_writer = upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            if await self._login(reader, writer, up_reader, up_writer):
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError, AssertionError, KeyError):
            pass
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()

    async def _login(self, reader, writer, up_reader, up_writer) -> bool:
        mechanism, scram = None, None
        while True:
            frame = await reader.readexactly(struct.unpack(">i", await reader.readexactly(4))[0])
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            if api_key == API_VERSIONS:  # the broker's own answer: the client sees its real versions
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                size = await up_reader.readexactly(4)
                writer.write(size + await up_reader.readexactly(struct.unpack(">i", size)[0]))
                continue
            (id_len,) = struct.unpack(">h", frame[8:10])
            pos = 10 + max(id_len, 0)
            if api_key == SASL_HANDSHAKE:
                (n,) = struct.unpack(">h", frame[pos:pos + 2])
                mechanism = frame[pos + 2:pos + 2 + n].decode()
                ok = mechanism in self.mechanisms
                names = b"".join(struct.pack(">h", len(m)) + m.encode() for m in self.mechanisms)
                body = struct.pack(">hi", 0 if ok else UNSUPPORTED_SASL_MECHANISM, len(self.mechanisms)) + names
                _send(writer, correlation, body, flexible=False)
                if not ok:
                    return False
                scram = _Scram(mechanism, self.users) if mechanism in _HASHES else None
                continue
            if api_key != SASL_AUTHENTICATE or mechanism is None:
                return False  # anything else before the login: a SASL listener hangs up
            flexible = version >= 2
            if flexible:
                _tags, pos = _uvarint(frame, pos)
                n, pos = _uvarint(frame, pos)
                token = frame[pos:pos + n - 1]
            else:
                (n,) = struct.unpack(">i", frame[pos:pos + 4])
                token = frame[pos + 4:pos + 4 + n]
            if scram is None:  # PLAIN: authzid NUL user NUL password
                _authzid, user, password = token.decode().split("\0")
                ok = user in self.users and hmac.compare_digest(self.users[user], password)
                reply, done = b"", True
            elif scram.user is None:
                reply, ok, done, user = scram.first(token), True, False, None
            else:
                reply = scram.final(token)
                ok, done, user = reply is not None, True, scram.user
                reply = reply or b""
            if done:
                self.logins.append((mechanism, user, ok))
            _send(writer, correlation, _auth_response(version, ok, reply), flexible)
            if done:
                return ok


def _auth_response(version: int, ok: bool, reply: bytes) -> bytes:
    error = 0 if ok else SASL_AUTHENTICATION_FAILED
    message = None if ok else b"Authentication failed: invalid credentials"
    if version >= 2:
        text = _put_uvarint(0) if message is None else _put_uvarint(len(message) + 1) + message
        return (struct.pack(">h", error) + text + _put_uvarint(len(reply) + 1) + reply
                + struct.pack(">q", 0) + b"\0")
    text = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message)) + message
    body = struct.pack(">h", error) + text + struct.pack(">i", len(reply)) + reply
    return body + (struct.pack(">q", 0) if version >= 1 else b"")


def _send(writer: asyncio.StreamWriter, correlation: int, body: bytes, flexible: bool) -> None:
    header = struct.pack(">i", correlation) + (b"\0" if flexible else b"")
    writer.write(struct.pack(">i", len(header) + len(body)) + header + body)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
