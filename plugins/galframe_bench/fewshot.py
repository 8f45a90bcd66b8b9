"""Label efficiency under the few-shot protocol (docs/fewshot_protocol.md): macro AUC against labels.

On the imbalanced simulated morphology set (``data=sim_galaxy10``: majority-vote labels of simulated
volunteers), for each label budget and seed, every method sees labels only through a
:class:`~galframe_bench.protocol.LabelBudget`, and the test split is scored once per method, budget
and seed:

* ``ResNet18 (scratch)``: ``galframe train backbone=resnet18`` on a uniform draw of the budget, a fixed
  schedule, no validation labels, the final weights (``select=last``);
* ``LVM probe``: class-balanced logistic regression on the frozen pretrained LVM's features
  (multi-stage pooled, averaged over the 8 rotations/flips, whitened with the unlabelled pool's
  statistics), on the same uniform draws;
* ``LVM + DST``: the few-shot classify head (logistic + label spreading over the unlabelled pool);
* ``LVM + DST + HITL``: the same head, its labels chosen by the ``coldstart`` acquisition round by
  round (typical objects of uncovered clusters first, then class discovery and class-balanced
  margin), answered by the catalog oracle into a real SQLite label store;
* ablations: the HITL loop with the logistic head alone, a random-init LVM and random ResNet18
  features through the same head and loop (what the pretraining adds), and the random-draw DST.

Reported: macro AUC with bootstrap intervals, per-class AUC, unlabelled classes, labels to macro AUC
0.9 per method with an interval over seeds, and the ratio to ResNet18's.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from galframe_bench.protocol import LabelBudget, bootstrap_macro_auc, check_trained_overrides, score

RESNET = "ResNet18 (scratch)"
PROBE = "LVM probe (frozen features, random labels)"
DST = "LVM + DST (semi-supervised head, random labels)"
HITL = "LVM + DST + HITL"
FINETUNE = "LVM fine-tuned (LP-FT, layer-wise decay)"
HITL_LOGISTIC = "LVM + HITL, logistic head (no semi-supervision)"
RANDOM_LVM = "random-init LVM + DST + HITL"
RANDOM_RESNET = "random ResNet18 features + DST + HITL"
HITL_RANDOM = "LVM + DST, random draws in the HITL loop"
HEADLINE_KEYS = {RESNET: "resnet18", HITL: "lvm_dst_hitl", PROBE: "lvm_probe", FINETUNE: "lvm_finetune"}
LEVEL = 0.9


def compose(overrides: Sequence[str], config_name: str = "train") -> dict:
    """A composed config as plain containers (:func:`galframe.build.compose_dict`)."""
    from galframe.build import compose_dict

    return compose_dict(config_name, overrides)


def crossing(budgets: Sequence[float], aucs: Sequence[float], level: float = LEVEL) -> Optional[float]:
    """Labels at which a curve first reaches ``level`` (interpolated in log labels); None if it never does."""
    pts = sorted(zip(budgets, aucs))
    if pts and pts[0][1] >= level:
        return float(pts[0][0])
    for (n0, a0), (n1, a1) in zip(pts, pts[1:]):
        if a0 < level <= a1:
            t = (level - a0) / (a1 - a0)
            return float(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))))
    return None


def scores(prob: np.ndarray, y: np.ndarray, rare: Sequence[int]) -> dict[str, float]:
    """Macro one-vs-rest AUC over the classes present, the mean AUC of the rare classes, accuracy."""
    s = score(prob, y, rare, None)
    return {k: s[k] for k in ("macro_auc", "rare_auc", "accuracy")}


class Features:
    """Whitened few-shot features of the training pool and the test split for one backbone."""

    def __init__(self, name: str, train: np.ndarray, test: np.ndarray) -> None:
        self.name, self.train, self.test = name, train, test


def features(name: str, backbone_cfg: Mapping[str, Any], info: Any, dm: Any, scaling_cfg: Mapping[str, Any],
             views: int, cache: Path, log: Callable[[str], None]) -> Features:
    """Embed both splits (cached in ``cache``), whiten with the training pool's statistics (no labels)."""
    import torch

    from galframe.data.scaling import build_scaling
    from galframe.model import build_backbone
    from galframe_tasks.fewshot import Whitener, embed

    path = cache / f"features-{name}.npz"
    if path.is_file():
        z = np.load(path)
        raw_train, raw_test = z["train"], z["test"]
    else:
        torch.manual_seed(0)
        backbone = build_backbone(backbone_cfg, info)
        scaling = build_scaling(scaling_cfg, list(info.bands))
        t0 = time.perf_counter()
        raw_train, ids_train = embed(backbone, scaling, dm.dataset("train"), views=views)
        raw_test, ids_test = embed(backbone, scaling, dm.dataset("test"), views=views)
        if not (np.array_equal(ids_train, dm.splits["train"]["id"].to_numpy())
                and np.array_equal(ids_test, dm.splits["test"]["id"].to_numpy())):
            raise RuntimeError("embedding order differs from the split catalogs")
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, train=raw_train, test=raw_test)
        log(f"  embedded {len(raw_train) + len(raw_test)} stamps with {name} x {views} views in {time.perf_counter() - t0:.0f} s")
    w = Whitener().fit(raw_train)
    return Features(name, w.transform(raw_train), w.transform(raw_test))


