"""``galframe predict``: a trained model over survey files, one catalog row per object.

    galframe predict ckpt=<run dir | .ckpt | zoo name> data=<reader config> data.path=<files> out=catalog.parquet

The reader yields objects shard by shard; each object is matched to the model's bands, its bad pixels
masked and counted (``n_bad_pixels``), cut to the model's input size and run through the model in
batches (the model applies its own scaling, as in training).  Each finished shard is written as a
Parquet part in ``.<out name>.parts/`` next to ``out`` and logged in ``done.jsonl``: a restart with
the same command skips finished shards.  At the end the parts are merged, streaming, into ``out``
(Parquet, or a FITS binary table when ``out`` ends in ``.fits``) and every rejected object or file
is listed with its reason in ``<out stem>.rejects.csv``.  Memory does not grow with the number of
objects.  ``strict=true`` stops at the first bad input instead.

Detection tasks: a task with ``predict_sources(outputs)`` (or ``predict_detections``) returning, per
image, the detected objects (a list of row dicts, or a dict of columns) with a box ``x0, y0, x1, y1``
(or ``x_min, y_min, x_max, y_max``) in the input's continuous pixel coordinates (pixel i spans
[i, i + 1), as in COCO/mmdet), a ``score``, optionally its own centre ``x, y`` (0-based pixel
centres, e.g. a mask centroid) and anything else, gets them written to
``<out stem>.detections.parquet`` in the source image's pixels, with RA/Dec where the source has a
WCS; on tiled sources (``reader.mosaic``, ``reader.image`` with ``tile_size``) the duplicates that tile
overlaps make are merged by :func:`galframe.readers.tiles.merge_tile_detections`.

Several processes (``trainer=ddp trainer.devices=N``, as in training; docs/distributed.md): galframe
starts the other local ranks itself (or joins those of ``torchrun``/``srun``) and every rank lists the
same shards.  Rank 0 opens the parts directory; the shards still to do are dealt out as
:func:`galframe.distributed.shard` deals them (every N-th to each rank, and with ``num_workers`` every
k-th of those to each DataLoader worker), so each object is predicted once.  A rank writes its shards'
parts and logs them in its own ``done.rank<r>.jsonl``; after a barrier rank 0 merges every part in the
reader's shard order: the catalog and the rejects file are those of one process (same rows, same order).
A restart, with any number of processes, skips the shards any of them finished.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from galframe.errors import ConfigError, DataError, GalframeError, did_you_mean

PARTS_VERSION = 1
BASE_COLUMNS = ("id", "ra", "dec")
TAIL_COLUMNS = ("n_bad_pixels", "source")


# -- the model ------------------------------------------------------------------------------------------
def zoo_index() -> Path:
    from galframe.paths import cache_dir

    return cache_dir() / "zoo" / "index.json"


def _zoo_entries() -> list[dict]:
    index = zoo_index()
    if not index.is_file():
        return []
    try:
        entries = json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{index}: unreadable zoo index ({exc}).") from exc
    return [e for e in entries if isinstance(e, dict) and "name" in e]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def register_model(ckpt: Any, name: str, description: str = "") -> dict:
    """Copy a trained model's checkpoint into the local zoo as ``name`` (``ckpt=<name>`` finds it)."""
    from galframe.train import checkpoint_file

    file = checkpoint_file(str(ckpt))
    index = zoo_index()
    index.parent.mkdir(parents=True, exist_ok=True)
    target = index.parent / f"{name}.ckpt"
    if file.resolve() != target.resolve():
        shutil.copyfile(file, target)
    entry = {"name": name, "file": target.name, "kind": "model", "sha256": sha256_of(target), "description": description}
    entries = [e for e in _zoo_entries() if e.get("name") != name] + [entry]
    index.write_text(json.dumps(entries, indent=2) + "\n")
    return entry


def resolve_checkpoint(spec: Any) -> Path:
    """A trained model's checkpoint from a run directory, a ``.ckpt`` file or the name of a zoo model."""
    from galframe.train import checkpoint_file

    if spec in (None, "", "???"):
        raise ConfigError("ckpt is not set: give a training run directory, a .ckpt file or a model name from the zoo.")
    path = Path(str(spec)).expanduser()
    if path.exists():
        return checkpoint_file(str(path))
    entries = {str(e["name"]): e for e in _zoo_entries()}
    entry = entries.get(str(spec))
    if entry is None:
        models = [n for n, e in entries.items() if str(e.get("file", "")).endswith(".ckpt")]
        raise ConfigError(
            f"ckpt='{spec}' is neither a run directory, a checkpoint file nor a model in the zoo ({zoo_index()})."
            f"{did_you_mean(str(spec), models)}"
        )
    file = zoo_index().parent / str(entry.get("file", ""))
    if not str(file).endswith(".ckpt"):
        raise ConfigError(
            f"zoo entry '{spec}' holds backbone weights ({file.name}), not a trained model: predict needs a checkpoint "
            "of galframe train (a run directory or .ckpt), e.g. registered with galframe.predict.register_model."
        )
    if not file.is_file():
        raise ConfigError(f"zoo model '{spec}' (index {zoo_index()}): file {file} not found.")
    if entry.get("sha256") and sha256_of(file) != entry["sha256"]:
        raise ConfigError(f"zoo model '{spec}': {file} does not match the sha256 in {zoo_index()}.")
    return file


