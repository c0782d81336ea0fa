"""Shared hostile-client helpers for the connection-discipline tests of every server
(tests/worker/conn_hostile_test.py, tests/engine/conn_hostile_test.py,
tests/model/conn_hostile_test.py).  Stdlib only; every wait is on an event with a
generous deadline, never a timing assertion."""
import os
import socket
import time


def status_of(resp):
    """HTTP status of the first response in raw bytes, None if there is none."""
    line = resp.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def raw(port, data, timeout=30.0):
    """Send raw bytes, read until the peer closes or one whole response arrived."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not b:
                break
            out += b
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if cl and len(body) >= int(cl[0].split(b":")[1]):
                    break
        return out
    finally:
        s.close()


def idle_flood(port, n):
    """n connections that send nothing (kept open by the caller)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        socks.append(s)
    return socks


def closed_by_peer(s, timeout=60.0):
    """Wait until the server closes s (EOF or reset); True if it did within timeout."""
    s.settimeout(1.0)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            b = s.recv(65536)
            if b == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def trickle_until_closed(port, first, byte=b"X", interval=0.25, limit=120.0):
    """Send `first`, then one byte every `interval` s until the server closes the
    connection.  True when it was cut (the deadline), False after `limit` s."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if first:
            s.sendall(first)
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                s.sendall(byte)
                s.settimeout(interval)
                if s.recv(100) == b"":
                    return True
            except socket.timeout:
                pass
            except OSError:
                return True
        return False
    finally:
        s.close()


# A TLS 1.2/1.3 ClientHello prefix: record header + handshake header; enough for a server
# to wait for the rest.  Sent one byte at a time it must be cut by the request deadline.
CLIENT_HELLO_PREFIX = bytes.fromhex("160301020001" "0001fc0303") + os.urandom(32)


def framing_cases(path, body=b"{}"):
    """(name, raw request) pairs every server must answer with 400."""
    n = len(body)
    host = b"Host: x\r\n"
    post = b"POST " + path.encode() + b" HTTP/1.1\r\n" + host
    return [
        ("two different Content-Length", post + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
         % (n, n + 1) + body),
        ("space before the colon of Transfer-Encoding", post +
         b"Transfer-Encoding : chunked\r\n\r\n" + b"%x\r\n" % n + body + b"\r\n0\r\n\r\n"),
        ("Content-Length: +N", post + b"Content-Length: +%d\r\n\r\n" % n + body),
        ("Content-Length list", post + b"Content-Length: %d, %d\r\n\r\n" % (n, n) + body),
        ("Content-Length and Transfer-Encoding", post + b"Content-Length: %d\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n" % n + b"%x\r\n" % n + body + b"\r\n0\r\n\r\n"),
        ("Transfer-Encoding gzip", post + b"Transfer-Encoding: gzip, chunked\r\n\r\n" +
         b"%x\r\n" % n + body + b"\r\n0\r\n\r\n"),
        ("obs-fold", post + b"Content-Length: %d\r\nX-A: 1\r\n  folded\r\n\r\n" % n + body),
        ("negative chunk size", post + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
        ("malformed chunk size", post + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("chunk data without CRLF", post + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % n +
         body + b"XX0\r\n\r\n"),
    ]


def chunked_with_extensions(path, body, headers=b""):
    """A valid chunked request whose chunks carry extensions (RFC 9112 7.1.1)."""
    half = len(body) // 2
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers +
            b"Transfer-Encoding: chunked\r\n\r\n" +
            b"%x;ext=1\r\n" % half + body[:half] + b"\r\n" +
            b"%X ; name=\"quoted;value\"\r\n" % (len(body) - half) + body[half:] + b"\r\n" +
            b"0\r\nX-Trailer: t\r\n\r\n")


def partial_upload(port, path, total, send):
    """A connection that announces a `total`-byte body and sends `send` bytes of it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
              % total)
    chunk = b"x" * 65536
    left = send
    while left > 0:
        k = min(left, len(chunk))
        s.sendall(chunk[:k])
        left -= k
    return s


def metric(text, name):
    """Value of a Prometheus series (first match) or None."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def proc_cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        x = f.read().rsplit(")", 1)[1].split()
    return int(x[11]) + int(x[12])


def proc_status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))