def _fit_predict(head: str, n_classes: int, f: Features, rows: np.ndarray, y: np.ndarray) -> np.ndarray:
    from galframe_tasks.fewshot import FewShotHead

    pool = np.delete(f.train, rows, axis=0)
    return FewShotHead(n_classes, head=head).fit(f.train[rows], y, pool=pool).predict(f.test)


def random_draw_rows(method: str, f: Features, head: str, labels: np.ndarray, draws: Mapping[tuple[int, int], np.ndarray],
                     y_test: np.ndarray, rare: list[int], n_classes: int, keep: Callable) -> list[dict]:
    out = []
    for (budget, seed), rows in sorted(draws.items()):
        budget_guard = LabelBudget(labels, budget, method)
        y = budget_guard.reveal(rows)
        if len(set(y.tolist())) < 2:
            continue  # a draw with one class cannot train a classifier
        prob = _fit_predict(head, n_classes, f, rows, y)
        out.append({"budget": budget, "seed": seed, **score(prob, y_test, rare, y)})
        keep(method, budget, seed, prob)
    return out


def hitl_rows(method: str, f: Features, head: str, acquisition_spec: Any, budgets: Sequence[int], seed: int,
              root: Path, classes: list[str], ids: np.ndarray, labels: np.ndarray, y_test: np.ndarray, rare: list[int],
              workdir: Path, keep: Callable) -> list[dict]:
    """One HITL loop: rounds that end exactly at each budget; the acquisition and the store are galframe_hitl's."""
    from galframe_hitl.acquisition import PoolOutputs, build_acquisition
    from galframe_hitl.oracle import CatalogOracle, HitlData
    from galframe_hitl.store import LabelStore

    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / f"labels-{method.split()[0].lower()}-{abs(hash(method)) % 10**6}-seed{seed}.sqlite"
    db.unlink(missing_ok=True)
    store = LabelStore(db)
    store.bind(str(root), classes, ids)
    oracle = CatalogOracle(HitlData(Path(root), tuple(classes)))
    acquisition = build_acquisition(dict(acquisition_spec) if isinstance(acquisition_spec, Mapping) else str(acquisition_spec))
    guard = LabelBudget(labels, max(budgets), method)
    row_of = {int(i): k for k, i in enumerate(ids)}
    rows: list[dict] = []
    prob_pool = None
    done = 0
    for r, budget in enumerate(sorted(budgets)):
        k = budget - done
        lab_rows = np.asarray([row_of[i] for i in store.labels()], dtype=np.int64)
        pool_rows = np.setdiff1d(np.arange(len(ids)), lab_rows)
        counts = np.bincount(labels[lab_rows], minlength=len(classes)) if len(lab_rows) else np.zeros(len(classes), int)
        pool = PoolOutputs(ids=ids[pool_rows], classes=tuple(classes),
                           probs=None if prob_pool is None else prob_pool[pool_rows],
                           embeddings=f.train[pool_rows], labeled_embeddings=f.train[lab_rows] if len(lab_rows) else None,
                           labeled_counts=counts)
        pick = acquisition.select(pool, k, np.random.default_rng([seed, r]))
        queue = [{"id": int(i)} for i in pool.ids[pick]]
        guard.reveal([row_of[q["id"]] for q in queue])  # the oracle answers only within the budget
        store.start_round(r, queue, acquisition.describe(), None)
        oracle.ask(store, r, queue)
        labelled = store.labels()
        lab_rows = np.asarray([row_of[i] for i in labelled], dtype=np.int64)
        y = np.asarray([classes.index(v) for v in labelled.values()])
        done = len(lab_rows)
        if len(set(y.tolist())) < 2:
            continue
        from galframe_tasks.fewshot import FewShotHead

        pool_x = np.delete(f.train, lab_rows, axis=0)
        model = FewShotHead(len(classes), head=head).fit(f.train[lab_rows], y, pool=pool_x)
        prob = model.predict(f.test)
        prob_pool = model.predict(f.train)
        rows.append({"budget": done, "round": r, "seed": seed, **score(prob, y_test, rare, y)})
        keep(method, done, seed, prob)
    store.close()
    return rows


