"""The labeling page: a small FastAPI app over the label store.

    python -m galframe_hitl.webapp --store runs/hitl/<run>/labels.sqlite            # 127.0.0.1:8765
    GALFRAME_HITL_TOKEN=<secret> python -m galframe_hitl.webapp --store ... --host 0.0.0.0

The loop (``galframe hitl oracle=web``) serves the same app in a thread; running it alone lets
people go on answering a round after the loop was stopped (the loop picks the answers up when it
resumes).  The page is plain HTML + JavaScript (``static/``), no build step.

Security: the app binds 127.0.0.1 unless told otherwise; any other address needs a token.  With a
token every request must carry it (``Authorization: Bearer``, ``X-Galframe-Token``, ``?token=`` or
the cookie the page sets), else 401.  Bound to a loopback address, requests naming another host are
refused (DNS rebinding), and cross-site POSTs (an ``Origin`` that is not the page's) get 403.  Unknown
ids or classes are refused with 404/422 and write nothing.
"""
from __future__ import annotations

import hmac
import io
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, Field

from galframe.errors import ConfigError, DataError

from galframe_hitl.oracle import check_bind, is_loopback
from galframe_hitl.store import LabelStore, StoreError

STATIC = Path(__file__).with_name("static")


class AnswerIn(BaseModel):
    """POST /api/answer: a class (name or index) or ``skip: true`` for one queued object."""

    id: int
    label: Optional[Union[int, str]] = None
    skip: bool = False
    labeler: str = Field(min_length=1, max_length=64)
    request_id: Optional[str] = Field(default=None, max_length=100)


class UndoIn(BaseModel):
    """POST /api/undo: take back this labeler's latest answer in force."""

    labeler: str = Field(min_length=1, max_length=64)
    request_id: Optional[str] = Field(default=None, max_length=100)
TOKEN_COOKIE = "galframe_hitl_token"
TOKEN_HEADER = "x-galframe-token"


class StampReader:
    """Flux stamps of a galaxy dataset directory by object id, rendered as PNG (cached)."""

    def __init__(self, root: Union[str, Path]) -> None:
        import pandas as pd

        from galframe.data.datamodule import CATALOG, read_manifest

        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.bands = [str(b) for b in self.manifest["bands"]]
        cat = pd.read_parquet(self.root / CATALOG, columns=["id", "shard", "index"])
        self.where = {int(i): (int(s), int(r)) for i, s, r in zip(cat["id"], cat["shard"], cat["index"])}
        self.files = [self.root / s["file"] for s in self.manifest["shards"]]
        self._handles: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._cache: "OrderedDict[tuple, bytes]" = OrderedDict()

    def flux(self, object_id: int) -> np.ndarray:
        import h5py

        if object_id not in self.where:
            raise StoreError(f"object id {object_id} is not in the dataset {self.root}.", 404)
        shard, row = self.where[object_id]
        with self._lock:  # h5py handles are shared between the server's threads
            handle = self._handles.get(shard)
            if handle is None:
                handle = self._handles[shard] = h5py.File(self.files[shard], "r")
            return np.asarray(handle["images"][row], dtype=np.float32)

    def png(self, object_id: int, band: str = "rgb") -> bytes:
        from PIL import Image

        from galframe.report import rgb

        if band != "rgb" and band not in self.bands:
            raise StoreError(f"unknown band {band!r}; this dataset has {self.bands} (or rgb).", 422)
        key = (object_id, band)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        flux = self.flux(object_id)
        if band == "rgb":
            pixels = rgb(flux, self.bands)
        else:
            pixels = asinh_gray(flux[self.bands.index(band)])
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(np.flipud(pixels))).save(buf, format="PNG")  # north up, as in samples.png
        data = buf.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > 2048:
                self._cache.popitem(last=False)
        return data


def asinh_gray(image: np.ndarray) -> np.ndarray:
    """One band as 8-bit grey: asinh stretch with the softening at the sky noise (robust estimate)."""
    x = np.asarray(image, dtype=np.float64)
    med = np.median(x)
    sigma = 1.4826 * np.median(np.abs(x - med)) or (np.std(x) or 1.0)
    y = np.arcsinh((x - med) / (3.0 * sigma))
    top = max(np.percentile(y, 99.7), 1e-6)
    return (np.clip(y / top, 0.0, 1.0) * 255).astype(np.uint8)