def load_model(spec: Any, device: str = "cpu") -> tuple[Any, Path]:
    """(the GalaxyModel in eval mode on ``device``, its checkpoint file)."""
    import torch

    from galframe.model import GalaxyModel

    file = resolve_checkpoint(spec)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigError(f"{file}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in (ckpt.get("hyper_parameters") or {}):
        raise ConfigError(f"{file}: not a checkpoint of a galframe model (no state_dict and model config).")
    config = copy.deepcopy(dict(ckpt["hyper_parameters"]["config"]))
    backbone = dict(config["backbone"])
    if backbone.get("weights"):
        backbone["weights"] = None  # the checkpoint holds the trained weights; do not look for the pretrained ones
    config["backbone"] = backbone
    model = GalaxyModel(config)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model.to(device), file


def pick_device(spec: str = "auto") -> str:
    import torch

    if spec in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(spec)


# -- bookkeeping of a (resumable) run -----------------------------------------------------------------------
class PartsDir:
    """``.<out name>.parts/``: ``run.json`` (what the run is), ``done.jsonl`` (one line per finished
    shard: key, fingerprint, rows, rejects, detections, rank, worker; ``done.rank<r>.jsonl`` for rank r of
    several processes, so no two processes append to one file) and the per-shard Parquet parts."""

    def __init__(self, out: Path, rank: Optional[int] = None) -> None:
        self.out = out
        self.root = out.parent / f".{out.name}.parts"
        self.done_file = self.root / ("done.jsonl" if rank is None else f"done.rank{int(rank):05d}.jsonl")

    def start(self, identity: Mapping[str, Any], overwrite: bool) -> dict[str, dict]:
        """Create or reopen the parts directory; returns the finished shards by key."""
        run_file = self.root / "run.json"
        identity = json.loads(json.dumps(identity, default=str))
        if overwrite and self.root.exists():
            shutil.rmtree(self.root)
        if self.root.exists() and run_file.is_file():
            old = json.loads(run_file.read_text())
            if old.get("identity") != identity:
                differ = sorted(k for k in set(old.get("identity", {})) | set(identity)
                                if old.get("identity", {}).get(k) != identity.get(k))
                raise ConfigError(
                    f"{self.root}: an unfinished run with other settings ({', '.join(differ)}) writes to {self.out}; "
                    "pass overwrite=true to start again, or choose another out."
                )
            return self.finished()
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*"):
            stale.unlink() if stale.is_file() else shutil.rmtree(stale)
        _atomic_write(run_file, json.dumps({"version": PARTS_VERSION, "identity": identity}, indent=2))
        return {}

    def finished(self) -> dict[str, dict]:
        """The finished shards by key, from every process's log (one process or several, this run or an
        earlier one of the same identity)."""
        done: dict[str, dict] = {}
        for file in sorted(self.root.glob("done*.jsonl")):
            with open(file) as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill
                    if isinstance(entry, dict) and "key" in entry:
                        done[entry["key"]] = entry
        return done

    def part(self, key: str, kind: str = "part") -> Path:
        return self.root / f"{kind}-{key}.parquet"

    def mark_done(self, entry: Mapping[str, Any]) -> None:
        with open(self.done_file, "a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_table(frame: Any, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    os.replace(tmp, path)


# -- the prediction loop ------------------------------------------------------------------------------------
def _meta_columns(meta: Mapping[str, Any], columns: Any, taken: set) -> dict[str, Any]:
    from galframe.readers.base import scalar_meta

    values = scalar_meta(meta)
    for key in ("ra", "dec", "source"):
        values.pop(key, None)
    if columns in (None, "none"):
        return {}
    if columns != "all":
        wanted = set(columns)
        values = {k: v for k, v in values.items() if k in wanted}
    return {(f"cat_{k}" if k in taken else k): v for k, v in values.items()}


class Predictor:
    """Runs ``model`` over ``reader``'s shards (see the module docstring); :meth:`run` returns a summary."""

    def __init__(
        self,
        model: Any,
        reader: Any,
        core: Mapping[str, Any],
        out: Any,
        batch_size: int = 64,
        strict: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        columns: Any = "all",
        rejects: Optional[Any] = None,
        identity: Optional[Mapping[str, Any]] = None,
        keep_parts: bool = False,
        log: Callable[[str], None] = print,
        num_workers: int = 0,
    ) -> None:
        self.model, self.reader, self.core = model, reader, dict(core)
        self.out = Path(str(out)).expanduser().absolute()
        if self.out.suffix.lower() not in (".parquet", ".fits", ".fit"):
            raise ConfigError(f"out={out}: the catalog must end in .parquet or .fits.")
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {batch_size}).")
        self.strict, self.overwrite, self.progress = bool(strict), bool(overwrite), bool(progress)
        self.columns = columns
        stem = self.out.with_suffix("")
        self.rejects_file = Path(str(rejects)).expanduser() if rejects else Path(f"{stem}.rejects.csv")
        self.detections_file = Path(f"{stem}.detections.parquet")
        self.identity = dict(identity or {})
        self.keep_parts = bool(keep_parts)
        self.log = log
        self.num_workers = int(num_workers)
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be 0 (read in this process) or more (got {num_workers}).")
        self.bands = list(model.bands)
        self.size = int(model.data_info.image_size)
        self.detect_tasks = {
            n: getattr(t, "predict_sources", None) or getattr(t, "predict_detections")
            for n, t in model.tasks.items()
            if callable(getattr(t, "predict_sources", None)) or callable(getattr(t, "predict_detections", None))
        }
        self.device = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else "cpu"

    # -- one batch ---------------------------------------------------------------------------------------
    def _infer(self, batch: list) -> tuple[dict, list]:
        import torch

        x = torch.from_numpy(np.stack([c.flux for _, c in batch])).to(self.device)
        with torch.inference_mode():
            outputs = self.model(x)
        cols: dict[str, Any] = {}
        dets: list = []
        for name, task in self.model.tasks.items():
            if name in self.detect_tasks:
                dets.append((name, self.detect_tasks[name](outputs[name])))
            cols.update({k: np.asarray(v) for k, v in task.predict_columns(outputs[name]).items()})
        return cols, dets

    def _rows(self, batch: list, cols: dict) -> Any:
        import pandas as pd

        n = len(batch)
        frame = {
            "id": [str(s.id) for s, _ in batch],
            "ra": [float(s.meta.get("ra", np.nan)) if s.meta.get("ra") is not None else np.nan for s, _ in batch],
            "dec": [float(s.meta.get("dec", np.nan)) if s.meta.get("dec") is not None else np.nan for s, _ in batch],
        }
        for key, value in cols.items():
            if len(value) != n:
                raise DataError(f"task column '{key}' has {len(value)} values for a batch of {n} objects.")
            frame[key] = value
        frame["n_bad_pixels"] = np.asarray([c.n_bad for _, c in batch], dtype=np.int64)
        frame["source"] = [str(s.meta.get("source", "")) for s, _ in batch]
        taken = set(frame)
        metas = [_meta_columns(s.meta, self.columns, taken) for s, _ in batch]
        keys = list(dict.fromkeys(k for m in metas for k in m))
        for key in keys:
            frame[key] = [m.get(key) for m in metas]
        return pd.DataFrame(frame)

    def _detection_rows(self, batch: list, dets: list) -> list:
        import pandas as pd

        rebin = int(self.core.get("rebin", 1) or 1)
        frames = []
        for task_name, per_image in dets:
            if len(per_image) != len(batch):
                raise DataError(f"task '{task_name}': predict_detections gave {len(per_image)} results for {len(batch)} images.")
            for (stamp, conformed), found in zip(batch, per_image):
                found = pd.DataFrame(found if isinstance(found, list) else {k: np.asarray(v) for k, v in dict(found).items()})
                if len(found) == 0:
                    continue
                found = found.rename(columns={"x0": "x_min", "y0": "y_min", "x1": "x_max", "y1": "y_max",
                                              "x": "centre_x", "y": "centre_y"})
                missing = [c for c in ("x_min", "y_min", "x_max", "y_max", "score") if c not in found]
                if missing:
                    raise DataError(f"task '{task_name}': its detections lack {missing} (a box x0, y0, x1, y1 and a score).")
                oy, ox = conformed.offset
                for a, off in (("x_min", ox), ("x_max", ox), ("y_min", oy), ("y_max", oy)):
                    found[a] = (found[a].astype(float) + off) * rebin  # input pixels -> the stamp's own pixels
                for a, off in (("centre_x", ox), ("centre_y", oy)):
                    if a in found:
                        found[a] = (found[a].astype(float) + 0.5 + off) * rebin - 0.5
                found.insert(0, "task", task_name)
                found.insert(0, "id", str(stamp.id))
                found["source"] = str(stamp.meta.get("source", ""))
                found["tile_x0"] = int(stamp.meta.get("tile_x0", 0))
                found["tile_y0"] = int(stamp.meta.get("tile_y0", 0))
                frames.append(found)
        return frames

    # -- the shards of this process ---------------------------------------------------------------------------
    def _source(self, light: bool) -> "_ShardSource":
        return _ShardSource(self.reader, self.bands, self.size, self.core, self.batch_size, self.strict,
                            self.rejects_file.name, light)

    def _predict_shards(self, todo: Sequence[Any], rank: int, world: int, parts: PartsDir,
                        advance: Callable[[int, int], None]) -> list[str]:
        """Predict this rank's share of ``todo`` (every ``world``-th shard from ``rank``; with ``num_workers``,
        every k-th of those per DataLoader worker) and log each finished shard; returns their keys."""
        from galframe.distributed import launcher_alive
        from galframe.distributed import shard as share

        mine = share(todo, rank, world, workers=False)
        if not mine:
            return []
        by_key = {s.key: s for s in mine}
        workers = min(self.num_workers, len(mine))
        stream = _shard_stream_class()(self._source(light=workers > 0), list(todo), rank, world)
        if workers:
            from torch.utils.data import DataLoader

            events: Any = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                     worker_init_fn=functools.partial(_die_with_parent, os.getpid()))
        else:
            events = iter(stream)
        pending: dict[str, tuple[list, list, list]] = {}
        finished = []
        for kind, key, payload in events:
            if kind == "error":
                raise payload  # strict=true in a worker: the same error as in this process
            if not launcher_alive():
                import sys

                print(f"galframe predict: rank {rank}: the process that started it is gone (killed?); stopping. "
                      "The same command resumes the run.", file=sys.stderr)
                raise SystemExit(1)
            frames, rejects, det_frames = pending.setdefault(key, ([], [], []))
            if kind == "batch":
                cols, dets = self._infer(payload)
                frames.append(self._rows(payload, cols))
                if dets:
                    det_frames.extend(self._detection_rows(payload, dets))
                advance(len(payload), 0)
            elif kind == "reject":
                rejects.append(payload)
                advance(1, 1)
            elif kind == "end":
                del pending[key]
                self._finish_shard(by_key[key], frames, rejects, det_frames, parts, rank, payload.get("worker"))
                finished.append(key)
        return finished

    def _finish_shard(self, shard: Any, frames: list, rejects: list, det_frames: list, parts: PartsDir,
                      rank: int, worker: Optional[int]) -> dict:
        import pandas as pd

        rows = 0
        if frames:
            frame = pd.concat(frames, ignore_index=True)
            rows = len(frame)
            _write_table(frame, parts.part(shard.key))
        n_det = 0
        if det_frames:
            det = pd.concat(det_frames, ignore_index=True)
            n_det = len(det)
            _write_table(det, parts.part(shard.key, "det"))
        entry = {"key": shard.key, "fingerprint": shard.fingerprint, "rows": rows, "rejects": rejects, "detections": n_det,
                 "rank": rank, "worker": worker}
        parts.mark_done(entry)
        return entry

    # -- the run ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Predict, merge, return a summary.  With several processes (a process group, see
        :func:`galframe.distributed.join`) every rank calls it: each predicts its share, rank 0 merges, and every
        rank returns rank 0's summary plus its own ``rank``, ``world_size`` and ``rank_shards``."""
        from galframe import distributed

        rank, world = distributed.global_rank(), distributed.world_size()

        def check_out() -> None:
            if self.out.exists() and not self.overwrite:
                raise ConfigError(f"{self.out}: exists (a finished catalog); pass overwrite=true to write it again.")

        distributed.on_rank_zero(check_out)  # one verdict for all ranks, reported by rank 0
        start_time = time.time()
        self.reader.bind(self.bands, self.size)
        shards = self.reader.shards()
        keys = [s.key for s in shards]
        if len(set(keys)) != len(keys):
            raise DataError(f"{self.reader.describe()}: the reader gave repeated shard keys.")
        identity = {**self.identity, "bands": self.bands, "image_size": self.size, "core": self.core,
                    "columns": self.columns, "n_shards": len(shards)}
        parts = PartsDir(self.out, rank if world > 1 else None)
        listing = [[s.key, s.fingerprint] for s in shards]

        def open_parts() -> tuple[list, dict]:
            """Rank 0 alone creates, checks or clears the parts directory and reads what is done: one view for
            all ranks (a rank reading the logs itself could see a shard another rank has just finished)."""
            parts.start(identity, self.overwrite)
            return listing, {k: e.get("fingerprint") for k, e in parts.finished().items()}

        first, done = distributed.on_rank_zero(open_parts)
        if first != listing:
            raise DataError(
                f"{self.reader.describe()}: rank {rank} finds other shards ({len(listing)}) than rank 0 ({len(first)}) "
                "or other file versions: every process must see the same inputs (a shared file system)."
            )
        todo, skipped = [], 0
        for s in shards:
            if s.key in done and done[s.key] == s.fingerprint:
                skipped += 1
            else:
                todo.append(s)
        if rank == 0:
            if skipped:
                self.log(f"Resuming: skipping {skipped} finished shard(s) of {len(shards)} ({parts.root}).")
            if world > 1:
                self.log(f"{world} processes share the {len(todo)} shard(s) to do: the i-th goes to rank i mod {world}.")
        mine = distributed.shard(todo, rank, world, workers=False)
        if world == 1:
            total, completed = sum(s.n for s in shards), sum(s.n for s in shards) - sum(s.n for s in todo)
        else:
            total, completed = sum(s.n for s in mine), 0  # rank 0's bar shows its own share
        with _progress(self.progress and rank == 0, total, completed) as advance:
            predicted = self._predict_shards(todo, rank, world, parts, advance)
        distributed.barrier()  # every rank has logged its shards

        def merge() -> dict:
            finished = parts.finished()
            missing = [s.key for s in shards if (finished.get(s.key) or {}).get("fingerprint") != s.fingerprint]
            if missing:
                raise DataError(f"{parts.root}: shard(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                                "were not finished by any process.")
            summary = self._merge(parts, shards, [finished[k] for k in keys])
            if not self.keep_parts:
                shutil.rmtree(parts.root, ignore_errors=True)
            return summary

        summary = dict(distributed.on_rank_zero(merge))
        summary.update(shards=len(shards), skipped_shards=skipped, seconds=round(time.time() - start_time, 2))
        if world > 1:
            summary.update(rank=rank, world_size=world, rank_shards=predicted)
        return summary

    # -- merging ---------------------------------------------------------------------------------------
    def _merge(self, parts: PartsDir, shards: Sequence[Any], entries: Sequence[dict]) -> dict:
        import pandas as pd

        rejects = [r for e in entries for r in e.get("rejects", [])]
        self.rejects_file.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rejects, columns=["shard", "source", "id", "reason"]).to_csv(self.rejects_file, index=False)
        files = [parts.part(e["key"]) for e in entries if e.get("rows", 0) > 0]
        n_rows = sum(e.get("rows", 0) for e in entries)
        if n_rows == 0:
            raise DataError(
                f"{self.reader.describe()}: no object could be predicted ({len(rejects)} rejected); "
                f"the reasons are in {self.rejects_file}."
            )
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")
        try:
            if self.out.suffix.lower() == ".parquet":
                merge_parquet(files, tmp)
            else:
                merge_fits(files, tmp, n_rows)
            os.replace(tmp, self.out)
        finally:
            if tmp.exists():
                tmp.unlink()
        summary = {"out": str(self.out), "rows": n_rows, "rejects": len(rejects), "rejects_file": str(self.rejects_file)}
        det_files = [parts.part(e["key"], "det") for e in entries if e.get("detections", 0) > 0]
        if self.detect_tasks:
            summary["detections"] = self._merge_detections(det_files)
            summary["detections_file"] = str(self.detections_file)
        return summary

    def _merge_detections(self, files: Sequence[Path]) -> int:
        import pandas as pd

        from galframe.readers.tiles import merge_tile_detections

        frames = [pd.read_parquet(f) for f in files]
        if not frames:
            pd.DataFrame(columns=["id", "task", "x_min", "y_min", "x_max", "y_max", "score"]).to_parquet(self.detections_file)
            return 0
        det = pd.concat(frames, ignore_index=True)
        for a, off in (("centre_x", "tile_x0"), ("centre_y", "tile_y0")):
            if a in det:
                det[a] = det[a] + det[off]  # the task's own centres, in the source image's pixels
        merged = []
        for (source, task), group in det.groupby(["source", "task"], sort=False):
            grid = self.reader.tile_grid(source) if source else None
            if grid is not None:
                group = merge_tile_detections(group, grid, coords="tile")
            else:
                group = group.copy()
                for a, off in (("x_min", "tile_x0"), ("x_max", "tile_x0"), ("y_min", "tile_y0"), ("y_max", "tile_y0")):
                    group[a] = group[a] + group[off]
                group["x"] = (group["x_min"] + group["x_max"]) / 2.0 - 0.5  # box centre, 0-based pixel centres
                group["y"] = (group["y_min"] + group["y_max"]) / 2.0 - 0.5
            if "centre_x" in group:  # the task's own centre (e.g. a mask centroid) where it gave one
                group["x"] = group["centre_x"].where(group["centre_x"].notna(), group["x"])
                group["y"] = group["centre_y"].where(group["centre_y"].notna(), group["y"])
            world = self.reader.pixel_to_world(source, group["x"].to_numpy(), group["y"].to_numpy()) if source else None
            group["ra"], group["dec"] = world if world is not None else (np.nan, np.nan)
            merged.append(group)
        out = pd.concat(merged, ignore_index=True)
        out.to_parquet(self.detections_file, index=False)
        return len(out)


