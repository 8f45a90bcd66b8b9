"""The classical baseline: Source Extractor's algorithm (SEP), with deblending, on the same fields.

Detection image: the sum of the bands, each divided by its sky noise (a chi-like image), so one
threshold in units of sigma applies.  Every SEP object becomes a box from its segmentation
footprint (the pixels SEP assigned to it), comparable with the instance-mask boxes of the truth.
SEP does not classify: its detections are scored class-agnostically.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np


def sep_detect(
    image: np.ndarray,
    sigma: Optional[Sequence[float]] = None,
    thresh: float = 1.5,
    minarea: int = 5,
    deblend_nthresh: int = 32,
    deblend_cont: float = 0.005,
) -> dict[str, np.ndarray]:
    """SEP on a (bands, H, W) flux image (sky-subtracted when ``sigma`` is given, else SEP's background is
    subtracted and its rms used); returns boxes (N, 4) x0 y0 x1 y1 (pixel edges), scores (the
    detection SNR, for ranking), labels (all 0) and masks (N, H, W) from the segmentation map."""
    import sep

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    if sigma is None:  # an image of unknown noise (real data): subtract SEP's background map per band
        backs = [sep.Background(np.ascontiguousarray(b)) for b in img]
        img = np.stack([b - bk.back() for b, bk in zip(img, backs)])
        sigma = [float(bk.globalrms) for bk in backs]
    sig = np.asarray(sigma, dtype=np.float64).reshape(-1, 1, 1)
    det = np.ascontiguousarray((img / sig).sum(axis=0) / np.sqrt(len(img)))  # unit noise per pixel
    objects, segmap = sep.extract(
        det, thresh, err=1.0, minarea=minarea, deblend_nthresh=deblend_nthresh, deblend_cont=deblend_cont,
        segmentation_map=True, clean=True,
    )
    n = len(objects)
    h, w = det.shape
    boxes = np.zeros((n, 4), dtype=np.float32)
    masks = np.zeros((n, h, w), dtype=bool)
    for k in range(n):
        m = segmap == (k + 1)
        if not m.any():  # an object whose pixels were all cleaned away: use SEP's own extent
            o = objects[k]
            boxes[k] = (o["xmin"], o["ymin"], o["xmax"] + 1, o["ymax"] + 1)
            continue
        ys, xs = np.nonzero(m)
        boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        masks[k] = m
    snr = objects["flux"] / np.sqrt(np.maximum(objects["npix"], 1)) if n else np.zeros(0)
    return {"boxes": boxes, "scores": np.asarray(snr, dtype=np.float32), "labels": np.zeros(n, dtype=np.int64), "masks": masks}


def sep_record(dataset: Any, indices: Optional[Sequence[int]] = None, photometry: bool = False, **options: Any) -> Any:
    """Run SEP over a GalaxyDataset split (with ``instances``) into a DetectionRecord (with each
    detection's r magnitude from its segment when ``photometry``)."""
    from galframe_mmdet.metrics import DetectionRecord

    rec = DetectionRecord()
    cat = dataset.catalog
    bands = list(dataset.bands)
    sig_cols = [f"sky_sigma_{b}" for b in bands]
    for i in indices if indices is not None else range(len(dataset)):
        item = dataset[i]
        image = item["image"].numpy()
        sigma = cat.iloc[i][sig_cols].to_numpy(float) if all(c in cat for c in sig_cols) else None
        pred = sep_detect(image, sigma, **options)
        if photometry and "r" in bands:
            from galframe_mmdet.survey_metrics import detection_mags

            pred["mag_r"] = detection_mags(image[bands.index("r")], pred["boxes"], pred["masks"])
        truth = {k: v.numpy() for k, v in item["instances"].items()}
        rec.add(pred, truth, image.shape[-2:])
    return rec


def summarise(record: Any, classes: Sequence[str], bins: Sequence[float], iou: float = 0.5) -> Mapping[str, Any]:
    from galframe_mmdet.metrics import completeness, prf

    # every SEP detection counts (its SNR only ranks detections, for AP)
    out = dict(prf(record, -np.inf, iou))
    out["completeness"] = completeness(record, bins, -np.inf, iou)
    return out
