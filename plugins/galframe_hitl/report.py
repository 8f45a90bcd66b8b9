"""Per-round report of a hitl loop: a rich table, ``hitl_rounds.json`` and ``learning_curve.png``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


def rare_classes(spec: Any, classes: Sequence[str], class_index: np.ndarray) -> list[str]:
    """``auto``: classes below 0.6 / C of the pool (e.g. merger 4% and star 8% of six classes), else the list given."""
    from galframe.errors import ConfigError

    classes = list(classes)
    if spec in (None, "auto"):
        counts = np.bincount(np.asarray(class_index, dtype=np.int64), minlength=len(classes))
        share = counts / max(counts.sum(), 1)
        return [c for c, s in zip(classes, share) if s < 0.6 / len(classes)]
    names = [spec] if isinstance(spec, str) else list(spec)
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise ConfigError(f"hitl.rare_classes: unknown class(es) {unknown}; the classes are {classes}.")
    return names


def round_rows(rounds: Sequence[dict], task: str, classes: Sequence[str], rare: Sequence[str]) -> list[dict]:
    rows = []
    for r in rounds:
        m = r.get("metrics") or {}
        if r.get("state") != "trained" or not m:
            continue
        get = lambda key: m.get(f"test/{task}/{key}")  # noqa: E731
        recalls = {c: get(f"recall_{c}") for c in classes}
        rare_values = [recalls[c] for c in rare if recalls.get(c) is not None]
        rows.append(
            {
                "round": int(r["round"]),
                "n_labels": int(r.get("n_labels") or 0),
                "acquisition": r.get("acquisition"),
                "model_version": r.get("trained_version"),
                "macro_auc": get("auroc"),
                "accuracy": get("accuracy"),
                "balanced_accuracy": get("balanced_accuracy"),
                "rare_recall": float(np.mean(rare_values)) if rare_values else None,
                "recall": recalls,
            }
        )
    return rows


def write(rows: list[dict], run_dir: Path, classes: Sequence[str], rare: Sequence[str], title: str = "hitl rounds",
          show: bool = True) -> list[Path]:
    run_dir = Path(run_dir)
    out_json = run_dir / "hitl_rounds.json"
    out_json.write_text(json.dumps({"classes": list(classes), "rare_classes": list(rare), "rounds": rows}, indent=2))
    if show:
        print_table(rows, rare, title)
    written = [out_json]
    if rows:
        written.append(learning_curve({title: rows}, run_dir / "learning_curve.png", rare))
    return written


def print_table(rows: list[dict], rare: Sequence[str], title: str = "hitl rounds") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("round", "labels", "acquisition", "macro AUC", "bal. acc.", "rare recall", *[f"recall {c}" for c in rare]):
        table.add_column(col, justify="left" if col == "acquisition" else "right")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        table.add_row(str(r["round"]), str(r["n_labels"]), str(r["acquisition"] or ""), fmt(r["macro_auc"]),
                      fmt(r["balanced_accuracy"]), fmt(r["rare_recall"]), *[fmt(r["recall"].get(c)) for c in rare])
    Console(width=160).print(table)


def learning_curve(curves: dict[str, list[dict]], path: Path, rare: Sequence[str], bands: Optional[dict] = None) -> Path:
    """Macro AUC and rare-class recall against the number of labels, one line per curve (optional +-1 sd bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in curves.items():
        n = [r["n_labels"] for r in rows]
        for ax, key in zip(axes, ("macro_auc", "rare_recall")):
            y = [np.nan if r[key] is None else r[key] for r in rows]
            line = ax.plot(n, y, marker="o", label=name)[0]
            if bands and name in bands and key in bands[name]:
                lo, hi = bands[name][key]
                ax.fill_between(n, lo, hi, color=line.get_color(), alpha=0.15)
    axes[0].set_ylabel("macro one-vs-rest AUC (held-out)")
    axes[1].set_ylabel(f"recall of rare classes ({', '.join(rare) or 'none'})")
    for ax in axes:
        ax.set_xlabel("labels")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
