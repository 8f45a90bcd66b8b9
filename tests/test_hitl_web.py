"""The labeling page as a service for a team: labeler identities and roles, malformed requests (always a
one-line 4xx, the keep-alive connection kept), request ids per labeler, formula-safe CSV, the body
limit, the schema-1 store upgrade and the labelers command."""
from __future__ import annotations

import csv
import http.client
import io
import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from galframe_hitl.oracle import ServerThread
from galframe_hitl.store import LabelStore, csv_cell
from galframe_hitl.webapp import MAX_BODY, create_app
from tests.test_hitl_store import CLASSES, queued_store


class Live:
    """A labeling server in a thread of this process (so tests can read ``app.state``)."""

    def __init__(self, store: LabelStore, **kwargs) -> None:
        self.store = store
        self.app = create_app(store.path, **kwargs)
        self.thread = ServerThread(self.app, "127.0.0.1", 0)
        self.thread.start()
        self.port = self.thread.port
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20)

    def close(self) -> None:
        self.thread.stop()


@pytest.fixture()
def team(tmp_path):
    """A server over a store with 40 queued objects and three labelers: alice, bob and the admin root."""
    store = queued_store(tmp_path / "labels.sqlite")
    tokens = {"alice": store.add_labeler("alice"), "bob": store.add_labeler("bob"),
              "root": store.add_labeler("root", "admin")}
    live = Live(store)
    yield live, tokens
    live.close()
    assert live.app.state.unexpected == 0  # every refusal was a deliberate one


@pytest.fixture()
def single(tmp_path):
    """Single-user mode (no labelers): as before, no token on 127.0.0.1 and the name from the page."""
    live = Live(queued_store(tmp_path / "labels.sqlite"))
    yield live
    live.close()
    assert live.app.state.unexpected == 0


def raw_post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    res = conn.getresponse()
    data = res.read()
    return res.status, json.loads(data)


def raw_get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    res = conn.getresponse()
    return res.status, res.read()


def test_answers_and_undos_are_the_signed_in_labelers(team) -> None:
    live, tok = team
    alice, bob, root = live.client(tok["alice"]), live.client(tok["bob"]), live.client(tok["root"])
    anonymous = live.client()
    assert anonymous.get("/api/state").status_code == 401
    assert anonymous.post("/api/answer", json={"id": 1, "label": "smooth", "labeler": "bob"}).status_code == 401
    assert anonymous.get("/api/me").json() == {"mode": "team", "labeler": None, "role": None}
    assert alice.get("/api/me").json() == {"mode": "team", "labeler": "alice", "role": "labeler"}
    assert live.client("not-a-token-at-all").get("/api/state").status_code == 401

    b1 = bob.post("/api/answer", json={"id": 1, "label": "merger"}).json()["saved"]
    assert b1["labeler"] == "bob"
    # the finding: alice posting bob's name (padded or not) took back bob's answer
    for name in ("bob", "  bob  ", "Bob"):
        r = alice.post("/api/undo", json={"labeler": name})
        assert r.status_code == 403 and "only their own answers" in r.json()["detail"], r.text
        r = alice.post("/api/answer", json={"id": 2, "label": "star", "labeler": name})
        assert r.status_code == 403 and "signed in as alice" in r.json()["detail"]
    r = alice.post("/api/undo", json={"event_id": b1["event_id"]})
    assert r.status_code == 403 and "bob's answer, not alice's" in r.json()["detail"]
    r = alice.post("/api/undo", json={})
    assert r.status_code == 409 and "alice" in r.json()["detail"]  # she has nothing of her own to undo
    assert live.store.labels() == {1: "merger"}

    a1 = alice.post("/api/answer", json={"id": 1, "label": "star"}).json()["saved"]  # a second opinion
    assert a1["labeler"] == "alice"
    assert {(a.labeler, a.label) for a in live.store.opinions()} == {("bob", "merger"), ("alice", "star")}
    assert alice.get("/api/object/1").json()["mine"] == "star" and bob.get("/api/object/1").json()["mine"] == "merger"
    undone = alice.post("/api/undo", json={}).json()["undone"]  # her own: bob's answer is untouched
    assert undone["event_id"] == a1["event_id"]
    assert [(a.labeler, a.label) for a in live.store.opinions()] == [("bob", "merger")]

    # exports and other people's history are for the admin
    assert alice.get("/api/labels.csv").status_code == 403 and alice.get("/api/answers.csv").status_code == 403
    assert alice.get("/api/history", params={"labeler": "bob"}).status_code == 403
    assert {e["labeler"] for e in alice.get("/api/history").json()["events"]} == {"alice"}
    # the admin undoes bob's answer: the undo event is the admin's, pointing at bob's answer
    r = root.post("/api/undo", json={"labeler": "bob"})
    assert r.status_code == 200 and r.json()["undone"]["event_id"] == b1["event_id"]
    last = live.store.history()[-1]
    assert (last.action, last.labeler, last.undoes) == ("undo", "root", b1["event_id"])
    bob.post("/api/answer", json={"id": 3, "label": 0})
    alice.post("/api/answer", json={"id": 3, "label": "edge_on"})
    rows = list(csv.DictReader(io.StringIO(root.get("/api/answers.csv").text)))
    assert [(r["id"], r["label"], r["labeler"]) for r in rows] == [("3", "edge_on", "alice"), ("3", "smooth", "bob")]
    # a revoked token stops at once; the answers stay
    live.store.remove_labeler("bob")
    assert bob.get("/api/state").status_code == 401
    assert {a.labeler for a in live.store.opinions()} == {"alice", "bob"}


