"""A small RFC 6455 WebSocket client for the tests (standard library only),
speaking the Kubernetes exec channel protocol: binary messages whose first
byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize,
255 close in v5)."""
import base64
import hashlib
import json
import os
import socket
import struct
import urllib.parse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    def __init__(self, status, body):
        super().__init__(f"handshake refused: {status} {body!r}")
        self.status = status
        self.body = body


class WebSocket:
    def __init__(self, sock, protocol):
        self.sock = sock
        self.protocol = protocol
        self.buf = b""
        self.closed = None  # (code, reason) once a close frame arrived

    # -- frames --
    def send_frame(self, opcode, payload, fin=True):
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
            _xor(payload, mask)
        self.sock.sendall(head + mask + masked)

    def send(self, channel, data=b""):
        self.send_frame(2, bytes([channel]) + data)

    def resize(self, cols, rows):
        self.send(4, json.dumps({"Width": cols, "Height": rows}).encode())

    def close_stdin(self):
        self.send(255, b"\x00")

    def close(self, code=1000):
        try:
            self.send_frame(8, struct.pack(">H", code))
        except OSError:
            pass

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        b0, b1 = self._read(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        if b1 & 0x80:
            raise ValueError("server frames must not be masked")
        return bool(b0 & 0x80), opcode, self._read(n)

    def recv(self):
        """The next data message as (channel, bytes), or None after a close."""
        parts, first_op = [], None
        while True:
            fin, op, payload = self.recv_frame()
            if op == 8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.closed = (code, payload[2:].decode(errors="replace"))
                return None
            if op == 9:  # ping
                self.send_frame(10, payload)
                continue
            if op == 10:
                continue
            if first_op is None:
                first_op = op
            parts.append(payload)
            if fin:
                msg = b"".join(parts)
                return (msg[0], msg[1:]) if msg else (-1, b"")

    def collect(self, timeout=30):
        """Read until the close: {channel: bytes} and the parsed status."""
        self.sock.settimeout(timeout)
        out, status = {}, None
        while True:
            m = self.recv()
            if m is None:
                return out, status
            ch, data = m
            if ch == 3:
                status = json.loads(data)
            else:
                out[ch] = out.get(ch, b"") + data


def _xor(data, mask):
    # fast enough for megabytes: whole-word xor through int.from_bytes
    n = len(data)
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def connect(base, path, query, token=None, protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"),
            headers=None, timeout=30):
    """Open a WebSocket to base (http://host:port) + path?query. query is a
    list of (key, value) pairs, so command= may repeat. Raises
    HandshakeError with the HTTP status and body when refused."""
    u = urllib.parse.urlparse(base)
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {u.hostname}:{u.port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    if token:
        lines.append("Authorization: Bearer " + token)
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError(0, head)
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    status_line, *hdr_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    hdrs = {}
    for l in hdr_lines:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if status != 101:
        n = int(hdrs.get("content-length", "0"))
        body = rest
        while len(body) < n:
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
        sock.close()
        try:
            body = json.loads(body)
        except ValueError:
            pass
        raise HandshakeError(status, body)
    want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    if hdrs.get("sec-websocket-accept") != want:
        raise ValueError("bad Sec-WebSocket-Accept")
    ws = WebSocket(sock, hdrs.get("sec-websocket-protocol"))
    ws.buf = rest
    return ws
