"""HTTP/1.1 as raw bytes and HTTP/2 as raw frames, for requests that no client library sends as
written: non-UTF-8 bytes, odd authorities, header blocks larger than one frame, requests abandoned
half-way."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import hpack


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> bytes | None:
        """The first value of a response header, or None."""
        wanted = name.encode()
        return next((value for header_name, value in self.headers if header_name.lower() == wanted), None)

    @property
    def upstream(self) -> str | None:
        """Which release answered: None when Envoy answered by itself."""
        value = self.header("x-upstream")
        return value.decode() if value is not None else None


# ---------------------------------------------------------------------------------------------
# HTTP/1.1


def read_http1_reply(sock: socket.socket) -> Reply | str:
    """One response from a socket: status, headers and a content-length body; "closed" if the
    peer closed before a whole response head arrived."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return "closed"
        if not chunk:
            return "closed"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.split(b"\r\n")
    headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines]
    reply = Reply(int(status_line.split(b" ")[1]), headers)
    length = int(reply.header("content-length") or 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    reply.body = body[:length]
    return reply


def http1_exchange(port: int, request: bytes, timeout: float = 10.0) -> Reply | str:
    """Sends `request` as written on a new connection and reads one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_http1_reply(sock)


def http1_request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], version: bytes = b"HTTP/1.1",
                  body: bytes = b"") -> bytes:
    """A request as raw bytes, headers exactly as given (no Host added)."""
    lines = [b"%s %s %s" % (method, target, version)] + [b"%s: %s" % (name, value) for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# ---------------------------------------------------------------------------------------------
# HTTP/2 (h2c, prior knowledge)

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
CANCEL = 0x8
MAX_FRAME_PAYLOAD = 16384  # the default SETTINGS_MAX_FRAME_SIZE, which Envoy keeps
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def header_frames(stream: int, block: bytes, end_stream: bool) -> bytes:
    """A header block as one HEADERS frame and as many CONTINUATION frames as it needs."""
    pieces = [block[i:i + MAX_FRAME_PAYLOAD] for i in range(0, len(block), MAX_FRAME_PAYLOAD)] or [b""]
    frames = b""
    for index, piece in enumerate(pieces):
        flags = END_HEADERS if index == len(pieces) - 1 else 0
        if index == 0:
            frames += frame(HEADERS, flags | (END_STREAM if end_stream else 0), stream, piece)
        else:
            frames += frame(CONTINUATION, flags, stream, piece)
    return frames


class Http2Connection:
    """One h2c connection: requests one by one or in batches on concurrent streams, or streams
    opened, fed and reset by hand. A stream Envoy refuses ends as "reset" (RST_STREAM), a refused
    connection as "goaway" or "closed"."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.next_stream = 1
        self.buffer = b""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))

    def close(self):
        self.sock.close()

    def __enter__(self) -> "Http2Connection":
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_frame(self) -> tuple[int, int, int, bytes] | None:
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags, stream = struct.unpack(">BBI", self.buffer[3:9])
        payload, self.buffer = self.buffer[9:9 + length], self.buffer[9 + length:]
        return kind, flags, stream & 0x7FFFFFFF, payload

    def send_headers(self, fields: list[tuple[bytes, bytes]], end_stream: bool = True) -> int:
        """Opens a stream with these header fields (in order, as written); returns its id."""
        stream, self.next_stream = self.next_stream, self.next_stream + 2
        self.sock.sendall(header_frames(stream, self.encoder.encode(fields, huffman=False), end_stream))
        return stream

    def send_data(self, stream: int, data: bytes, end_stream: bool):
        self.sock.sendall(frame(DATA, END_STREAM if end_stream else 0, stream, data))

    def reset(self, stream: int):
        self.sock.sendall(frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL)))

    def request(self, fields: list[tuple[bytes, bytes]]) -> Reply | str:
        return self.exchange([fields])[0]

    def exchange(self, requests: list[list[tuple[bytes, bytes]]]) -> list[Reply | str]:
        """Sends each request on a stream of its own, all at once, and returns their replies."""
        streams = [self.send_headers(fields) for fields in requests]
        outcomes = self.responses(streams)
        return [outcomes[stream] for stream in streams]

    def responses(self, streams: list[int]) -> dict[int, Reply | str]:
        """Reads until every one of `streams` has ended, answering SETTINGS and PING and returning
        flow-control credit for every DATA frame, so any number of requests fit on the connection."""
        pending, outcomes = set(streams), {}
        blocks: dict[int, bytes] = {}
        replies: dict[int, Reply] = {}
        ends_stream: dict[int, bool] = {}
        while pending:
            read = self._read_frame()
            if read is None or read[0] == GOAWAY:
                outcomes.update((stream, "closed" if read is None else "goaway") for stream in pending)
                break
            kind, flags, stream, payload = read
            if kind == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                self.sock.sendall(frame(PING, ACK, 0, payload))
            elif stream not in pending:
                continue
            elif kind == RST_STREAM:
                outcomes[stream] = "reset"
                pending.discard(stream)
            elif kind in (HEADERS, CONTINUATION):
                # A header block is never interleaved with another stream's, so blocks decode in order.
                blocks[stream] = blocks.get(stream, b"") + payload
                if kind == HEADERS:
                    ends_stream[stream] = bool(flags & END_STREAM)
                if flags & END_HEADERS:
                    headers = self.decoder.decode(blocks.pop(stream), raw=True)
                    if stream not in replies:
                        status = dict(headers)[b":status"]
                        replies[stream] = Reply(int(status), [(n, v) for n, v in headers if not n.startswith(b":")])
                    if ends_stream[stream]:
                        outcomes[stream] = replies[stream]
                        pending.discard(stream)
            elif kind == DATA:
                if payload:
                    credit = struct.pack(">I", len(payload))
                    self.sock.sendall(frame(WINDOW_UPDATE, 0, 0, credit) + frame(WINDOW_UPDATE, 0, stream, credit))
                replies[stream].body += payload
                if flags & END_STREAM:
                    outcomes[stream] = replies[stream]
                    pending.discard(stream)
        return outcomes