class _ShardSource:
    """Reads and conforms the objects of shards, without the model: in the predicting process, or (``light``:
    stamps reduced to their id and catalog metadata, all the predicting process needs of them) in a DataLoader
    worker.  :meth:`events` yields, for one shard, ``("batch", key, [(stamp, conformed), ...])`` of up to
    ``batch_size`` objects, ``("reject", key, row)`` and last ``("end", key, {"worker": id})``."""

    def __init__(self, reader: Any, bands: Sequence[str], size: int, core: Mapping[str, Any], batch_size: int,
                 strict: bool, rejects_name: str, light: bool = False) -> None:
        self.reader, self.bands, self.size, self.core = reader, list(bands), int(size), dict(core)
        self.batch_size, self.strict, self.rejects_name, self.light = int(batch_size), bool(strict), rejects_name, light

    def _reject(self, source: str, reason: str, oid: Optional[str], shard: str) -> dict:
        if self.strict:
            what = f" (object {oid})" if oid and oid not in source else ""
            raise DataError(f"{source}{what}: {reason}. (strict=true stops at the first bad input; without it, it is "
                            f"listed in {self.rejects_name} and the run goes on.)")
        return {"shard": shard, "source": source, "id": oid, "reason": reason}

    def events(self, shard: Any, worker: Optional[int] = None) -> Iterator[tuple]:
        from galframe.readers.base import Reject, StampError, conform, scalar_meta

        key, batch = shard.key, []
        try:
            for item in self.reader.read(shard):
                if isinstance(item, Reject):
                    yield ("reject", key, self._reject(item.source, item.reason, item.id, key))
                    continue
                try:
                    conformed = conform(item, self.bands, self.size, **self.core)
                except StampError as exc:
                    yield ("reject", key, self._reject(str(item.meta.get("source", "")), str(exc), str(item.id), key))
                    continue
                batch.append((SimpleNamespace(id=item.id, meta=scalar_meta(item.meta)) if self.light else item, conformed))
                if len(batch) >= self.batch_size:
                    yield ("batch", key, batch)
                    batch = []
        except GalframeError as exc:
            if worker is None:
                raise
            yield ("error", key, exc)  # raised again by the predicting process, as itself
            return
        if batch:
            yield ("batch", key, batch)
        yield ("end", key, {"worker": worker})


