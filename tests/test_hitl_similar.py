"""'More like this' on the labeling page: an embedding index of the store's dataset served with the page lists
the nearest neighbours of the object on screen (the API, one-line refusals, and in a real browser)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from galframe.errors import DataError
from galframe_hitl.store import LabelStore
from tests.test_hitl_store import CLASSES
from tests.test_hitl_web import Live, browser_session

N = 40


@pytest.fixture(scope="module")
def dataset(cache_dir, tmp_path_factory) -> Path:
    from galframe.build import compose_dict
    from galframe.sim import simulate

    data = compose_dict("train", [f"data.n={N}", "data.seed=5"])["data"]
    return simulate(data, tmp_path_factory.mktemp("data") / "similar", progress=False, workers=1)


@pytest.fixture(scope="module")
def index_dir(dataset, tmp_path_factory) -> Path:
    """An embedding index of the dataset's objects (random 8-d vectors: the page only searches it)."""
    from galframe_search.embed import write_index

    ids = pd.read_parquet(dataset / "catalog.parquet", columns=["id"])["id"].to_numpy()
    vectors = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
    out = tmp_path_factory.mktemp("index")
    table = pd.DataFrame({"id": ids, **{f"embedding_{j:03d}": vectors[:, j] for j in range(8)}})
    table.to_parquet(out / "catalog.parquet", index=False)
    write_index(out, {"model": "test", "data": {"plugin": "dataset", "path": str(dataset)}}, "cosine", {})
    return out


def nearest(index_dir: Path, object_id: int, k: int) -> list[int]:
    table = pd.read_parquet(index_dir / "catalog.parquet")
    v = table[[c for c in table.columns if c.startswith("embedding_")]].to_numpy()
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    row = int(np.flatnonzero(table["id"].to_numpy() == object_id)[0])
    sims = v @ v[row]
    sims[row] = -np.inf
    return [int(table["id"].iloc[r]) for r in np.argsort(-sims)[:k]]


def store_for(dataset: Path, path: Path) -> LabelStore:
    store = LabelStore(path)
    store.bind(dataset, CLASSES, range(N))
    info = {"probs": {c: 1 / 6 for c in CLASSES}, "neighbours": []}
    store.start_round(1, [{"id": i, "score": 1.0, "info": info} for i in range(10)], "entropy", "r0-test")
    return store


def test_similar_api_lists_the_nearest_with_their_labels(dataset, index_dir, tmp_path) -> None:
    store = store_for(dataset, tmp_path / "labels.sqlite")
    want = nearest(index_dir, 3, 5)
    store.answer_many([(want[1], "merger")], "catalog", round=0)
    live = Live(store, index=index_dir)
    try:
        with live.client() as c:
            r = c.get("/api/similar/3", params={"k": 5})
            assert r.status_code == 200, r.text
            got = r.json()["neighbours"]
            assert [n["id"] for n in got] == want and 3 not in [n["id"] for n in got]
            assert [n["label"] for n in got] == [None, "merger", None, None, None]
            assert all(-1.0 <= n["similarity"] <= 1.0 for n in got)
            assert [n["similarity"] for n in got] == sorted((n["similarity"] for n in got), reverse=True)
            missing = c.get("/api/similar/9999")
            assert missing.status_code == 404 and "no object with that id" in missing.json()["detail"]
            assert c.get("/api/similar/3", params={"k": 0}).status_code == 422
    finally:
        live.close()
    plain = Live(store)  # served without an index: a one-line refusal that says how
    try:
        with plain.client() as c:
            r = c.get("/api/similar/3")
            assert r.status_code == 404 and "--index" in r.json()["detail"]
    finally:
        plain.close()
    with pytest.raises(DataError, match="no such index directory"):
        Live(store, index=tmp_path / "nowhere")


@contextlib.contextmanager
def labeling_page(live: Live):
    """A browser page (Playwright, Chromium) and the list of the script errors it raises."""
    pw, browser = browser_session()
    errors: list[str] = []
    try:
        page = browser.new_page(bypass_csp=True)  # Playwright's waits evaluate strings, which the page's CSP forbids
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
    finally:
        browser.close()
        pw.stop()
        live.close()


def test_more_like_this_in_a_browser(dataset, index_dir, tmp_path) -> None:
    live = Live(store_for(dataset, tmp_path / "labels.sqlite"), index=index_dir)
    with labeling_page(live) as (page, errors):
        page.goto(f"{live.url}/?labeler=alice")
        page.wait_for_function("document.getElementById('object-id').textContent == '#0'")
        page.keyboard.press("m")  # the key; the button does the same
        page.wait_for_function("document.querySelectorAll('#similar figure').length == 8")
        captions = page.locator("#similar figcaption").all_inner_texts()
        assert [int(t.split("\n")[1].split(" ")[0][1:]) for t in captions] == nearest(index_dir, 0, 8)
        assert all(t.startswith("unlabelled\n") and "similarity" in t for t in captions)
        page.wait_for_function("[...document.querySelectorAll('#similar img')].every((i) => i.complete && i.naturalWidth == 64)")
        page.keyboard.press("ArrowRight")  # another object: the list was the previous one's
        page.wait_for_function("document.getElementById('object-id').textContent == '#1'")
        assert page.locator("#similar figure").count() == 0
        page.click("#more")
        page.wait_for_function("document.querySelectorAll('#similar figure').length == 8")
        captions = page.locator("#similar figcaption").all_inner_texts()
        assert [int(t.split("\n")[1].split(" ")[0][1:]) for t in captions] == nearest(index_dir, 1, 8)
        assert not errors, errors