def test_login_sets_a_session_cookie(team) -> None:
    live, tok = team
    with live.client() as browser:
        assert browser.post("/api/login", json={"token": "wrong"}).status_code == 401
        assert browser.get("/").status_code == 200  # the page itself shows the sign-in form
        r = browser.post("/api/login", json={"token": tok["alice"]})
        assert r.status_code == 200 and r.json() == {"labeler": "alice", "role": "labeler"}
        assert "httponly" in r.headers["set-cookie"].lower()
        assert browser.post("/api/answer", json={"id": 4, "skip": True}).json()["saved"]["labeler"] == "alice"
        browser.post("/api/logout", json={})
        browser.cookies.clear()
        assert browser.get("/api/state").status_code == 401
    with live.client() as browser:  # the labeler's link: ?token= answered with the cookie
        assert browser.get("/", params={"token": tok["bob"]}).status_code == 200
        assert browser.get("/api/me").json()["labeler"] == "bob"


MALFORMED = [
    # (body, status, words of the reason)
    (b'{"id": 1000000000000000000000000000000, "label": "smooth", "labeler": "x"}', 422, "less than or equal to 9223372036854775807"),
    (b'{"id": 9223372036854775808, "label": "smooth", "labeler": "x"}', 422, "less than or equal"),
    (b'{"id": -9223372036854775809, "label": "smooth", "labeler": "x"}', 422, "greater than or equal"),
    ('{"id": 1, "label": "\u00b2", "labeler": "x"}'.encode(), 422, "unknown class"),
    (b'{"id": 1, "label": 2e0, "labeler": "x"}', 422, "label"),
    (b'{"id": NaN, "label": "smooth", "labeler": "x"}', 400, "NaN is not a JSON number"),
    (b'{"id": 1, "label": Infinity, "labeler": "x"}', 400, "Infinity is not a JSON number"),
    (b'{"id": 1, "label": -Infinity, "labeler": "x"}', 400, "-Infinity is not a JSON number"),
    (b'{"id": 1e400, "label": "smooth", "labeler": "x"}', 400, "out of range"),
    (b'{"id": 1, "label": "smooth", "labeler": "\\ud800"}', 400, "lone surrogate"),
    (b'{"id": 1, "label": "smooth", "labeler": "\xff\xfe"}', 400, "not UTF-8"),
    (b'{"id": 1, "label": "smooth", "labeler": "a\\u0000b"}', 422, "printable"),
    (b'{"id": true, "label": "smooth", "labeler": "x"}', 422, "id"),
    (b'{"id": "1", "label": "smooth", "labeler": "x"}', 422, "id"),
    (b'{"id": 1, "label": "smooth", "labeler": "x", "admin": true}', 422, "Extra inputs"),
    (b'{"id": 1, "label": "smooth", "labeler": "' + b"x" * 65 + b'"}', 422, "at most 64"),
    (b'{"id": 1, "label": "' + b"y" * 65 + b'", "labeler": "x"}', 422, "at most 64"),
    (b'{"id": 1, "label": "smooth", "labeler": "x", "request_id": "a b"}', 422, "request_id"),
    (b'[' * 5000 + b']' * 5000, 400, "nested too deeply"),
    (b'{"id": ' + b"9" * 5000 + b', "label": "smooth", "labeler": "x"}', 400, "too long"),
    (b'{"id": 1, "label": "smooth"', 400, "invalid JSON"),
    (b'', 400, "invalid JSON"),
    (b'{"id": 1}', 422, "either a label or skip"),
]


