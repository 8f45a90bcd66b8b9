"""Embeddings as a product (galframe_search): exact search is brute force, dihedral-invariant queries,
prototype queries, anomaly ranking re-ranked by a person's scores, `galframe embed` resuming after a kill,
one-line errors."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from galframe.errors import ConfigError, DataError
from galframe_search import Index, build_index, rank
from tests.helpers import ROOT

MODEL = "lvm_tiny-g10"
N = 24


def _cube(path: Path, image: np.ndarray) -> None:
    header = fits.Header()
    header["BANDS"], header["BUNIT"] = "grz", "nanomaggy"
    fits.PrimaryHDU(np.asarray(image, np.float32), header).writeto(path)


@pytest.fixture(scope="module")
def cutouts(cache_dir, tmp_path_factory) -> Path:
    """N simulated 64 x 64 grz cutouts, one FITS file each (obj00 ...)."""
    from galframe.build import compose_dict
    from galframe.sim import simulate

    data = compose_dict("train", [f"data.n={N}", "data.seed=4"])["data"]
    sims = simulate(data, tmp_path_factory.mktemp("data") / "search", progress=False, workers=1)
    with h5py.File(Path(sims) / "shard-00000.h5", "r") as h5:
        images = np.asarray(h5["images"][:N], dtype=np.float32)
    root = tmp_path_factory.mktemp("cutouts")
    for k, image in enumerate(images):
        _cube(root / f"obj{k:02d}.fits", image)
    return root


def _embed(cutouts: Path, out: Path, *extra: str) -> dict:
    from galframe.build import compose_dict
    from galframe_search.embed import run

    cfg = compose_dict("embed", [f"ckpt={MODEL}", "reader@data=fits", f"data.path={cutouts}", "data.shard_size=4",
                                 f"out={out}", "progress=false", "device=cpu", *extra])
    return run(cfg)


@pytest.fixture(scope="module")
def index_dir(cutouts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "south"
    summary = _embed(cutouts, out)
    assert summary["n"] == N and summary["kind"] == "flat" and summary["rejects"] == 0
    return out


def test_exact_search_is_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(5, 16)).astype(np.float32)
    for metric in ("cosine", "l2"):
        index, info = build_index(x, metric)
        assert info["kind"] == "flat"
        _, rows = index.search(np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True)) if metric == "cosine" else q, 10)
        if metric == "cosine":
            xn = x / np.linalg.norm(x, axis=1, keepdims=True)
            brute = np.argsort(-(q @ xn.T), axis=1)[:, :10]
        else:
            brute = np.argsort(((q[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :10]
        np.testing.assert_array_equal(rows, brute)
    index, info = build_index(x, "l2", exact_max=100)  # chosen by size: an inverted file above exact_max
    assert info["kind"] == "ivf" and index.ntotal == 300
    assert build_index(rng.normal(size=(400, 16)).astype(np.float32), "l2", exact_max=100, pq_min=350)[1]["kind"] == "ivfpq"


def test_similar_by_id_matches_the_index_vectors(index_dir) -> None:
    index = Index.open(index_dir)
    assert len(index) == N and index.vectors.shape[1] == json.loads((index_dir / "index.json").read_text())["dim"]
    table = index.similar("obj03", k=5)
    assert len(table) == 5 and "obj03" not in set(table["id"]) and table["rank"].tolist() == [1, 2, 3, 4, 5]
    v = index.vectors / np.linalg.norm(index.vectors, axis=1, keepdims=True)
    sims = v @ v[index.ids.index("obj03")]
    sims[index.ids.index("obj03")] = -np.inf
    assert table["id"].tolist() == [index.ids[i] for i in np.argsort(-sims)[:5]]
    np.testing.assert_allclose(table["similarity"], np.sort(sims)[::-1][:5], rtol=1e-4, atol=1e-5)
    proto = index.similar(["obj03", "obj07"], k=4)  # more like these: neither of them among the answers
    assert len(proto) == 4 and not {"obj03", "obj07"} & set(proto["id"])


def test_dihedral_invariant_query_gives_the_same_neighbours_for_a_rotated_image(index_dir, cutouts, tmp_path) -> None:
    index = Index.open(index_dir)
    image = fits.getdata(cutouts / "obj05.fits").astype(np.float32)
    turned = np.ascontiguousarray(np.rot90(image, 1, axes=(-2, -1))[..., ::-1])
    plain = index.similar(image, k=8, include_query=True)
    rotated = index.similar(turned, k=8, include_query=True)
    assert plain["id"].tolist() == rotated["id"].tolist() and plain["id"].iloc[0] == "obj05"
    _cube(tmp_path / "turned.fits", turned)
    from_file = index.similar(str(tmp_path / "turned.fits"), k=8, include_query=True)
    assert from_file["id"].tolist() == plain["id"].tolist()


def test_similar_command_writes_the_table_and_the_image_grid(index_dir, tmp_path, capsys) -> None:
    from galframe.build import compose_dict
    from galframe_search.similar import run

    out = tmp_path / "near.parquet"
    run(compose_dict("similar", [f"index={index_dir}", "like=obj02", "k=6", f"out={out}"]))
    table = pd.read_parquet(out)
    assert len(table) == 6 and (tmp_path / "near.png").stat().st_size > 1000
    assert "Wrote the 6 nearest objects" in capsys.readouterr().out


def test_anomaly_ranking_changes_after_a_persons_scores(index_dir) -> None:
    index = Index.open(index_dir)
    before = rank(index)
    assert len(before) == N and set(before.columns) >= {"iforest", "knn", "unsupervised", "score"}
    assert before["score"].is_monotonic_decreasing
    ordinary = before["id"].iloc[-4:].tolist()  # the most ordinary objects, found interesting by a person
    boring = before["id"].iloc[:2].tolist()
    after = rank(index, user_scores={**{i: 5 for i in ordinary}, **{i: 0 for i in boring}}, weight=0.7)
    assert after["id"].tolist() != before["id"].tolist()
    position = {oid: r for r, oid in zip(after["rank"], after["id"])}
    assert max(position[i] for i in ordinary) < min(position[i] for i in boring)
    assert after.loc[after["id"].isin(ordinary), "user"].eq(5).all() and after["user"].notna().sum() == 6


def test_embed_resumes_after_a_kill_and_gives_the_same_index(cutouts, index_dir, tmp_path) -> None:
    out = tmp_path / "again"
    args = [sys.executable, "-m", "galframe.cli", "embed", f"ckpt={MODEL}", "data=fits", f"data.path={cutouts}",
            "data.shard_size=2", f"out={out}", "progress=false", "batch_size=2", "device=cpu"]
    done = out / ".catalog.parquet.parts" / "done.jsonl"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if done.is_file() and len(done.read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "index.json").exists()
    again = subprocess.run(args, capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished shard(s) of 12" in again.stdout and f"Indexed {N} objects" in again.stdout
    first, second = Index.open(index_dir), Index.open(out)
    assert second.ids == first.ids
    np.testing.assert_allclose(second.vectors, first.vectors, rtol=1e-5, atol=1e-6)


def test_bad_input_gives_one_line_errors(index_dir, tmp_path) -> None:
    index = Index.open(index_dir)
    with pytest.raises(DataError, match=r"like=obj99: no object with that id .* Did you mean 'obj\d\d'\?"):
        index.similar("obj99")
    with pytest.raises(DataError, match=r"index=.*nowhere: no such index directory"):
        Index.open(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"not a finished embedding index \(no index.json"):
        Index.open(tmp_path)
    with pytest.raises(DataError, match=r"scores run from 0 to 5"):
        rank(index, user_scores={"obj01": 9})
    with pytest.raises(ConfigError, match="out=.*holds a finished index"):
        _embed(tmp_path, index_dir)
    run = subprocess.run([sys.executable, "-m", "galframe.cli", "similar", f"index={tmp_path / 'nowhere'}", "like=obj01"],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert run.returncode != 0 and "no such index directory" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr



def test_index_from_vectors_searches_like_brute_force() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    index = Index.from_vectors(x, pd.DataFrame({"id": [f"o{i}" for i in range(60)]}))
    assert len(index) == 60 and index.meta["kind"] == "flat"
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn[7]
    sims[7] = -np.inf
    assert index.similar("o7", k=5)["id"].tolist() == [f"o{i}" for i in np.argsort(-sims)[:5]]
    with pytest.raises(DataError, match="one row per vector"):
        Index.from_vectors(x, pd.DataFrame({"id": range(10)}))


def test_anomaly_scores_from_a_hitl_label_store(tmp_path) -> None:
    """The labeling page's answers (a HITL store) feed the ranking: numeric labels are scores, or the
    interesting classes score 5 and the others 0; the same ranking as the same scores given as a mapping."""
    from galframe_hitl.store import LabelStore

    rng = np.random.default_rng(5)
    index = Index.from_vectors(rng.normal(size=(80, 6)).astype(np.float32), pd.DataFrame({"id": range(80)}))
    named = LabelStore(tmp_path / "named.sqlite")
    named.bind(tmp_path / "no-dataset", ["boring", "lens", "ring"], range(80))
    named.answer_many([(3, "lens"), (4, "ring"), (5, "boring"), (6, None)], "alice", round=0)  # 6: skipped
    ranked = rank(index, tmp_path / "named.sqlite", interesting=["lens", "ring"], weight=0.6)
    same = rank(index, {3: 5, 4: 5, 5: 0}, weight=0.6)
    pd.testing.assert_frame_equal(ranked, same)
    users = ranked.set_index("id")["user"]
    assert users.notna().sum() == 3 and users[3] == users[4] == 5 and users[5] == 0
    numeric = LabelStore(tmp_path / "numeric.sqlite")
    numeric.bind(tmp_path / "no-dataset", [str(k) for k in range(6)], range(80))
    numeric.answer_many([(10, "4"), (11, "0")], "bob", round=0)
    users = rank(index, str(tmp_path / "numeric.sqlite")).set_index("id")["user"]
    assert users[10] == 4 and users[11] == 0 and users.notna().sum() == 2
    with pytest.raises(DataError, match=r"object 3 is labelled 'lens', not a score 0-5; pass interesting"):
        rank(index, tmp_path / "named.sqlite")
    with pytest.raises(ConfigError, match=r"interesting=lenz: not a class of the label store"):
        rank(index, tmp_path / "named.sqlite", interesting=["lenz"])
    with pytest.raises(DataError, match="no such label store"):
        rank(index, tmp_path / "nowhere.sqlite")

TINY = {"n": 400, "rare": {"lens": 0.03, "ring": 0.01}, "seeds": [0, 1], "n_queries": 40, "known": 3, "top": 20,
        "rounds": 2, "per_round": 8, "pca_fit": 400, "scale_n": 60000, "n_latency": 20, "workers": 2}


def test_bench_search_suite_on_a_tiny_profile(cache_dir, tmp_path) -> None:
    """galframe bench search through the bench's dispatch: the headline schema, sane values, the files, the
    simulated person's scores going through the anomaly module's scores path."""
    from galframe_bench.cli import run

    out = tmp_path / "results" / "bench_tiny"
    cfg = {"suite": "search", "profile": "tiny", "profiles": {"tiny": {"search": TINY}}, "out": str(out),
           "weights": MODEL, "trainer": "cpu", "paths": {"runs": str(tmp_path / "runs")}}
    run(cfg, tmp_path / "run")
    headline = json.loads((tmp_path / "results" / "headline.json").read_text())["search"]
    assert set(headline) == {"precision_at_10", "lens_recall_at_100", "anomaly_recall_top1pct", "query_ms_at_1M"}
    assert set(headline["precision_at_10"]) == {"lvm", "resnet18_random", "pca"}
    assert set(headline["anomaly_recall_top1pct"]) == {"unsupervised", "after_3_rounds"}
    result = json.loads((out / "search" / "search.json").read_text())
    chance = result["data"]["chance_precision"]
    assert all(0.0 <= v <= 1.0 for v in headline["precision_at_10"].values())
    assert headline["precision_at_10"]["lvm"] > chance  # the pretrained embedding groups classes
    n_lenses = result["data"]["n_lenses"]
    assert n_lenses > TINY["known"] and result["lenses_from_examples"]["other_lenses"] == n_lenses - TINY["known"]
    for m in ("lvm", "resnet18_random", "pca"):
        found = result["lenses_from_examples"][m]["lenses_in_top"]["per_seed"]
        assert len(found) == 2 and all(0 <= f <= n_lenses - TINY["known"] for f in found)
        lo, hi = result["precision_at_10"][m]["ci95"]
        assert lo <= result["precision_at_10"][m]["mean"] <= hi
    anomaly = result["anomaly"]
    assert anomaly["top"] == 4 and len(anomaly["recall_per_round"]) == 2 and len(anomaly["recall_per_round"][0]) == 2
    assert 0.0 <= headline["anomaly_recall_top1pct"]["unsupervised"] <= 1.0
    assert 0.0 <= headline["anomaly_recall_top1pct"]["after_3_rounds"] <= 1.0
    # the person's scores: 2 rounds x 8 objects, 5 exactly for the lenses, passed to rank as a table
    scores = pd.read_csv(out / "search" / "scores-seed0.csv")
    catalog = pd.read_parquet(Path(result["data"]["path"]) / "catalog.parquet").set_index("id")
    assert len(scores) == 16 and scores["id"].is_unique and set(scores["score"]) <= {0.0, 5.0}
    assert ((scores["score"] == 5) == (catalog.loc[scores["id"], "rare"].to_numpy() == "lens")).all()
    assert anomaly["found_by_person"][0] == int((scores["score"] == 5).sum())
    scale = result["scale"]
    assert scale["n"] == 60000 and scale["kind"] == "ivf" and scale["build_s"] > 0 and scale["index_mb"] > 0
    assert 0 < headline["query_ms_at_1M"] == pytest.approx(scale["query_ms"], abs=1e-3)
    assert 0.5 <= scale["recall_at_10_vs_exact"] <= 1.0
    assert (out / "search" / "examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "Similarity search and anomaly ranking" in report and "search/examples.png" in report
    assert "precision@10" in (out / "search" / "search.md").read_text()