def _epochs(budget: int, batch: int, min_steps: int, min_epochs: int) -> int:
    per_epoch = max(1, math.ceil(budget / batch))
    return max(min_epochs, math.ceil(min_steps / per_epoch))


def _summarise(rows: list[dict], probs: Mapping[tuple[str, int], list[np.ndarray]], method: str, y_test: np.ndarray) -> list[dict]:
    out = []
    for b in sorted({r["budget"] for r in rows}):
        sel = [r for r in rows if r["budget"] == b]
        m = np.array([r["macro_auc"] for r in sel])
        q = np.array([r["rare_auc"] for r in sel])
        c = {"labels": int(b), "n": len(sel), "macro_auc": float(m.mean()), "macro_auc_std": float(m.std(ddof=1)) if len(m) > 1 else 0.0,
             "rare_auc": float(np.nanmean(q)), "rare_auc_std": float(np.nanstd(q, ddof=1)) if len(q) > 1 else 0.0}
        if sel and "unlabelled_classes" in sel[0]:
            c["unlabelled_classes"] = float(np.mean([r["unlabelled_classes"] for r in sel]))
        if sel and "per_class_auc" in sel[0]:
            keys = sorted({int(k) for r in sel for k in r["per_class_auc"]})
            c["per_class_auc"] = {k: float(np.mean([r["per_class_auc"][k] for r in sel if k in r["per_class_auc"]])) for k in keys}
        if probs.get((method, int(b))):
            c["macro_auc_ci"] = list(bootstrap_macro_auc(probs[(method, int(b))], y_test))
        out.append(c)
    return out