def test_malformed_requests_are_one_line_4xx_on_a_connection_that_stays_open(single) -> None:
    live = single
    before = live.store.count_events()
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=20)
    assert raw_get(conn, "/healthz")[0] == 200
    sock = conn.sock
    for body, status, words in MALFORMED:
        got, reply = raw_post(conn, "/api/answer", body)
        assert got == status and words in reply["detail"], (body[:80], got, reply)
        assert "\n" not in reply["detail"] and len(reply["detail"]) <= 300
        # the same connection carries on (it was reset after a 500)
        assert raw_get(conn, "/healthz")[0] == 200 and conn.sock is sock
    for path in ("/api/object/1000000000000000000000000000000", "/api/object/9223372036854775808",
                 "/api/stamp/99999999999999999999999.png", "/api/history?limit=100000000000000000000000"):
        got, data = raw_get(conn, path)
        assert got == 422 and "9223372036854775807" in json.loads(data)["detail"], path
    got, reply = raw_post(conn, "/api/answer", b'{"id": 1, "label": "smooth", "labeler": "x"}', {"Content-Type": "text/plain"})
    assert got == 415 and "application/json" in reply["detail"]
    # an undo whose request_id belongs to an answer (it was a 500)
    assert raw_post(conn, "/api/answer", b'{"id": 5, "label": 1, "labeler": "amy", "request_id": "q1"}')[0] == 200
    got, reply = raw_post(conn, "/api/undo", b'{"labeler": "amy", "request_id": "q1"}')
    assert got == 409 and "not an undo" in reply["detail"]
    assert conn.sock is sock
    assert live.store.count_events() == before + 1  # only the one good answer was written
    # a surrogate that reaches an error message still encodes (pydantic's own path, without the JSON check)
    assert httpx.get(f"{live.url}/api/object/%ED%A0%80").status_code == 422


def read_reply(s: socket.socket) -> str:
    """What the server sent until it closed the connection."""
    data = b""
    while True:
        try:
            part = s.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        data += part
    return data.decode()


