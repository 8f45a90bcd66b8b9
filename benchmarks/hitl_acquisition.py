"""Active learning on the imbalanced simulated set: which acquisition function finds the labels that matter?

Compares random, uncertainty (entropy, margin), class-balanced (quotas per predicted class, ranked by
entropy inside each class) and entropy-then-diversity (k-center greedy on embeddings) acquisition on
``data=sim_desi`` (6 classes; the rare ones are merger, 4%, and star, 8%).  Every strategy starts
from the same random seed labels, then asks the truth catalog (``oracle=catalog``, through the same
label store and acquisition plugins as ``galframe hitl``) about ``--per-round`` objects per round.

To stay affordable on a 2-core CPU the model is a linear probe on frozen pretrained LVM embeddings
(``lvm_tiny-demo`` from the local zoo, the encoder run once over the data): the same model as
``galframe train finetune.mode=frozen``, fitted by logistic regression (balanced class weights)
instead of SGD.  Each round reports, on the held-out test split, macro one-vs-rest AUC and the
mean recall of the rare classes, against the number of labels.

    python benchmarks/hitl_acquisition.py                       # defaults: 10 rounds of 20, 5 seeds
    python benchmarks/hitl_acquisition.py --weights my-lvm --rounds 5 --seeds 0 1
    python benchmarks/hitl_acquisition.py --backbone resnet18 --weights none --tag resnet18   # other features

Writes hitl_acquisition[_<tag>].json, .png and .md into --out.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STRATEGIES = {
    "random": "random",
    "entropy": "entropy",
    "margin": "margin",
    "class_balanced": {"plugin": "class_balanced", "inner": "entropy"},
    "entropy+diversity": {"plugin": "diversity", "prefilter": "entropy", "prefilter_factor": 4},
}


def compose(overrides: list[str]) -> dict:
    """The composed train config, plain containers (galframe.build.compose_dict)."""
    from galframe.build import compose_dict

    return compose_dict("train", overrides)


@torch.no_grad()
def embed(backbone: torch.nn.Module, scaling: torch.nn.Module, dataset, batch: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from torch.utils.data import DataLoader

    backbone.eval()
    feats, labels, ids = [], [], []
    for b in DataLoader(dataset, batch_size=batch, shuffle=False):
        feats.append(backbone(scaling(b["image"])).embedding.float().numpy())
        labels.append(b["label"].numpy())
        ids.append(np.asarray(b["id"]))
    return np.concatenate(feats), np.concatenate(labels), np.concatenate(ids)


def fit_probe(x: np.ndarray, y: np.ndarray, n_classes: int):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=3000, C=1.0, class_weight="balanced")
    clf.fit(x, y)

    def predict(z: np.ndarray) -> np.ndarray:
        prob = np.zeros((len(z), n_classes))
        prob[:, clf.classes_] = clf.predict_proba(z)
        return prob

    return predict


def evaluate(prob: np.ndarray, y: np.ndarray, classes: list[str], rare: list[str]) -> dict:
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y == k, prob[:, k]) for k in range(len(classes)) if (y == k).any()]
    pred = prob.argmax(1)
    recall = {c: float((pred[y == k] == k).mean()) for k, c in enumerate(classes) if (y == k).any()}
    return {
        "macro_auc": float(np.mean(aucs)),
        "balanced_accuracy": float(np.mean(list(recall.values()))),
        "rare_recall": float(np.mean([recall[c] for c in rare])),
        "recall": recall,
    }


def run_strategy(name: str, spec, seed: int, data: dict, args, workdir: Path) -> list[dict]:
    from galframe_bench.fewshot import labelled, next_queue
    from galframe_hitl.acquisition import build_acquisition
    from galframe_hitl.oracle import CatalogOracle, HitlData
    from galframe_hitl.store import LabelStore

    classes, rare = data["classes"], data["rare"]
    x, ids, x_test, y_test = data["x_train"], data["ids_train"], data["x_test"], data["y_test"]
    row_of = {int(i): k for k, i in enumerate(ids)}
    store = LabelStore(workdir / f"{name}-{seed}.sqlite")
    store.bind(data["root"], classes, ids)
    oracle = CatalogOracle(HitlData(Path(data["root"]), tuple(classes)))
    acquisition = build_acquisition(spec)
    first = np.random.default_rng([seed, 0]).choice(len(ids), args.initial, replace=False)  # shared by every strategy
    queue = [{"id": int(ids[i])} for i in first]
    rows, predict = [], None
    for r in range(args.rounds + 1):
        if r > 0:
            queue = next_queue(store, acquisition, ids, classes, x, predict, args.per_round, np.random.default_rng([seed, r]))
        store.start_round(r, queue, acquisition.describe(), None)
        oracle.ask(store, r, queue)
        labels = store.labels()
        lab_rows, y_lab = labelled(store, row_of, classes)
        predict = fit_probe(x[lab_rows], y_lab, len(classes))
        metrics = evaluate(predict(x_test), y_test, classes, rare)
        metrics.update(round=r, n_labels=len(labels),
                       rare_labelled={c: int((y_lab == classes.index(c)).sum()) for c in rare})
        rows.append(metrics)
    store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lvm_tiny", help="the frozen feature extractor (a backbone config)")
    parser.add_argument("--weights", default="lvm_tiny-demo",
                        help="its weights: a file, a pretrain run dir, a zoo name, or 'none' (random init)")
    parser.add_argument("--tag", default="", help="suffix of the output files (hitl_acquisition_<tag>.*)")
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the data (e.g. data.n=6000)")
    args = parser.parse_args()

    from sklearn.preprocessing import StandardScaler

    from galframe import registry
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.data.scaling import build_scaling
    from galframe.model import split_plugin_cfg
    from galframe_hitl.report import learning_curve, rare_classes

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = "null" if args.weights.lower() in ("none", "null") else args.weights
    cfg = compose([*args.overrides, f"backbone={args.backbone}", f"backbone.weights={weights}"])
    stem = "hitl_acquisition" + (f"_{args.tag}" if args.tag else "")
    dm = GalaxyDataModule(cfg["data"], requires=["label"], progress=True)
    info = dm.info()
    classes = list(info.classes)
    plugin, _, opts = split_plugin_cfg(cfg["backbone"], "backbone")
    torch.manual_seed(0)
    backbone = registry.build("backbone", plugin, opts, data=info)
    scaling = build_scaling(cfg["data"]["scaling"], list(info.bands))
    x_train, y_train, ids_train = embed(backbone, scaling, dm.dataset("train"))
    x_test, y_test, _ = embed(backbone, scaling, dm.dataset("test"))
    t_embed = time.time() - t0
    scaler = StandardScaler().fit(x_train)  # unlabelled statistics of the pool: fair to use
    rare = rare_classes("auto", classes, y_train)
    data = {"classes": classes, "rare": rare, "root": str(dm.root), "x_train": scaler.transform(x_train),
            "ids_train": ids_train.astype(np.int64), "x_test": scaler.transform(x_test), "y_test": y_test}
    print(f"Embedded {len(x_train)} pool + {len(x_test)} test stamps in {t_embed:.0f} s; rare classes {rare}", flush=True)

    results: dict = {
        "data": {"n_pool": int(len(x_train)), "n_test": int(len(x_test)), "classes": classes, "rare_classes": rare,
                 "pool_fractions": {c: float((y_train == k).mean()) for k, c in enumerate(classes)}},
        "model": f"logistic regression (balanced class weights) on frozen {args.backbone} embeddings "
                 f"({'random init' if weights == 'null' else weights})",
        "oracle": "catalog (no noise)",
        "initial": args.initial, "per_round": args.per_round, "rounds": args.rounds, "seeds": args.seeds,
        "strategies": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.strategies:
            start = time.time()
            runs = [run_strategy(name, STRATEGIES[name], seed, data, args, Path(tmp)) for seed in args.seeds]
            curve = []
            for r in range(args.rounds + 1):
                at = [run[r] for run in runs]
                entry = {"round": r, "n_labels": at[0]["n_labels"]}
                for key in ("macro_auc", "rare_recall", "balanced_accuracy"):
                    vals = [a[key] for a in at]
                    entry[key], entry[f"{key}_std"] = float(np.mean(vals)), float(np.std(vals))
                entry["rare_labelled"] = {c: float(np.mean([a["rare_labelled"][c] for a in at])) for c in rare}
                curve.append(entry)
            results["strategies"][name] = {"spec": STRATEGIES[name], "curve": curve, "runs": runs, "seconds": time.time() - start}
            last = curve[-1]
            print(f"{name:>18}: {last['n_labels']} labels  macro AUC {last['macro_auc']:.3f}  rare recall "
                  f"{last['rare_recall']:.3f}  rare labelled {last['rare_labelled']}  ({time.time() - start:.0f} s)", flush=True)
    results["seconds_total"] = time.time() - t0
    results["machine"] = "shared 2-core CPU"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))

    curves = {n: [dict(c, recall={}) for c in s["curve"]] for n, s in results["strategies"].items()}
    bands = {n: {k: ([c[k] - c[f"{k}_std"] for c in s["curve"]], [c[k] + c[f"{k}_std"] for c in s["curve"]])
                 for k in ("macro_auc", "rare_recall")} for n, s in results["strategies"].items()}
    learning_curve(curves, out / f"{stem}.png", rare, bands=bands)

    checkpoints = sorted({args.rounds // 4, args.rounds // 2, args.rounds})
    head = "| acquisition | " + " | ".join(f"AUC @{curves[args.strategies[0]][r]['n_labels']}" for r in checkpoints) + " | " + \
        " | ".join(f"rare recall @{curves[args.strategies[0]][r]['n_labels']}" for r in checkpoints) + \
        f" | {' / '.join(rare)} labelled @{curves[args.strategies[0]][args.rounds]['n_labels']} |"
    lines = [head, "|---|" + "---|" * (2 * len(checkpoints) + 1)]
    for name, s in results["strategies"].items():
        c = s["curve"]
        cells = [f"{c[r]['macro_auc']:.3f} ± {c[r]['macro_auc_std']:.3f}" for r in checkpoints]
        cells += [f"{c[r]['rare_recall']:.3f} ± {c[r]['rare_recall_std']:.3f}" for r in checkpoints]
        cells.append(" / ".join(f"{c[-1]['rare_labelled'][k]:.1f}" for k in rare))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    fractions = results["data"]["pool_fractions"]
    rare_text = ", ".join(f"{c} {100 * fractions[c]:.1f}%" for c in rare)
    (out / f"{stem}.md").write_text(
        f"Active learning on sim_desi ({results['data']['n_pool']} pool, {results['data']['n_test']} held-out stamps; "
        f"rare: {rare_text}). "
        f"{results['model']}; {args.initial} random seed labels, then {args.rounds} rounds of {args.per_round}; "
        f"mean ± std over seeds {args.seeds}. {results['seconds_total']:.0f} s on a shared 2-core CPU.\n\n{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
