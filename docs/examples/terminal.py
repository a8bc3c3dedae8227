#!/usr/bin/env python3
"""A tiny interactive terminal into a sandbox, with nothing but Python's
standard library: it opens GET /v1/sandboxes/{id}/exec as a WebSocket
(v5.channel.k8s.io), puts the local terminal in raw mode, sends keystrokes
on channel 0 and the window size on channel 4, and prints channels 1 and 2.

    SBX=http://127.0.0.1:8080 TOKEN=sbx_... python3 terminal.py SANDBOX_ID [COMMAND...]

COMMAND defaults to "sh". Exits with the command's exit code. Plain HTTP only
(wrap it in `ssl` for HTTPS)."""
import base64
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import termios
import tty
import urllib.parse


def frame(opcode, payload):
    """One masked client frame."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    base = urllib.parse.urlparse(os.environ.get("SBX", "http://127.0.0.1:8080"))
    token = os.environ["TOKEN"]
    sid, cmd = sys.argv[1], sys.argv[2:] or ["sh"]
    q = urllib.parse.urlencode([("command", c) for c in cmd] +
                               [("stdin", "true"), ("tty", "true")])
    sock = socket.create_connection((base.hostname, base.port or 80))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /v1/sandboxes/{sid}/exec?{q} HTTP/1.1\r\nHost: {base.hostname}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit("connection closed during the handshake")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit(head.decode(errors="replace") + "\n" + buf.decode(errors="replace"))

    def send_size(*_):
        cols, rows = shutil.get_terminal_size()
        sock.sendall(frame(2, b"\x04" + json.dumps({"Width": cols, "Height": rows}).encode()))

    old = termios.tcgetattr(sys.stdin)
    tty.setraw(sys.stdin)
    signal.signal(signal.SIGWINCH, send_size)
    send_size()
    code = 1
    try:
        msg = b""
        while True:
            r, _, _ = select.select([sys.stdin, sock], [], [])
            if sys.stdin in r:
                data = os.read(sys.stdin.fileno(), 4096)
                sock.sendall(frame(2, b"\x00" + data))
            if sock in r:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 2:  # parse whole frames (server frames are unmasked)
                    n, off = buf[1] & 0x7F, 2
                    if n == 126:
                        if len(buf) < 4:
                            break
                        n, off = struct.unpack(">H", buf[2:4])[0], 4
                    elif n == 127:
                        if len(buf) < 10:
                            break
                        n, off = struct.unpack(">Q", buf[2:10])[0], 10
                    if len(buf) < off + n:
                        break
                    fin, op, payload = buf[0] & 0x80, buf[0] & 0x0F, buf[off:off + n]
                    buf = buf[off + n:]
                    if op == 8:
                        raise EOFError
                    if op == 9:
                        sock.sendall(frame(10, payload))
                        continue
                    msg += payload
                    if not fin:
                        continue
                    ch, data, msg = msg[:1], msg[1:], b""
                    if ch in (b"\x01", b"\x02"):
                        os.write(sys.stdout.fileno(), data)
                    elif ch == b"\x03":
                        st = json.loads(data)
                        code = 0 if st.get("status") == "Success" else int(
                            (st.get("details") or {}).get("causes", [{}])[0].get("message", 1))
    except EOFError:
        pass
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)
    sys.exit(code)


if __name__ == "__main__":
    main()