def _shard_stream_class() -> type:
    """:class:`ShardStream`, made on first use (so that importing this module does not import torch)."""
    return globals().get("ShardStream") or __getattr__("ShardStream")


def __getattr__(name: str) -> Any:
    if name != "ShardStream":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from torch.utils.data import IterableDataset, get_worker_info

    from galframe.distributed import shard as share

    class ShardStream(IterableDataset):
        """The events of this rank's shards: ``shard(todo, rank, world)``, split again among DataLoader workers
        (every ``num_workers``-th shard of the rank's share to each): every shard is read by one worker."""

        def __init__(self, source: _ShardSource, todo: list, rank: int, world: int) -> None:
            self.source, self.todo, self.rank, self.world = source, todo, int(rank), int(world)

        def __iter__(self) -> Iterator[tuple]:
            info = get_worker_info()
            for s in share(self.todo, self.rank, self.world, workers=True):
                yield from self.source.events(s, None if info is None else int(info.id))

    ShardStream.__module__ = __name__  # picklable by name (DataLoader workers started by spawn)
    ShardStream.__qualname__ = "ShardStream"
    globals()["ShardStream"] = ShardStream
    return ShardStream


def _as_is(item: Any) -> Any:
    return item


def _die_with_parent(parent: int, worker_id: int) -> None:
    """A DataLoader worker ends when its process does, even when that is killed (SIGKILL): otherwise a worker
    whose queue to the dead process is full waits forever (Linux: PR_SET_PDEATHSIG; elsewhere nothing)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        return
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


class _progress:
    """A rich progress bar over objects (or nothing); the context value is ``advance(n, n_rejected)``."""

    def __init__(self, enabled: bool, total: int, completed: int) -> None:
        self.enabled, self.total, self.completed = enabled, total, completed
        self.rejected = 0

    def __enter__(self) -> Callable[[int, int], None]:
        if not self.enabled:
            return lambda n, r: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rejected]} rejected"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.bar.start()
        self.task = self.bar.add_task("predict", total=self.total, completed=self.completed, rejected=0)

        def advance(n: int, rejected: int) -> None:
            self.rejected += rejected
            self.bar.update(self.task, advance=n, rejected=self.rejected)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.stop()


# -- writing the catalog, streaming ------------------------------------------------------------------------
def _unified_schema(files: Sequence[Path]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(f).remove_metadata() for f in files]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"catalog parts disagree on column types ({exc}).") from exc
    fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    return pa.schema(fields)


def _conform_table(table: Any, schema: Any) -> Any:
    import pyarrow as pa

    arrays = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            arrays.append(col if col.type == field.type else col.cast(field.type))
        else:
            arrays.append(pa.nulls(len(table), field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def merge_parquet(files: Sequence[Path], out: Path) -> None:
    """Concatenate Parquet parts into one file, one part in memory at a time."""
    import pyarrow.parquet as pq

    schema = _unified_schema(files)
    with pq.ParquetWriter(out, schema) as writer:
        for f in files:
            writer.write_table(_conform_table(pq.read_table(f), schema))


def _fits_format(field: Any, width: int) -> str:
    import pyarrow as pa

    t = field.type
    if pa.types.is_boolean(t):
        return ">i2"
    if pa.types.is_integer(t):
        return ">i8"
    if pa.types.is_float32(t):
        return ">f4"
    if pa.types.is_floating(t):
        return ">f8"
    return f"S{max(width, 1)}"


def merge_fits(files: Sequence[Path], out: Path, n_rows: int) -> None:
    """Write Parquet parts as one FITS binary table, streaming: the header (with the total row count and
    the widest string of each text column) first, then the rows part by part."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from astropy.io import fits

    schema = _unified_schema(files)
    text = [f.name for f in schema if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))]
    widths = {c: 1 for c in text}
    if text:
        for f in files:
            table = _conform_table(pq.read_table(f, columns=[c for c in text if c in pq.read_schema(f).names]), pa.schema([schema.field(c) for c in text]))
            for c in text:
                lengths = pc.utf8_length(table.column(c).cast(pa.string()))
                top = pc.max(lengths).as_py()
                widths[c] = max(widths[c], int(top or 0))
    dtype = np.dtype([(f.name, _fits_format(f, widths.get(f.name, 1))) for f in schema])
    hdu = fits.BinTableHDU(data=np.zeros(1, dtype=dtype), name="CATALOG")
    header = hdu.header
    header["NAXIS2"] = n_rows
    header["ORIGIN"] = "galframe predict"
    written = 0
    with open(out, "wb") as fh:
        fh.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
        fh.write(header.tostring().encode("ascii"))
        for f in files:
            table = _conform_table(pq.read_table(f), schema)
            rec = np.zeros(len(table), dtype=dtype)
            for field in schema:
                col = table.column(field.name)
                if field.name in widths:
                    values = col.cast(pa.string()).fill_null("").to_pylist()
                    rec[field.name] = [v.encode("ascii", "replace") for v in values]
                elif pa.types.is_floating(field.type):
                    rec[field.name] = col.to_numpy(zero_copy_only=False).astype(float)  # nulls -> NaN
                else:
                    arr = col.fill_null(0) if col.null_count else col
                    rec[field.name] = np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.int64)
            fh.write(rec.tobytes())
            written += len(table)
        pad = (-(written * dtype.itemsize)) % 2880
        fh.write(b"\0" * pad)
    if written != n_rows:
        raise DataError(f"{out}: wrote {written} rows, expected {n_rows}.")


