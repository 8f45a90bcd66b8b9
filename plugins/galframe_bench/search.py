"""``galframe bench search``: similarity search and anomaly ranking over embeddings (galframe_search).

Protocol (fixed before any number was looked at):

* Data: ``data=sim_galaxy10`` with ``n`` objects (profile), ``seed`` (profile, default 0: not the
  pretraining draw, which was seed 1) and rare objects injected at ``rare`` (default 1 in 1,000 strong
  lenses and 1 in 1,000 ring galaxies, ``sim.rare``; docs/sim_galaxy10.md), simulated once and cached.
* Embeddings, each of the same asinh-scaled images (the LVM's scaling), averaged over ``views``
  rotations/flips (1: as ``galframe embed`` stores by default):
  ``lvm``: the shipped pretrained weights (``weights``, default ``lvm_tiny-g10``) through
  ``galframe.load_model(...).embed``, the vectors ``galframe embed`` indexes;
  ``resnet18_random``: ResNet18 at random initialisation (torch seed 0), its pooled embedding;
  ``pca``: pixel PCA (scikit-learn, randomized, fit on up to ``pca_fit`` objects, as many components as the
  LVM's dimension).  Each goes into an exact cosine index (:class:`galframe_search.Index`).
* precision@10: for each of the query seeds (``seeds``, 5), ``n_queries`` objects drawn at random among
  the non-rare ones; the fraction of each one's 10 nearest neighbours (itself left out) with its Galaxy10
  ``class`` (the majority-vote label), averaged over the queries; reported as the mean over seeds with a
  95% t-interval over seeds (and each seed's value).  Chance: the sum of the squared class fractions.
  The headline uses the vectors as stored; also reported: the same with the physical ``true_class``, and
  with each embedding whitened (standardised, PCA-whitened to 99% of the variance, L2-normalised, with the
  whole set's statistics and no labels, as the fewshot suite's features).
* Lenses from examples: for each seed, ``known`` (5) lenses drawn at random are the query ("more like
  these": ``Index.similar`` of their prototype, themselves left out); the number of the other lenses among
  the 100 returned, and that over the number of other lenses (recall@100); mean and interval over seeds.
* Anomaly ranking (LVM index): ``galframe_search.rank`` unsupervised (IsolationForest seeded by the
  seed, and kNN distance); recall of all lenses in its top 1% (ceil(N / 100) objects).  Then a simulated
  person scores, each of ``rounds`` (3) rounds, the ``per_round`` top-ranked objects not yet scored: 5 for
  a lens, 0 for anything else, written as a CSV of id, score and passed through ``rank``'s scores path
  (``galframe anomaly scores=...``, weight ``weight``); recall of the lenses in the top 1% of the ranking
  after the third round's scores (lenses the person scored count: they were found).  Mean over seeds.
* Scale: ``scale_n`` (1,000,000) synthetic unit vectors of the LVM's dimension (a mixture of 1,000
  Gaussian clusters), indexed by ``build_index`` with ``index=auto`` (IVF-PQ at this size, as
  ``galframe embed`` would choose); the build time (train + add), the index's size (faiss serialised) and
  the process's peak memory; latency of ``n_latency`` single queries (k=10) one at a time (median ms per
  query) and of the same queries as one batch; recall@10 against exact search of those queries.

Writes ``<out>/search.json``, ``search.md`` and ``examples.png`` (example queries and their neighbours), and
the ``search`` entry of ``benchmarks/results/headline.json``.
"""
from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError, DataError

METHODS = ("lvm", "resnet18_random", "pca")
LABELS = {"lvm": "pretrained LVM", "resnet18_random": "ResNet18, random init", "pca": "pixel PCA"}
DEFAULTS: dict[str, Any] = {
    "data": "sim_galaxy10", "n": 20000, "seed": 0, "rare": {"lens": 0.001, "ring": 0.001}, "views": 1,
    "seeds": [0, 1, 2, 3, 4], "n_queries": 200, "k": 10, "known": 5, "top": 100, "rounds": 3, "per_round": 50,
    "weight": 0.5, "pca_fit": 5000, "scale_n": 1_000_000, "n_latency": 200, "batch": 128, "workers": None,
    "headline": True,
}


