"""A real image no one here made: the Hubble Deep Field (scikit-image's RGB JPEG), through galframe's
JPEG reader, tiled for a detector trained on simulated fields, compared with SEP on the same pixels.

The JPEG's R, G, B (WFPC2 F814W, F606W, F450W) become pseudo-flux bands z, r, g (docs/data.md); its
pixels are 0.04"-ish, not the 0.262" the detector was trained on, so this measures how the pipeline
behaves on foreign data (counts and agreement with SEP), not a calibrated completeness.

    python benchmarks/hubble_deep_field.py --detector <detect run dir> [--classifier <classify run dir>]

Writes hdf.detections.parquet, hdf_sep.parquet, summary.json and overlay.png to --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def sep_on_image(path: Path, white: float, thresh: float, minarea: int) -> "tuple[np.ndarray, dict]":
    from galframe.readers.image import RGBConversion
    from galframe.readers.units import read_image_file
    from galframe_mmdet.sep_baseline import sep_detect

    flux = RGBConversion(white=white)(read_image_file(str(path)))
    return flux, sep_detect(flux, None, thresh=thresh, minarea=minarea)


def match_centres(a: np.ndarray, b: np.ndarray, radius: float) -> int:
    """Greedy one-to-one matches between two (N, 2) centre lists within ``radius`` pixels."""
    if len(a) == 0 or len(b) == 0:
        return 0
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    used_a, used_b, n = set(), set(), 0
    for i, j in zip(*np.unravel_index(np.argsort(d, axis=None), d.shape)):
        if d[i, j] > radius:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", required=True, help="a galframe train run (task=detect) or its .ckpt")
    parser.add_argument("--classifier", default=None, help="optional: a classify run, applied to cutouts at the detections")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hubble_deep_field")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--white", type=float, default=0.2)
    # JPEG quantisation makes the empty sky almost noiseless: a low threshold finds compression artefacts
    parser.add_argument("--sep-thresh", type=float, default=10.0)
    parser.add_argument("--sep-minarea", type=int, default=15)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import pandas as pd
    from PIL import Image
    from skimage import data

    jpg = args.out / "hdf.jpg"
    Image.fromarray(data.hubble_deep_field()).save(jpg, quality=95)
    out = args.out / "hdf.parquet"
    cmd = [sys.executable, "-m", "galframe.cli", "predict", f"ckpt={args.detector}", "data=image", f"data.path={jpg}",
           f"data.tile_size={args.tile}", f"data.overlap={args.overlap}", f"data.white={args.white}", f"out={out}",
           "overwrite=true"]
    subprocess.run(cmd, check=True, cwd=str(ROOT))
    det = pd.read_parquet(args.out / "hdf.detections.parquet")
    flux, sep = sep_on_image(jpg, args.white, args.sep_thresh, args.sep_minarea)
    sep_xy = np.stack([(sep["boxes"][:, 0] + sep["boxes"][:, 2]) / 2 - 0.5, (sep["boxes"][:, 1] + sep["boxes"][:, 3]) / 2 - 0.5], 1)
    pd.DataFrame({"x": sep_xy[:, 0], "y": sep_xy[:, 1], "x_min": sep["boxes"][:, 0], "y_min": sep["boxes"][:, 1],
                  "x_max": sep["boxes"][:, 2], "y_max": sep["boxes"][:, 3]}).to_parquet(args.out / "hdf_sep.parquet")
    det_xy = det[["x", "y"]].to_numpy(float) if len(det) else np.zeros((0, 2))
    matched = match_centres(det_xy, sep_xy, radius=4.0)
    summary = {
        "image": "skimage.data.hubble_deep_field() (872 x 1000 RGB JPEG)",
        "tiles": f"{args.tile} px, overlap {args.overlap}",
        "sep": f"thresh {args.sep_thresh} sigma, minarea {args.sep_minarea}, background subtracted",
        "n_galframe": int(len(det)), "n_sep": int(len(sep_xy)), "matched_within_4px": int(matched),
        "fraction_of_galframe_matched": matched / len(det) if len(det) else None,
        "fraction_of_sep_matched": matched / len(sep_xy) if len(sep_xy) else None,
        "galframe_classes": det["class"].value_counts().to_dict() if "class" in det and len(det) else {},
    }
    if args.classifier and len(det):
        centres = args.out / "centres.csv"
        det[["x", "y"]].assign(id=np.arange(len(det))).to_csv(centres, index=False)
        cls_out = args.out / "hdf_classified.parquet"
        subprocess.run([sys.executable, "-m", "galframe.cli", "predict", f"ckpt={args.classifier}", "data=image",
                        f"data.path={jpg}", f"data.centres={centres}", f"data.white={args.white}", f"out={cls_out}",
                        "overwrite=true"], check=True, cwd=str(ROOT))
        cls = pd.read_parquet(cls_out)
        if "classify_class" in cls:
            summary["classify_counts"] = cls["classify_class"].value_counts().to_dict()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from galframe.report import rgb

    fig, ax = plt.subplots(figsize=(10, 9))
    ax.imshow(rgb(flux, ["g", "r", "z"]), origin="upper")
    for r in det.to_dict("records"):
        ax.add_patch(Rectangle((r["x_min"] - 0.5, r["y_min"] - 0.5), r["x_max"] - r["x_min"], r["y_max"] - r["y_min"],
                               fill=False, ec="#ff5050" if r.get("class", "galaxy") == "galaxy" else "#40d0ff", lw=0.8))
    ax.plot(sep_xy[:, 0], sep_xy[:, 1], "+", color="yellow", ms=4, mew=0.6)
    ax.set_title(f"Hubble Deep Field: galframe {len(det)} boxes (red galaxy, blue star), SEP {len(sep_xy)} (+), "
                 f"{matched} within 4 px", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out / "overlay.png", dpi=110)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