def labels_to_level(rows: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Labels to macro AUC 0.9 of the seed-mean curve, with a 95% interval from resampling seeds."""
    seeds = sorted({r["seed"] for r in rows})
    by = {s: {r["budget"]: r["macro_auc"] for r in rows if r["seed"] == s} for s in seeds}
    budgets = sorted({r["budget"] for r in rows})

    def mean_curve(chosen: Sequence[int]) -> Optional[float]:
        pts = [(b, np.mean([by[s][b] for s in chosen if b in by[s]])) for b in budgets if any(b in by[s] for s in chosen)]
        return crossing([p[0] for p in pts], [p[1] for p in pts])

    point = mean_curve(seeds)
    rng = np.random.default_rng(seed)
    draws = [mean_curve(list(rng.choice(seeds, len(seeds), replace=True))) for _ in range(n_boot)] if len(seeds) > 1 else []
    vals = np.array([np.inf if d is None else d for d in draws])
    ci = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if len(vals) else [None, None]
    ci = [None if (v is None or not np.isfinite(v)) else v for v in ci]
    return {"labels": point, "ci": ci, "samples": vals, "max_budget": int(max(budgets)) if budgets else None}


class _Suite:
    """One fewshot run: the data and its label draws, the frozen-feature methods, the trained networks."""

    def __init__(self, p: Mapping[str, Any], out: Path, weights: Optional[str], lvm: str, trainer: str, runs: Path) -> None:
        self.p, self.out, self.weights, self.lvm, self.trainer, self.runs = p, out, weights, lvm, trainer, runs
        self.rows: dict[str, list[dict]] = {}
        self.probs: dict[tuple[str, int], list[np.ndarray]] = {}
        self.t_start = time.perf_counter()

    @staticmethod
    def log(msg: str) -> None:
        print(msg, flush=True)

    def load_data(self) -> None:
        """The dataset (simulated once and cached), its train/test splits and the uniform label draws."""
        from galframe.data.datamodule import GalaxyDataModule
        from galframe.sim import cached_dataset

        p = self.p
        data = [f"data={p.get('data', 'sim_galaxy10')}", *([f"data.n={int(p['n'])}"] if p.get("n") else []),
                *([f"data.path={p['path']}"] if p.get("path") else [])]
        base = compose([*data, "logger=none"])
        root = cached_dataset(base["data"]) if base["data"].get("path") in (None, "") else Path(base["data"]["path"])
        self.root = root
        self.data = [d for d in data if not d.startswith("data.n=")] + [f"data.path={root}"]
        self.cfg = compose([*self.data, "logger=none"])
        self.dm = GalaxyDataModule(self.cfg["data"], requires=["label"], progress=False)
        self.info = self.dm.info()
        self.classes = list(self.info.classes)
        self.train_cat, self.test_cat = self.dm.splits["train"], self.dm.splits["test"]
        self.labels = self.train_cat["class"].to_numpy(int)  # read only through LabelBudget
        self.ids = self.train_cat["id"].to_numpy()
        self.counts = np.bincount(self.labels, minlength=len(self.classes))  # rare classes from the data's own statistics
        self.rare = [int(k) for k in np.argsort(self.counts, kind="stable")[: int(p.get("rare", 3))]]
        self.y_test = self.test_cat["class"].to_numpy(int)
        self.row_of = {int(i): k for k, i in enumerate(self.ids)}
        self.log(f"fewshot: {root} ({len(self.train_cat)} train / {len(self.test_cat)} test); "
                 f"rare classes {[self.classes[k] for k in self.rare]}")
        self.budgets = [int(b) for b in p["budgets"] if int(b) <= len(self.train_cat)]
        self.seeds = [int(s) for s in p["seeds"]]
        self.draws = {(b, s): self.label_rows(b, s) for b in self.budgets for s in self.seeds}

    def label_rows(self, budget: int, seed: int) -> np.ndarray:
        """The uniform draw ``data.n_labeled=budget data.label_seed=seed`` makes (the one galframe train uses)."""
        from galframe.data.datamodule import GalaxyDataModule

        sub = GalaxyDataModule(compose([*self.data, "logger=none", f"data.n_labeled={budget}", f"data.label_seed={seed}"])["data"],
                               requires=["label"], progress=False)
        sub.prepare()
        return np.array([self.row_of[int(i)] for i in sub.splits["train"]["id"].to_numpy()])

    def keep(self, method: str, budget: int, seed: int, prob: np.ndarray) -> None:
        self.probs.setdefault((method, int(budget)), []).append(prob)

    def embed(self) -> dict[str, Features]:
        """Label-free, deterministic embeddings, cached per dataset, backbone, weights and views."""
        views = int(self.p.get("views", 8))
        scaling_cfg = self.cfg["data"]["scaling"]
        cache = Path(self.p.get("cache") or self.runs / "features") / f"{self.root.name}-views{views}"
        args = (self.info, self.dm, scaling_cfg, views, cache, self.log)
        weights = f"backbone.weights={self.weights if self.weights else 'null'}"
        feats = {"lvm": features(f"{self.lvm}-{_weights_key(self.weights)}",
                                 compose([*self.data, "logger=none", f"backbone={self.lvm}", weights])["backbone"], *args)}
        ablations = list(self.p.get("ablations") or [])
        if "random_lvm" in ablations:
            feats["random_lvm"] = features(f"{self.lvm}-random",
                                           compose([*self.data, "logger=none", f"backbone={self.lvm}"])["backbone"], *args)
        if "random_resnet" in ablations:
            feats["random_resnet"] = features("resnet18-random",
                                              compose([*self.data, "logger=none", "backbone=resnet18"])["backbone"], *args)
        return feats

    def frozen_methods(self, feats: Mapping[str, Features]) -> None:
        """The probe and the DST head on random draws, and the HITL loops (with their ablations)."""
        head = str(self.p.get("head", "ensemble"))
        h = dict(self.p.get("hitl") or {})
        hitl_budgets = [b for b in self.budgets if b <= int(h.get("max_budget", max(self.budgets)))]
        acq = h.get("acquisition", "coldstart")
        common = (self.labels, self.draws, self.y_test, self.rare, len(self.classes), self.keep)
        t0 = time.perf_counter()
        self.rows[PROBE] = random_draw_rows(PROBE, feats["lvm"], "logistic", *common)
        self.rows[DST] = random_draw_rows(DST, feats["lvm"], head, *common)
        ablations = list(self.p.get("ablations") or [])
        loops = [(HITL, "lvm", head, acq)]
        loops += [(HITL_LOGISTIC, "lvm", "logistic", acq)] if "no_semi" in ablations else []
        loops += [(RANDOM_LVM, "random_lvm", head, acq)] if "random_lvm" in ablations else []
        loops += [(RANDOM_RESNET, "random_resnet", head, acq)] if "random_resnet" in ablations else []
        loops += [(HITL_RANDOM, "lvm", head, "random")] if "hitl_random" in ablations else []
        for method, fname, hd, a in loops:
            self.rows[method] = []
            for seed in self.seeds:
                self.rows[method] += hitl_rows(method, feats[fname], hd, a, hitl_budgets, seed, self.root, self.classes,
                                               self.ids, self.labels, self.y_test, self.rare, self.runs / "hitl", self.keep)
            curve = _summarise(self.rows[method], {}, method, self.y_test)
            self.log(f"  {method}: " + ", ".join(f"{c['labels']}: {c['macro_auc']:.3f}" for c in curve))
        self.log(f"  frozen-feature methods done ({time.perf_counter() - t0:.0f} s)")

    def trained(self, method: str, budget: int, seed: int, extra: list[str]) -> None:
        """One network trained under the protocol: no validation labels, the final weights."""
        from galframe.train import run as train_run

        p = self.p
        epochs = _epochs(budget, int(self.cfg["data"]["batch_size"]), int(p["min_steps"]), int(p["min_epochs"]))
        run_dir = self.runs / f"{HEADLINE_KEYS.get(method, 'm')}-n{budget}-s{seed}"
        overrides = [*self.data, *extra, "logger=none", f"trainer={self.trainer}", "trainer.progress_bar=false",
                     f"data.n_labeled={budget}", f"data.label_seed={seed}", f"seed={seed}", f"trainer.max_epochs={epochs}",
                     "trainer.limit_val_batches=0", "select=last"]
        check_trained_overrides(method, overrides)
        drawn = self.draws[(budget, seed)] if (budget, seed) in self.draws else self.label_rows(budget, seed)
        LabelBudget(self.labels, budget, method).reveal(drawn)
        t = time.perf_counter()
        metrics = train_run(compose(overrides), run_dir=run_dir)
        table = _read_predictions(run_dir, self.classes).set_index("id").loc[self.test_cat["id"].to_numpy()]
        prob = table[[f"classify_p_{c}" for c in self.classes]].to_numpy(float)
        row = {"budget": budget, "seed": seed, "epochs": epochs, "seconds": round(time.perf_counter() - t, 1),
               **score(prob, self.y_test, self.rare, self.labels[drawn]),
               "galframe_auroc": metrics.get("test/classify/auroc")}
        self.rows.setdefault(method, []).append(row)
        self.keep(method, budget, seed, prob)
        self.log(f"  {method}: {budget} labels, seed {seed}: macro AUC {row['macro_auc']:.3f} "
                 f"({epochs} epochs, {row['seconds']:.0f} s)")

    def trained_methods(self) -> None:
        """ResNet18 from scratch and (when the profile asks) the fine-tuned LVM, at their budgets."""
        p, n_train = self.p, len(self.train_cat)
        for budget in [int(b) for b in p.get("resnet_budgets", self.budgets) if int(b) <= n_train]:
            for seed in [int(s) for s in p["train_seeds"]]:
                self.trained(RESNET, budget, seed, ["backbone=resnet18"])
        weights = f"backbone.weights={self.weights if self.weights else 'null'}"
        for budget in [int(b) for b in p.get("finetune_budgets") or [] if int(b) <= n_train]:
            for seed in [int(s) for s in p["train_seeds"]]:
                self.trained(FINETUNE, budget, seed, [f"backbone={self.lvm}", weights, "finetune.lr_decay=0.7",
                                                      "optimizer.lr=3e-4"])

    def finish(self, headline: Optional[Path]) -> dict:
        """Curves, the comparison line people look for, and the report files."""
        curves = {m: _summarise(r, self.probs, m, self.y_test) for m, r in self.rows.items() if r}
        for c in curves.get(RESNET, []):
            mine = next((h for h in curves.get(HITL, []) if h["labels"] == c["labels"]), None)
            if mine is not None:
                self.log(f"{c['labels']} labels, held-out macro AUC: LVM + DST + HITL {mine['macro_auc']:.3f} against "
                         f"ResNet18 (scratch) {c['macro_auc']:.3f} ({len(self.test_cat)} objects; curves: "
                         f"{self.out / 'fewshot.png'})")
        meta = {
            "data": {"path": str(self.root), "n_train": int(len(self.train_cat)), "n_test": int(len(self.test_cat)),
                     "classes": self.classes, "rare": [self.classes[k] for k in self.rare],
                     "train_counts": self.counts.tolist()},
            "weights": self.weights, "lvm": self.lvm, "trainer": self.trainer, "profile": dict(self.p),
            "protocol": "docs/fewshot_protocol.md", "seconds": round(time.perf_counter() - self.t_start, 1),
        }
        return report(self.rows, self.out, meta, curves=curves, headline=headline)


def run(p: Mapping[str, Any], out: Path, weights: Optional[str], lvm: str, trainer: str, runs: Path,
        headline: Optional[Path] = None) -> dict:
    """The fewshot suite with profile settings ``p``; writes fewshot.json / .md / .png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    suite = _Suite(p, out, weights, lvm, trainer, runs)
    suite.load_data()
    suite.frozen_methods(suite.embed())
    suite.trained_methods()
    return suite.finish(headline)


def _weights_key(weights: Optional[str]) -> str:
    """A cache key for pretrained weights: the sha256 of the file they resolve to (random: 'random')."""
    if not weights:
        return "random"
    from galframe_lvm.weights import resolve

    file, meta, _ = resolve(str(weights))
    return f"{Path(file).stem}-{(meta.get('sha256') or '')[:12]}"


def _read_predictions(run_dir: Path, classes: Sequence[str]):
    import pandas as pd

    path = run_dir / "predictions_test.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run wrote no test predictions")
    return pd.read_parquet(path, columns=["id", *[f"classify_p_{c}" for c in classes]])