def interval(values: Sequence[float], level: float = 0.95) -> list[Optional[float]]:
    """A t-interval of the mean of ``values`` (over seeds); [mean, mean] for a single value."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return [float(v.mean()), float(v.mean())] if len(v) else [None, None]
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return [float(v.mean() - half), float(v.mean() + half)]


def summary(values: Sequence[float]) -> dict:
    return {"mean": float(np.mean(values)), "ci95": interval(values), "per_seed": [float(v) for v in values]}


# -- data and embeddings ----------------------------------------------------------------------------------------
def load_data(p: Mapping[str, Any], log: Callable[[str], None]) -> tuple[Path, Any]:
    """The cached simulated dataset with the rare objects injected, and its catalog."""
    import pandas as pd

    from galframe.build import compose_dict
    from galframe.sim import cached_dataset

    rates = dict(p["rare"] or {})
    over = [f"data={p['data']}", f"data.n={int(p['n'])}", f"data.seed={int(p['seed'])}", "logger=none"]
    if rates:
        over.append("data.sim.rare={" + ", ".join(f"{k}: {float(v)}" for k, v in rates.items()) + "}")
    data = compose_dict("train", over)["data"]
    t0 = time.perf_counter()
    root = cached_dataset(data, workers=p.get("workers"), progress=False)
    catalog = pd.read_parquet(root / "catalog.parquet")
    if "rare" not in catalog.columns:
        raise DataError(f"{root}: the catalog has no 'rare' column (the search bench needs sim.rare lenses).")
    catalog["rare"] = catalog["rare"].fillna("").astype(str)
    log(f"search: {root} ({len(catalog)} objects, {int((catalog['rare'] == 'lens').sum())} lenses, "
        f"{int((catalog['rare'] == 'ring').sum())} rings; {time.perf_counter() - t0:.0f} s)")
    return root, catalog


def shards(root: Path) -> list[tuple[int, Path]]:
    manifest = json.loads((root / "manifest.json").read_text())
    return [(k, root / str(s["file"])) for k, s in enumerate(manifest["shards"])]


def read_images(root: Path, catalog: Any, rows: Sequence[int]) -> dict[int, np.ndarray]:
    """The images (bands, H, W) of catalog ``rows``."""
    import h5py

    files = dict(shards(root))
    out = {}
    for r in rows:
        shard, index = int(catalog["shard"].iloc[r]), int(catalog["index"].iloc[r])
        with h5py.File(files[shard], "r") as h5:
            out[int(r)] = np.asarray(h5["images"][index], dtype=np.float32)
    return out


class Embedders:
    """The three embeddings of image batches (flux in nanomaggies), the same scaling and views for all."""

    def __init__(self, weights: str, views: int) -> None:
        import torch

        import galframe
        from galframe.build import compose_dict
        from galframe.model import build_backbone
        from galframe.notebook import _encoder

        if views not in (1, 4, 8):
            raise ConfigError(f"search.views={views}: 1, 4 or 8 rotations/flips.")
        self.views = views
        self.lvm = galframe.load_model(weights)
        enc = self.lvm.encoder
        torch.manual_seed(0)
        net = build_backbone(compose_dict("train", ["backbone=resnet18"])["backbone"], enc.data_info)
        self.resnet = _encoder(net, enc.scaling, enc.data_info).eval()
        self.scaling = enc.scaling

    def _views(self, images: np.ndarray) -> list[np.ndarray]:
        from galframe_search.index import dihedral_views

        views = dihedral_views(images)  # rotations 0, 90, 180, 270 deg, each then flipped
        return [np.ascontiguousarray(v) for v in {1: views[:1], 4: views[::2], 8: views}[self.views]]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        out: dict[str, list] = {"lvm": [], "resnet18_random": [], "pixels": []}
        with torch.inference_mode():
            for v in self._views(images):
                x = torch.as_tensor(v)
                out["lvm"].append(self.lvm.embed(v, batch_size=len(v)))
                out["resnet18_random"].append(self.resnet(x)["embedding"].float().numpy())
                out["pixels"].append(self.scaling(x).float().numpy().reshape(len(v), -1))
        return {k: np.mean(v, axis=0).astype(np.float32) for k, v in out.items()}


def embed_all(root: Path, catalog: Any, embedders: Embedders, p: Mapping[str, Any], log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The three embeddings of every object, in catalog order (shard by shard), PCA fit on a random subset."""
    import h5py
    from sklearn.decomposition import PCA

    parts: dict[str, list] = {"lvm": [], "resnet18_random": [], "pixels": []}
    t0 = time.perf_counter()
    batch, ids = int(p["batch"]), []
    for _, path in shards(root):
        with h5py.File(path, "r") as h5:
            images = np.asarray(h5["images"][:], dtype=np.float32)
            ids.append(np.asarray(h5["ids"][:]))
        for s in range(0, len(images), batch):
            for k, v in embedders(images[s : s + batch]).items():
                parts[k].append(v)
    if not np.array_equal(np.concatenate(ids), catalog["id"].to_numpy()):
        raise DataError(f"{root}: the shards' ids are not in the catalog's order.")
    out = {k: np.concatenate(v) for k, v in parts.items()}
    pixels = out.pop("pixels")
    rng = np.random.default_rng(0)
    fit = pixels[rng.choice(len(pixels), min(len(pixels), int(p["pca_fit"])), replace=False)]
    pca = PCA(n_components=min(out["lvm"].shape[1], *fit.shape), svd_solver="randomized", random_state=0).fit(fit)
    out["pca"] = pca.transform(pixels).astype(np.float32)
    log(f"  embedded {len(pixels)} objects x {embedders.views} view(s) with {', '.join(METHODS)} in "
        f"{time.perf_counter() - t0:.0f} s")
    return out


