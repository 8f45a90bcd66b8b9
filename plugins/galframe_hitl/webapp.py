"""The labeling page: a small FastAPI app over the label store.

    python -m galframe_hitl.webapp --store runs/hitl/<run>/labels.sqlite            # 127.0.0.1:8765
    GALFRAME_HITL_TOKEN=<secret> python -m galframe_hitl.webapp --store ... --host 0.0.0.0

The loop (``galframe hitl oracle=web``) serves the same app in a thread; running it alone lets
people go on answering a round after the loop was stopped (the loop picks the answers up when it
resumes).  The page is plain HTML + JavaScript (``static/``), no build step.

"More like this": served with ``--index <dir>`` (an embedding index of the same dataset, made by
``galframe embed data=dataset data.path=<dataset>``), the page's ``m`` key / button lists the object's
nearest neighbours in that index (``GET /api/similar/<id>?k=8``) with their labels in force.

Identities: a store with no labelers is single-user mode (the name in the page's labeler box, as
before).  Once ``galframe hitl labelers add NAME`` registered someone, every API call needs a labeler's
token (``Authorization: Bearer``, ``X-Galframe-Token``, the page link's ``?token=`` or the HttpOnly
cookie that the link or ``POST /api/login`` sets), and every answer and undo is that labeler's: a
name in the request body is never trusted.  Labelers undo only their own answers; an ``admin`` may
undo anyone's and export every label.

Security: the app binds 127.0.0.1 unless told otherwise; any other address needs a token.  With a
token every request must carry it (or a labeler's token), else 401.  Bound to a loopback address,
requests naming another host are refused (DNS rebinding), and cross-site POSTs (an ``Origin`` that
is not the page's) get 403.  Every malformed request gets a 4xx with a one-line reason and writes
nothing: strict request models (64-bit ids, declared classes, bounded strings), a body size limit,
JSON without NaN/Infinity or lone surrogates; error replies always encode.
"""

import hmac
import io
import json
import logging
import math
import os
import sqlite3
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from galframe.errors import ConfigError, DataError

from galframe_hitl.serving import check_bind, is_loopback
from galframe_hitl.store import INT64_MAX, INT64_MIN, LabelStore, StoreError, export_row, printable, short

STATIC = Path(__file__).with_name("static")
TOKEN_COOKIE = "galframe_hitl_token"
TOKEN_HEADER = "x-galframe-token"
#: the largest request body accepted (an answer is well under 1 KiB)
MAX_BODY = 16 * 1024
log = logging.getLogger("galframe_hitl.webapp")

Int64 = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
Name = Annotated[str, Field(strict=True, min_length=1, max_length=64)]
ClassName = Annotated[str, Field(strict=True, min_length=1, max_length=64)]
RequestId = Annotated[str, Field(strict=True, pattern=r"^[\x21-\x7e]{1,100}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnswerIn(Strict):
    """POST /api/answer: a class (name or index) or ``skip: true`` for one queued object.

    ``labeler`` is the name in single-user mode; signed in, it may only repeat one's own name."""

    id: Int64
    label: Optional[Union[Int64, ClassName]] = None
    skip: StrictBool = False
    labeler: Optional[Name] = None
    request_id: Optional[RequestId] = None


class UndoIn(Strict):
    """POST /api/undo: take back one's latest answer in force (or ``event_id``, one's own answer).

    An admin may name another ``labeler`` (their latest answer) or any ``event_id``."""

    labeler: Optional[Name] = None
    event_id: Optional[Int64] = None
    request_id: Optional[RequestId] = None


class LoginIn(Strict):
    """POST /api/login: a labeler's token; the reply sets the session cookie."""

    token: Annotated[str, Field(strict=True, min_length=1, max_length=200)]


@dataclass(frozen=True)
class Who:
    """Who sent a request: a labeler (``name``, ``role``), or nobody in particular (single-user mode)."""

    name: Optional[str]
    role: str  # 'labeler', 'admin', 'single' (no labelers configured) or 'none' (not signed in)

    @property
    def admin(self) -> bool:
        return self.role in ("admin", "single")


def json_bytes(content: Any) -> bytes:
    """JSON that always encodes: ASCII only (lone surrogates escaped), non-finite numbers as null."""
    try:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
    except (ValueError, TypeError):
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"),
                          default=str).encode("ascii")


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"the number {text[:24]} is out of range")
    return value


