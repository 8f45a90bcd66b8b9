"""Survey objects streamed shard by shard, conformed to a model's input or set aside with a reason.

One loop for ``galframe predict`` and ``galframe ingest``: :class:`ShardSource` reads a reader's shard,
conforms each object to the bands and input size (bad pixels masked and counted, cut to ``size``) and
turns every input that cannot be used into a reject row (``strict=true``: a :class:`~galframe.errors.DataError`
at the first one).  :class:`ShardStream` deals a rank's shards out to DataLoader workers;
:class:`progress_bar` shows objects done and rejected.
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from galframe.errors import DataError, GalframeError


class Stages:
    """Seconds per stage of a streaming run: :meth:`lap` gives the time since the previous lap to a stage
    (``galframe predict`` reports them in its summary as ``stage_seconds``; a few clock reads per batch)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now


class ShardSource:
    """Reads and conforms the objects of shards, without the model: in the predicting process, or (``light``:
    stamps reduced to their id and catalog metadata, all the predicting process needs of them) in a DataLoader
    worker.  :meth:`events` yields, for one shard, ``("batch", key, [(stamp, conformed), ...])`` of up to
    ``batch_size`` objects, ``("reject", key, row)`` and last ``("end", key, {"worker": id})``.  ``check(stamp)``,
    if given, is the reason to reject a conformed object (or None to keep it)."""

    def __init__(self, reader: Any, bands: Sequence[str], size: int, core: Mapping[str, Any], batch_size: int,
                 strict: bool, rejects_name: str, light: bool = False,
                 check: Optional[Callable[[Any], Optional[str]]] = None, stages: Optional[Stages] = None) -> None:
        self.reader, self.bands, self.size, self.core = reader, list(bands), int(size), dict(core)
        self.batch_size, self.strict, self.rejects_name, self.light = int(batch_size), bool(strict), rejects_name, light
        self.check = check
        self.stages = stages or Stages()  # in a DataLoader worker: a copy, not reported

    def reject(self, source: str, reason: str, oid: Optional[str], shard: str) -> dict:
        """The reject row of one input (``strict``: the error instead)."""
        if self.strict:
            what = f" (object {oid})" if oid and oid not in source else ""
            raise DataError(f"{source}{what}: {reason}. (strict=true stops at the first bad input; without it, it is "
                            f"listed in {self.rejects_name} and the run goes on.)")
        return {"shard": shard, "source": source, "id": oid, "reason": reason}

    def events(self, shard: Any, worker: Optional[int] = None) -> Iterator[tuple]:
        from galframe.readers.base import Reject

        key, chunk, stamps, lap = shard.key, [], 0, self.stages.lap
        try:
            for item in self.reader.read(shard):
                lap("read")
                chunk.append(item)
                stamps += not isinstance(item, Reject)
                if stamps >= self.batch_size:
                    yield from self._conformed(chunk, key)
                    chunk, stamps = [], 0
            if chunk:
                yield from self._conformed(chunk, key)
        except GalframeError as exc:
            if worker is None:
                raise
            yield ("error", key, exc)  # raised again by the predicting process, as itself
            return
        yield ("end", key, {"worker": worker})

    def _conformed(self, chunk: list, key: str) -> Iterator[tuple]:
        """The reject events and the batch event of a chunk of read items, in the reader's order."""
        from dataclasses import replace

        from galframe.readers.base import Reject, _no_sky, conform_many, scalar_meta

        stamps = [item for item in chunk if not isinstance(item, Reject)]
        results, flux = conform_many(stamps, self.bands, self.size, **self.core)
        batch, rows, k, row = Batch(), [], 0, 0
        for item in chunk:
            if isinstance(item, Reject):
                yield ("reject", key, self.reject(item.source, item.reason, item.id, key))
                continue
            result = results[k]
            k += 1
            if isinstance(result, Exception):
                yield ("reject", key, self.reject(str(item.meta.get("source", "")), str(result), str(item.id), key))
                continue
            reason = self.check(item) if self.check is not None else None
            row += 1
            if reason:
                yield ("reject", key, self.reject(str(item.meta.get("source", "")), reason, str(item.id), key))
                continue
            rows.append(row - 1)
            if self.light:  # to another process: the batch's array carries the pixels, once
                batch.append((SimpleNamespace(id=item.id, meta=scalar_meta(item.meta)), replace(result, flux=None, sky=_no_sky)))
            else:
                batch.append((item, result))
        self.stages.lap("conform")
        if batch:
            batch.flux = flux if flux is not None and len(rows) == len(flux) else flux[rows]
            yield ("batch", key, batch)


class Batch(list):
    """The objects of a batch event, ``[(stamp, conformed), ...]``, with ``flux``: their conformed images as one
    (n, bands, size, size) float32 array."""

    flux: Any = None


def shard_stream_class() -> type:
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

        def __init__(self, source: ShardSource, todo: list, rank: int, world: int) -> None:
            self.source, self.todo, self.rank, self.world = source, todo, int(rank), int(world)

        def __iter__(self) -> Iterator[tuple]:
            info = get_worker_info()
            for s in share(self.todo, self.rank, self.world, workers=True):
                yield from self.source.events(s, None if info is None else int(info.id))

    ShardStream.__module__ = __name__  # picklable by name (DataLoader workers started by spawn)
    ShardStream.__qualname__ = "ShardStream"
    globals()["ShardStream"] = ShardStream
    return ShardStream


def event_loader(stream: Any, workers: int) -> Any:
    """The events of ``stream``: read here (``workers=0``) or by that many DataLoader worker processes, each
    ending with this process."""
    if not workers:
        return iter(stream)
    import functools

    from torch.utils.data import DataLoader

    return DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is,
                      worker_init_fn=functools.partial(_die_with_parent, os.getpid()))


def read_ahead(events: Iterator[tuple], depth: int = 3) -> Iterator[tuple]:
    """``events`` read ahead by a background thread, up to ``depth`` of them waiting: reading and conforming
    the next batch overlap the model's pass over this one (torch computes without holding the GIL).  The
    order is kept; an error in the thread (``strict=true``) is raised here, as itself; closing the iterator
    stops the thread."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(int(depth), 1))
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            for event in events:
                if not put(("event", event)):
                    return
            put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            put(("error", exc))

    thread = threading.Thread(target=fill, name="galframe-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()


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


class progress_bar:
    """A rich progress bar over objects (or nothing); the context value is ``advance(n, n_rejected)``."""

    def __init__(self, enabled: bool, total: int, completed: int, label: str = "predict") -> None:
        self.enabled, self.total, self.completed, self.label = enabled, total, completed, label
        self.rejected = 0

    def __enter__(self) -> Callable[[int, int], None]:
        if not self.enabled:
            return lambda n, r: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rejected]} rejected"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=self.total, completed=self.completed, rejected=0)

        def advance(n: int, rejected: int) -> None:
            self.rejected += rejected
            self.bar.update(self.task, advance=n, rejected=self.rejected)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.stop()
