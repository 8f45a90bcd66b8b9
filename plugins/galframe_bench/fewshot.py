"""Label efficiency: macro and rare-class AUC against the number of labels, per method.

On the imbalanced simulated morphology set (``data=sim_galaxy10`` by default: majority-vote labels,
held-out majority-vote labels), for each label budget and seed:

* ``ResNet18 (scratch)``: ``backbone=resnet18`` trained from random initialisation by ``galframe train``;
* ``LVM + classify (linear probe)``: logistic regression on the frozen pretrained LVM's pooled embedding;
* ``LVM + classify (fine-tuned)``: ``galframe train`` with the pretrained LVM, every weight trained;
* ``LVM + classify + HITL``: the linear probe grown by active learning: an initial random draw, then
  rounds in which a ``galframe_hitl`` acquisition (margin by default) picks the objects the catalog
  oracle labels into a real SQLite label store.

Every method sees the same label subsets (``data.n_labeled`` with ``data.label_seed``) and is scored on
the same held-out split with the same code: macro one-vs-rest AUC over the classes, and the mean
one-vs-rest AUC of the rarest classes of the training split.  Reported: the labels each method needs
to reach macro AUC 0.9 (interpolated in log labels) and its ratio to ResNet18's.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

RESNET, PROBE, FINETUNE, HITL = ("ResNet18 (scratch)", "LVM + classify (linear probe)", "LVM + classify (fine-tuned)",
                                 "LVM + classify + HITL")
LEVEL = 0.9


def compose(overrides: Sequence[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from galframe.cli import normalise_overrides

    if GlobalHydra.instance().is_initialized():
        cfg = hydra_compose("train", overrides=normalise_overrides(list(overrides)))
    else:
        with initialize_config_module("galframe.conf", version_base="1.3"):
            cfg = hydra_compose("train", overrides=normalise_overrides(list(overrides)))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


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
    """Macro one-vs-rest AUC over the classes present, and the mean AUC of the rare classes."""
    from sklearn.metrics import roc_auc_score

    auc = {k: float(roc_auc_score(y == k, prob[:, k])) for k in range(prob.shape[1]) if 0 < (y == k).sum() < len(y)}
    rare_aucs = [auc[k] for k in rare if k in auc]
    return {"macro_auc": float(np.mean(list(auc.values()))), "rare_auc": float(np.mean(rare_aucs)) if rare_aucs else float("nan"),
            "accuracy": float((prob.argmax(1) == y).mean())}


def _embed(backbone: Any, scaling: Any, ds: Any, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from torch.utils.data import DataLoader

    from galframe.data.datamodule import collate

    backbone.eval()
    feats, ids = [], []
    with torch.no_grad():
        for b in DataLoader(ds, batch_size=batch, shuffle=False, collate_fn=collate):
            feats.append(backbone(scaling(b["image"])).embedding.float().numpy())
            ids.append(np.asarray(b["id"]))
    return np.concatenate(feats), np.concatenate(ids)


class Probe:
    """Standardised logistic regression (balanced class weights) on frozen embeddings."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes

    def fit(self, x: np.ndarray, y: np.ndarray) -> "Probe":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler().fit(x)
        self.clf = LogisticRegression(max_iter=2000, C=1.0, class_weight="balanced").fit(self.scaler.transform(x), y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        prob = np.zeros((len(x), self.n_classes))
        prob[:, self.clf.classes_] = self.clf.predict_proba(self.scaler.transform(x))
        return prob


def _epochs(budget: int, batch: int, min_steps: int, min_epochs: int) -> int:
    per_epoch = max(1, math.ceil(budget / batch))
    return max(min_epochs, math.ceil(min_steps / per_epoch))


def _summarise(rows: list[dict], key: str = "budget") -> list[dict]:
    out = []
    for b in sorted({r[key] for r in rows}):
        sel = [r for r in rows if r[key] == b]
        m = np.array([r["macro_auc"] for r in sel])
        q = np.array([r["rare_auc"] for r in sel])
        out.append({"labels": int(b), "n": len(sel), "macro_auc": float(m.mean()), "macro_auc_std": float(m.std(ddof=1)) if len(m) > 1 else 0.0,
                    "rare_auc": float(np.nanmean(q)), "rare_auc_std": float(np.nanstd(q, ddof=1)) if len(q) > 1 else 0.0})
    return out


def run(p: Mapping[str, Any], out: Path, weights: Optional[str], lvm: str, trainer: str, runs: Path) -> dict:
    """The fewshot suite with profile settings ``p``; writes fewshot.json / .md / .png into ``out``."""
    import torch

    from galframe import registry
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.data.scaling import build_scaling
    from galframe.model import split_plugin_cfg
    from galframe.sim import cached_dataset
    from galframe.train import run as train_run

    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = [f"data={p.get('data', 'sim_galaxy10')}", *([f"data.n={int(p['n'])}"] if p.get("n") else []),
            *([f"data.path={p['path']}"] if p.get("path") else [])]
    base = compose([*data, "logger=none"])
    root = cached_dataset(base["data"]) if base["data"].get("path") in (None, "") else Path(base["data"]["path"])
    data = [d for d in data if not d.startswith("data.n=")] + [f"data.path={root}"]
    cfg = compose([*data, "logger=none"])
    dm = GalaxyDataModule(cfg["data"], requires=["label"])
    info = dm.info()
    classes = list(info.classes)
    train_cat, test_cat = dm.splits["train"], dm.splits["test"]
    counts = np.bincount(train_cat["class"].to_numpy(int), minlength=len(classes))
    rare = [int(k) for k in np.argsort(counts, kind="stable")[: int(p.get("rare", 3))]]
    y_test = test_cat["class"].to_numpy(int)
    print(f"fewshot: {root} ({len(train_cat)} train / {len(test_cat)} test); rare classes {[classes[k] for k in rare]}", flush=True)

    def label_ids(budget: int, seed: int) -> np.ndarray:
        sub = GalaxyDataModule(compose([*data, "logger=none", f"data.n_labeled={budget}", f"data.label_seed={seed}"])["data"],
                               requires=["label"])
        sub.prepare()
        return sub.splits["train"]["id"].to_numpy()

    budgets = [int(b) for b in p["budgets"] if int(b) <= len(train_cat)]
    rows: dict[str, list[dict]] = {RESNET: [], PROBE: [], FINETUNE: [], HITL: []}

    # -- frozen LVM features: linear probe, and the HITL loop on the probe ------------------------------
    lvm_weights = f"backbone.weights={weights if weights else 'null'}"  # null: random initialisation (a control)
    bcfg = compose([*data, "logger=none", f"backbone={lvm}", lvm_weights])
    plugin, _, opts = split_plugin_cfg(bcfg["backbone"], "backbone")
    torch.manual_seed(0)
    backbone = registry.build("backbone", plugin, opts, data=info)
    scaling = build_scaling(bcfg["data"]["scaling"], list(info.bands))
    t0 = time.perf_counter()
    x_train, ids_train = _embed(backbone, scaling, dm.dataset("train"))
    x_test, _ = _embed(backbone, scaling, dm.dataset("test"))
    y_train = train_cat.set_index("id").loc[ids_train, "class"].to_numpy(int)
    row_of = {int(i): k for k, i in enumerate(ids_train)}
    embed_s = time.perf_counter() - t0
    print(f"  embedded {len(x_train) + len(x_test)} stamps with {lvm} ({weights}) in {embed_s:.0f} s", flush=True)
    for budget in budgets:
        for seed in p["seeds"]:
            pick = np.array([row_of[int(i)] for i in label_ids(budget, int(seed))])
            if len(set(y_train[pick])) < 2:
                continue  # a draw with one class cannot train a classifier
            prob = Probe(len(classes)).fit(x_train[pick], y_train[pick]).predict(x_test)
            rows[PROBE].append({"budget": budget, "seed": int(seed), **scores(prob, y_test, rare)})
    for seed in p["seeds"]:
        rows[HITL].extend(_hitl(p["hitl"], int(seed), root, classes, x_train, y_train, ids_train, x_test, y_test, rare, runs / "hitl"))
    print(f"  probe and HITL done ({time.perf_counter() - t0:.0f} s)", flush=True)

    # -- trained networks ---------------------------------------------------------------------------------
    batch = int(cfg["data"]["batch_size"])

    def trained(method: str, budget: int, seed: int, overrides: list[str]) -> None:
        epochs = _epochs(budget, batch, int(p["min_steps"]), int(p["min_epochs"]))
        run_dir = runs / f"{method.split()[0].lower()}-{'ft' if method == FINETUNE else 'scratch'}-n{budget}-s{seed}"
        t = time.perf_counter()
        metrics = train_run(compose([*data, *overrides, "logger=none", f"trainer={trainer}", "trainer.progress_bar=false",
                                     f"data.n_labeled={budget}", f"data.label_seed={seed}", f"seed={seed}",
                                     f"trainer.max_epochs={epochs}", f"trainer.check_val_every_n_epoch={max(1, epochs // 4)}"]),
                            run_dir=run_dir)
        table = _read_predictions(run_dir, classes)
        table = table.set_index("id").loc[test_cat["id"].to_numpy()]
        prob = table[[f"classify_p_{c}" for c in classes]].to_numpy(float)
        row = {"budget": budget, "seed": seed, "epochs": epochs, "seconds": round(time.perf_counter() - t, 1),
               **scores(prob, y_test, rare), "galframe_auroc": metrics.get("test/classify/auroc")}
        rows[method].append(row)
        print(f"  {method}: {budget} labels, seed {seed}: macro AUC {row['macro_auc']:.3f}, rare {row['rare_auc']:.3f} "
              f"({epochs} epochs, {row['seconds']:.0f} s)", flush=True)

    for budget in budgets:
        for seed in p["train_seeds"]:
            trained(RESNET, budget, int(seed), ["backbone=resnet18"])
    for budget in [int(b) for b in p["finetune_budgets"] if int(b) <= len(train_cat)]:
        for seed in p["train_seeds"]:
            trained(FINETUNE, budget, int(seed), [f"backbone={lvm}", lvm_weights])

    result = report(rows, out, {
        "data": {"path": str(root), "n_train": int(len(train_cat)), "n_test": int(len(test_cat)), "classes": classes,
                 "rare": [classes[k] for k in rare], "train_counts": counts.tolist()},
        "weights": weights, "lvm": lvm, "trainer": trainer, "profile": dict(p), "seconds": round(time.perf_counter() - t_start, 1),
    })
    return result


def _read_predictions(run_dir: Path, classes: Sequence[str]):
    import pandas as pd

    path = run_dir / "predictions_test.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run wrote no test predictions")
    return pd.read_parquet(path, columns=["id", *[f"classify_p_{c}" for c in classes]])