# -- the command -----------------------------------------------------------------------------------------
def rank_device(spec: Any, trainer_cfg: Mapping[str, Any], local_rank: int = 0, world: int = 1) -> str:
    """The device of one process: ``device`` if it names one (cpu, cuda:1); with ``device=auto`` the trainer's
    ``accelerator`` (cpu | gpu | auto: gpu if there is one).  With several processes, ``cuda`` is the local
    rank's GPU (the local rank-th of ``trainer.devices`` when that lists GPU ids)."""
    import torch

    spec = "auto" if spec in (None, "") else str(spec)
    accelerator = str(trainer_cfg.get("accelerator", "auto") or "auto").lower()
    if spec == "auto":
        if accelerator == "cpu":
            return "cpu"
        if accelerator not in ("auto", "gpu", "cuda"):
            raise ConfigError(f"trainer.accelerator={accelerator}: predict runs on cpu, gpu or auto.")
        if accelerator == "auto" and not torch.cuda.is_available():
            return "cpu"
        spec = "cuda"
    if spec == "cuda" and world > 1:
        if not torch.cuda.is_available():
            raise ConfigError("predict on GPUs (trainer.accelerator=gpu or device=cuda) but torch sees no CUDA device.")
        devices = trainer_cfg.get("devices")
        text = str(devices) if not isinstance(devices, (list, tuple)) else ""
        ids = [int(d) for d in devices] if isinstance(devices, (list, tuple)) else (
            [int(d) for d in text.split(",") if d.strip()] if "," in text else [])
        index = ids[local_rank] if local_rank < len(ids) else local_rank % torch.cuda.device_count()
        return f"cuda:{index}"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={spec}: torch sees no CUDA device (device=cpu or auto).")
    return spec


