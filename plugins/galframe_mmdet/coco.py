"""COCO JSON export and import of detection datasets.

Export: a galframe dataset with instances (e.g. ``galframe simulate data=sim_fields``) to COCO JSON
(categories from the dataset's classes, boxes as [x, y, w, h], masks as uncompressed RLE), and the
images as FITS cubes (bands, H, W) with a BANDn header per band, so other tools can read the set.

Import: COCO JSON plus its images (FITS cubes, or PNG / JPEG read as 8-bit RGB) into a galframe
dataset with an instance table, so ``galframe train data=dir data.path=<dir> task=detect`` trains
on it.  Polygon and RLE (compressed or not) segmentations are accepted.

    python -m galframe_mmdet.coco export <dataset dir> <out.json> [--images <dir>] [--split-ids ids.txt]
    python -m galframe_mmdet.coco import <in.json> <images root> <out dir> [--bands g r z]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from galframe.errors import DataError


def export_coco(dataset: "str | Path", out_json: "str | Path", images_dir: "str | Path | None" = None,
                ids: Optional[Sequence[int]] = None) -> dict:
    import h5py
    import pandas as pd

    from galframe.data.datamodule import read_manifest
    from galframe.data.format import CATALOG, INSTANCES

    root = Path(dataset)
    manifest = read_manifest(root)
    if not (root / INSTANCES).is_file():
        raise DataError(f"{root}: no {INSTANCES}; only datasets with object instances export to COCO.")
    catalog = pd.read_parquet(root / CATALOG)
    inst = pd.read_parquet(root / INSTANCES)
    if ids is not None:
        keep = set(int(i) for i in ids)
        catalog = catalog[catalog["id"].isin(keep)]
    if "annotated" in inst:
        inst = inst[inst["annotated"].astype(bool)]
    inst = inst[inst["image_id"].isin(set(catalog["id"]))]
    size = int(manifest["image_size"])
    classes = list(manifest["classes"])
    images = [{"id": int(i), "file_name": f"{int(i):08d}.fits", "height": size, "width": size} for i in catalog["id"]]
    anns = []
    for k, row in enumerate(inst.to_dict("records"), start=1):
        counts = [int(c) for c in row["rle"]]
        ann = {
            "id": k, "image_id": int(row["image_id"]), "category_id": int(row["class"]) + 1,
            "bbox": [float(row["bbox_x"]), float(row["bbox_y"]), float(row["bbox_w"]), float(row["bbox_h"])],
            "area": float(sum(counts[1::2])), "iscrowd": 0,
            "segmentation": {"size": [size, size], "counts": counts},
        }
        if "mag_r" in row:
            ann["mag_r"] = float(row["mag_r"])
        anns.append(ann)
    coco = {
        "info": {"description": f"galframe dataset {manifest.get('name')}", "bands": manifest["bands"],
                 "pixel_scale": manifest.get("pixel_scale"), "units": manifest.get("units")},
        "images": images, "annotations": anns,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
    }
    Path(out_json).write_text(json.dumps(coco))
    if images_dir is not None:
        from astropy.io import fits

        out = Path(images_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = [root / s["file"] for s in manifest["shards"]]
        handles = {}
        try:
            for row in catalog.itertuples(index=False):
                shard = int(row.shard)
                h5 = handles.get(shard) or handles.setdefault(shard, h5py.File(files[shard], "r"))
                cube = np.asarray(h5["images"][int(row.index)], dtype=np.float32)
                hdr = fits.Header()
                for b, band in enumerate(manifest["bands"], start=1):
                    hdr[f"BAND{b}"] = band
                hdr["BUNIT"] = manifest.get("units", "nanomaggies")
                fits.PrimaryHDU(cube, header=hdr).writeto(out / f"{int(row.id):08d}.fits", overwrite=True)
        finally:
            for h in handles.values():
                h.close()
    return coco


def _read_image(path: Path, bands: Sequence[str]) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: image listed in the COCO file not found.")
    if path.suffix.lower() in (".fits", ".fit", ".fz"):
        from astropy.io import fits

        try:
            with fits.open(path) as hdul:
                data = np.asarray(hdul[0].data, dtype=np.float32)
                names = [hdul[0].header.get(f"BAND{b}") for b in range(1, data.shape[0] + 1)] if data.ndim == 3 else []
        except Exception as exc:
            raise DataError(f"{path}: unreadable FITS ({type(exc).__name__}: {exc})") from exc
        if data.ndim == 2:
            data = data[None]
        if all(names) and names and list(names) != list(bands):
            try:
                data = data[[names.index(b) for b in bands]]
            except ValueError:
                raise DataError(f"{path}: has bands {names}, expected {list(bands)}.") from None
        if data.shape[0] != len(bands):
            raise DataError(f"{path}: has {data.shape[0]} band(s), expected {len(bands)} {list(bands)}.")
        return data
    from PIL import Image

    try:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    except Exception as exc:
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    # 8-bit RGB has no flux calibration: B, G, R stand for the bluest to reddest bands.  Rows stay in
    # file order, as the COCO annotations' coordinates are.
    if len(bands) != 3:
        raise DataError(f"{path}: an RGB image gives 3 bands; {len(bands)} were asked for ({list(bands)}).")
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))


def _ann_mask(ann: dict, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_util

    seg = ann.get("segmentation")
    if not seg:
        x, y, bw, bh = ann["bbox"]
        m = np.zeros((h, w), dtype=bool)
        m[int(y): int(np.ceil(y + bh)), int(x): int(np.ceil(x + bw))] = True
        return m
    if isinstance(seg, list):  # polygons
        rles = mask_util.frPyObjects(seg, h, w)
        return mask_util.decode(mask_util.merge(rles)).astype(bool)
    if isinstance(seg.get("counts"), list):
        seg = mask_util.frPyObjects(seg, h, w)
    return mask_util.decode(seg).astype(bool)


def import_coco(coco_json: "str | Path", images_root: "str | Path", out_dir: "str | Path",
                bands: Sequence[str] = ("g", "r", "z"), name: str = "coco") -> Path:
    from galframe.data.format import DatasetWriter
    from galframe.data.masks import mask_box, mask_to_rle

    src = Path(coco_json)
    try:
        coco = json.loads(src.read_text())
    except Exception as exc:
        raise DataError(f"{src}: not a readable COCO JSON file ({type(exc).__name__}: {exc})") from exc
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DataError(f"{src}: COCO file has no '{key}'.")
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[int, list] = {}
    for ann in coco["annotations"]:
        if ann["category_id"] not in cat_index:
            raise DataError(f"{src}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}.")
        by_image.setdefault(ann["image_id"], []).append(ann)
    sizes = {(im["height"], im["width"]) for im in coco["images"]}
    if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
        raise DataError(f"{src}: galframe datasets hold square images of one size; this file has sizes {sorted(sizes)}.")
    size = next(iter(sizes))[0]
    info = coco.get("info") or {}
    writer = DatasetWriter(out_dir, name, list(bands), size, float(info.get("pixel_scale") or 0.262), 22.5,
                           [c["name"] for c in cats], {"source": str(src)}, shard_size=512,
                           units=str(info.get("units") or "nanomaggies"))
    root = Path(images_root)
    with writer:
        for im in coco["images"]:
            image = _read_image(root / im["file_name"], bands)
            instances = []
            for ann in by_image.get(im["id"], []):
                m = _ann_mask(ann, size, size)
                x0, y0, x1, y1 = mask_box(m)
                instances.append({"class": cat_index[ann["category_id"]], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                  "rle": mask_to_rle(m), "area": int(m.sum()), "annotated": True,
                                  "mag_r": float(ann.get("mag_r", np.nan))})
            writer.add(image[None], rows=[{"coco_id": int(im["id"]), "file_name": str(im["file_name"]),
                                           "n_annotated": len(instances), "instances": instances}])
    return Path(out_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m galframe_mmdet.coco", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="galframe dataset -> COCO JSON (+ FITS images)")
    ex.add_argument("dataset")
    ex.add_argument("out_json")
    ex.add_argument("--images", default=None, help="also write each image as a FITS cube into this directory")
    im = sub.add_parser("import", help="COCO JSON + images -> galframe dataset")
    im.add_argument("coco_json")
    im.add_argument("images_root")
    im.add_argument("out_dir")
    im.add_argument("--bands", nargs="+", default=["g", "r", "z"])
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            coco = export_coco(args.dataset, args.out_json, args.images)
            print(f"Wrote {len(coco['images'])} images, {len(coco['annotations'])} annotations to {args.out_json}")
        else:
            out = import_coco(args.coco_json, args.images_root, args.out_dir, args.bands)
            print(f"Wrote dataset {out}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