# -- the measures ------------------------------------------------------------------------------------------------
def neighbours(index: Any, rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest catalog rows of each of ``rows`` (each itself left out), (len(rows), k)."""
    from galframe_search.index import prepare

    _, found = index.index.search(prepare(index.vectors[rows], index.metric), k + 1)
    return np.stack([[r for r in f if r != q and r >= 0][:k] for q, f in zip(rows, found)])


def precision_at_k(indexes: Mapping[str, Any], labels: np.ndarray, candidates: np.ndarray, p: Mapping[str, Any]) -> dict:
    k, per_seed = int(p["k"]), {m: [] for m in indexes}
    for seed in p["seeds"]:
        rows = np.random.default_rng(int(seed)).choice(candidates, min(int(p["n_queries"]), len(candidates)), replace=False)
        for m, index in indexes.items():
            per_seed[m].append(float((labels[neighbours(index, rows, k)] == labels[rows][:, None]).mean()))
    return {m: summary(v) for m, v in per_seed.items()}


def lens_search(indexes: Mapping[str, Any], is_lens: np.ndarray, p: Mapping[str, Any]) -> dict:
    """From ``known`` lenses, how many of the others are among the ``top`` returned, per method and seed."""
    lenses = np.flatnonzero(is_lens)
    known, top = int(p["known"]), int(p["top"])
    if len(lenses) <= known:
        raise DataError(f"search: {len(lenses)} lenses in the data, not more than the {known} known examples; "
                        "raise search.n or search.rare.lens.")
    found = {m: [] for m in indexes}
    for seed in p["seeds"]:
        chosen = np.random.default_rng(1000 + int(seed)).choice(lenses, known, replace=False)
        for m, index in indexes.items():
            table = index.similar([index.ids[r] for r in chosen], k=top)
            rows = index.rows(list(table["id"].astype(str)))
            found[m].append(int(is_lens[rows].sum()))
    others = len(lenses) - known
    return {m: {"lenses_in_top": summary(v), "recall": summary([x / others for x in v])} for m, v in found.items()} | \
        {"n_lenses": int(len(lenses)), "other_lenses": int(others), "known": known, "top": top}


def anomaly_loop(index: Any, is_lens: np.ndarray, p: Mapping[str, Any], out: Path) -> dict:
    """Recall of the lenses in the top 1% of the anomaly ranking, unsupervised and after the scoring rounds."""
    import pandas as pd

    from galframe_search import rank

    n_top = int(math.ceil(len(index) / 100))
    lens_ids = {index.ids[r] for r in np.flatnonzero(is_lens)}
    result: dict[str, list] = {"unsupervised": [], "after_rounds": [], "found_by_person": [], "seconds": []}
    per_round = []
    for seed in p["seeds"]:
        t0 = time.perf_counter()
        ranking = rank(index, seed=int(seed))
        result["unsupervised"].append(len(lens_ids & set(ranking["id"].head(n_top))) / len(lens_ids))
        scores: dict[str, float] = {}
        path = out / f"scores-seed{seed}.csv"
        rounds = []
        for _ in range(int(p["rounds"])):
            todo = [i for i in ranking["id"] if i not in scores][: int(p["per_round"])]
            scores.update({i: 5.0 if i in lens_ids else 0.0 for i in todo})
            pd.DataFrame({"id": list(scores), "score": list(scores.values())}).to_csv(path, index=False)
            ranking = rank(index, path, weight=float(p["weight"]), seed=int(seed))
            rounds.append(len(lens_ids & set(ranking["id"].head(n_top))) / len(lens_ids))
        per_round.append(rounds)
        result["after_rounds"].append(rounds[-1])
        result["found_by_person"].append(sum(1 for i, s in scores.items() if s > 0))
        result["seconds"].append(round(time.perf_counter() - t0, 1))
    return {"top": n_top, "n_lenses": len(lens_ids), "unsupervised": summary(result["unsupervised"]),
            "after_rounds": summary(result["after_rounds"]), "recall_per_round": per_round,
            "found_by_person": result["found_by_person"], "scored_per_round": int(p["per_round"]),
            "rounds": int(p["rounds"]), "seconds_per_seed": result["seconds"]}


def synthetic(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """``n`` unit vectors in ``dim`` dimensions from a mixture of Gaussian clusters (the same clusters for
    every ``seed``, which draws the members)."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        out[s : s + m] = centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, dim), dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def scale(dim: int, p: Mapping[str, Any], log: Callable[[str], None]) -> dict:
    """Build time, size, memory and query latency of the index ``galframe embed`` picks at ``scale_n`` objects."""
    import faiss

    from galframe_search.index import build_index

    n = int(p["scale_n"])
    x = synthetic(n, dim, 0)
    queries = synthetic(int(p["n_latency"]), dim, 1)  # new members of the same clusters
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    index, info = build_index(x, "cosine")
    build_s = time.perf_counter() - t0
    rss1 = _rss_mb()
    index_mb = len(faiss.serialize_index(index)) / 2**20
    q = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))
    index.search(q[:5], 10)  # warm
    single = []
    for row in q:
        t = time.perf_counter()
        index.search(row[None], 10)
        single.append((time.perf_counter() - t) * 1000.0)
    t = time.perf_counter()
    _, approx = index.search(q, 10)
    batch_ms = (time.perf_counter() - t) * 1000.0 / len(q)
    exact = faiss.IndexFlatIP(dim)
    exact.add(x)
    _, truth = exact.search(q, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, truth)]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {"n": n, "dim": dim, **info, "build_s": round(build_s, 1), "index_mb": round(index_mb, 1),
              "vectors_mb": round(x.nbytes / 2**20, 1), "rss_added_by_build_mb": round(rss1 - rss0, 1),
              "peak_rss_mb": round(peak, 1), "query_ms": float(np.median(single)), "query_ms_mean": float(np.mean(single)),
              "query_ms_in_batch": float(batch_ms), "recall_at_10_vs_exact": recall, "n_queries": len(q),
              "threads": int(faiss.omp_get_max_threads())}
    log(f"  {n:,} synthetic {dim}-d vectors: {info['kind']} built in {build_s:.0f} s, {index_mb:.0f} MiB; "
        f"{result['query_ms']:.2f} ms per query (recall@10 vs exact {recall:.2f})")
    return result


