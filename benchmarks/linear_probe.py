"""Linear probe: how good are frozen backbone features with few labels?

Compares, at several label budgets, a logistic-regression probe on the pooled embedding of
(a) the pretrained LVM encoder, (b) the same encoder at random initialisation and
(c) a ResNet18 at random initialisation, all frozen, on the default simulated data
(held-out test split, macro one-vs-rest AUC).  Each feature extractor runs once over the
data; each budget x seed fits a probe on a seeded subset of the training split.

    python benchmarks/linear_probe.py --weights runs/pretrain/<run>/weights/lvm.safetensors
    python benchmarks/linear_probe.py --weights lvm_tiny-demo --budgets 100 1000 --seeds 0 1 2

Writes linear_probe.json, linear_probe.png and linear_probe.md into --out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def compose(overrides: list[str]) -> dict:
    """The composed train config, plain containers (galframe.build.compose_dict)."""
    from galframe.build import compose_dict

    return compose_dict("train", overrides)


@torch.no_grad()
def embed(backbone: torch.nn.Module, scaling: torch.nn.Module, dm, split: str, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    from torch.utils.data import DataLoader

    backbone.eval()
    ds = dm.dataset(split)
    feats, labels = [], []
    for b in DataLoader(ds, batch_size=batch, shuffle=False):
        feats.append(backbone(scaling(b["image"])).embedding.float().numpy())
        labels.append(b["label"].numpy())
    return np.concatenate(feats), np.concatenate(labels)


def probe_auc(x_train, y_train, x_test, y_test, n_classes: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=3000, C=1.0, class_weight="balanced")
    clf.fit(scaler.transform(x_train), y_train)
    prob = np.zeros((len(x_test), n_classes))
    prob[:, clf.classes_] = clf.predict_proba(scaler.transform(x_test))
    aucs = [roc_auc_score(y_test == k, prob[:, k]) for k in range(n_classes) if (y_test == k).any()]
    return {"macro_auc": float(np.mean(aucs)), "accuracy": float((prob.argmax(1) == y_test).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="pretrained LVM weights: a file, a pretrain run dir or a zoo name")
    parser.add_argument("--lvm", default="lvm_tiny", help="the LVM size config the weights belong to")
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results/linear_probe")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the data (e.g. data.n=6000)")
    args = parser.parse_args()

    from galframe import registry
    from galframe.data.datamodule import GalaxyDataModule
    from galframe.data.scaling import build_scaling
    from galframe.model import split_plugin_cfg

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = compose(list(args.overrides))
    dm = GalaxyDataModule(base["data"], requires=["label"], progress=True)
    info = dm.info()
    scaling = build_scaling(base["data"]["scaling"], list(info.bands))
    torch.manual_seed(0)

    extractors = {
        f"{args.lvm} pretrained": (args.lvm, {"weights": args.weights}),
        f"{args.lvm} random init": (args.lvm, {"weights": None}),
        "resnet18 random init": ("resnet18", {}),
    }
    results: dict = {"budgets": args.budgets, "seeds": args.seeds, "n_test": len(dm.splits["test"]), "methods": {}}
    for label, (backbone_cfg, options) in extractors.items():
        cfg = compose([*args.overrides, f"backbone={backbone_cfg}"])
        plugin, _, opts = split_plugin_cfg(cfg["backbone"], "backbone")
        opts.update(options)
        backbone = registry.build("backbone", plugin, opts, data=info)
        start = time.time()
        x_train, y_train = embed(backbone, scaling, dm, "train")
        x_test, y_test = embed(backbone, scaling, dm, "test")
        rows = {}
        for budget in args.budgets:
            scores = []
            for seed in args.seeds:
                pick = np.random.default_rng([seed, budget]).choice(len(x_train), size=min(budget, len(x_train)), replace=False)
                scores.append(probe_auc(x_train[pick], y_train[pick], x_test, y_test, len(info.classes)))
            aucs = [s["macro_auc"] for s in scores]
            rows[str(budget)] = {"macro_auc_mean": float(np.mean(aucs)), "macro_auc_std": float(np.std(aucs)), "runs": scores}
        results["methods"][label] = {"embedding_dim": int(x_train.shape[1]), "seconds": time.time() - start, "budgets": rows}
        print(label, {b: round(r["macro_auc_mean"], 4) for b, r in rows.items()}, flush=True)

    (out / "linear_probe.json").write_text(json.dumps(results, indent=2))
    lines = ["| features (frozen) | " + " | ".join(f"{b} labels" for b in args.budgets) + " |", "|---|" + "---|" * len(args.budgets)]
    for label, res in results["methods"].items():
        cells = [f"{res['budgets'][str(b)]['macro_auc_mean']:.3f} ± {res['budgets'][str(b)]['macro_auc_std']:.3f}" for b in args.budgets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (out / "linear_probe.md").write_text(
        f"Linear probe, macro one-vs-rest AUC on {results['n_test']} held-out stamps (mean ± std over seeds {args.seeds}).\n\n{table}\n"
    )
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, res in results["methods"].items():
        means = [res["budgets"][str(b)]["macro_auc_mean"] for b in args.budgets]
        stds = [res["budgets"][str(b)]["macro_auc_std"] for b in args.budgets]
        ax.errorbar(args.budgets, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("labels")
    ax.set_ylabel("macro AUC (held-out)")
    ax.set_title("Linear probe on frozen features")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "linear_probe.png", dpi=120)


if __name__ == "__main__":
    main()