def test_body_size_is_limited(single) -> None:
    live = single
    # a declared 50 MB body is refused from its headers, before any of it is read
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as s:
        s.sendall(b"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 52428800\r\n\r\n{\"id\": 1,")
        head = read_reply(s)
    assert head.startswith("HTTP/1.1 413") and f"over {MAX_BODY} bytes" in head
    # a 20 MB label is not echoed back: its body is cut off at the limit
    label = "x" * (20 * 1024 * 1024)
    r = httpx.post(f"{live.url}/api/answer", json={"id": 1, "label": label, "labeler": "amy"})
    assert r.status_code == 413 and len(r.content) < 200
    # a chunked body without a length is counted as it comes
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as s:
        s.sendall(b"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 8192
        try:
            for _ in range(4):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and closed
        head = read_reply(s)
    assert head.startswith("HTTP/1.1 413")
    assert live.store.count_events() == 0
    assert httpx.post(f"{live.url}/api/answer", json={"id": 1, "label": "smooth", "labeler": "amy"}).status_code == 200


def test_request_ids_are_per_labeler(team) -> None:
    live, tok = team
    alice, bob = live.client(tok["alice"]), live.client(tok["bob"])
    a = alice.post("/api/answer", json={"id": 7, "label": "merger", "request_id": "req-1"}).json()["saved"]
    b = bob.post("/api/answer", json={"id": 7, "label": "star", "request_id": "req-1"}).json()["saved"]
    assert (a["labeler"], a["label"]) == ("alice", "merger") and (b["labeler"], b["label"]) == ("bob", "star")
    assert a["event_id"] != b["event_id"]  # bob's request was his own, not a replay of alice's
    again = alice.post("/api/answer", json={"id": 7, "label": "merger", "request_id": "req-1"})
    assert again.status_code == 200 and again.json()["saved"] == a  # a retry is stored once
    r = alice.post("/api/answer", json={"id": 8, "label": "merger", "request_id": "req-1"})
    assert r.status_code == 409 and "already used by alice" in r.json()["detail"]
    r = alice.post("/api/undo", json={"request_id": "req-1"})
    assert r.status_code == 409 and "not an undo" in r.json()["detail"]
    u1 = alice.post("/api/undo", json={"request_id": "undo-1"}).json()["undone"]
    assert alice.post("/api/undo", json={"request_id": "undo-1"}).json()["undone"] == u1  # a retried undo
    assert live.store.count_events() == 3


def test_csv_exports_neutralise_formulas(single, tmp_path) -> None:
    live = single
    names = ['=HYPERLINK("http://evil.example","click")', "+1+1", "-2+3", "@SUM(A1)", "plain"]
    for k, name in enumerate(names):
        assert httpx.post(f"{live.url}/api/answer", json={"id": k, "label": "smooth", "labeler": name}).status_code == 200
    for text in (httpx.get(f"{live.url}/api/labels.csv").text, httpx.get(f"{live.url}/api/answers.csv").text,
                 live.store.export_csv(tmp_path / "l.csv").read_text(),
                 live.store.export_csv(tmp_path / "h.csv", history=True).read_text()):
        cells = {row["labeler"] for row in csv.DictReader(io.StringIO(text))}
        assert cells == {"'" + n for n in names[:4]} | {"plain"}, cells
    assert [csv_cell(x) for x in ("\tcmd", "\rcmd", "a=b", 5, -5)] == ["'\tcmd", "'\rcmd", "a=b", 5, -5]
    # names with a tab or a line break inside never get in at all
    for name in ("a\tb", "a\rb", "a\nb"):
        r = httpx.post(f"{live.url}/api/answer", json={"id": 9, "label": "smooth", "labeler": name})
        assert r.status_code == 422 and "printable" in r.json()["detail"]


V1_ANSWERS = """CREATE TABLE answers (event_id INTEGER PRIMARY KEY AUTOINCREMENT, object_id INTEGER NOT NULL,
    action TEXT NOT NULL, label TEXT, labeler TEXT NOT NULL, timestamp TEXT NOT NULL, round INTEGER,
    model_version TEXT, undoes INTEGER REFERENCES answers(event_id), request_id TEXT UNIQUE)"""


def test_a_schema_1_store_is_upgraded_in_place(tmp_path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_ANSWERS + """;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1'), ('classes', '["a", "b"]');
        INSERT INTO answers VALUES (1, 5, 'label', 'a', 'alice', 't1', 1, 'r0', NULL, 'req-1');
        INSERT INTO answers VALUES (2, 6, 'skip', NULL, 'bob', 't2', 1, 'r0', NULL, NULL);
        INSERT INTO answers VALUES (3, 6, 'undo', NULL, 'bob', 't3', 1, 'r0', 2, 'u-1');""")
    db.commit()
    db.close()
    store = LabelStore(path)
    assert store.get_meta("schema_version") == 2
    assert [(h.event_id, h.action, h.labeler, h.undoes) for h in store.history()] == [
        (1, "label", "alice", None), (2, "skip", "bob", None), (3, "undo", "bob", 2)]
    assert store.labels() == {5: "a"}
    # bob's request id "req-1" is his own now, not alice's
    bob = store.answer(5, "b", "bob", request_id="req-1", queued_only=False)
    assert bob.event_id == 4 and store.answer(5, "a", "alice", request_id="req-1", queued_only=False).event_id == 1
    assert LabelStore(path).count_events() == 4  # opening it again changes nothing


def test_the_labelers_command(tmp_path) -> None:
    store = queued_store(tmp_path / "labels.sqlite")
    def run(*args: str, cli: tuple = ("galframe_hitl.labelers",)) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *cli, *args], capture_output=True, text=True, timeout=120)

    # as a galframe sub-command (no Hydra composition behind it), and as its module
    added = run("add", "alice", "--store", str(tmp_path), "--url", "http://127.0.0.1:9000/", cli=("galframe.cli", "hitl", "labelers"))
    assert added.returncode == 0, added.stderr
    token = next(line.split()[1] for line in added.stdout.splitlines() if line.startswith("token:"))
    assert f"link:  http://127.0.0.1:9000/?token={token}" in added.stdout
    assert run("add", "root", "--admin", "--store", str(store.path)).returncode == 0
    assert store.authenticate(token) == ("alice", "labeler")
    stored = [tuple(r) for r in store._query("SELECT * FROM labelers")]
    assert stored and not any(token in str(v) for row in stored for v in row)  # only its hash is stored
    again = run("add", "alice", "--store", str(store.path))
    assert again.returncode == 2 and "labeler 'alice' exists already" in again.stderr
    bad = run("add", "=cmd", "--store", str(store.path))
    assert bad.returncode == 2 and "starting with a letter or digit" in bad.stderr
    rotated = run("token", "alice", "--store", str(store.path))
    assert rotated.returncode == 0 and store.authenticate(token) is None
    listing = run("list", "--store", str(store.path)).stdout
    assert "alice" in listing and "admin" in listing
    assert run("remove", "alice", "--store", str(store.path)).returncode == 0
    assert [r["name"] for r in store.labelers() if r["revoked"] is None] == ["root"]
    missing = run("list", "--store", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "label store not found" in missing.stderr


# -- in a real browser (Playwright driving Debian's Chromium, as in tests/test_hitl.py) ------------------------
def browser_session():
    from playwright.sync_api import sync_playwright

    from tests.test_hitl import CHROMIUM, CHROMIUM_ARGS

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/install_browser.sh"
    pw = sync_playwright().start()
    return pw, pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def test_html_in_class_names_and_store_strings_is_shown_as_text(tmp_path) -> None:
    classes = ['<img src=x onerror="window.__pwned=1">', "<b>bold</b>", "=cmd", "plain"]
    store = LabelStore(tmp_path / "labels.sqlite")
    store.bind(tmp_path / "no-dataset", classes, range(20))
    store.answer_many([(10, classes[1])], "catalog", round=0)  # a neighbour whose label is HTML
    info = {"probs": {c: 0.25 for c in classes}, "neighbours": [10], "entropy": 1.0}
    store.start_round(1, [{"id": i, "score": 0.5, "info": info} for i in (1, 2)], "<script>window.__pwned=2</script>", "r0")
    live = Live(store)
    pw, browser = browser_session()
    try:
        page = browser.new_page(bypass_csp=True)  # Playwright's waits evaluate strings, which the page's CSP forbids
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{live.url}/?labeler=%3Cimg%20src%3Dx%20onerror%3D%22window.__pwned%3D3%22%3E")
        page.wait_for_function("document.querySelectorAll('#probs tr').length == 4")
        page.wait_for_function("document.querySelectorAll('#neighbours figcaption').length == 1")
        texts = page.locator("#classes button").all_inner_texts()
        assert [t.split(" ", 1)[1] for t in texts] == classes  # the names, literally
        assert page.locator("#probs td").nth(0).inner_text() == classes[0]
        assert page.locator("#neighbours figcaption").inner_text().startswith("<b>bold</b>")
        assert "<script>" in page.inner_text("#model-version")
        assert page.locator("#classes img, #classes b, #probs img, #probs b, #neighbours b, header script").count() == 0
        page.keyboard.press("1")  # answering with such a class works too, and puts no HTML anywhere
        page.wait_for_function("document.getElementById('status').textContent.startsWith('saved')")
        assert page.evaluate("window.__pwned") is None and not errors, errors
        assert store.labels()[1] == classes[0]
        csp = httpx.get(live.url + "/").headers["content-security-policy"]
        assert "default-src 'self'" in csp  # and an injected inline script would not run anyway
    finally:
        browser.close()
        pw.stop()
        live.close()


def test_two_labelers_in_two_browsers_cannot_undo_or_overwrite_each_other(team) -> None:
    live, tok = team
    q = [item["id"] for item in live.store.queue(1)]
    pw, browser = browser_session()
    try:
        pages = {}
        for name in ("alice", "bob"):
            context = browser.new_context(bypass_csp=True)  # its own cookies: its own session
            page = context.new_page()
            page.goto(f"{live.url}/?token={tok[name]}")
            page.wait_for_function("document.querySelectorAll('#classes button').length == 6")
            page.wait_for_function(f"document.getElementById('object-id').textContent == '#{q[0]}'")
            assert page.input_value("#labeler") == name and page.locator("#labeler").get_attribute("readonly") is not None
            assert "token" not in page.url  # the link's token went into an HttpOnly cookie
            pages[name] = page
        alice, bob = pages["alice"], pages["bob"]

        alice.keyboard.press("1")  # alice: smooth for the first galaxy
        alice.wait_for_function(f"document.getElementById('object-id').textContent == '#{q[1]}'")
        bob.keyboard.press("2")  # bob, on the same galaxy: featured_disk, his own answer beside hers
        bob.wait_for_function("document.getElementById('status').textContent.startsWith('saved')")
        opinions = lambda: sorted((a.object_id, a.labeler, a.label) for a in live.store.opinions())  # noqa: E731
        assert opinions() == [(q[0], "alice", "smooth"), (q[0], "bob", "featured_disk")]

        bob.keyboard.press("u")  # bob's undo takes back his answer, never hers
        bob.wait_for_function("document.getElementById('status').textContent.startsWith('undone')")
        assert opinions() == [(q[0], "alice", "smooth")]
        bob.keyboard.press("u")  # nothing of his is left: refused, hers still stands
        bob.wait_for_function("document.getElementById('status').textContent.startsWith('nothing undone: 409')")
        assert opinions() == [(q[0], "alice", "smooth")]
        # what bob's page could send by hand: undo alice's, or answer as alice
        alice_event = next(a.event_id for a in live.store.opinions() if a.labeler == "alice")
        attempts = bob.evaluate(
            """async (eventId) => {
                 const post = (path, body) => fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                            body: JSON.stringify(body)}).then((r) => r.status);
                 return [await post('api/undo', {labeler: 'alice'}), await post('api/undo', {event_id: eventId}),
                         await post('api/answer', {id: %d, label: 'star', labeler: 'alice'}),
                         await fetch('api/answers.csv').then((r) => r.status)];
               }""" % q[0], alice_event)
        assert attempts == [403, 403, 403, 403]
        bob.keyboard.press("3")  # bob answers the galaxy again: edge_on
        bob.wait_for_function("document.getElementById('status').textContent.startsWith('saved')")
        assert opinions() == [(q[0], "alice", "smooth"), (q[0], "bob", "edge_on")]

        admin = browser.new_context(bypass_csp=True).new_page()
        admin.goto(f"{live.url}/?token={tok['root']}")
        admin.wait_for_function("document.getElementById('labeler').value == 'root (admin)'")
        exported = admin.evaluate("fetch('api/answers.csv').then((r) => r.text())")
        rows = [(r["id"], r["label"], r["labeler"]) for r in csv.DictReader(io.StringIO(exported))]
        assert rows == [(str(q[0]), "smooth", "alice"), (str(q[0]), "edge_on", "bob")]
    finally:
        browser.close()
        pw.stop()


def test_the_loops_page_names_its_labelers(tmp_path, capsys) -> None:
    from galframe_hitl.oracle import HitlData, WebOracle

    store = queued_store(tmp_path / "labels.sqlite")
    token = store.add_labeler("alice")
    oracle = WebOracle(HitlData(tmp_path / "no-dataset", tuple(CLASSES)), port=0)
    oracle.start(store)
    try:
        out = capsys.readouterr().out
        assert "Labeling page: http://127.0.0.1:" in out and "named labelers (alice)" in out
        base = oracle.url.rstrip("/")
        assert httpx.get(f"{base}/api/state").status_code == 401
        assert httpx.get(f"{base}/api/state", headers={"X-Galframe-Token": token}).status_code == 200
    finally:
        oracle.close()
