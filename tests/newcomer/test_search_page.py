"""The search page of `aftershock serve` (GET /): plain HTML/JS from the package, no CDN, no build step. The
browser test loads it in Debian's headless chromium (installed by .ci/run when missing), submits a text and
a token query through the page's URL (the page fills the form and submits it) and reads the rendered hits."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request

import pytest

from aftershock.service.static import page_html


def test_page_is_self_contained():
    page = page_html()
    assert '<form id="form"' in page and 'id="heap_factor"' in page and 'id="query_cut"' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not load anything from outside"
    assert 'fetch("search"' in page and 'fetch("info"' in page


def test_root_serves_the_page(live_server):
    with urllib.request.urlopen(live_server + "/", timeout=10) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/html")
        assert "Aftershock search" in r.read().decode()
    with urllib.request.urlopen(live_server + "/openapi.json", timeout=10) as r:
        assert '"/"' not in r.read().decode()  # the page is not part of the API schema


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(url: str) -> str:
    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (bash .ci/run installs Debian's chromium; apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                            "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def hits(dom: str) -> list[tuple[str, float, str]]:
    out = []
    for li in re.findall(r'<li class="hit">(.*?)</li>', dom, re.S):
        hid = re.search(r'<span class="hid">(.*?)</span>', li).group(1)
        score = float(re.search(r'<span class="score">(.*?)</span>', li).group(1))
        text = re.search(r'<div class="(?:title|text)">(.*?)</div>', li)
        out.append((html.unescape(hid), score, html.unescape(text.group(1)) if text else ""))
    return out


def test_browser_text_query_renders_hits(live_server):
    dom = render(live_server + "/?" + urllib.parse.urlencode({"q": "supersonic wing flow", "k": "5"}))
    got = hits(dom)
    assert len(got) == 5, dom[-3000:]
    assert [s for _, s, _ in got] == sorted((s for _, s, _ in got), reverse=True)
    assert all(t for _, _, t in got)  # document texts (served with --documents)
    status = re.search(r'<div id="status"[^>]*>(.*?)</div>', dom, re.S).group(1)
    assert "5 hits" in status and "search" in status and "ms" in status
    assert '"n_docs": 1400' in dom  # /info is shown


def test_browser_token_query_and_knobs(live_server):
    url = live_server + "/?" + urllib.parse.urlencode({"q": "wing:1.0 flow:0.5", "k": "3", "heap_factor": "0.9",
                                                       "query_cut": "2"})
    got = hits(render(url))
    assert len(got) == 3
    # the page's hits are the service's hits for the same request
    body = urllib.request.Request(live_server + "/search", method="POST", headers={"content-type": "application/json"},
                                  data=b'{"query": {"tokens": {"wing": 1.0, "flow": 0.5}}, "k": 3, "heap_factor": 0.9,'
                                       b' "query_cut": 2}')
    with urllib.request.urlopen(body, timeout=10) as r:
        want = [h["id"] for h in json.load(r)["hits"]]
    assert [h for h, _, _ in got] == want


def test_browser_shows_errors(live_server):
    dom = render(live_server + "/?" + urllib.parse.urlencode({"q": "nosuchtoken_xyz:1.0"}))
    err = re.search(r'<div id="error"[^>]*>(.*?)</div>', dom, re.S).group(1)
    assert "nosuchtoken_xyz" in html.unescape(err)
