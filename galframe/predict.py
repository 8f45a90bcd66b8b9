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

Detection tasks: a task with ``predict_sources(outputs)`` returning, per
image, the detected objects (a list of row dicts, or a dict of columns) with a box ``x0, y0, x1, y1``
(or ``x_min, y_min, x_max, y_max``) in the input's continuous pixel coordinates (pixel i spans
[i, i + 1), as in COCO/mmdet), a ``score``, optionally its own centre ``x, y`` (0-based pixel
centres, e.g. a mask centroid) and anything else, gets them written to
``<out stem>.detections.parquet`` in the source image's pixels, with RA/Dec where the source has a
WCS; on tiled sources (``reader.mosaic``, ``reader.image`` with ``tile_size``) the duplicates that tile
overlaps make are merged by :func:`galframe.readers.detections.merge_tile_detections`.

The loop over shards is :mod:`galframe.stream` (shared with ``galframe ingest``), the catalog and its
resumable parts are :mod:`galframe.catalog`, the model's pass over a batch :mod:`galframe.inference`.

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

import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from galframe.catalog import PartsDir, catalog_rows, write_catalog, write_rejects, write_table
from galframe.checkpoints import load_model
from galframe.errors import ConfigError, DataError, GalframeError
from galframe.inference import predict_batch, source_hooks
from galframe.readers.detections import merge_detections, to_source_pixels
from galframe.stream import ShardSource, Stages, event_loader, progress_bar, read_ahead, shard_stream_class


# -- the model (loaded by galframe.checkpoints.load_model: a run directory, a .ckpt file or a zoo name) ------
def pick_device(spec: str = "auto") -> str:
    import torch

    if spec in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(spec)


def resolve_read_ahead(spec: Any) -> bool:
    """``read_ahead``: true, false or auto.  A reading thread helps only where a core is free for it: with as
    many torch threads as cores, its work stalls every parallel region of the network (each waits for its
    slowest thread), which on a 2-core machine cost more than reading in turn.  auto: on when the machine has
    more cores than torch uses."""
    import os

    import torch

    if isinstance(spec, str) and spec.lower() == "auto":
        return (os.cpu_count() or 1) > torch.get_num_threads()
    if isinstance(spec, str) and spec.lower() in ("true", "false"):
        return spec.lower() == "true"
    if isinstance(spec, bool):
        return spec
    raise ConfigError(f"read_ahead={spec!r}: true, false or auto.")