def run(cfg: Any, run_dir: Any = None) -> dict:
    """``galframe predict``: composes the model, the reader and the predictor from a config; with
    ``trainer.devices`` x ``trainer.num_nodes`` > 1, one rank of several (see the module docstring)."""
    from galframe import distributed
    from galframe.readers import build_reader
    from galframe.train import _quiet_known_warnings, to_dict

    _quiet_known_warnings()
    cfg = to_dict(cfg)
    if cfg.get("out") in (None, "", "???"):
        raise ConfigError("out is not set: give the catalog to write (out=catalog.parquet or out=catalog.fits).")
    workers = cfg.get("num_workers", 0)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"num_workers must be a whole number, 0 or more (got {workers!r}).")
    trainer_cfg = {"accelerator": "auto", "devices": 1, "num_nodes": 1, **dict(cfg.get("trainer") or {})}
    processes = distributed.process_count(trainer_cfg)
    if processes > 1:  # the accelerator the ranks will use: on CPUs, launch() shares the cores among them
        trainer_cfg["accelerator"] = "cpu" if rank_device(cfg.get("device"), {**trainer_cfg, "devices": 1}) == "cpu" else "gpu"
    ranks = distributed.join(trainer_cfg, "predict", Path(run_dir or Path.cwd()).absolute())
    rank, failed = int(ranks["rank"]), True
    try:
        if ranks["world_size"] > 1:
            device = rank_device(cfg.get("device"), trainer_cfg, ranks["local_rank"], ranks["world_size"])
        else:
            device = pick_device(cfg.get("device", "auto"))
        model, ckpt = load_model(cfg.get("ckpt"), device)
        reader, core = build_reader(cfg["data"])
        st = ckpt.stat()
        identity = {"ckpt": str(ckpt.resolve()), "ckpt_stat": [st.st_size, st.st_mtime_ns], "data": cfg["data"]}
        predictor = Predictor(
            model, reader, core, cfg["out"],
            batch_size=int(cfg.get("batch_size", 64)),
            strict=bool(cfg.get("strict", False)),
            overwrite=bool(cfg.get("overwrite", False)),
            progress=bool(cfg.get("progress", True)),
            columns=cfg.get("columns", "all"),
            rejects=cfg.get("rejects"),
            identity=identity,
            keep_parts=bool(cfg.get("keep_parts", False)),
            num_workers=workers,
            log=print if rank == 0 else (lambda s: None),
        )
        try:
            summary = predictor.run()
        except GalframeError as exc:
            if rank != 0 and getattr(exc, "from_rank_zero", False):
                raise SystemExit(2) from None  # rank 0 reports it
            raise
        failed = False
    finally:
        distributed.leave(ranks, failed=failed)
    if rank == 0:
        line = f"Wrote {summary['rows']} rows to {summary['out']}"
        line += f"; {summary['rejects']} rejected, listed in {summary['rejects_file']}"
        if summary.get("skipped_shards"):
            line += f"; {summary['skipped_shards']} shard(s) were already done"
        if "detections" in summary:
            line += f"; {summary['detections']} detections in {summary['detections_file']}"
        if summary.get("world_size", 1) > 1:
            line += f"; {summary['world_size']} processes"
        print(line + ".")
    return summary