# -- the suite ---------------------------------------------------------------------------------------------------
def run(p: Mapping[str, Any], out: Path, weights: Optional[str], headline: Optional[Path] = None,
        log: Callable[[str], None] = lambda m: print(m, flush=True)) -> dict:
    """The search suite with profile settings ``p`` (missing ones: :data:`DEFAULTS`); writes into ``out``."""
    from galframe_search import Index
    from galframe_tasks.fewshot import Whitener

    unknown = sorted(set(p) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"bench search: unknown setting(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)}).")
    p = {**DEFAULTS, **dict(p)}
    if not weights:
        raise ConfigError("bench search: weights=null; the suite compares the pretrained LVM (weights=lvm_tiny-g10).")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    root, catalog = load_data(p, log)
    embedders = Embedders(str(weights), int(p["views"]))
    vectors = embed_all(root, catalog, embedders, p, log)
    ids = catalog[["id"]].copy()
    ids["id"] = ids["id"].astype(str)
    indexes = {m: Index.from_vectors(vectors[m], ids, "cosine", root=f"{root.name}:{m}") for m in METHODS}
    labels = catalog["class"].to_numpy(int)
    rare = catalog["rare"].to_numpy(str)
    is_lens = rare == "lens"
    t = time.perf_counter()
    precision = precision_at_k(indexes, labels, np.flatnonzero(rare == ""), p)
    true_precision = precision_at_k(indexes, catalog["true_class"].to_numpy(int), np.flatnonzero(rare == ""), p)
    whitened = {m: Index.from_vectors(Whitener().fit(v).transform(v), ids, "cosine", root=f"{root.name}:{m}-whitened")
                for m, v in vectors.items()}
    precision_whitened = precision_at_k(whitened, labels, np.flatnonzero(rare == ""), p)
    frac = np.bincount(labels, minlength=10) / len(labels)
    log("  precision@10: " + ", ".join(f"{m} {v['mean']:.3f}" for m, v in precision.items()) +
        f" (chance {float((frac ** 2).sum()):.3f}; {time.perf_counter() - t:.0f} s)")
    lenses = lens_search(indexes, is_lens, p)
    log(f"  lenses among the top {lenses['top']} from {lenses['known']} known: " + ", ".join(
        f"{m} {lenses[m]['lenses_in_top']['mean']:.1f} of {lenses['other_lenses']}" for m in METHODS))
    t = time.perf_counter()
    anomaly = anomaly_loop(indexes["lvm"], is_lens, p, out)
    log(f"  anomaly top 1% lens recall: unsupervised {anomaly['unsupervised']['mean']:.2f}, after {p['rounds']} rounds "
        f"{anomaly['after_rounds']['mean']:.2f} ({time.perf_counter() - t:.0f} s)")
    big = scale(int(vectors["lvm"].shape[1]), p, log)
    grid = examples(indexes, catalog, root, out / "examples.png", p)
    meta = {"data": {"path": str(root), "n": int(len(catalog)), "seed": int(p["seed"]), "rare": p["rare"],
                     "n_lenses": int(is_lens.sum()), "n_rings": int((rare == "ring").sum()),
                     "class_fractions": frac.tolist(), "chance_precision": float((frac ** 2).sum())},
            "weights": str(weights), "views": int(p["views"]), "dim": {m: int(v.shape[1]) for m, v in vectors.items()},
            "profile": p, "seconds": round(time.perf_counter() - t_start, 1)}
    result = {**meta, "precision_at_10": precision, "precision_at_10_true_class": true_precision,
              "precision_at_10_whitened": precision_whitened,
              "lenses_from_examples": lenses, "anomaly": anomaly, "scale": big, "examples": str(grid)}
    (out / "search.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "search.md").write_text(markdown(result))
    entry = headline_entry(result)
    if headline is not None:
        from galframe_bench.fewshot import write_headline

        write_headline(headline, "search", entry)
    log(f"search: {json.dumps(entry)}; wrote {out / 'search.md'}")
    return result


def headline_entry(result: Mapping[str, Any]) -> dict:
    return {"precision_at_10": {m: round(result["precision_at_10"][m]["mean"], 4) for m in METHODS},
            "lens_recall_at_100": round(result["lenses_from_examples"]["lvm"]["recall"]["mean"], 4),
            "anomaly_recall_top1pct": {"unsupervised": round(result["anomaly"]["unsupervised"]["mean"], 4),
                                       "after_3_rounds": round(result["anomaly"]["after_rounds"]["mean"], 4)},
            "query_ms_at_1M": round(result["scale"]["query_ms"], 3)}


def _ci(s: Mapping[str, Any], fmt: str = "{:.3f}") -> str:
    lo, hi = s["ci95"]
    return f"{fmt.format(s['mean'])} [{fmt.format(lo)}, {fmt.format(hi)}]"


def markdown(r: Mapping[str, Any]) -> str:
    d, lz, an, sc = r["data"], r["lenses_from_examples"], r["anomaly"], r["scale"]
    seeds = len(r["profile"]["seeds"])
    lines = [f"On sim_galaxy10 ({d['n']:,} objects, seed {d['seed']}, {d['n_lenses']} strong lenses and {d['n_rings']} ring "
             f"galaxies injected at {d['rare']}); {r['views']} view(s); mean over {seeds} seeds with a 95% t-interval over "
             "seeds in brackets. Protocol: the docstring of plugins/galframe_bench/search.py.", "",
             f"| embedding | precision@10, same class (chance {d['chance_precision']:.3f}) | same true class | "
             f"same class, whitened | lenses among the top {lz['top']} from {lz['known']} known (of {lz['other_lenses']}) | "
             f"recall@{lz['top']} |", "|---|---|---|---|---|---|"]
    for m in METHODS:
        lines.append(f"| {LABELS[m]} | {_ci(r['precision_at_10'][m])} | {_ci(r['precision_at_10_true_class'][m])} | "
                     f"{_ci(r['precision_at_10_whitened'][m])} | "
                     f"{_ci(lz[m]['lenses_in_top'], '{:.1f}')} | {_ci(lz[m]['recall'])} |")
    lines += ["", f"Anomaly ranking of the LVM index (IsolationForest + kNN distance), recall of the {an['n_lenses']} lenses "
              f"in its top 1% ({an['top']} objects):", "",
              "| ranking | lens recall in the top 1% |", "|---|---|",
              f"| unsupervised | {_ci(an['unsupervised'])} |",
              f"| after {an['rounds']} rounds of {an['scored_per_round']} scored (lens 5, other 0) | {_ci(an['after_rounds'])} |",
              "", f"Lenses the simulated person found in those rounds, per seed: {an['found_by_person']}.", "",
              f"At {sc['n']:,} synthetic {sc['dim']}-d embeddings ({sc['kind']}, nlist {sc.get('nlist')}, nprobe "
              f"{sc.get('nprobe')}, {sc['threads']} threads):", "",
              "| build (train + add) | index size | memory the build added | the vectors (float32) | "
              "ms per query (one at a time, median) | ms per query (in a batch) | recall@10 vs exact |",
              "|---|---|---|---|---|---|---|",
              f"| {sc['build_s']:.0f} s | {sc['index_mb']:.0f} MiB | {sc['rss_added_by_build_mb']:.0f} MiB | "
              f"{sc['vectors_mb']:.0f} MiB | {sc['query_ms']:.2f} | {sc['query_ms_in_batch']:.3f} | "
              f"{sc['recall_at_10_vs_exact']:.3f} |", "",
              "The index is what a search holds beyond the catalog; `galframe_search.Index` keeps the vectors too "
              "(for prototypes and the kNN anomaly score).", "",
              "Class: the majority-vote Galaxy10 label; true class: the physical one. Whitened: each embedding "
              "standardised, PCA-whitened (99% of the variance) and L2-normalised with the whole set's statistics "
              "(no labels), as the fewshot suite's features; the other columns use the vectors as `galframe embed` "
              "stores them.", ""]
    return "\n".join(lines)


def examples(indexes: Mapping[str, Any], catalog: Any, root: Path, path: Path, p: Mapping[str, Any], shown: int = 7) -> Path:
    """A PNG grid: rows of a query (first tile) and its nearest neighbours, labelled by class (lenses marked)."""
    from galframe.sim.votes import GALAXY10
    from galframe_search.similar import image_grid

    names = {k: "".join(w[0] for w in c.split("_")) for k, c in enumerate(GALAXY10)}
    rare = catalog["rare"].to_numpy(str)

    def label(r: int) -> str:
        return names[int(catalog["class"].iloc[r])] + (f" {rare[r].upper()}" if rare[r] else "")

    rng = np.random.default_rng(0)
    plain = np.flatnonzero(rare == "")
    queries = [("lvm", [int(r)]) for r in rng.choice(plain, 3, replace=False)]
    queries.append(("pca", queries[0][1]))
    lenses = np.flatnonzero(rare == "lens")
    if len(lenses) > 1:
        queries.append(("lvm", [int(r) for r in rng.choice(lenses, min(int(p["known"]), len(lenses) - 1), replace=False)]))
    rows_shown = []
    for method, q in queries:
        index = indexes[method]
        table = index.similar([index.ids[r] for r in q], k=shown)
        rows_shown.append((method, q, index.rows(list(table["id"].astype(str)))))
    needed = sorted({r for _, q, found in rows_shown for r in [q[0], *found]})
    images = read_images(root, catalog, needed)
    tiles = []
    for method, q, found in rows_shown:
        head = f"{LABELS[method]}: " + (f"{len(q)} lenses'" if len(q) > 1 else label(q[0]))
        tiles.append((head, images[q[0]]))
        tiles += [(f"{k + 1}: {label(r)}", images[r]) for k, r in enumerate(found)]
    bands = json.loads((root / "manifest.json").read_text())["bands"]
    return image_grid(tiles, list(bands), path, columns=shown + 1)
