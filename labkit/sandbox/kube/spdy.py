"""SPDY/3.1 framing, the server side of what kubectl port-forward speaks after its upgrade.

Control frames (SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY; SETTINGS and WINDOW_UPDATE are
read and ignored: the lab's streams are small), data frames, and the name/value header blocks
compressed with zlib and SPDY/3's fixed dictionary (one zlib stream per direction).
"""
from __future__ import annotations

import base64
import struct
import threading
import zlib

# the SPDY/3 header dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1), zlib-packed here
DICTIONARY = zlib.decompress(base64.b64decode(
    "eNplVNty2zYQ1dSylEmTtEl+AM8tGYMk6Did8YN7cet03GQad/oMgSsKMQggIKhLvr67oOQq7YwkHhzs5eyFmkwmc+ejdraf"
    "TCbTFciGnt71EZ8nfqDHrAEDERCdxiAVgZlUCjxdPhtRrlYy9EDMN3sGrHKNtu0RZaRtB9lShKd7KiAFlPxk5E+lMW6TDIa4"
    "ckF/liSPCCXVCnLlbAzOIPEYoQW1v35CF2BjvpA9Bfr2cD7S8cAdCXn2wIFt4+oLK6cOyb8+cF1TJy37Y5J/nD3uPJ2njUwd"
    "m0KUlHkGW49SEc0R6ZBKni6D61Lfx34/0su8k1GRiOeEUfdSQ5P32qa2P0XSOgsPVuRxkPAS8WD/72NkHx9Ckc9RWU86uc2X"
    "LmxkaEjRzAfZdhLRCx/cdpfTELAsrcZyXv7LHo/m9KBhHmAJAQJ1LEAMaLqM6TjrIawT+ipFmuMqaZOI5whtj37Ho5oPvg2y"
    "IdPHA/rmOC1LTZquZdjRvqw16ZyjdLuf7maz+a/gWQcolco+adN2zvoo45BqLTln736nGCisHyt59Nvd3fuz4lVBHkMwqSfD"
    "wmhFQnDBcf/cvU6y7gF8Lo1ep0TYj1bbgvOCFyV9ypLXJT+vOK94WfGq4qLidUXMa8FLwWvBzwXhC8HfiIKLohBFKYpKFEIU"
    "tSjORfG65mXNRU2hKvaHs/nV2HusAhOzG4vT69IcSi7QgP00LmLFC3br1tCw94AGFimzE1jxj7Jhf8KnAfoo0OYvexgmNAJT"
    "XLuw0E0DVqRwEYnBNjU63mDcYKVhH9Ik2S8huFBjCLK66byBDpMA2lbJRCug6Gscs1wYeCstu4YFu5WBXfmAzx17O1j8GnY1"
    "tOjiI3unIoZbs59BMc5/SB8sw2bsboCM/Q0NotWQseugM/ZBRvwZ8PbX2zu1Guw93kfYxrNV7EymO9yZM2/bPfroD6jVy0x6"
    "b/T4Ipxt0fqLM/l/T2yK5o3UdoQfsZ5eBe1jNq6FD3qNq0bvEUa+bD9rnzWwNMhlfaNW+//FyyEu84vDQfcuv7io3+RFRnz2"
    "XQb20yV/9Q/jxqfC"))
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 9
FIN = 0x01


def _headers(block: bytes) -> dict[str, str]:
    count, = struct.unpack_from(">I", block)
    out, i = {}, 4
    for _ in range(count):
        n, = struct.unpack_from(">I", block, i)
        name = block[i + 4:i + 4 + n].decode()
        i += 4 + n
        n, = struct.unpack_from(">I", block, i)
        out[name.lower()] = block[i + 4:i + 4 + n].decode()
        i += 4 + n
    return out


def _block(headers: dict[str, str]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for k, v in headers.items():
        out += [struct.pack(">I", len(k)), k.encode(), struct.pack(">I", len(v)), v.encode()]
    return b"".join(out)


class Connection:
    """One SPDY session over a socket: read frames (`frames()`), write them from any thread."""

    def __init__(self, rfile, sock):
        self.rfile, self.sock = rfile, sock
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self._lock = threading.Lock()

    def _send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def control(self, kind: int, flags: int, payload: bytes) -> None:
        self._send(struct.pack(">HHI", 0x8003, kind, (flags << 24) | len(payload)) + payload)

    def reply(self, stream: int, headers: dict | None = None) -> None:
        with self._lock:  # the zlib stream's order is the wire's order
            block = self._deflate.compress(_block(headers or {})) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
            self.sock.sendall(struct.pack(">HHI", 0x8003, SYN_REPLY, 4 + len(block))
                              + struct.pack(">I", stream) + block)

    def data(self, stream: int, payload: bytes, fin: bool = False) -> None:
        for i in range(0, max(len(payload), 1), 0xFFFF):
            chunk = payload[i:i + 0xFFFF]
            last = fin and i + 0xFFFF >= len(payload)
            self._send(struct.pack(">II", stream & 0x7FFFFFFF, ((FIN if last else 0) << 24) | len(chunk)) + chunk)

    def reset(self, stream: int, status: int = 5) -> None:  # 5: CANCEL
        self.control(RST_STREAM, 0, struct.pack(">II", stream, status))

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise EOFError
        return data

    def frames(self):
        """('syn', stream, headers, fin) | ('data', stream, bytes, fin) | ('rst', stream, None, True),
        until the peer hangs up or says GOAWAY; PINGs are answered here."""
        try:
            while True:
                head = self._read(8)
                word, flags_len = struct.unpack(">II", head)
                flags, length = flags_len >> 24, flags_len & 0xFFFFFF
                payload = self._read(length)
                if not word & 0x80000000:
                    yield "data", word & 0x7FFFFFFF, payload, bool(flags & FIN)
                    continue
                kind = word & 0xFFFF
                if kind == SYN_STREAM:
                    stream = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
                    yield "syn", stream, _headers(self._inflate.decompress(payload[10:])), bool(flags & FIN)
                elif kind == RST_STREAM:
                    yield "rst", struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF, None, True
                elif kind == PING:
                    self.control(PING, 0, payload)
                elif kind == GOAWAY:
                    return
        except (EOFError, OSError, zlib.error, struct.error):
            return