def report(rows: Mapping[str, list[dict]], out: Path, meta: Mapping[str, Any], curves: Optional[Mapping[str, list]] = None,
           headline: Optional[Path] = None) -> dict:
    """JSON, markdown table and PNG curves from per-run rows; labels to AUC 0.9 per method with intervals,
    the ratio to ResNet18's, and the suite's entry in ``benchmarks/results/headline.json``."""
    curves = dict(curves) if curves is not None else {m: _summarise(r, {}, m, np.zeros(0)) for m, r in rows.items() if r}
    levels = {m: labels_to_level(r) for m, r in rows.items() if r}
    need = {m: v["labels"] for m, v in levels.items()}
    ref = need.get(RESNET)
    ratio = {m: (ref / n if (n is not None and ref) else None) for m, n in need.items()}
    ratio_ci = None
    if RESNET in levels and HITL in levels and len(levels[RESNET]["samples"]) and len(levels[HITL]["samples"]):
        k = min(len(levels[RESNET]["samples"]), len(levels[HITL]["samples"]))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = levels[RESNET]["samples"][:k] / levels[HITL]["samples"][:k]
        r = r[~np.isnan(r)]
        if len(r):
            lo, hi = np.percentile(r, [2.5, 97.5])
            ratio_ci = [None if not np.isfinite(v) or v == 0 else float(v) for v in (lo, hi)]
    need_ci = {m: v["ci"] for m, v in levels.items()}
    max_budget = max((v["max_budget"] or 0) for v in levels.values()) if levels else None
    result = {**meta, "level": LEVEL, "curves": curves, "labels_for_auc_0.9": need, "labels_for_auc_0.9_ci": need_ci,
              "ratio_resnet18_over_method": ratio, "ratio_ci": ratio_ci, "runs": dict(rows)}
    (out / "fewshot.json").write_text(json.dumps(result, indent=2, default=_json_default))

    labels = sorted({c["labels"] for cs in curves.values() for c in cs})
    lines = [f"Macro one-vs-rest AUC on {meta['data']['n_test']} held-out objects, mean over seeds (95% bootstrap "
             f"interval over test objects in brackets where computed); protocol: {meta.get('protocol', '-')}.", "",
             "| method | " + " | ".join(f"{b}" for b in labels) + f" | labels for AUC {LEVEL} | ResNet18's / method's |",
             "|---|" + "---|" * (len(labels) + 2)]
    for m, cs in curves.items():
        by = {c["labels"]: c for c in cs}
        cells = []
        for b in labels:
            c = by.get(b)
            if c is None:
                cells.append("-")
            elif "macro_auc_ci" in c:
                cells.append(f"{c['macro_auc']:.3f} [{c['macro_auc_ci'][0]:.3f}, {c['macro_auc_ci'][1]:.3f}]")
            else:
                cells.append(f"{c['macro_auc']:.3f}")
        n = need.get(m)
        top = max(c["labels"] for c in cs)
        ci = need_ci.get(m) or [None, None]
        ci_s = f" [{ci[0]:,.0f}, {ci[1]:,.0f}]" if ci[0] is not None and ci[1] is not None else \
            (f" [{ci[0]:,.0f}, > {top:,}]" if ci[0] is not None else "")
        need_s = f"{n:,.0f}{ci_s}" if n is not None else f"> {top:,}"
        ratio_s = f"{ratio[m]:.1f}x" if ratio.get(m) is not None else "-"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {need_s} | {ratio_s} |")
    lines += ["", "Columns: labels. Unlabelled classes (mean over seeds) at the smallest budget: " + ", ".join(
        f"{m}: {cs[0]['unlabelled_classes']:.1f}" for m, cs in curves.items() if cs and "unlabelled_classes" in cs[0]) + "."]
    (out / "fewshot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for m, cs in curves.items():
        x = [c["labels"] for c in cs]
        for ax, key in zip(axes, ("macro_auc", "rare_auc")):
            ax.errorbar(x, [c[key] for c in cs], yerr=[c[f"{key}_std"] for c in cs], marker="o", ms=4, capsize=3, label=m,
                        lw=2.2 if m in (HITL, RESNET) else 1.0)
    titles = ("macro AUC (held-out), error bars: std over seeds", "rare-class AUC: " + ", ".join(meta["data"]["rare"]))
    for ax, ylabel, title in zip(axes, ("macro AUC", "rare-class AUC"), titles):
        ax.axhline(LEVEL, color="gray", ls="--", lw=1)
        ax.set(xscale="log", xlabel="labels", ylabel=ylabel)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fewshot.png", dpi=100)
    plt.close(fig)

    entry = {"protocol": meta.get("protocol", "docs/fewshot_protocol.md"),
             "seeds": int(max((c["n"] for cs in curves.values() for c in cs), default=0)),
             "labels_to_0.9": {key: need.get(m) for m, key in HEADLINE_KEYS.items()},
             "ratio": ratio.get(HITL), "ratio_ci": ratio_ci,
             "probe_auc_at_1000": next((c["macro_auc"] for c in curves.get(PROBE, []) if c["labels"] == 1000), None),
             "max_budget": max_budget, "profile": (meta.get("profile") or {}).get("name"), "results": str(out / "fewshot.json")}
    if headline is not None:
        write_headline(headline, "fewshot", entry)
    result["headline"] = entry
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    return float(value)


def write_headline(path: Path, key: str, entry: Mapping[str, Any]) -> None:
    """Read-modify-write one suite's key of ``headline.json`` (the other suites' keys are kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = entry
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
    tmp.replace(path)
