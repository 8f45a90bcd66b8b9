"""Pictures of a detection run: fields with truth and detections, completeness versus magnitude."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

COLOURS = ("#ff5050", "#40d0ff", "#ffd040", "#a0ff60")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_field(ax: Any, image: np.ndarray, bands: Sequence[str], truth: Optional[Mapping[str, np.ndarray]] = None,
               dets: Optional[Mapping[str, np.ndarray]] = None, classes: Sequence[str] = (), score_threshold: float = 0.5,
               title: str = "") -> None:
    """RGB field (origin lower) with truth boxes (dashed white) and detections (solid, coloured by class)."""
    from matplotlib.patches import Rectangle

    from galframe.report import rgb

    ax.imshow(rgb(image, list(bands)), origin="lower")
    if truth is not None:
        for x0, y0, x1, y1 in truth["boxes"]:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="white", lw=0.7, ls="--"))
    if dets is not None:
        for k in np.flatnonzero(dets["scores"] >= score_threshold):
            x0, y0, x1, y1 = dets["boxes"][k]
            c = COLOURS[int(dets["labels"][k]) % len(COLOURS)]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=c, lw=1.0))
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def overlay_grid(model: Any, task_name: str, dm: Any, path: Path, n: int = 8) -> Path:
    """The first ``n`` held-out fields with truth and the model's detections."""
    import torch

    plt = _plt()
    ds = dm.dataset("test")
    items = [ds[i] for i in range(min(n, len(ds)))]
    task = model.tasks[task_name]
    with torch.no_grad():
        model.eval()
        images = torch.stack([it["image"] for it in items]).to(model.device)
        dets = model(images)[task_name]["detections"]
    cols = 4
    rows = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.0, rows * 3.1), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, it, det in zip(axes.ravel(), items, dets):
        truth = {k: v.numpy() for k, v in it["instances"].items()} if "instances" in it else None
        n_found = int((det["scores"] >= task.score_threshold).sum())
        n_true = len(truth["boxes"]) if truth else 0
        draw_field(ax, it["image"].numpy(), ds.bands, truth, det, task.classes, task.score_threshold,
                   f"field {it['id']}: {n_found} found / {n_true} true")
    handles = [plt.Line2D([], [], color=COLOURS[i % len(COLOURS)], label=c) for i, c in enumerate(task.classes)]
    handles.append(plt.Line2D([], [], color="white", ls="--", label="truth"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, facecolor="#333333", labelcolor="white")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def completeness_plot(curves: Mapping[str, Any] | Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Completeness versus r magnitude: one curve, or several ``{label: curve}``."""
    plt = _plt()
    if "edges" in curves:
        curves = {"": curves}  # type: ignore[dict-item]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, c in curves.items():  # type: ignore[union-attr]
        edges = np.asarray(c["edges"])
        mid = 0.5 * (edges[1:] + edges[:-1])
        ax.plot(mid, c["completeness"], marker="o", label=label or None)
    ax.set_xlabel("r magnitude")
    ax.set_ylabel("completeness (IoU >= 0.5)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if len(curves) > 1 or next(iter(curves)):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def completeness_purity_plot(surveys: Mapping[str, Mapping[str, Any]], path: Path, purity: int = 95) -> Path:
    """Completeness (by true r) and purity (by measured r) against magnitude, one line per method
    (``{label: survey_summary(...)}``), at each method's operating point and, dashed, at the
    purity-``purity`` operating point, with the 50%-completeness depth marked; counts of true objects
    per bin along the top."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    tag = f"purity{purity}"
    for i, (label, s) in enumerate(surveys.items()):
        colour = f"C{i}"
        c = s["curves"]
        edges = np.asarray(c["edges"])
        mid = 0.5 * (edges[1:] + edges[:-1])
        name = label or "detector"
        at = "every detection" if not np.isfinite(s["threshold"]) else f"score >= {s['threshold']:.2f}"
        a.plot(mid, c["completeness"], marker="o", color=colour, label=f"{name} ({at})")
        b.plot(mid, c["purity"], marker="o", color=colour, label=name)
        cp = s.get(f"curves_at_{tag}")
        if cp:
            a.plot(mid, cp["completeness"], ls="--", color=colour, label=f"{name} at purity >= 0.{purity}")
            b.plot(mid, cp["purity"], ls="--", color=colour)
        d50 = s.get(f"depth50_at_{tag}")
        if d50 is not None:
            a.axvline(d50, color=colour, lw=0.8, alpha=0.6)
        if i == 0:
            for x, n in zip(mid, c["n_true"]):
                a.annotate(str(n), (x, 1.04), ha="center", fontsize=6, color="0.4", annotation_clip=False)
    for ax, what in ((a, "completeness (by true r)"), (b, "purity (by measured r)")):
        ax.set_xlabel("r magnitude")
        ax.set_ylabel(what)
        ax.set_ylim(0, 1.1)
        ax.grid(alpha=0.3)
    a.axhline(0.5, color="0.5", lw=0.6, ls=":")
    a.legend(fontsize=6, loc="lower left")
    b.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