def check_json(body: bytes) -> Optional[str]:
    """Why a request body is not acceptable JSON (None if it is): UTF-8, RFC 8259 numbers, valid strings."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not UTF-8 (byte {exc.start})."
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
    except _NotJson as exc:
        return f"invalid JSON: {exc}."
    except ValueError:  # an integer of more than 4300 digits
        return "invalid JSON: a number too long to read."
    except RecursionError:
        return "invalid JSON: nested too deeply."
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"invalid Unicode in a string: lone surrogate {ascii(item[exc.start])}."
    return None


class BodyCheck:
    """ASGI middleware: refuse bodies over ``limit`` bytes (413) and, on POST /api/..., anything but
    UTF-8 JSON (415/400), before the app parses it; the checked body is handed on unchanged."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            reason = (f"the request body is over {self.limit} bytes." if length.isdigit()
                      else "Content-Length is not a number.")
            await reply(send, 413 if length.isdigit() else 400, reason, close=True)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await reply(send, 413, f"the request body is over {self.limit} bytes.", close=True)
                return
            more = message.get("more_body", False)
        if scope["method"] == "POST" and scope["path"].startswith("/api/"):
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                await reply(send, 415, "send the body as JSON (Content-Type: application/json).")
                return
            problem = check_json(body)
            if problem is not None:
                await reply(send, 400, problem)
                return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def reply(send: Any, status: int, detail: str, close: bool = False) -> None:
    body = json_bytes({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def validation_reason(errors: Any) -> str:
    """One line from pydantic's errors: where and what, never the (possibly huge) input."""
    parts = []
    for err in list(errors)[:3]:
        loc = ".".join(_loc_part(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    text = "; ".join(parts)
    return text if len(text) <= 300 else text[:297] + "..."


def _loc_part(x: Any) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if isinstance(x, str) and len(x) <= 24 and printable(x):
        return x
    return short(x, 24)


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
    max_body: int = MAX_BODY,
    index: Optional[Union[str, Path]] = None,
) -> Any:
    """The ASGI app.  ``dataset`` defaults to the one the store was made for; ``index``: an embedding index
    directory of that dataset (``galframe embed``) for "more like this"."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    store_path = Path(store)
    if not store_path.is_file():
        raise DataError(f"{store_path}: label store not found.")
    db = LabelStore(store_path)
    root = dataset or db.get_meta("dataset")
    stamps = StampReader(root) if root and Path(str(root)).is_dir() else None
    similar = None
    if index is not None:
        from galframe_search import Index

        similar = Index.open(index)  # a bad directory: a one-line DataError now, not at the first click
    app = FastAPI(title="galframe labeling", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  default_response_class=_safe_json())
    app.state.store = db
    app.state.unexpected = 0  # requests that reached the catch-all (a bug, logged); tests expect none
    page = _Page(app, db, stamps, token or None, is_loopback(host), similar)
    _add_guard(page)
    _add_error_handlers(page)
    _add_session_routes(page)
    _add_round_routes(page)
    _add_answer_routes(page)
    _add_export_routes(page)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyCheck, limit=max_body)
    return app


_SAFE_JSON: list = []


def _safe_json() -> type:
    """The JSON response class of every reply (:func:`json_bytes`: always encodes), made on first use."""
    if not _SAFE_JSON:
        from fastapi.responses import Response

        class SafeJSON(Response):
            media_type = "application/json"

            def render(self, content: Any) -> bytes:
                return json_bytes(content)

        _SAFE_JSON.append(SafeJSON)
    return _SAFE_JSON[0]


@dataclass
class _Page:
    """What the page's handlers share: the app, the store, the stamps and who may come in."""

    app: Any
    db: LabelStore
    stamps: Optional[StampReader]
    token: Optional[str]
    loopback: bool
    index: Any = None  #: a galframe_search.Index over the dataset ("more like this"), or None

    def error(self, status: int, detail: str, headers: Optional[dict] = None) -> Any:
        return _safe_json()({"detail": detail}, status_code=status, headers=headers)

    def credentials(self, request: Any) -> list[str]:
        auth = request.headers.get("authorization", "")
        given = [
            auth[7:].strip() if auth.lower().startswith("bearer ") else "",
            request.headers.get(TOKEN_HEADER, ""),
            request.query_params.get("token", ""),
            request.cookies.get(TOKEN_COOKIE, ""),
        ]
        return [g for g in given if g and len(g) <= 200]

    def shared_ok(self, given: list[str]) -> bool:
        token = self.token
        return token is not None and any(hmac.compare_digest(g.encode("utf-8", "replace"), token.encode()) for g in given)

    def identify(self, request: Any) -> tuple[Who, bool]:
        """(who sent it, whether it may pass the gate)."""
        given = self.credentials(request)
        if not self.db.has_labelers():
            return Who(None, "single"), self.token is None or self.shared_ok(given)
        for g in given:
            found = self.db.authenticate(g)
            if found is not None:
                return Who(*found), True
        return Who(None, "none"), self.token is None or self.shared_ok(given)

    def unexpected(self, request: Any, exc: Exception) -> Any:
        if isinstance(exc, sqlite3.OperationalError):  # the store is locked or busy: nothing was written
            return self.error(503, f"the label store is busy ({short(str(exc), 60)}); nothing was written, retry.",
                              {"Retry-After": "1"})
        self.app.state.unexpected += 1
        log.error("refused %s %s after an unexpected %s", request.method, request.url.path, type(exc).__name__,
                  exc_info=exc)
        return self.error(400, f"request refused: unexpected {type(exc).__name__} while handling it; nothing was written.")

    @staticmethod
    def who_of(request: Any) -> Who:
        return request.state.who

    def actor(self, request: Any, named: Optional[str]) -> str:
        """The labeler an answer is attributed to: the signed-in one, or (single-user mode) the name sent."""
        who = self.who_of(request)
        if who.role == "single":
            if named is None:
                raise StoreError("labeler: a name is required (the page's labeler box).", 422)
            return named
        if named is not None and named != who.name:
            raise StoreError(f"signed in as {who.name}: answers and undos are {who.name}'s; leave labeler out.", 403)
        return str(who.name)

    def admin_only(self, request: Any, what: str) -> None:
        if not self.who_of(request).admin:
            raise StoreError(f"{what} is for admins; {self.who_of(request).name} is a labeler.", 403)

    def current_round(self) -> Optional[int]:
        rnd = self.db.open_round()
        return rnd if rnd is not None else self.db.latest_round()


PUBLIC = ("/api/login", "/api/logout", "/api/me")


def _add_guard(page: _Page) -> None:
    """The gate every request passes: host (DNS rebinding), token or labeler, same-origin POSTs, safe headers."""
    from fastapi import Request

    app, db, error = page.app, page.db, page.error

    @app.middleware("http")
    async def guard(request: Request, call_next):  # type: ignore[no-untyped-def]
        try:
            if page.loopback:
                name = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
                if name and not is_loopback(name):
                    return error(403, f"host {short(name)} refused: this page serves 127.0.0.1 only.")
            path = request.url.path
            who, passes = page.identify(request)
            if not passes and path not in PUBLIC:
                return error(401, "a valid token is required (Authorization: Bearer <token> or ?token=).")
            if who.role == "none" and path.startswith("/api/") and path not in PUBLIC:
                return error(401, "sign in: open your labeler link (?token=...) or POST /api/login {\"token\": ...}.")
            if request.method not in ("GET", "HEAD"):
                origin = request.headers.get("origin")
                if origin and urlsplit(origin).netloc != request.headers.get("host"):
                    return error(403, f"cross-site request from {short(origin, 80)} refused.")
            request.state.who = who
            response = await call_next(request)
        except Exception as exc:  # the catch-all: a one-line 4xx, the connection stays open
            return page.unexpected(request, exc)
        given = request.query_params.get("token")
        if given and path == "/" and (page.shared_ok([given]) or db.authenticate(given)):
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'")
        return response


def _add_error_handlers(page: _Page) -> None:
    """Store errors, invalid requests and HTTP errors as one-line JSON replies."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app, error = page.app, page.error

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):  # type: ignore[no-untyped-def]
        return error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        return error(422, validation_reason(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # type: ignore[no-untyped-def]
        return error(exc.status_code, short(exc.detail, 200) if not isinstance(exc.detail, str) else exc.detail[:200],
                     getattr(exc, "headers", None))


def _add_session_routes(page: _Page) -> None:
    """The page itself, who is signed in, sign in and out."""
    from fastapi import Request
    from fastapi.responses import FileResponse

    app, db, safe_json = page.app, page.db, _safe_json()

    @app.get("/", include_in_schema=False)
    def index() -> Any:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/me")
    def me(request: Request) -> Any:
        """Who the page is signed in as (``mode``: single-user or team)."""
        who = page.who_of(request)
        return {"mode": "single" if who.role == "single" else "team", "labeler": who.name,
                "role": None if who.role in ("none", "single") else who.role}

    @app.post("/api/login")
    def login(body: LoginIn) -> Any:
        found = db.authenticate(body.token)
        if found is None:
            raise StoreError("unknown or revoked token.", 401)
        response = safe_json({"labeler": found[0], "role": found[1]})
        response.set_cookie(TOKEN_COOKIE, body.token, httponly=True, samesite="strict")
        return response

    @app.post("/api/logout")
    def logout() -> Any:
        response = safe_json({"ok": True})
        response.delete_cookie(TOKEN_COOKIE)
        return response


def _object_id() -> Any:
    from fastapi import Path as PathParam

    return Annotated[int, PathParam(ge=INT64_MIN, le=INT64_MAX)]


def _add_round_routes(page: _Page) -> None:
    """The round's queue, one queued object and its stamp."""
    from fastapi import Query, Request
    from fastapi.responses import Response

    app, db = page.app, page.db
    ObjectId = _object_id()

    @app.get("/api/state")
    def state(request: Request) -> Any:
        who = page.who_of(request)
        rnd = page.current_round()
        info = db.round_info(rnd) if rnd is not None else None
        queue = db.queue(rnd) if rnd is not None else []
        mine = db.opinions_of(who.name, [q["id"] for q in queue]) if who.name else {}
        done = sum(1 for q in queue if q["answer"] is not None)
        return {
            "round": rnd,
            "state": info["state"] if info else None,
            "model_version": info["model_version"] if info else None,
            "acquisition": info["acquisition"] if info else None,
            "classes": db.classes,
            "bands": page.stamps.bands if page.stamps else [],
            "progress": {"done": done, "total": len(queue)},
            "n_labels": db.n_labels(),
            "queue": [{**{k: q[k] for k in ("id", "position", "answer", "labeler")}, "mine": mine.get(q["id"])}
                      for q in queue],
        }

    @app.get("/api/object/{object_id}")
    def obj(request: Request, object_id: ObjectId) -> Any:
        item = db.queued(object_id)
        if item is None:
            raise StoreError(f"object id {object_id} is not in any round's queue.", 404)
        info = dict(item["info"])
        near = [db.in_force(int(n)) for n in info.get("neighbours", [])]
        info["neighbours"] = [{"id": int(n), "label": a.label if a is not None else None}
                              for n, a in zip(info.get("neighbours", []), near)]
        current = db.in_force(object_id)
        who = page.who_of(request)
        return {**item, "info": info,
                "answer": None if current is None else (current.label if current.action == "label" else "skip"),
                "mine": db.opinions_of(who.name, [object_id]).get(object_id) if who.name else None}

    @app.get("/api/similar/{object_id}")
    def similar(object_id: ObjectId, k: Annotated[int, Query(ge=1, le=100)] = 8) -> Any:
        """The ``k`` objects of the embedding index most like ``object_id``, nearest first, with their labels."""
        if page.index is None:
            raise StoreError("no embedding index: serve the page with --index <directory made by galframe embed>.", 404)
        try:
            table = page.index.similar(str(object_id), k=k)
        except DataError as exc:
            raise StoreError(str(exc), 404) from None
        measure = "similarity" if "similarity" in table.columns else "distance"  # cosine or l2 index
        found = [(int(i), float(v)) for i, v in zip(table["id"], table[measure]) if str(i).lstrip("-").isdigit()]
        labels = [db.in_force(i) for i, _ in found]
        return {"id": object_id, "neighbours": [{"id": i, measure: v, "label": a.label if a is not None else None}
                                                for (i, v), a in zip(found, labels)]}

    @app.get("/api/stamp/{object_id}.png")
    def stamp(object_id: ObjectId, band: Annotated[str, Query(max_length=16)] = "rgb") -> Any:
        if page.stamps is None:
            raise StoreError("no dataset to draw stamps from (the store's dataset directory is missing).", 404)
        return Response(page.stamps.png(object_id, band), media_type="image/png")


def _add_answer_routes(page: _Page) -> None:
    """Answers, undos and a labeler's history."""
    from fastapi import Query, Request

    app, db = page.app, page.db

    @app.post("/api/answer")
    def answer(request: Request, body: AnswerIn) -> Any:
        if body.skip == (body.label is not None):
            raise StoreError("send either a label or skip=true.", 422)
        saved = db.answer(body.id, None if body.skip else body.label, page.actor(request, body.labeler), skip=body.skip,
                          request_id=body.request_id)
        done, total = db.progress(saved.round) if saved.round is not None else (0, 0)
        return {"saved": saved.__dict__, "progress": {"done": done, "total": total}}

    @app.post("/api/undo")
    def undo(request: Request, body: UndoIn) -> Any:
        who = page.who_of(request)
        if who.role == "single":
            name = page.actor(request, body.labeler)
            undone = db.undo(name, request_id=body.request_id, event_id=body.event_id)
        elif who.admin:
            undone = db.undo(str(who.name), request_id=body.request_id, owner=body.labeler, event_id=body.event_id)
        else:
            if body.labeler is not None and body.labeler != who.name:
                raise StoreError(f"{who.name} may undo only their own answers (labeler {short(body.labeler)} is not).", 403)
            undone = db.undo(str(who.name), request_id=body.request_id, owner=str(who.name), event_id=body.event_id)
        done, total = db.progress(undone.round) if undone.round is not None else (0, 0)
        return {"undone": undone.__dict__, "progress": {"done": done, "total": total}}

    @app.get("/api/history")
    def history(request: Request, labeler: Annotated[Optional[str], Query(max_length=64)] = None,
                limit: Annotated[int, Query(ge=1, le=INT64_MAX)] = 50) -> Any:
        who = page.who_of(request)
        if not who.admin:
            if labeler not in (None, who.name):
                raise StoreError(f"{who.name} may read only their own history.", 403)
            labeler = who.name
        events = [a.__dict__ for a in db.history(labeler)]
        return {"events": events[-min(limit, 1000):]}


def _add_export_routes(page: _Page) -> None:
    """The admins' CSV exports, and health."""
    from fastapi import Request
    from fastapi.responses import PlainTextResponse

    app, db = page.app, page.db

    @app.get("/api/labels.csv")
    def labels_csv(request: Request, aggregate: Literal["latest", "majority", "dawid_skene"] = "latest") -> Any:
        """One label per galaxy: the latest answer not undone, or every labeler's answers combined."""
        page.admin_only(request, "the export")
        return PlainTextResponse(csv_text(db.exported(aggregate)), media_type="text/csv")

    @app.get("/api/answers.csv")
    def answers_csv(request: Request) -> Any:
        """Every labeler's answer in force per galaxy (several rows per galaxy with several labelers)."""
        page.admin_only(request, "the export")
        return PlainTextResponse(csv_text(db.opinions()), media_type="text/csv")

    @app.get("/healthz")
    def health() -> Any:
        return {"ok": True, "events": db.count_events()}


def csv_text(answers: Any) -> str:
    import csv

    from galframe_hitl.store import EXPORT_COLUMNS

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    for a in answers:
        writer.writerow(export_row(a))
    return buf.getvalue()


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m galframe_hitl.webapp", description="serve the galframe labeling page")
    parser.add_argument("--store", required=True, help="the label store (labels.sqlite of a hitl run)")
    parser.add_argument("--dataset", default=None, help="dataset directory (default: the one the store was made for)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None, help="required when --host is not a loopback address (or GALFRAME_HITL_TOKEN)")
    parser.add_argument("--index", default=None, help="an embedding index of the dataset (galframe embed) for 'more like this'")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get("GALFRAME_HITL_TOKEN") or None
    try:
        check_bind(args.host, token, host_key="--host", token_key="--token")
        app = create_app(args.store, token=token, dataset=args.dataset, host=args.host, index=args.index)
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
