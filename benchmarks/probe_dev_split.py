"""Linear probe on the seed-1 development simulation (the pretraining pool's own held-out split, never the
seed-0 test set), to choose between pretrained weights: multi-stage pooled features (1 view) of a 6,000-stamp
pool whitened on the pool, a logistic head on 200 and 1,000 random labels (3 draws), macro AUC on the
1,000 held-out stamps.

    python benchmarks/probe_dev_split.py random= shipped=lvm_tiny-g10 new=<run>/weights/lvm_tiny-g10.safetensors
"""
import sys, json, time
import numpy as np
from galframe.build import compose, build_datamodule, to_dict
from galframe.model import build_backbone
from galframe.data.scaling import build_scaling
from galframe_tasks.fewshot import Whitener, embed, FewShotHead
from sklearn.metrics import roc_auc_score
import torch

weights = {a.split("=", 1)[0]: (a.split("=", 1)[1] or None) for a in sys.argv[1:] if "=" in a}
out = next((a for a in sys.argv[1:] if "=" not in a), "probe_dev_split.json")
cfg = to_dict(compose("train", ["data=sim_galaxy10", "data.n=20000", "data.seed=1", "backbone=lvm_tiny"]))
dm = build_datamodule(cfg, progress=False); dm.prepare()
info = dm.info()
ytr = dm.splits["train"]["class"].to_numpy(); yte = dm.splits["test"]["class"].to_numpy()
rng = np.random.default_rng(0); pool = rng.choice(len(ytr), 6000, replace=False)
from torch.utils.data import Subset
res = {}
for name, w in weights.items():
    torch.manual_seed(0)
    bcfg = dict(cfg["backbone"]); bcfg["weights"] = w
    bb = build_backbone(bcfg, info); sc = build_scaling(cfg["data"].get("scaling") or {"name": "asinh"}, list(info.bands))
    t = time.time()
    ftr, _ = embed(bb, sc, Subset(dm.dataset("train"), pool.tolist()), views=1)
    fte, _ = embed(bb, sc, dm.dataset("test"), views=1)
    wh = Whitener().fit(ftr); ftr, fte = wh.transform(ftr), wh.transform(fte)
    for budget in (200, 1000):
        aucs = []
        for seed in range(3):
            rows = np.random.default_rng(seed).choice(len(pool), budget, replace=False)
            head = FewShotHead(10, "logistic").fit(ftr[rows], ytr[pool][rows])
            p = head.predict(fte)
            aucs.append(roc_auc_score(yte, p, multi_class="ovr", average="macro", labels=list(range(10))))
        res[f"{name} @ {budget}"] = (float(np.mean(aucs)), float(np.std(aucs)))
        print(name, budget, np.round(aucs, 3), f"{time.time()-t:.0f}s", flush=True)
json.dump(res, open(out, "w"), indent=1)
