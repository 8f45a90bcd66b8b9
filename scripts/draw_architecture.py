"""Draw docs/img/architecture.png: galframe's flow from a config to a catalog, and where each plugin kind enters.

    .venv/bin/python scripts/draw_architecture.py
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

CORE, PLUGIN, OUTPUT = "#dbe9f6", "#fde2c8", "#dff2dd"

# (key, x, y, width, height, colour, title, detail)
BOXES = [
    ("conf", 0.2, 6.4, 3.0, 1.1, CORE, "config", "galframe.conf (train, predict, data, trainer,\nlogger, optimizer ...) + each plugin's conf/\non Hydra's search path"),
    ("compose", 4.0, 6.4, 2.8, 1.1, CORE, "galframe.build.compose", "one Hydra compose for every\ncommand, the HITL loop, the bench,\nthe notebook API and the tests"),
    ("registry", 7.6, 6.4, 3.4, 1.1, CORE, "galframe.registry", "entry points galframe.plugins:\nkind.name = module:Class\n(bases in galframe.api)"),
    ("build", 4.0, 4.5, 2.8, 1.1, CORE, "galframe.build.build", "cfg -> (GalaxyModel,\nGalaxyDataModule);\ninit= warm start"),
    ("plugins", 7.6, 4.1, 3.4, 1.9, PLUGIN, "plugins", "backbone: lvm, timm\ntask: classify, votes, regress,\n  restore, detect   pretext: restore, distill\nfield: label, votes, clean, instances\nreader: fits, hdf5, mosaic ...\nacquisition, oracle, simulation, command"),
    ("data", 0.2, 4.5, 3.0, 1.1, CORE, "GalaxyDataModule", "a galframe dataset (HDF5 + catalog);\nbatch fields load, collate and move\nas their plugin declares"),
    ("trainer", 4.0, 2.6, 2.8, 1.1, CORE, "galframe.train.run", "Lightning Trainer: tasks or pretexts,\nlogger (W&B offline, CSV ...),\nselect best|last, resume"),
    ("ckpt", 7.6, 2.6, 3.4, 1.1, CORE, "galframe.checkpoints + galframe.zoo", "load_model(run dir | .ckpt | zoo name);\nthe stored config, never the\nweights it was initialised from"),
    ("predict", 4.0, 0.7, 2.8, 1.1, CORE, "galframe.predict", "readers -> galframe.stream\n(reject loop) -> galframe.inference\n-> galframe.catalog"),
    ("catalog", 0.2, 0.7, 3.0, 1.1, OUTPUT, "catalog + report", "Parquet/FITS catalog, rejects,\nfigures and metrics in the run dir"),
    ("users", 7.6, 0.5, 3.4, 1.5, OUTPUT, "users of the same layer", "CLI: galframe train / predict /\n  pretrain / ingest / hitl / bench\nnotebook: galframe.load_model,\n  model.embed, galframe.finetune"),
]
ARROWS = [("conf", "compose"), ("compose", "registry"), ("compose", "build"), ("registry", "plugins"),
          ("plugins", "build"), ("build", "data"), ("build", "trainer"), ("data", "trainer"), ("trainer", "ckpt"),
          ("ckpt", "predict"), ("predict", "catalog"), ("users", "predict"), ("users", "ckpt")]


def centre(box: tuple) -> tuple[float, float]:
    _, x, y, w, h, *_ = box
    return x + w / 2, y + h / 2


def edge(box: tuple, towards: tuple[float, float], pad: float = 0.1) -> tuple[float, float]:
    """Where the line from the box's centre towards a point leaves the box (plus a small gap)."""
    _, x, y, w, h, *_ = box
    cx, cy = centre(box)
    dx, dy = towards[0] - cx, towards[1] - cy
    scale = min((w / 2 + pad) / abs(dx) if dx else float("inf"), (h / 2 + pad) / abs(dy) if dy else float("inf"))
    return cx + dx * scale, cy + dy * scale


def main() -> None:
    fig, ax = plt.subplots(figsize=(12, 8.4))
    by_key = {b[0]: b for b in BOXES}
    for key, x, y, w, h, colour, title, detail in BOXES:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#444", lw=1.2))
        ax.text(x + w / 2, y + h - 0.18, title, ha="center", va="top", fontsize=10.5, weight="bold")
        ax.text(x + w / 2, y + h - 0.45, detail, ha="center", va="top", fontsize=8)
    for a, b in ARROWS:
        start, end = edge(by_key[a], centre(by_key[b])), edge(by_key[b], centre(by_key[a]))
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#555", lw=1.1,
                                     shrinkA=0, shrinkB=0, zorder=0))
    for colour, label, x in ((CORE, "core (galframe/)", 0.2), (PLUGIN, "plugins (plugins/ or any package)", 3.2),
                             (OUTPUT, "outputs and entry points", 7.2)):
        ax.add_patch(FancyBboxPatch((x, 7.85), 0.35, 0.25, boxstyle="round,pad=0.02", fc=colour, ec="#444"))
        ax.text(x + 0.5, 7.97, label, va="center", fontsize=9)
    ax.set_xlim(0, 11.2)
    ax.set_ylim(0.3, 8.3)
    ax.axis("off")
    ax.set_title("galframe: config -> registry -> model -> trainer -> catalog", fontsize=13)
    out = Path(__file__).resolve().parents[1] / "docs" / "img" / "architecture.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main()
