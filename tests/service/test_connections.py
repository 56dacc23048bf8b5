"""Connection limits and timeouts on a real uvicorn server (127.0.0.1, in a thread, with the options
`aftershock serve` uses): a body that never completes gets 408, headers that never complete get 408,
connections beyond max_connections get 503 and are closed (no fd exhaustion), oversized headers get a
JSON 431, keep-alive idles are closed, and the server keeps answering afterwards."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

LIMITS = dict(body_timeout=0.5, header_timeout=0.5, keep_alive_timeout=1.0, max_connections=20,
              max_header_bytes=4096)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(seismic_index):
    import uvicorn

    from aftershock.service import ServiceSettings, create_app
    from aftershock.service.server import uvicorn_options

    settings = ServiceSettings(**LIMITS)
    app = create_app(seismic_index, settings=settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           **uvicorn_options(settings)))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    yield port, url
    server.should_exit = True
    t.join(timeout=10)


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        pass
    return out


def _status_and_json(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body.decode()) if body else None


def _search_ok(url: str) -> None:
    r = httpx.post(f"{url}/search", json={"query": {"indices": [2129, 3358], "values": [1.0, 0.5]}}, timeout=10)
    assert r.status_code == 200, r.text


def test_body_shorter_than_content_length_gets_408(live):
    port, url = live
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                  b'{"query": ')
        t0 = time.perf_counter()
        raw = _read_all(s, 5.0)  # the server answers and closes: recv returns b"" well before 5 s
        dt = time.perf_counter() - t0
    status, body = _status_and_json(raw)
    assert status == 408 and body["error"] == "body_timeout" and "--body-timeout" in body["message"], raw[:300]
    assert dt < 3.0, dt
    _search_ok(url)


def test_incomplete_headers_get_408(live):
    port, url = live
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\n")  # no blank line: headers never end
        t0 = time.perf_counter()
        raw = _read_all(s, 5.0)
        dt = time.perf_counter() - t0
    status, body = _status_and_json(raw)
    assert status == 408 and body["error"] == "header_timeout", raw[:300]
    assert dt < 3.0, dt
    with socket.create_connection(("127.0.0.1", port)) as s:  # a silent connection is closed the same way
        raw = _read_all(s, 5.0)
    assert _status_and_json(raw)[0] == 408


@pytest.mark.parametrize("pieces", [1, 40])
def test_oversized_headers_get_json_431(live, pieces):
    port, url = live
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        step = len(head) // pieces + 1
        try:
            for i in range(0, len(head), step):
                s.sendall(head[i:i + step])
                time.sleep(0.005)
        except OSError:  # the server may close before the last piece
            pass
        raw = _read_all(s, 5.0)
    status, body = _status_and_json(raw)
    assert status == 431 and "max_header_bytes=4096" in body["message"], raw[:300]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 3000 + b"\r\nConnection: close\r\n\r\n")
        assert _read_all(s, 5.0).startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_limit_get_503_and_are_closed(live):
    port, url = live
    socks = []
    try:
        for _ in range(60):  # 3x the limit of 20, all idle
            socks.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.3)
        refused = 0
        for s in socks[25:]:
            raw = _read_all(s, 2.0)
            if raw:
                status, body = _status_and_json(raw)
                assert status == 503 and body["error"] == "too_many_connections", raw[:300]
                refused += 1
        assert refused == len(socks) - 25
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    _search_ok(url)  # the limit frees up as connections close


def test_idle_keep_alive_connection_is_closed(live):
    port, _ = live
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.perf_counter()
        raw = _read_all(s, 6.0)  # the response, then EOF after keep_alive_timeout
        dt = time.perf_counter() - t0
    assert raw.startswith(b"HTTP/1.1 200") and dt < 4.0, (raw[:100], dt)


def test_many_bad_requests_leave_no_5xx(live):
    """A mix of slow and malformed raw requests in parallel; every answer is 4xx/503, the server survives."""
    port, url = live
    raws = [b"GARBAGE\r\n\r\n", b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{",
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
            b"POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n"]
    results = []

    def one(raw):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(raw)
            results.append(_read_all(s, 5.0))

    threads = [threading.Thread(target=one, args=(r,)) for r in raws * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for raw in results:
        status = int(raw.split()[1])
        assert 400 <= status < 500 or status == 503, raw[:200]
    _search_ok(url)