def next_queue(store: Any, acquisition: Any, ids: np.ndarray, classes: Sequence[str], x: np.ndarray, predict: Any,
               k: int, rng: np.random.Generator) -> list[dict]:
    """The next round's questions: the acquisition's ``k`` picks from the unlabelled pool of embeddings ``x``."""
    from galframe_hitl.acquisition import PoolOutputs

    labels = store.labels()
    row_of = {int(i): n for n, i in enumerate(ids)}
    pool_rows = np.asarray([n for n, i in enumerate(ids) if int(i) not in labels])
    lab_rows = np.asarray([row_of[i] for i in labels])
    counts = np.bincount([list(classes).index(v) for v in labels.values()], minlength=len(classes))
    pool = PoolOutputs(ids=ids[pool_rows], classes=tuple(classes), probs=predict(x[pool_rows]),
                       embeddings=x[pool_rows], labeled_embeddings=x[lab_rows], labeled_counts=counts)
    return [{"id": int(pool.ids[i])} for i in acquisition.select(pool, k, rng)]


def labelled(store: Any, row_of: Mapping[int, int], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows (into the embeddings) and class indices of every object the store has a label for."""
    labels = store.labels()
    return np.asarray([row_of[i] for i in labels]), np.asarray([list(classes).index(v) for v in labels.values()])


def _hitl(h: Mapping[str, Any], seed: int, root: Path, classes: list[str], x: np.ndarray, y: np.ndarray, ids: np.ndarray,
          x_test: np.ndarray, y_test: np.ndarray, rare: list[int], workdir: Path) -> list[dict]:
    """Active learning on the frozen-feature probe with galframe_hitl's acquisition, store and catalog oracle."""
    from galframe_hitl.acquisition import build_acquisition
    from galframe_hitl.oracle import CatalogOracle, HitlData
    from galframe_hitl.store import LabelStore

    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / f"labels-seed{seed}.sqlite"
    db.unlink(missing_ok=True)
    store = LabelStore(db)
    store.bind(str(root), classes, ids)
    oracle = CatalogOracle(HitlData(Path(root), tuple(classes)))
    spec = h.get("acquisition", "margin")
    acquisition = build_acquisition(dict(spec) if isinstance(spec, Mapping) else str(spec))
    row_of = {int(i): k for k, i in enumerate(ids)}
    queue = [{"id": int(ids[i])} for i in np.random.default_rng([seed, 0]).choice(len(ids), int(h["initial"]), replace=False)]
    rows, probe = [], None
    for r in range(int(h["rounds"]) + 1):
        if r > 0:
            queue = next_queue(store, acquisition, ids, classes, x, probe.predict, int(h["per_round"]), np.random.default_rng([seed, r]))
        store.start_round(r, queue, acquisition.describe(), None)
        oracle.ask(store, r, queue)
        lab_rows, y_lab = labelled(store, row_of, classes)
        if len(set(y_lab)) < 2:
            continue
        probe = Probe(len(classes)).fit(x[lab_rows], y_lab)
        rows.append({"budget": len(y_lab), "round": r, "seed": seed, **scores(probe.predict(x_test), y_test, rare)})
    store.close()
    return rows


def report(rows: Mapping[str, list[dict]], out: Path, meta: Mapping[str, Any]) -> dict:
    """JSON, markdown table and PNG curves from per-run rows; the labels each method needs for AUC 0.9."""
    curves = {m: _summarise(r) for m, r in rows.items() if r}
    need = {m: crossing([c["labels"] for c in cs], [c["macro_auc"] for c in cs]) for m, cs in curves.items()}
    ref = need.get(RESNET)
    ratio = {m: (n / ref if (n is not None and ref) else None) for m, n in need.items()}
    result = {**meta, "level": LEVEL, "curves": curves, "labels_for_auc_0.9": need, "ratio_to_resnet18": ratio, "runs": dict(rows)}
    (out / "fewshot.json").write_text(json.dumps(result, indent=2, default=float))

    labels = sorted({c["labels"] for cs in curves.values() for c in cs if cs is not curves.get(HITL)})
    lines = [f"Macro one-vs-rest AUC (rare-class AUC in brackets) on {meta['data']['n_test']} held-out objects; "
             f"mean over seeds; rare classes: {', '.join(meta['data']['rare'])}.", "",
             "| method | " + " | ".join(f"{b} labels" for b in labels) + f" | labels for AUC {LEVEL} | vs ResNet18 |",
             "|---|" + "---|" * (len(labels) + 2)]
    for m, cs in curves.items():
        by = {c["labels"]: c for c in cs}
        if m == HITL:  # the loop's own label counts; show the nearest round at or below each budget
            cells = []
            for b in labels:
                below = [c for c in cs if c["labels"] <= b]
                cells.append(f"{below[-1]['macro_auc']:.3f} ({below[-1]['rare_auc']:.3f}) @{below[-1]['labels']}" if below else "-")
        else:
            cells = [f"{by[b]['macro_auc']:.3f} ({by[b]['rare_auc']:.3f})" if b in by else "-" for b in labels]
        n = need[m]
        top = max(c["labels"] for c in cs)
        need_s = f"{n:,.0f}" if n is not None else f"> {top:,}"
        ratio_s = f"{ratio[m]:.2f}x" if ratio[m] is not None else "-"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {need_s} | {ratio_s} |")
    (out / "fewshot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for m, cs in curves.items():
        x = [c["labels"] for c in cs]
        for ax, key in zip(axes, ("macro_auc", "rare_auc")):
            ax.errorbar(x, [c[key] for c in cs], yerr=[c[f"{key}_std"] for c in cs], marker="o", ms=4, capsize=3, label=m)
    titles = ("macro AUC (held-out)", "rare-class AUC: " + ", ".join(meta["data"]["rare"]))
    for ax, ylabel, title in zip(axes, ("macro AUC", "rare-class AUC"), titles):
        ax.axhline(LEVEL, color="gray", ls="--", lw=1)
        ax.set(xscale="log", xlabel="labels", ylabel=ylabel)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fewshot.png", dpi=100)
    plt.close(fig)
    return result
