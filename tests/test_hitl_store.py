"""The label store and the labeling server: answers, undo history, CSV, concurrent writers,
a killed server, the token and the 4xx answers to bad requests."""
from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from galframe.errors import ConfigError, DataError

from galframe_hitl.store import LabelStore, StoreError

CLASSES = ["smooth", "featured_disk", "edge_on", "irregular", "merger", "star"]
TOKEN = "s3cret-token-for-tests"


def queued_store(path: Path, ids=range(40), rnd: int = 1) -> LabelStore:
    """A store bound to a (pretend) dataset with pool ids 0..199 and round ``rnd`` asking about ``ids``."""
    store = LabelStore(path)
    store.bind(path.parent / "no-dataset", CLASSES, range(200))
    queue = [{"id": i, "score": 1.0 - 0.01 * k, "info": {"probs": {c: 1 / 6 for c in CLASSES}, "neighbours": []}}
             for k, i in enumerate(ids)]
    store.start_round(rnd, queue, "entropy", "r0-test")
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, port: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "galframe_hitl.webapp", "--store", str(store), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 60
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", headers=headers, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(addr)
    return found


@pytest.fixture()
def server(tmp_path):
    """A labeling server on 127.0.0.1 (the default host) over a store with 40 queued objects."""
    store = queued_store(tmp_path / "labels.sqlite")
    port = free_port()
    proc = start_server(store.path, port)
    yield store, f"http://127.0.0.1:{port}", proc, port
    stop(proc)


# -- the store itself -------------------------------------------------------------
def test_answers_undo_history_and_labelers(tmp_path) -> None:
    store = queued_store(tmp_path / "labels.sqlite", ids=[1, 2, 3, 4])
    a = store.answer(1, "merger", "alice")
    assert (a.object_id, a.label, a.labeler, a.round, a.model_version) == (1, "merger", "alice", 1, "r0-test")
    store.answer(2, "4", "alice")  # a class index is stored as its name
    store.answer(3, None, "bob", skip=True)
    store.answer(1, "star", "bob")  # a second opinion: the latest answer is in force
    assert store.labels() == {1: "star", 2: "merger"}
    assert store.answered_ids() == {1, 2, 3}
    assert store.progress(1) == (3, 4)
    undone = store.undo("bob")  # bob's latest: object 1 -> alice's merger is in force again
    assert (undone.object_id, undone.label) == (1, "star")
    assert store.labels() == {1: "merger", 2: "merger"}
    store.undo("bob")  # then his skip
    assert store.answered_ids() == {1, 2}
    with pytest.raises(StoreError, match="no answer to undo") as err:
        store.undo("bob")
    assert err.value.status == 409
    history = store.history()
    assert [h.action for h in history] == ["label", "label", "skip", "label", "undo", "undo"]
    assert history[4].undoes == history[3].event_id and history[5].undoes == history[2].event_id
    # a retried request is stored once
    first = store.answer(4, "edge_on", "carol", request_id="req-1")
    again = store.answer(4, "edge_on", "carol", request_id="req-1")
    assert first == again and store.count_events() == 7
    assert store.get_meta("schema_version") == 2
    mode = store._conn().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal" and store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_bad_answers_change_nothing(tmp_path) -> None:
    store = queued_store(tmp_path / "labels.sqlite", ids=[1, 2])
    store.answer(1, "smooth", "alice")
    before = (store.count_events(), store.labels())
    for call, status in [
        (lambda: store.answer(999, "smooth", "alice"), 404),  # not queued
        (lambda: store.answer(2, "spiral", "alice"), 422),
        (lambda: store.answer(2, "6", "alice"), 422),  # index out of range
        (lambda: store.answer(2, "smooth", ""), 422),
        (lambda: store.answer(2, "smooth", "alice", skip=True), 422),
    ]:
        with pytest.raises(StoreError) as err:
            call()
        assert err.value.status == status
    assert (store.count_events(), store.labels()) == before


