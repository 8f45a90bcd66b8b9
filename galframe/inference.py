"""A trained model over a batch of images: every task's catalog columns and detections.

The one inference path of ``galframe predict`` (survey files), the run report (a held-out split) and the
bench suites: :func:`outputs` runs the model without gradients, :func:`predict_batch` turns its outputs
into catalog columns (``Task.predict_columns``, and the trust flags of :mod:`galframe.trust`) and, for tasks that find several objects per image
(``predict_sources``), one list of detections per image; :func:`batch_columns` is what the report and
``GalaxyModel.predict_step`` return for a datamodule batch.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def source_hooks(model: Any) -> dict[str, Callable]:
    """The tasks of ``model`` that find several objects per image: name -> their ``predict_sources``."""
    return {name: task.predict_sources for name, task in model.tasks.items() if task.finds_sources}


def outputs(model: Any, x: Any) -> dict[str, Any]:
    """Every task's outputs for the input batch ``x`` (flux; the model applies its own scaling)."""
    return outputs_and_features(model, x)[0]


def outputs_and_features(model: Any, x: Any) -> tuple[dict[str, Any], Any]:
    """(every task's outputs, the backbone's features or None) for the input batch ``x``."""
    import torch

    with torch.inference_mode():
        if hasattr(model, "forward_features"):
            return model.forward_features(x)
        return model(x), None


def predict_batch(model: Any, x: Any, hooks: Any = None) -> tuple[dict[str, np.ndarray], list[tuple[str, Any]]]:
    """(catalog columns name -> (B,) array, [(task name, one detection list per image)]) for ``x``."""
    hooks = source_hooks(model) if hooks is None else hooks
    out, features = outputs_and_features(model, x)
    cols: dict[str, np.ndarray] = {}
    dets: list[tuple[str, Any]] = []
    for name, task in model.tasks.items():
        if name in hooks:
            dets.append((name, hooks[name](out[name])))
        cols.update({k: np.asarray(v) for k, v in task.predict_columns(out[name]).items()})
    trust = getattr(model, "trust", None)
    if trust is not None and features is not None:
        cols.update(trust.columns(features.embedding))  # ood_score, ood_pvalue, ood_flag (galframe/trust.py)
    return cols, dets


def batch_columns(model: Any, batch: dict) -> dict[str, Any]:
    """A datamodule batch's ``id`` and catalog columns; with tasks that find several objects per image,
    ``sources``: their rows (a list, not a column), each with its ``image_id`` and ``task``."""
    import torch

    hooks = source_hooks(model)
    cols, dets = predict_batch(model, batch["image"], hooks)
    ids = batch["id"].cpu().numpy() if torch.is_tensor(batch["id"]) else batch["id"]
    columns: dict[str, Any] = {"id": ids, **cols}
    if hooks:
        image_ids = np.asarray(ids).tolist()
        columns["sources"] = [{"image_id": int(image_id), "task": name, **row}
                              for name, per_image in dets for image_id, rows in zip(image_ids, per_image) for row in rows]
    return columns
