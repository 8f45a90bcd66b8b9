"""What a person looks at after a run: a metrics table, a predictions catalog and pictures."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def metrics_table(metrics: Mapping[str, float], title: str = "Held-out metrics") -> Any:
    """A rich Table: one row per (task, metric)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("split")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        parts = key.split("/")
        if len(parts) == 3:
            split, task, metric = parts
        elif len(parts) == 2:
            split, task, metric = parts[0], "", parts[1]
        else:
            split, task, metric = "", "", key
        value = metrics[key]
        whole = float(value).is_integer() and abs(value) >= 2
        table.add_row(split or "-", task or "-", metric, f"{int(value)}" if whole else f"{value:.4f}")
    return table


def print_metrics(metrics: Mapping[str, float], title: str = "Held-out metrics") -> None:
    from rich.console import Console

    Console().print(metrics_table(metrics, title))


def predict_split(model: Any, dm: Any, split: str = "test", sources: Any = None) -> Any:
    """Run the model over one split; one row per object, every task's catalog columns plus the truth.

    Tasks that find several objects per image (detection) return source rows: pass a list as
    ``sources`` to collect them (one dict per detected object, with its ``image_id``)."""
    import pandas as pd
    import torch

    from galframe.inference import batch_columns

    model.eval()
    rows: list[dict] = []
    loader = dm._loader(split, train=False)
    for batch in loader:
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with model.inputs_from(batch) if hasattr(model, "inputs_from") else contextlib.nullcontext():
            cols = batch_columns(model, batch)  # a model of several modalities reads them from the batch
        found = cols.pop("sources", None)
        if sources is not None and found:
            sources.extend(found)
        rows.append(pd.DataFrame({k: np.asarray(v) for k, v in cols.items()}))
    pred = pd.concat(rows, ignore_index=True)
    truth = dm.splits[split].reset_index(drop=True)
    return truth.merge(pred, on="id", how="inner")


def rgb(flux: np.ndarray, bands: list[str]) -> np.ndarray:
    """Lupton asinh RGB of a (bands, H, W) flux cube: z, r, g -> R, G, B (or the reddest three bands)."""
    from astropy.visualization import make_lupton_rgb

    order = [bands.index(b) for b in ("z", "r", "g") if b in bands]
    if len(order) < 3:
        order = list(range(min(3, len(bands))))[::-1]
        while len(order) < 3:
            order.append(order[-1])
    r, g, b = (flux[i] for i in order)
    return make_lupton_rgb(r * 1.0, g * 1.2, b * 1.8, stretch=0.5, Q=8, minimum=0.0)


def write_reports(model: Any, dm: Any, metrics: Mapping[str, float], run_dir: Path, trainer: Any = None) -> list[Path]:
    """Print the metrics table and write predictions.parquet plus each task's PNGs into ``run_dir``.

    Under distributed training only global rank 0 writes (the others return ``[]``)."""
    from galframe.distributed import is_rank_zero

    if not is_rank_zero():
        return []
    print_metrics(metrics)
    written: list[Path] = []
    sources: list[dict] = []
    pred = predict_split(model, dm, "test", sources)
    out = run_dir / "predictions_test.parquet"
    pred.to_parquet(out)
    written.append(out)
    if sources:
        import pandas as pd

        written.append(run_dir / "sources_test.parquet")
        pd.DataFrame(sources).to_parquet(written[-1])
    for task in model.tasks.values():
        written += list(task.write_report(pred, dm, run_dir, model) or [])
    written.append(sample_grid(pred, dm, run_dir / "samples.png", [n for n in model.tasks]))
    logger = getattr(trainer, "logger", None)
    if logger is not None and hasattr(logger, "log_image"):
        for png in (p for p in written if p.suffix == ".png"):
            logger.log_image(key=f"report/{png.stem}", images=[str(png)])
    return written


def sample_grid(pred: Any, dm: Any, path: Path, task_names: list[str], n: int = 24) -> Path:
    """A grid of held-out stamps (Lupton RGB), titled with the truth and each classifier's answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = dm.dataset("test")
    ids_to_row = {int(i): k for k, i in enumerate(ds._ids)}
    picks = pred.groupby("class_name", group_keys=False).head(max(1, n // max(pred["class_name"].nunique(), 1))) if "class_name" in pred else pred.head(n)
    picks = picks.head(n)
    cols = 6
    rows = max(1, int(np.ceil(len(picks) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), picks.iterrows()):
        item = ds[ids_to_row[int(row["id"])]]
        ax.imshow(rgb(item["image"].numpy(), ds.bands), origin="lower")
        title = str(row.get("class_name", row["id"]))
        for t in task_names:
            if f"{t}_class" in row:
                mark = "" if row[f"{t}_class"] == row.get("class_name") else " x"
                title += f"\n-> {row[f'{t}_class']}{mark}"
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