def test_csv_export_import_round_trip(tmp_path) -> None:
    from galframe.data.datamodule import read_labels

    store = queued_store(tmp_path / "labels.sqlite", ids=[1, 2, 3])
    store.answer(1, "merger", "alice")
    store.answer(2, "star", "bob")
    store.answer(3, None, "bob", skip=True)
    out = store.export_csv(tmp_path / "labels.csv")
    rows = list(csv.DictReader(out.open()))
    assert [(r["id"], r["label"], r["labeler"], r["round"]) for r in rows] == [("1", "merger", "alice", "1"), ("2", "star", "bob", "1")]
    frame = read_labels(str(out), CLASSES)  # what training reads (data.labels)
    assert frame["id"].tolist() == [1, 2] and frame["class"].tolist() == [4, 5]
    history = list(csv.DictReader(store.export_csv(tmp_path / "history.csv", history=True).open()))
    assert [r["action"] for r in history] == ["label", "label", "skip"]

    other = LabelStore(tmp_path / "other.sqlite")
    other.bind(tmp_path, CLASSES, range(200))
    assert other.import_csv(out) == 2
    assert other.labels() == {1: "merger", 2: "star"}
    assert {a.labeler for a in other.current()} == {"alice", "bob"}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n5,smooth\n6,spiral\n")
    with pytest.raises(DataError, match=r"bad.csv, line 3: unknown class 'spiral'"):
        other.import_csv(bad)
    bad.write_text("id,label\n5,smooth\n5000,smooth\n")
    with pytest.raises(DataError, match=r"bad.csv, line 3: object id 5000 is not in the pool"):
        other.import_csv(bad)
    bad.write_text("id,class\n5,smooth\n")
    with pytest.raises(DataError, match=r"bad.csv: a labels CSV needs columns 'id' and 'label'"):
        other.import_csv(bad)
    assert other.count_events() == 2  # nothing of a bad file was imported
    # the command-line tool
    res = subprocess.run([sys.executable, "-m", "galframe_hitl.store", "export", str(other.path), str(tmp_path / "x.csv")],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "Wrote 2 labels" in res.stdout
    res = subprocess.run([sys.executable, "-m", "galframe_hitl.store", "import", str(other.path), str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "needs columns 'id' and 'label'" in res.stderr
    with pytest.raises(ConfigError, match="made for classes"):
        other.bind(tmp_path, ["a", "b"], range(10))
    with pytest.raises(ConfigError, match="made for a training split of 200 objects; this composition's has 150"):
        other.bind(tmp_path, CLASSES, range(150))


WORKER = r"""
import sys, time
from galframe_hitl.store import LabelStore
path, name, first, n, t0 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
store = LabelStore(path)
while time.time() < t0:
    time.sleep(0.001)
for k in range(n):
    store.answer(first + k, ["smooth", "merger", "star"][k % 3], name, request_id=f"{name}-{k}")
    store.answer(first + k, ["smooth", "merger", "star"][k % 3], name, request_id=f"{name}-{k}")  # a retry: stored once
    store.answer(first + k, "star", name, request_id=f"shared-{k}")  # every labeler's own request, same id
    if k % 5 == 4:
        store.undo(name, request_id=f"{name}-undo-{k}")
print("done")
"""


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path) -> None:
    store = queued_store(tmp_path / "labels.sqlite", ids=range(200))
    n, workers = 30, 4
    t0 = time.time() + 3.0  # every process starts writing at the same moment
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(store.path), f"w{w}", str(w * n), str(n), str(t0)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(workers)
    ]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and "done" in out, err
    history = store.history()
    ids = [h.event_id for h in history]
    assert len(ids) == len(set(ids))
    per_worker = 2 * n + n // 5  # its labels, its "shared-k" labels and its undos
    assert len(history) == workers * per_worker  # the retries were stored once, the shared ids once per labeler
    rows = store._conn().execute(
        "SELECT labeler, request_id, COUNT(*) FROM answers GROUP BY labeler, request_id HAVING COUNT(*) > 1").fetchall()
    assert rows == []
    shared = store._conn().execute("SELECT COUNT(DISTINCT labeler) FROM answers WHERE request_id = 'shared-3'").fetchone()
    assert shared[0] == workers
    for w in range(workers):
        mine = [h for h in history if h.labeler == f"w{w}"]
        assert len([h for h in mine if h.action == "label"]) == 2 * n
        undone = {h.undoes for h in mine if h.action == "undo"}
        assert len(undone) == n // 5  # each undo took back a distinct answer of its own labeler
        assert all(next(x for x in history if x.event_id == u).labeler == f"w{w}" for u in undone)


# -- the server ---------------------------------------------------------------------
def test_killed_server_loses_no_acknowledged_answer(server) -> None:
    store, url, proc, port = server
    acked: list[dict] = []
    errors: list[str] = []

    def writer() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(40):
                try:
                    r = client.post("/api/answer", json={"id": i, "label": CLASSES[i % 6], "labeler": "alice", "request_id": f"r{i}"})
                except httpx.HTTPError:
                    return  # the server is gone: this answer was never acknowledged
                if r.status_code == 200:
                    acked.append(r.json()["saved"])
                else:
                    errors.append(r.text)

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acked) < 12 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # no shutdown, no checkpoint: killed mid-stream
    proc.wait()
    thread.join()
    assert not errors and len(acked) >= 12
    reopened = LabelStore(store.path)
    events = {a.event_id: a for a in reopened.history()}
    for a in acked:
        assert events[a["event_id"]].object_id == a["object_id"] and events[a["event_id"]].label == a["label"]
    # restarted, the server carries on from what is on disk
    proc2 = start_server(store.path, port)
    try:
        state = httpx.get(f"{url}/api/state").json()
        assert state["round"] == 1 and state["progress"]["done"] == len(events) >= len(acked)
        answered = {q["id"] for q in state["queue"] if q["answer"] is not None}
        assert {a["object_id"] for a in acked} <= answered
        nxt = next(q["id"] for q in state["queue"] if q["answer"] is None)
        assert httpx.post(f"{url}/api/answer", json={"id": nxt, "skip": True, "labeler": "bob"}).status_code == 200
        assert httpx.get(f"{url}/api/state").json()["progress"]["done"] == len(events) + 1
    finally:
        stop(proc2)


