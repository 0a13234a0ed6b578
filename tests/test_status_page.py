"""The live status page (``GET /``) in a real headless Chromium, against a real cluster.

One test dumps the DOM after the page's scripts ran (``--dump-dom``). The other
drives one page over the DevTools protocol and watches it change, without
reloading it, as the cluster moves on: a proof that the page refreshes itself.

Chromium is required: without it these tests fail (CI installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from netcluster import ProcCluster

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BASE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-extensions", "--disable-dev-shm-usage"]  # fmt: skip
META = re.compile(r"leader: (none|node (\d+)) · decided slot: (-?\d+) · updated (.+)")


def find_browser() -> str:
    env = os.environ.get("CHROMIUM")
    if env:
        path = shutil.which(env)
        if path is None:
            pytest.fail(f"$CHROMIUM={env} is not an executable browser", pytrace=False)
        return path
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium is required for the status page tests but none of "
        f"{', '.join(BROWSER_NAMES)} is on PATH (set $CHROMIUM, or `apt-get install chromium`)",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    c = ProcCluster(tmp_path_factory.mktemp("status-page"), replicas=3)
    try:
        c.start_all()
        c.wait_ready()
        yield c
    finally:
        c.close()


def put(c: ProcCluster, nid: int, key: str, value: str) -> None:
    req = urllib.request.Request(c.http(nid) + "/v1/kv/" + key, data=value.encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=15) as r:
        assert r.status == 200


def cluster_status(c: ProcCluster, nid: int) -> dict[str, Any]:
    with urllib.request.urlopen(c.http(nid) + "/v1/status?cluster=true", timeout=5) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def settled(c: ProcCluster, timeout: float = 15.0) -> dict[str, Any]:
    """The cluster status once every node is up, agrees on one leader and has applied all."""
    deadline = time.monotonic() + timeout
    while True:
        s = cluster_status(c, 0)
        ns = s["nodes"]
        if (
            all("error" not in n and n["ready"] for n in ns)
            and s["leader"] is not None
            and [n["node_id"] for n in ns if n["is_leader"]] == [s["leader"]]
            and all(n["leader"] == s["leader"] and n["applied"] == s["decided"] for n in ns)
        ):
            return s
        assert time.monotonic() < deadline, f"cluster did not settle: {s}\n{c.logs()}"
        time.sleep(0.05)


# ------------------------------------------------------------------ DOM parsing


class _Rows(HTMLParser):
    """The meta line and the rows of ``<tbody id="nodes">`` of a dumped page."""

    def __init__(self) -> None:
        super().__init__()
        self.meta = ""
        self.rows: list[dict[str, Any]] = []
        self._in_meta = self._in_body = self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div" and a.get("id") == "meta":
            self._in_meta = True
        elif tag == "tbody" and a.get("id") == "nodes":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append({"node": a.get("data-node"), "cls": a.get("class") or "", "cells": []})
        elif tag == "td" and self._in_body:
            self._in_cell = True
            self.rows[-1]["cells"].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            self._in_meta = False
        elif tag == "tbody":
            self._in_body = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_meta:
            self.meta += data
        elif self._in_cell:
            self.rows[-1]["cells"][-1] += data


def parse_page(html: str) -> dict[str, Any]:
    p = _Rows()
    p.feed(html)
    return {"meta": p.meta.strip(), "rows": p.rows}


# JS that extracts the same structure from the live page.
EXTRACT = """JSON.stringify({
  meta: document.getElementById("meta")?.textContent.trim() ?? "",
  rows: [...document.querySelectorAll("#nodes tr")].map(tr => ({
    node: tr.dataset.node ?? null, cls: tr.className,
    cells: [...tr.cells].map(td => td.textContent)})),
  marker: window.__testMarker ?? null,
})"""

COLUMNS = ["node", "roles", "state", "ballot", "decided", "applied", "lag", "ready"]


def check_page(page: dict[str, Any], c: ProcCluster, leader: int, min_decided: int) -> int:
    """Every node has a healthy row, the leader is marked; returns the shown decided slot."""
    m = META.fullmatch(page["meta"])
    assert m, f"meta line not understood: {page['meta']!r}"
    assert m.group(2) == str(leader), page["meta"]
    decided = int(m.group(3))
    assert decided >= min_decided, (decided, min_decided, page["meta"])
    rows = page["rows"]
    assert [r["node"] for r in rows] == [str(n) for n in range(c.n)], rows
    for nid, r in enumerate(rows):
        cells = dict(zip(COLUMNS, r["cells"], strict=True))
        assert cells["node"] == f"{nid} ({c.layout['acceptors'][nid]})", cells
        assert cells["roles"] == "proposer, acceptor, learner", cells
        assert cells["state"] == ("leader" if nid == leader else "follower"), cells
        assert (r["cls"] == "leader") == (nid == leader), r
        assert cells["ready"] == "yes", cells
        assert int(cells["decided"]) <= decided and int(cells["applied"]) <= decided, cells
        assert int(cells["lag"]) >= 0, cells
    assert "leader" in rows[leader]["cls"]
    return decided


def shows(page: dict[str, Any], c: ProcCluster, leader: int, min_decided: int) -> bool:
    try:
        check_page(page, c, leader, min_decided)
    except (AssertionError, ValueError, KeyError, IndexError):  # not (yet) what it should be
        return False
    return True


# ------------------------------------------------------------------ browsers


def dump_dom(browser: str, url: str, profile: Path, budget_ms: int = 3000) -> str:
    cmd = [browser, *BASE_FLAGS, f"--user-data-dir={profile}",
           f"--virtual-time-budget={budget_ms}", "--dump-dom", url]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, timeout=60, start_new_session=True)
    err = p.stderr.decode(errors="replace")[-2000:]
    assert p.returncode == 0, f"{cmd} exited with {p.returncode}:\n{err}"
    return p.stdout.decode()


class Chromium:
    """A headless Chromium showing one page, driven over the DevTools protocol."""

    def __init__(self, browser: str, url: str, profile: Path) -> None:
        self.profile = profile
        self.proc = subprocess.Popen(
            [browser, *BASE_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", url],
            stdout=subprocess.DEVNULL, stderr=open(profile.parent / "chromium.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )  # fmt: skip
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.next_id = 0

    async def connect(self, timeout: float = 30.0) -> None:
        portfile = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (portfile.exists() and portfile.read_text().strip()):
            assert self.proc.poll() is None, f"chromium exited: {self.proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.05)
        port = int(portfile.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        while True:
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json() if t["type"] == "page"]
            if pages:
                break
            assert time.monotonic() < deadline, "chromium opened no page"
            await asyncio.sleep(0.05)
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        self.next_id += 1
        mid = self.next_id
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 10)
            if msg.get("id") == mid:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    async def evaluate(self, expr: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    async def page(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(await self.evaluate(EXTRACT))
        return out

    async def wait_page(self, pred: Any, what: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            page = await self.page()
            if pred(page):
                return page
            assert time.monotonic() < deadline, f"the page never showed {what}: {page}"
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


# ------------------------------------------------------------------ tests


def test_dumped_page_shows_every_node_the_leader_and_the_decided_slot(
    cluster: ProcCluster, tmp_path: Path
) -> None:
    browser = find_browser()
    for i in range(3):
        put(cluster, 0, f"dump{i}", "x")
    s = settled(cluster)
    assert s["decided"] >= 2
    # Served by a follower: the page shows the whole cluster wherever it is loaded.
    nid = next(n for n in range(cluster.n) if n != s["leader"])
    html = dump_dom(browser, cluster.http(nid) + "/", tmp_path / "profile")
    page = parse_page(html)
    assert "<h1>Paxos cluster</h1>" in html
    assert page["rows"], f"the page shows no node rows (did its script run?):\n{html}"
    shown = check_page(page, cluster, s["leader"], s["decided"])
    cells = [dict(zip(COLUMNS, r["cells"], strict=True)) for r in page["rows"]]
    assert all(int(c["decided"]) == int(c["applied"]) == shown for c in cells), cells


def test_page_refreshes_itself(cluster: ProcCluster, tmp_path: Path) -> None:
    browser = find_browser()
    s = settled(cluster)
    leader = s["leader"]
    served_by = next(n for n in range(cluster.n) if n != leader)

    async def run() -> None:
        profile = tmp_path / "profile"
        chrome = Chromium(browser, cluster.http(served_by) + "/", profile)
        try:
            await chrome.connect()
            first = await chrome.wait_page(lambda p: len(p["rows"]) == cluster.n, "node rows")
            d0 = check_page(first, cluster, leader, s["decided"])
            # Mark this document: a reload would lose the mark.
            await chrome.evaluate("window.__testMarker = 'same document'")
            for i in range(5):
                put(cluster, i % cluster.n, f"refresh{i}", str(i))
            target = settled(cluster)["decided"]
            assert target >= d0 + 5
            page = await chrome.wait_page(
                lambda p: (m := META.fullmatch(p["meta"])) is not None and int(m[3]) >= target,
                f"decided slot {target}",
            )
            check_page(page, cluster, leader, target)
            assert page["marker"] == "same document", "the page was reloaded, not refreshed"
            # The page also shows a node going down and coming back (not the one serving it:
            # another follower).
            other = next(n for n in range(cluster.n) if n not in (leader, served_by))
            cluster.kill(other)
            page = await chrome.wait_page(
                lambda p: any("unreachable" in c for c in p["rows"][other]["cells"]),
                f"node {other} unreachable",
            )
            assert page["rows"][other]["node"] == str(other)
            assert page["marker"] == "same document"
            cluster.start(other)
            cluster.wait_ready()
            after = settled(cluster)
            page = await chrome.wait_page(
                lambda p: shows(p, cluster, after["leader"], after["decided"]),
                f"node {other} back",
            )
            check_page(page, cluster, after["leader"], after["decided"])
            assert page["marker"] == "same document"
        finally:
            await chrome.close()

    asyncio.run(run())


HISTORY = """(() => {
  const b = document.getElementById("banner"), t = document.querySelector("#tput polyline");
  return JSON.stringify({
    banner: b && b.style.display === "block" ? b.textContent : null,
    leaders: [...document.querySelectorAll("#leaders tr")].map(tr => tr.cells[1].textContent),
    tput: (t && t.getAttribute("points")) || "",
    tputLast: document.getElementById("tput-last")?.textContent ?? "",
  });
})()"""


def test_page_shows_throughput_the_leader_history_and_a_banner_without_quorum(
    tmp_path: Path,
) -> None:
    browser = find_browser()
    c = ProcCluster(tmp_path / "c", replicas=3)
    try:
        c.start_all()
        c.wait_ready()
        s = settled(c)
        for i in range(20):
            put(c, 0, f"h{i}", "x")

        async def run() -> None:
            chrome = Chromium(browser, c.http(0) + "/", tmp_path / "profile")
            try:
                await chrome.connect()

                async def wait(pred: Any, what: str, timeout: float = 20.0) -> dict[str, Any]:
                    deadline = time.monotonic() + timeout
                    while True:
                        page: dict[str, Any] = json.loads(await chrome.evaluate(HISTORY))
                        if pred(page):
                            return page
                        assert time.monotonic() < deadline, f"never showed {what}: {page}"
                        await asyncio.sleep(0.2)

                page = await wait(
                    lambda p: p["leaders"] and p["tput"].count(",") >= 1, "history and throughput"
                )
                assert page["banner"] is None  # a quorum: no banner
                assert page["leaders"][0] == f"node {s['leader']}"
                assert "last:" in page["tputLast"]
                for n in (1, 2):
                    c.kill(n)
                page = await wait(lambda p: p["banner"] is not None, "the no-quorum banner")
                assert page["banner"].startswith("NO QUORUM: 1 of 3 acceptors ready, 2 needed")
                if s["leader"] != 0:  # node 0 then sees the leader vanish
                    await wait(lambda p: p["leaders"][0] == "none", "leader: none in the history")
            finally:
                await chrome.close()

        asyncio.run(run())
    finally:
        c.close()
