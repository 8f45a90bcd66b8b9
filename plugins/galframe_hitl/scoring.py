"""Run trained models over the unlabelled pool: probabilities, MC-dropout samples, ensemble members, embeddings.

Images go through the model's own path (its scaling, then the backbone, then the task head), as in
its predict step, in eval mode.  MC dropout switches only the dropout layers to training mode; when
the backbone has no active dropout its features are computed once and only the head is re-run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from galframe.errors import ConfigError

from galframe_hitl.acquisition import PoolOutputs


def load_model(checkpoint: str | Path) -> Any:
    """The model of a round's checkpoint (or run directory), in eval mode on the CPU."""
    from galframe.checkpoints import checkpoint_file, model_from_checkpoint

    return model_from_checkpoint(checkpoint_file(str(checkpoint)))


def classify_task(model: Any, task: str) -> Any:
    """The classification head named ``task``: it must output ``logits`` over the data's classes."""
    if task not in model.tasks:
        raise ConfigError(f"hitl.task='{task}', but the model's tasks are {list(model.tasks)}.")
    head = model.tasks[task]
    if not hasattr(head, "classes"):
        raise ConfigError(f"hitl.task='{task}' is not a classification task (it has no classes).")
    return head


def _dropouts(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and float(m.p) > 0]


def has_dropout(model: Any, task: str) -> bool:
    return bool(_dropouts(model.backbone) or _dropouts(model.tasks[task]))


def _batches(dataset: Any, batch_size: int):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def model_outputs(
    model: Any,
    dataset: Any,
    task: str,
    *,
    mc_samples: int = 0,
    embeddings: bool = False,
    batch_size: int = 128,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``ids`` (N,), ``probs`` (N, C), optionally ``mc_probs`` (T, N, C) and ``embeddings`` (N, D) for a dataset."""
    head = classify_task(model, task)
    model.eval()
    dev = model.device
    backbone_dropout = bool(_dropouts(model.backbone))
    if mc_samples and not has_dropout(model, task):
        raise ConfigError(
            f"MC dropout needs a dropout layer, and this model has none: set tasks.{task}.dropout (e.g. 0.3)."
        )
    drops = (_dropouts(model.backbone) + _dropouts(head)) if backbone_dropout else _dropouts(head)
    ids, probs, embs, mcs = [], [], [], []
    with torch.random.fork_rng(devices=[]):  # seeded dropout masks, the caller's random state untouched
        torch.manual_seed(int(seed))
        for batch in _batches(dataset, batch_size):
            flux = batch["image"].to(dev)
            features = model.backbone(model.scaling(flux), decode=model.decode)
            probs.append(head(features)["logits"].float().softmax(-1).cpu().numpy())
            if embeddings:
                embs.append(features.embedding.float().cpu().numpy())
            if mc_samples:
                for m in drops:
                    m.train()
                try:
                    samples = []
                    for _ in range(int(mc_samples)):
                        f = model.backbone(model.scaling(flux), decode=model.decode) if backbone_dropout else features
                        samples.append(head(f)["logits"].float().softmax(-1).cpu().numpy())
                finally:
                    for m in drops:
                        m.eval()
                mcs.append(np.stack(samples))
            ids.append(np.asarray(batch["id"]))
    out = {"ids": np.concatenate(ids).astype(np.int64), "probs": np.concatenate(probs)}
    if embeddings:
        out["embeddings"] = np.concatenate(embs)
    if mc_samples:
        out["mc_probs"] = np.concatenate(mcs, axis=1)
    return out


def score_pool(
    models: Sequence[Any],
    pool_dataset: Any,
    labeled_dataset: Optional[Any],
    task: str,
    needs: set[str],
    *,
    mc_samples: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    labeled_counts: Optional[np.ndarray] = None,
    always_embed: bool = True,
) -> PoolOutputs:
    """What ``models`` (the first is the main model; the rest ensemble members) say about the pool.

    Embeddings (of the pool and of the labelled objects) are computed when an acquisition needs them,
    or with ``always_embed`` (the web page shows each object's nearest labelled neighbours).
    """
    if not models:
        raise ConfigError("no trained model to score the pool with.")
    main = models[0]
    embed = always_embed or "embeddings" in needs
    mc = int(mc_samples) if "mc_probs" in needs else 0
    first = model_outputs(main, pool_dataset, task, mc_samples=mc, embeddings=embed, batch_size=batch_size, seed=seed)
    classes = tuple(classify_task(main, task).classes)
    pool = PoolOutputs(ids=first["ids"], classes=classes, probs=first["probs"], mc_probs=first.get("mc_probs"),
                       embeddings=first.get("embeddings"), labeled_counts=labeled_counts)
    if "ensemble_probs" in needs:
        if len(models) < 2:
            raise ConfigError("ensemble acquisition needs at least 2 members: set hitl.ensemble (e.g. 3).")
        members = [first["probs"]]
        for m in models[1:]:
            out = model_outputs(m, pool_dataset, task, batch_size=batch_size)
            if not np.array_equal(out["ids"], first["ids"]):
                raise RuntimeError("ensemble members scored the pool in different orders")
            members.append(out["probs"])
        pool.ensemble_probs = np.stack(members)
    if embed and labeled_dataset is not None and len(labeled_dataset):
        lab = model_outputs(main, labeled_dataset, task, embeddings=True, batch_size=batch_size)
        pool.labeled_embeddings = lab["embeddings"]
        pool.extra["labeled_ids"] = lab["ids"]
    return pool


def nearest_labeled(pool: PoolOutputs, index: Sequence[int], k: int) -> dict[int, list[int]]:
    """For pool rows ``index``: the ids of the ``k`` nearest labelled objects (cosine distance on embeddings)."""
    if k <= 0 or pool.embeddings is None or pool.labeled_embeddings is None or not len(pool.labeled_embeddings):
        return {int(pool.ids[i]): [] for i in index}
    lab_ids = np.asarray(pool.extra["labeled_ids"])
    a = pool.embeddings[np.asarray(index, dtype=np.int64)]
    b = pool.labeled_embeddings
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sim = a @ b.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return {int(pool.ids[i]): [int(lab_ids[j]) for j in row] for i, row in zip(index, order)}