def create_app(
    store: Union[str, Path],
    token: Optional[str] = None,
    dataset: Optional[Union[str, Path]] = None,
    host: str = "127.0.0.1",
) -> Any:
    """The ASGI app.  ``dataset`` defaults to the one the store was made for."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
    from fastapi.staticfiles import StaticFiles

    store_path = Path(store)
    if not store_path.is_file():
        raise DataError(f"{store_path}: label store not found.")
    db = LabelStore(store_path)
    root = dataset or db.get_meta("dataset")
    stamps: Optional[StampReader] = None
    if root and Path(str(root)).is_dir():
        stamps = StampReader(root)
    token = token or None
    loopback = is_loopback(host)

    app = FastAPI(title="galframe labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = db

    def token_ok(request: Request) -> bool:
        if token is None:
            return True
        auth = request.headers.get("authorization", "")
        given = [
            auth[7:].strip() if auth.lower().startswith("bearer ") else "",
            request.headers.get(TOKEN_HEADER, ""),
            request.query_params.get("token", ""),
            request.cookies.get(TOKEN_COOKIE, ""),
        ]
        return any(g and hmac.compare_digest(g.encode(), token.encode()) for g in given)

    @app.middleware("http")
    async def guard(request: Request, call_next):  # type: ignore[no-untyped-def]
        if loopback:
            name = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
            if name and not is_loopback(name):
                return JSONResponse({"detail": f"host {name!r} refused: this page serves 127.0.0.1 only."}, 403)
        if not token_ok(request):
            return JSONResponse({"detail": "a valid token is required (Authorization: Bearer <token> or ?token=)."}, 401)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin and urlsplit(origin).netloc != request.headers.get("host"):
                return JSONResponse({"detail": f"cross-site request from {origin} refused."}, 403)
        response = await call_next(request)
        if token is not None and request.query_params.get("token") and request.url.path == "/":
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):  # type: ignore[no-untyped-def]
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    def current_round() -> Optional[int]:
        rnd = db.open_round()
        return rnd if rnd is not None else db.latest_round()

    @app.get("/")
    def index() -> Any:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/state")
    def state() -> Any:
        rnd = current_round()
        info = db.round_info(rnd) if rnd is not None else None
        queue = db.queue(rnd) if rnd is not None else []
        done = sum(1 for q in queue if q["answer"] is not None)
        return {
            "round": rnd,
            "state": info["state"] if info else None,
            "model_version": info["model_version"] if info else None,
            "acquisition": info["acquisition"] if info else None,
            "classes": db.classes,
            "bands": stamps.bands if stamps else [],
            "progress": {"done": done, "total": len(queue)},
            "n_labels": db.n_labels(),
            "queue": [{k: q[k] for k in ("id", "position", "answer", "labeler")} for q in queue],
        }

    @app.get("/api/object/{object_id}")
    def obj(object_id: int) -> Any:
        item = db.queued(object_id)
        if item is None:
            raise StoreError(f"object id {object_id} is not in any round's queue.", 404)
        info = dict(item["info"])
        near = [db.in_force(int(n)) for n in info.get("neighbours", [])]
        info["neighbours"] = [{"id": int(n), "label": a.label if a is not None else None}
                              for n, a in zip(info.get("neighbours", []), near)]
        current = db.in_force(object_id)
        return {**item, "info": info,
                "answer": None if current is None else (current.label if current.action == "label" else "skip")}

    @app.get("/api/stamp/{object_id}.png")
    def stamp(object_id: int, band: str = "rgb") -> Any:
        if stamps is None:
            raise StoreError("no dataset to draw stamps from (the store's dataset directory is missing).", 404)
        return Response(stamps.png(object_id, band), media_type="image/png")

    @app.post("/api/answer")
    def answer(body: AnswerIn) -> Any:
        if body.skip == (body.label is not None):
            raise StoreError("send either a label or skip=true.", 422)
        saved = db.answer(body.id, None if body.skip else str(body.label), body.labeler, skip=body.skip,
                          request_id=body.request_id)
        done, total = db.progress(saved.round) if saved.round is not None else (0, 0)
        return {"saved": saved.__dict__, "progress": {"done": done, "total": total}}

    @app.post("/api/undo")
    def undo(body: UndoIn) -> Any:
        undone = db.undo(body.labeler, request_id=body.request_id)
        done, total = db.progress(undone.round) if undone.round is not None else (0, 0)
        return {"undone": undone.__dict__, "progress": {"done": done, "total": total}}

    @app.get("/api/history")
    def history(labeler: Optional[str] = None, limit: int = 50) -> Any:
        events = [a.__dict__ for a in db.history() if labeler is None or a.labeler == labeler]
        return {"events": events[-max(1, min(int(limit), 1000)):]}

    @app.get("/api/labels.csv")
    def labels_csv() -> Any:
        import csv

        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["id", "label", "labeler", "timestamp", "round", "model_version"])
        for a in db.current():
            writer.writerow([a.object_id, a.label, a.labeler, a.timestamp, "" if a.round is None else a.round,
                             a.model_version or ""])
        return PlainTextResponse(buf.getvalue(), media_type="text/csv")

    @app.get("/healthz")
    def health() -> Any:
        return {"ok": True, "events": db.count_events()}

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m galframe_hitl.webapp", description="serve the galframe labeling page")
    parser.add_argument("--store", required=True, help="the label store (labels.sqlite of a hitl run)")
    parser.add_argument("--dataset", default=None, help="dataset directory (default: the one the store was made for)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None, help="required when --host is not a loopback address (or GALFRAME_HITL_TOKEN)")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get("GALFRAME_HITL_TOKEN") or None
    try:
        check_bind(args.host, token, host_key="--host", token_key="--token")
        app = create_app(args.store, token=token, dataset=args.dataset, host=args.host)
    except (ConfigError, DataError) as exc:
        print(f"galframe_hitl.webapp: error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    shown = args.host if ":" not in args.host else f"[{args.host}]"
    print(f"Labeling page: http://{shown}:{args.port}/" + ("?token=<token>" if token else ""), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
