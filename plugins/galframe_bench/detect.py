"""Detection with 1000 training fields: pretrained LVM + Mask R-CNN vs ResNet50 + Mask R-CNN vs SEP.

All three are scored on the same 500 held-out simulated fields (data=sim_fields): precision, recall
and F1 at IoU 0.5 (class-agnostic, and class-aware for the two detectors), COCO AP / AP50 for boxes
and masks, completeness versus r magnitude, and the figures astronomers read (galframe_mmdet/survey_metrics.py):
completeness and purity against r magnitude, the 50%- and 90%-completeness depths at purity >= 0.95,
F1 on the bright sample (r < 21) and on everything, blend recovery, and duplicate detections per field
before and after the mask-aware suppression (one inference pass without it, the suppression applied to
its output).  Writes results.json, results.md, completeness.png, completeness_purity.png and
overlays.png to benchmarks/results/detect_1000/ (or --out), and with --headline the "detect" entry of
headline.json.

    galframe bench detect --profile full              # the full comparison (CPU: hours; a GPU: minutes)
    python benchmarks/detect_1000.py --epochs 1 --n 80 --out /tmp/det   # the same, by hand
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def ensure_pretrained() -> None:
    """The LVM weights the experiment names (made once, as `make demo` does)."""
    from galframe.build import compose
    from galframe.train import pretrain

    overrides = ["data.n=6000", "trainer.max_epochs=3", "pretrain.zoo_name=lvm_tiny-demo", "pretrain.reuse=true", "logger=none"]
    print("galframe pretrain " + " ".join(overrides), flush=True)
    cfg = compose("pretrain", overrides)
    pretrain(cfg, Path(cfg.paths.runs) / "pretrain" / time.strftime("%Y-%m-%d_%H-%M-%S"))


def train(experiment: str, run_dir: Path, overrides: list[str]) -> dict:
    if (run_dir / "metrics.json").is_file():
        print(f"{run_dir}: done already, reusing its metrics")
    else:
        from galframe.build import compose
        from galframe.train import run

        args = [f"experiment={experiment}", "logger=csv", *overrides]
        print(f"galframe train {' '.join(args)} (in {run_dir})", flush=True)
        start = time.perf_counter()
        run(compose("train", args), run_dir=run_dir)
        (run_dir / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["wall_seconds"] = float((run_dir / "wall_seconds.txt").read_text()) if (run_dir / "wall_seconds.txt").is_file() else None
    comp = run_dir / "completeness_detect.json"
    metrics["completeness"] = json.loads(comp.read_text()) if comp.is_file() else None
    return metrics


def test_split(overrides: list[str]):
    from galframe.build import build_datamodule, compose

    dm = build_datamodule(compose("train", ["experiment=detect_1000", *overrides]), progress=False)
    dm.prepare()
    return dm


def load_model(run_dir: Path):
    from galframe.checkpoints import checkpoint_file, model_from_checkpoint

    return model_from_checkpoint(checkpoint_file(run_dir))


def overlays(dm, models: dict, sep_options: dict, path: Path, n: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from galframe_mmdet.report import draw_field
    from galframe_mmdet.sep_baseline import sep_detect

    ds = dm.dataset("test")
    sig_cols = [f"sky_sigma_{b}" for b in ds.bands]
    cols = ["truth", *models, "SEP"]
    fig, axes = plt.subplots(n, len(cols), figsize=(3 * len(cols), 3.1 * n), squeeze=False)
    for r in range(n):
        item = ds[r]
        image = item["image"].numpy()
        truth = {k: v.numpy() for k, v in item["instances"].items()}
        draw_field(axes[r, 0], image, ds.bands, truth, None, title=f"field {item['id']}: {len(truth['boxes'])} objects")
        for c, (name, model) in enumerate(models.items(), start=1):
            with torch.no_grad():
                det = model(item["image"][None])["detect"]["detections"][0]
            k = int((det["scores"] >= 0.5).sum())
            draw_field(axes[r, c], image, ds.bands, truth, det, title=f"{name}: {k} found")
        sep = sep_detect(image, ds.catalog.iloc[r][sig_cols].to_numpy(float), **sep_options)
        sep["scores"] = np.ones(len(sep["boxes"]))
        draw_field(axes[r, -1], image, ds.bands, truth, sep, title=f"SEP: {len(sep['boxes'])} found")
    fig.suptitle("white dashed: truth; red: galaxy, blue: star (SEP: unclassified)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def survey_records(model, dm, batch: int = 8) -> tuple:
    """The test split through ``model`` without suppression and with it (applied to the same output):
    two DetectionRecords with each detection's own r photometry."""
    import torch

    from galframe.data.datamodule import collate
    from galframe_mmdet.metrics import DetectionRecord
    from galframe_mmdet.suppress import suppress_detections
    from galframe_mmdet.survey_metrics import record_pred

    task = model.tasks["detect"]
    ds = dm.dataset("test")
    r = list(ds.bands).index("r")
    raw, kept = DetectionRecord(), DetectionRecord()
    enabled, task.suppress_enabled = task.suppress_enabled, False
    model.eval()
    try:
        for start in range(0, len(ds), batch):
            items = [ds[i] for i in range(start, min(start + batch, len(ds)))]
            truths = [{k: v.numpy() for k, v in it["instances"].items()} for it in items]
            b = collate(items)  # (moves the instances out of the items)
            with torch.no_grad():
                dets = model(b["image"])["detect"]["detections"]
            shape = tuple(b["image"].shape[-2:])
            for i, (truth, det) in enumerate(zip(truths, dets)):
                flux_r = b["image"][i, r].numpy()
                after = suppress_detections(det, min_score=task.score_threshold, **task.suppress_options)
                raw.add(record_pred(det, flux_r, task.zero_point), truth, shape)
                kept.add(record_pred(after, flux_r, task.zero_point), truth, shape)
    finally:
        task.suppress_enabled = enabled
    return raw, kept


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n", type=int, default=1600, help="fields simulated (train 62.5%%, val 6.25%%, test 31.25%%)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results" / "detect_1000")
    parser.add_argument("--runs", type=Path, default=None, help="where the training runs go (default <out>/runs)")
    parser.add_argument("--detectors", default="lvm_tiny,resnet50", help="which detectors to train (comma-separated)")
    parser.add_argument("--lvm-overrides", nargs="*", default=[], help="overrides for the LVM detector only (e.g. backbone.weights=lvm_tiny-g10)")
    parser.add_argument("--headline", type=Path, default=None, help="write the 'detect' entry of this headline.json")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for both detectors' runs (e.g. trainer=gpu)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = [f"data.n={args.n}"]
    if "lvm_tiny" in args.detectors and not any(o.startswith("backbone.weights=") for o in args.lvm_overrides):
        ensure_pretrained()
    runs = args.runs or args.out / "runs"
    known = {"lvm_tiny": ("LVM-tiny", "detect_1000", [*args.lvm_overrides]), "resnet50": ("ResNet50", "detect_1000_resnet50", [])}
    chosen = [d.strip() for d in args.detectors.split(",") if d.strip()]
    if not chosen or set(chosen) - set(known):
        parser.error(f"--detectors: a comma-separated subset of {', '.join(known)} (got {args.detectors!r})")
    results = {f"{known[d][0]} + Mask R-CNN": train(known[d][1], runs / d, [*data, f"trainer.max_epochs={args.epochs}", *known[d][2], *args.overrides])
               for d in chosen}
    first = next(iter(results))
    from galframe_mmdet.report import completeness_plot
    from galframe_mmdet.sep_baseline import sep_record, summarise

    dm = test_split(data)
    sep_options = {"thresh": 1.5, "minarea": 5}
    start = time.perf_counter()
    rec = sep_record(dm.dataset("test"), photometry=True, **sep_options)
    bins = results[first]["completeness"]["edges"] if results[first]["completeness"] else [16, 18, 20, 21, 22, 22.5]
    sep = dict(summarise(rec, ["galaxy", "star"], bins))
    sep["wall_seconds"] = time.perf_counter() - start
    n_test = len(dm.splits["test"])
    n_train = len(dm.splits["train"])

    rows = []
    for name, m in results.items():
        rows.append({"method": name, "precision": m["test/detect/precision"], "recall": m["test/detect/recall"],
                     "f1": m["test/detect/f1"], "f1_class": m.get("test/detect/f1_class"), "ap50": m.get("test/detect/ap50"),
                     "ap": m.get("test/detect/ap"), "mask_ap": m.get("test/detect/mask_ap"), "wall_seconds": m["wall_seconds"]})
    rows.append({"method": "SEP (deblended, 1.5 sigma)", "precision": sep["precision"], "recall": sep["recall"], "f1": sep["f1"],
                 "f1_class": None, "ap50": None, "ap": None, "mask_ap": None, "wall_seconds": sep["wall_seconds"]})
    report = {"n_train_fields": n_train, "n_test_fields": n_test, "epochs": args.epochs, "machine": os.environ.get("GALFRAME_MACHINE", ""),
              "rows": rows, "completeness": {**{k: v["completeness"] for k, v in results.items()}, "SEP": sep["completeness"]}}
    from galframe_mmdet.report import completeness_purity_plot
    from galframe_mmdet.survey_metrics import duplicates, survey_summary

    models = {known[d][0]: load_model(runs / d) for d in chosen}
    fine = [16.0, 17.0, 18.0, 19.0, 19.5, 20.0, 20.5, 21.0, 21.25, 21.5, 21.75, 22.0, 22.25, 22.5]
    surveys, dups_before = {}, {}
    for name, model in models.items():
        raw, kept = survey_records(model, dm)
        thr = model.tasks["detect"].score_threshold
        surveys[name] = survey_summary(kept, fine, thr)
        dups_before[name] = duplicates(raw, thr)["per_field"]
    surveys["SEP"] = survey_summary(rec, fine, -np.inf)
    report["survey"] = surveys
    report["duplicates_per_field_before_suppression"] = dups_before
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=float))
    completeness_purity_plot(surveys, args.out / "completeness_purity.png")

    def fmt(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) and v <= 1.0 else f"{v:.0f}"

    lines = [f"Detection on {n_test} held-out simulated fields, trained on {n_train} ({args.epochs} epochs); IoU 0.5.", "",
             "| method | precision | recall | F1 | F1 (with class) | AP50 | AP | mask AP | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {fmt(r['precision'])} | {fmt(r['recall'])} | {fmt(r['f1'])} | {fmt(r['f1_class'])} | "
                     f"{fmt(r['ap50'])} | {fmt(r['ap'])} | {fmt(r['mask_ap'])} | {fmt(r['wall_seconds'])} |")
    lines += ["", "Astronomers' figures (survey_metrics.py): F1 at each method's operating point on the bright sample "
              "(true r < 21) and on everything; depths where completeness falls below 50% / 90% at the most complete "
              "operating point with purity >= 0.95; blend recovery of touching true pairs; duplicates per field after "
              "(before) the mask-aware suppression.", "",
              "| method | F1 bright | F1 all | depth50 @ P>=0.95 | depth90 @ P>=0.95 | blends split | duplicates / field |",
              "|---|---|---|---|---|---|---|"]
    for name, sv in surveys.items():
        d50, d90 = sv["depth50_at_purity95"], sv["depth90_at_purity95"]
        before = f" ({dups_before[name]:.2f})" if name in dups_before else ""
        lines.append(f"| {name} | {sv['f1_bright']:.3f} | {sv['f1_all']:.3f} | {'-' if d50 is None else f'{d50:.2f}'} | "
                     f"{'-' if d90 is None else f'{d90:.2f}'} | {sv['blend_recovery']['recovered']:.3f} "
                     f"({sv['blend_recovery']['pairs']:.0f} pairs) | {sv['duplicates']['per_field']:.2f}{before} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    if args.headline is not None:
        from galframe_bench.fewshot import write_headline

        key = {"LVM-tiny": "lvm", "ResNet50": "resnet50", "SEP": "sep"}
        write_headline(args.headline, "detect", {
            "n_train_fields": n_train, "n_test_fields": n_test, "epochs": args.epochs, "results": str(args.out / "results.json"),
            "f1_bright": {key[k]: v["f1_bright"] for k, v in surveys.items()},
            "f1_all": {key[k]: v["f1_all"] for k, v in surveys.items()},
            "depth50_at_purity95": {key[k]: v["depth50_at_purity95"] for k, v in surveys.items()},
            "blend_recovery": {key[k]: v["blend_recovery"]["recovered"] for k, v in surveys.items()},
            "duplicates_per_field": {**{key[k]: surveys[k]["duplicates"]["per_field"] for k in models},
                                     **{f"{key[k]}_before": dups_before[k] for k in models}},
        })
    print("\n".join(lines))
    curves = {k: v for k, v in report["completeness"].items() if v}
    completeness_plot(curves, args.out / "completeness.png")
    overlays(dm, models, sep_options, args.out / "overlays.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