# -- the run ------------------------------------------------------------------------------------------
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
        stages: Optional[Stages] = None,
        read_ahead: Any = "auto",
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
        self.detect_tasks = source_hooks(model)
        self.stages = stages or Stages()
        self.read_ahead = resolve_read_ahead(read_ahead)
        self.reading: Optional[Stages] = None
        self.device = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else "cpu"

    # -- one batch ---------------------------------------------------------------------------------------
    def _predict_batch(self, batch: list) -> tuple[Any, list]:
        """(the catalog rows, the detection frames) of a batch of ``(stamp, conformed)``."""
        import torch

        lap = self.stages.lap
        flux = getattr(batch, "flux", None)
        x = torch.from_numpy(flux if flux is not None else np.stack([c.flux for _, c in batch])).to(self.device)
        lap("stack")
        cols, dets = predict_batch(self.model, x, self.detect_tasks)
        lap("network")
        rows = catalog_rows(batch, cols, self.columns)
        lap("rows")
        return rows, (to_source_pixels(batch, dets, int(self.core.get("rebin", 1) or 1)) if dets else [])

    # -- the shards of this process ---------------------------------------------------------------------------
    def _source(self, light: bool) -> ShardSource:
        return ShardSource(self.reader, self.bands, self.size, self.core, self.batch_size, self.strict,
                            self.rejects_file.name, light, stages=self.stages)

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
        ahead = self.read_ahead and not workers
        source = self._source(light=workers > 0)
        if ahead:  # the thread reading ahead keeps its own clock: its stages overlap the model's
            source.stages = self.reading = Stages()
        stream = shard_stream_class()(source, list(todo), rank, world)
        events = read_ahead(iter(stream)) if ahead else event_loader(stream, workers)
        pending: dict[str, tuple[list, list, list]] = {}
        finished = []
        lap = self.stages.lap
        for kind, key, payload in events:
            lap("wait for workers" if workers else ("wait for reading" if ahead else "read"))
            if kind == "error":
                raise payload  # strict=true in a worker: the same error as in this process
            if not launcher_alive():
                import sys

                print(f"galframe predict: rank {rank}: the process that started it is gone (killed?); stopping. "
                      "The same command resumes the run.", file=sys.stderr)
                raise SystemExit(1)
            frames, rejects, det_frames = pending.setdefault(key, ([], [], []))
            if kind == "batch":
                rows, dets = self._predict_batch(payload)
                frames.append(rows)
                det_frames.extend(dets)
                advance(len(payload), 0)
                lap("progress")
            elif kind == "reject":
                rejects.append(payload)
                advance(1, 1)
            elif kind == "end":
                del pending[key]
                self._finish_shard(by_key[key], frames, rejects, det_frames, parts, rank, payload.get("worker"))
                finished.append(key)
                lap("write parts")
        return finished

    def _finish_shard(self, shard: Any, frames: list, rejects: list, det_frames: list, parts: PartsDir,
                      rank: int, worker: Optional[int]) -> dict:
        import pandas as pd

        rows = 0
        if frames:
            frame = pd.concat(frames, ignore_index=True)
            rows = len(frame)
            write_table(frame, parts.part(shard.key))
        n_det = 0
        if det_frames:
            det = pd.concat(det_frames, ignore_index=True)
            n_det = len(det)
            write_table(det, parts.part(shard.key, "det"))
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
        self.stages.lap("set-up")  # since the predictor was made
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
        self.stages.lap("list shards")
        with progress_bar(self.progress and rank == 0, total, completed) as advance:
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

        self.stages.lap("wait for ranks")
        summary = dict(distributed.on_rank_zero(merge))
        self.stages.lap("merge")
        summary.update(shards=len(shards), skipped_shards=skipped, seconds=round(time.time() - start_time, 2),
                       started_at=start_time, stage_seconds={k: round(v, 4) for k, v in self.stages.seconds.items()})
        if self.reading is not None:  # read ahead by a thread, overlapping the stages above
            summary["stage_seconds_read_ahead"] = {k: round(v, 4) for k, v in self.reading.seconds.items()}
        if world > 1:
            summary.update(rank=rank, world_size=world, rank_shards=predicted)
        return summary

    # -- merging ---------------------------------------------------------------------------------------
    def _merge(self, parts: PartsDir, shards: Sequence[Any], entries: Sequence[dict]) -> dict:
        rejects = [r for e in entries for r in e.get("rejects", [])]
        write_rejects(rejects, self.rejects_file)
        files = [parts.part(e["key"]) for e in entries if e.get("rows", 0) > 0]
        n_rows = sum(e.get("rows", 0) for e in entries)
        if n_rows == 0:
            raise DataError(
                f"{self.reader.describe()}: no object could be predicted ({len(rejects)} rejected); "
                f"the reasons are in {self.rejects_file}."
            )
        write_catalog(files, self.out, n_rows)
        summary = {"out": str(self.out), "rows": n_rows, "rejects": len(rejects), "rejects_file": str(self.rejects_file)}
        det_files = [parts.part(e["key"], "det") for e in entries if e.get("detections", 0) > 0]
        if self.detect_tasks:
            summary["detections"] = merge_detections(det_files, self.reader, self.detections_file)
            summary["detections_file"] = str(self.detections_file)
        return summary


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
    from galframe.train import quiet_known_warnings, to_dict

    quiet_known_warnings()
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
        predictor = _predictor(cfg, device, workers, rank)
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
        print(summary_line(summary))
    return summary


def _predictor(cfg: Mapping[str, Any], device: str, workers: int, rank: int) -> Predictor:
    """The model (on ``device``), the reader and the predictor a predict config describes."""
    from galframe.readers import build_reader

    stages = Stages()
    model, ckpt = load_model(cfg.get("ckpt"), device)
    stages.lap("load model")
    reader, core = build_reader(cfg["data"])
    stages.lap("reader")
    st = ckpt.stat()
    identity = {"ckpt": str(ckpt.resolve()), "ckpt_stat": [st.st_size, st.st_mtime_ns], "data": cfg["data"]}
    return Predictor(
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
        stages=stages,
        read_ahead=cfg.get("read_ahead", "auto"),
    )


def summary_line(summary: Mapping[str, Any]) -> str:
    """The line ``galframe predict`` ends with: rows, rejects, shards already done, detections, processes."""
    line = f"Wrote {summary['rows']} rows to {summary['out']}"
    line += f"; {summary['rejects']} rejected, listed in {summary['rejects_file']}"
    if summary.get("skipped_shards"):
        line += f"; {summary['skipped_shards']} shard(s) were already done"
    if "detections" in summary:
        line += f"; {summary['detections']} detections in {summary['detections_file']}"
    if summary.get("world_size", 1) > 1:
        line += f"; {summary['world_size']} processes"
    return line + "."