def test_server_defaults_to_loopback_and_rejects_bad_requests_unchanged(server) -> None:
    store, url, proc, port = server
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
    client = httpx.Client(base_url=url, timeout=10)
    assert client.post("/api/answer", json={"id": 0, "label": "smooth", "labeler": "alice"}).status_code == 200
    before = (store.count_events(), store.labels())
    bad = [
        ({"id": 12345, "label": "smooth", "labeler": "alice"}, 404),  # unknown id
        ({"id": 1, "label": "spiral", "labeler": "alice"}, 422),  # unknown label
        ({"id": 1, "label": 17, "labeler": "alice"}, 422),
        ({"id": "one", "label": "smooth", "labeler": "alice"}, 422),
        ({"id": 1, "label": "smooth", "skip": True, "labeler": "alice"}, 422),
        ({"id": 1, "label": "smooth"}, 422),  # no labeler
        ({"id": 1, "label": "smooth", "labeler": ""}, 422),
    ]
    for body, status in bad:
        r = client.post("/api/answer", json=body)
        assert r.status_code == status, (body, r.text)
        assert "detail" in r.json()
    assert client.post("/api/undo", json={"labeler": "nobody"}).status_code == 409
    assert client.get("/api/object/12345").status_code == 404
    assert client.get("/api/stamp/1.png").status_code == 404  # no dataset behind this store
    # DNS rebinding and cross-site posts
    assert client.get("/api/state", headers={"Host": "evil.example:80"}).status_code == 403
    r = client.post("/api/answer", json={"id": 1, "label": "smooth", "labeler": "a"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert (store.count_events(), store.labels()) == before


def test_open_bind_needs_a_token_and_every_request_carries_it(tmp_path) -> None:
    from galframe_hitl.oracle import HitlData, WebOracle

    store = queued_store(tmp_path / "labels.sqlite")
    refused = subprocess.run([sys.executable, "-m", "galframe_hitl.webapp", "--store", str(store.path), "--host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "GALFRAME_HITL_TOKEN": ""})
    assert refused.returncode == 2
    assert "--host=0.0.0.0 makes the labeling page reachable from other machines, which needs a token" in refused.stderr
    with pytest.raises(ConfigError, match="oracle.host=0.0.0.0 .* needs a token"):
        WebOracle(HitlData(tmp_path, tuple(CLASSES)), host="0.0.0.0")
    with pytest.raises(ConfigError, match="too short"):
        WebOracle(HitlData(tmp_path, tuple(CLASSES)), host="0.0.0.0", token="abc")
    assert WebOracle(HitlData(tmp_path, tuple(CLASSES))).host == "127.0.0.1"

    port = free_port()
    proc = start_server(store.path, port, "--host", "0.0.0.0", env={"GALFRAME_HITL_TOKEN": TOKEN})
    try:
        url = f"http://127.0.0.1:{port}"
        answer = {"id": 3, "label": "merger", "labeler": "alice"}
        for path in ("/", "/api/state", "/api/labels.csv", "/static/app.js"):
            assert httpx.get(url + path).status_code == 401, path
        assert httpx.post(url + "/api/answer", json=answer).status_code == 401
        assert httpx.post(url + "/api/answer", json=answer, headers={"Authorization": "Bearer wrong-token-123"}).status_code == 401
        assert httpx.post(url + "/api/undo", json={"labeler": "alice"}).status_code == 401
        assert store.count_events() == 0
        assert httpx.post(url + "/api/answer", json=answer, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert httpx.get(url + "/api/state", headers={"X-Galframe-Token": TOKEN}).json()["progress"]["done"] == 1
        with httpx.Client(base_url=url) as browser:  # the page's link carries ?token=, then a cookie does
            page = browser.get("/", params={"token": TOKEN})
            assert page.status_code == 200 and "galframe labeling" in page.text
            assert browser.get("/api/state").status_code == 200
        assert store.labels() == {3: "merger"}
    finally:
        stop(proc)


def test_concurrent_labelers_over_http(server) -> None:
    store, url, proc, port = server
    codes: list[int] = []
    lock = threading.Lock()

    def labeler(w: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for k in range(5):
                r = client.post("/api/answer", json={"id": w * 5 + k, "label": CLASSES[k], "labeler": f"p{w}",
                                                     "request_id": f"p{w}-{k}"})
                with lock:
                    codes.append(r.status_code)

    threads = [threading.Thread(target=labeler, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 40
    assert store.count_events() == 40 and len(store.labels()) == 40
    assert httpx.get(f"{url}/api/state").json()["progress"] == {"done": 40, "total": 40}
    csv_text = httpx.get(f"{url}/api/labels.csv").text.splitlines()
    assert csv_text[0] == "id,label,labeler,timestamp,round,model_version" and len(csv_text) == 41
