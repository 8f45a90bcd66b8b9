"""The human-in-the-loop loop end to end: a catalog oracle over two rounds (stopped and resumed), and a
person labeling in a real browser (Playwright driving Debian's Chromium) while the loop waits."""
from __future__ import annotations

import csv
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from galframe.errors import ConfigError
from tests.helpers import ROOT, galframe_cli

from galframe_hitl.store import LabelStore

SHORT = ["data.batch_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.progress_bar=false", "logger=none"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def compose_hitl(*overrides: str) -> dict:
    from galframe.build import compose, to_dict

    return to_dict(compose("hitl", overrides, fresh=True))


def train_split(dataset: Path):
    from galframe.data.datamodule import GalaxyDataModule

    dm = GalaxyDataModule(compose_hitl(f"data.path={dataset}")["data"], progress=False)
    dm.prepare()
    return dm, dm.splits["train"].reset_index(drop=True)


def only_run_dir(runs: Path) -> Path:
    dirs = [p for p in (runs / "hitl").iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_two_round_catalog_loop_stops_and_resumes(tiny_dataset, tmp_path) -> None:
    from galframe_hitl.oracle import CatalogOracle, HitlData

    dm, train = train_split(tiny_dataset)
    truth = dict(zip(train["id"].tolist(), train["class_name"].tolist()))
    # a round 0 that a person had started on the web page before the loop was stopped: 5 of 20 answered
    store = LabelStore(tmp_path / "labels.sqlite")
    store.bind(dm.root, dm.manifest["classes"], train["id"])
    seed_ids = train["id"].iloc[::10].tolist()[:20]
    store.start_round(0, [{"id": i} for i in seed_ids], "random (seed labels)", None)
    for i in seed_ids[:5]:
        store.answer(i, truth[i], "alice")

    common = [f"data.path={tiny_dataset}", f"hitl.store={store.path}", "hitl.initial=20", "hitl.per_round=8",
              "acquisition=class_balanced", "oracle.noise=0.25", "oracle.seed=3", *SHORT]
    first = galframe_cli("hitl", "hitl.rounds=1", *common, env={"GALFRAME_RUNS": str(tmp_path / "runs1")})
    assert first.returncode == 0, first.stderr[-3000:]
    run1 = only_run_dir(tmp_path / "runs1")
    rounds = store.rounds()
    assert [(r["round"], r["state"], r["n_labels"]) for r in rounds] == [(0, "trained", 20), (1, "trained", 28)]
    assert rounds[1]["model_version"] == rounds[0]["trained_version"]  # round 1 was chosen by round 0's model
    assert rounds[1]["acquisition"] == "class_balanced(entropy, equal)"
    # round 0: alice's five answers kept, the catalog answered only the other fifteen
    by_round0 = [a for a in store.history() if a.round == 0]
    assert [a.labeler for a in by_round0] == ["alice"] * 5 + ["catalog(noise=0.25)"] * 15
    oracle = CatalogOracle(HitlData(dm.root, tuple(dm.manifest["classes"])), noise=0.25, seed=3)
    catalog_answers = [a for a in store.history() if a.labeler.startswith("catalog")]
    assert all(a.label == oracle.answer(a.object_id) for a in catalog_answers)  # seeded noise, reproducible
    flipped = [a for a in catalog_answers if a.label != truth[a.object_id]]
    assert 0 < len(flipped) < len(catalog_answers)
    queue1 = [q["id"] for q in store.queue(1)]
    assert len(queue1) == 8 and not set(queue1) & set(seed_ids)
    assert all(set(q["info"]["probs"]) == set(dm.manifest["classes"]) and q["info"]["neighbours"] for q in store.queue(1))
    # what each round trained on: exactly the labels in the store at that time
    labels1 = list(csv.DictReader((run1 / "round_01" / "labels.csv").open()))
    assert len(labels1) == 28 and json.loads((run1 / "round_01" / "metrics.json").read_text())["n_train"] == 28
    assert "warm start from" in first.stdout and (run1 / "round_01" / "checkpoints" / "best.ckpt").is_file()
    report = json.loads((run1 / "hitl_rounds.json").read_text())
    assert report["rare_classes"] == ["merger", "star"]
    assert [(r["round"], r["n_labels"]) for r in report["rounds"]] == [(0, 20), (1, 28)]
    assert all(0.0 <= r["macro_auc"] <= 1.0 and r["rare_recall"] is not None for r in report["rounds"])
    assert (run1 / "learning_curve.png").stat().st_size > 10_000
    assert "macro AUC" in first.stdout and "rare recall" in first.stdout  # the table

    # resumed with one more round: rounds 0 and 1 are not asked or trained again
    events_before = store.count_events()
    second = galframe_cli("hitl", "hitl.rounds=2", f"hitl.resume={store.path}", f"data.path={tiny_dataset}",
                          "hitl.per_round=8", "acquisition=class_balanced", "oracle.noise=0.25", "oracle.seed=3",
                          f"hitl.export={tmp_path / 'final.csv'}", *SHORT, env={"GALFRAME_RUNS": str(tmp_path / "runs2")})
    assert second.returncode == 0, second.stderr[-3000:]
    run2 = only_run_dir(tmp_path / "runs2")
    assert sorted(p.name for p in run2.glob("round_*")) == ["round_02"]
    assert store.count_events() == events_before + 8
    assert [(r["round"], r["n_labels"]) for r in store.rounds()] == [(0, 20), (1, 28), (2, 36)]
    assert not set(q["id"] for q in store.queue(2)) & (set(queue1) | set(seed_ids))
    assert [r["round"] for r in json.loads((run2 / "hitl_rounds.json").read_text())["rounds"]] == [0, 1, 2]
    exported = list(csv.DictReader((tmp_path / "final.csv").open()))
    assert len(exported) == 36 and {r["id"] for r in exported} == {str(i) for i in store.labels()}


def test_hitl_refuses_compositions_it_cannot_run(tiny_dataset, tmp_path) -> None:
    from galframe_hitl.loop import Loop

    base = [f"data.path={tiny_dataset}", f"hitl.store={tmp_path / 'x.sqlite'}", *SHORT]
    cases = [
        (["acquisition=bald"], "uses MC dropout, and tasks.classify.dropout is 0: set tasks.classify.dropout=0.3"),
        (["acquisition=ensemble"], "compares ensemble members: set hitl.ensemble=3"),
        (["data.n_labeled=50"], "data.n_labeled is set, but in hitl the loop chooses"),
        (["hitl.task=regress"], "hitl.task='regress' is not among the selected tasks"),
        (["hitl.per_round=0"], "hitl.per_round=0: must be at least 1"),
        (["oracle=web", "oracle.host=0.0.0.0", "oracle.token=null"], "oracle.host=0.0.0.0 makes the labeling page reachable"),
        (["oracle.noise=1.5"], r"oracle.noise=1.5: a probability in \[0, 1\]"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            Loop(compose_hitl(*base, *overrides), tmp_path / "run")
    # a composition with BALD's requirement met is accepted
    Loop(compose_hitl(*base, "acquisition=bald", "tasks.classify.dropout=0.3"), tmp_path / "run")
    typo = galframe_cli("hitl", "hitl.per_rond=5")
    assert typo.returncode == 2 and "Did you mean 'hitl.per_round'?" in typo.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the loop exited while waiting for {what}: {proc.stderr.read()[-3000:]}")
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_web_labeling_in_a_browser_while_the_loop_waits(tiny_dataset, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run scripts/install_browser.sh"
    dm, train = train_split(tiny_dataset)
    seed = train.groupby("class_name").head(2)  # twelve starting labels, two per class
    seed_csv = tmp_path / "seed.csv"
    seed[["id", "class_name"]].rename(columns={"class_name": "label"}).to_csv(seed_csv, index=False)
    store_path, port = tmp_path / "labels.sqlite", free_port()
    loop = subprocess.Popen(
        [sys.executable, "-m", "galframe.cli", "hitl", "oracle=web", f"oracle.port={port}", "oracle.poll_s=0.2",
         f"data.path={tiny_dataset}", f"hitl.store={store_path}", f"hitl.import_labels={seed_csv}", "hitl.initial=12",
         "hitl.rounds=1", "hitl.per_round=6", "hitl.neighbours=4", "acquisition=class_balanced", *SHORT],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
        env={**os.environ, "GALFRAME_RUNS": str(tmp_path / "runs")},
    )
    try:
        def round_one_served():
            if not store_path.exists() or LabelStore(store_path).open_round() != 1:
                return False
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(round_one_served, 400, "round 1 on the labeling page", loop)
        store = LabelStore(store_path)
        version = store.round_info(0)["trained_version"]
        queue = store.queue(1)
        assert len(queue) == 6 and all(q["answer"] is None for q in queue)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            # bypass_csp: Playwright's waits evaluate strings, which the page's Content-Security-Policy forbids
            page = browser.new_page(viewport={"width": 1100, "height": 720}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/?labeler=alice")
            page.wait_for_function("document.querySelectorAll('#probs tr').length == 6")
            page.wait_for_function("document.querySelectorAll('#neighbours figure').length == 4")
            page.wait_for_function("document.getElementById('stamp').complete && document.getElementById('stamp').naturalWidth == 64")
            assert page.inner_text("#progress-text") == "0 / 6"
            assert page.inner_text("#object-id") == f"#{queue[0]['id']}"
            assert "entropy" in page.inner_text("#uncertainty")
            neighbour_labels = page.locator("#neighbours figcaption").all_inner_texts()
            assert all(t.split("\n")[0] in dm.manifest["classes"] for t in neighbour_labels)

            page.click("#classes button[data-label=merger]")  # by click
            page.wait_for_function(f"document.getElementById('object-id').textContent == '#{queue[1]['id']}'")
            page.keyboard.press("2")  # by key: featured_disk
            page.keyboard.press("s")  # skip the third
            page.keyboard.press("u")  # undo the skip
            page.wait_for_function("document.getElementById('status').textContent.startsWith('undone')")
            assert page.inner_text("#progress-text") == "2 / 6"
            assert page.inner_text("#object-id") == f"#{queue[2]['id']}"  # back on the undone galaxy
            page.click("#bands button[data-view=r]")  # a single band on demand
            page.wait_for_function("document.getElementById('stamp').src.includes('band=r') && document.getElementById('stamp').naturalWidth == 64")
            if os.environ.get("GALFRAME_HITL_SCREENSHOT"):
                page.click("#bands button[data-view=rgb]")
                page.wait_for_timeout(300)
                page.screenshot(path=os.environ["GALFRAME_HITL_SCREENSHOT"])

            rows = sqlite3.connect(store_path).execute(
                "SELECT event_id, object_id, action, label, labeler, round, model_version, undoes, timestamp "
                "FROM answers WHERE round = 1 ORDER BY event_id").fetchall()
            assert [(r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
                (queue[0]["id"], "label", "merger", "alice", 1, version),
                (queue[1]["id"], "label", "featured_disk", "alice", 1, version),
                (queue[2]["id"], "skip", None, "alice", 1, version),
                (queue[2]["id"], "undo", None, "alice", 1, version),
            ]
            assert rows[3][7] == rows[2][0] and all(r[8] for r in rows)  # the undo points at the skip
            assert LabelStore(store_path).progress(1) == (2, 6)

            for _ in range(4):  # the rest by keyboard, typed without waiting
                page.keyboard.press("1")
            page.wait_for_function("document.getElementById('progress-text').textContent == '6 / 6'")
            assert not errors, errors
            browser.close()

        out, err = loop.communicate(timeout=400)  # the loop retrains on the new labels and finishes
        assert loop.returncode == 0, err[-3000:]
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    store = LabelStore(store_path)
    assert store.round_info(1)["state"] == "trained" and store.round_info(1)["n_labels"] == 18
    labels = store.labels()
    assert [labels[q["id"]] for q in queue] == ["merger", "featured_disk", "smooth", "smooth", "smooth", "smooth"]
    assert "Labeling page: http://127.0.0.1:" in out
    run_dir = only_run_dir(tmp_path / "runs")
    assert [r["n_labels"] for r in json.loads((run_dir / "hitl_rounds.json").read_text())["rounds"]] == [12, 18]
