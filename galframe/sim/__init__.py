"""Simulated galaxy datasets (GalSim), written in the galframe dataset format.

``simulate(cfg, out_dir)`` draws ``cfg["n"]`` objects into a new dataset directory;
``cached_dataset(cfg)`` does so once per distinct configuration into the galframe cache.
GalSim is imported only when drawing starts.

``sim.generator`` names a plugin of kind ``simulation`` (entry point ``simulation.<name>``, a module or
object with ``resolve(sim, bands)``, ``simulate_range(cfg, start, stop)`` and optionally
``vote_schema(spec)`` and ``side_writer(directory, run)``: what it writes beside the shards, an object whose
``add(rows)`` takes its entries out of the rows and whose ``close()`` finishes its files); galframe ships
``desi``, ``galaxy10``, ``fields`` and ``multimodal``.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from galframe.errors import ConfigError, did_you_mean

#: bump when the generator's output changes for the same config (invalidates cached datasets)
SIM_VERSION = 2

__all__ = ["SIM_VERSION", "simulate", "cached_dataset", "cache_key", "resolve_config"]


def _plain(cfg: Any) -> Any:
    """A plain-Python copy of a dict / OmegaConf DictConfig."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency, but keep sim usable without it
        pass
    if isinstance(cfg, Mapping):
        return {str(k): _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def merge_settings(base: dict, over: Mapping, where: str, generator: str, replace: tuple = ()) -> dict:
    """A generator's settings: ``over`` merged into a copy of ``base`` key by key (tables named in ``replace``,
    e.g. ``sim.depth``, replaced whole); an unknown key is a ConfigError naming it."""
    import copy

    out = copy.deepcopy(base)
    for key, value in over.items():
        here = f"{where}.{key}"
        if key not in base:
            raise ConfigError(f"Unknown key '{here}' for the {generator} simulator.{did_you_mean(key, base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{here} must be a mapping (got {value!r}).")
            out[key] = dict(value) if here in replace else merge_settings(base[key], value, here, generator, replace)
        else:
            out[key] = copy.deepcopy(value)
    return out


def sample_mag(rng: Any, lo: float, hi: float, slope: float) -> float:
    """Magnitude in [lo, hi] with density proportional to 10**(slope * m)."""
    u = rng.random()
    if abs(slope) < 1e-9 or hi <= lo:
        return float(lo + u * (hi - lo))
    a = slope * math.log(10.0)
    # inverse CDF, computed relative to lo for numerical stability
    return float(lo + math.log1p(u * math.expm1(a * (hi - lo))) / a)


def number_in(value: Any, what: str, lo: float, hi: float) -> float:
    """``value`` as a float in [lo, hi]; else a ConfigError naming the setting ``what``."""
    try:
        value = float(value)
    except Exception:
        raise ConfigError(f"{what} must be a number (got {value!r}).") from None
    if not (lo <= value <= hi):
        raise ConfigError(f"{what} must be between {lo:g} and {hi:g} (got {value:g}).")
    return value


def _generator(name: str) -> Any:
    """The simulation generator registered as ``simulation.<name>`` (``galframe.sim.<name>`` for the built-in
    ones): it provides ``resolve(sim, bands)``, ``simulate_range(cfg, start, stop) -> (start, images, clean,
    rows)`` and optionally ``vote_schema(spec)``."""
    from galframe import registry

    names = registry.names("simulation")
    if name not in names:
        raise ConfigError(f"Unknown simulation generator '{name}' (sim.generator).{did_you_mean(name, names)}")
    return registry.load("simulation", name)


def resolve_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Check a data config and fill in the generator defaults; raises ConfigError.

    Returns ``{"name", "n", "seed", "bands", "image_size", "sim"}`` with ``sim`` complete.
    """
    cfg = _plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"the data config must be a mapping (got {type(cfg).__name__}).")
    sim = cfg.get("sim")
    if sim is None:
        raise ConfigError("the data config has no 'sim' block: nothing to simulate.")
    if not isinstance(sim, Mapping):
        raise ConfigError(f"data.sim must be a mapping (got {sim!r}).")
    name = str(cfg.get("name") or "sim")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise ConfigError(f"data.name '{name}' must be a plain name (letters, digits, _ . + -): it names a directory.")
    try:
        n = int(cfg.get("n"))
    except (TypeError, ValueError):
        raise ConfigError(f"data.n must be an integer number of objects (got {cfg.get('n')!r}).") from None
    if n < 1:
        raise ConfigError(f"data.n must be at least 1 (got {n}).")
    try:
        seed = int(cfg.get("seed", 0) or 0)
    except (TypeError, ValueError):
        raise ConfigError(f"data.seed must be an integer (got {cfg.get('seed')!r}).") from None
    if seed < 0:
        raise ConfigError(f"data.seed must be non-negative (got {seed}).")
    bands = cfg.get("bands") or ["g", "r", "z"]
    if isinstance(bands, str) or not isinstance(bands, (list, tuple)):
        raise ConfigError(f"data.bands must be a list of band names (got {bands!r}).")
    bands = [str(b) for b in bands]
    if len(set(bands)) != len(bands):
        raise ConfigError(f"data.bands lists a band twice: {bands}.")
    try:
        size = int(cfg.get("image_size") or 64)
    except (TypeError, ValueError):
        raise ConfigError(f"data.image_size must be an integer (got {cfg.get('image_size')!r}).") from None
    if size < 8 or size % 2:
        raise ConfigError(f"data.image_size must be an even number of pixels >= 8 (got {size}).")
    gen = _generator(str(sim.get("generator", "desi")))
    spec = gen.resolve(sim, bands)
    return {"name": name, "n": n, "seed": seed, "bands": bands, "image_size": size, "sim": spec}


def cache_key(cfg: Mapping[str, Any]) -> str:
    """sha256 (hex) of what determines a simulated dataset's content.

    Covers name, n, seed, bands, image_size, the ``sim`` block with the generator's defaults
    filled in (so spelling a default out does not change the key; ``workers``, which does not
    change the result, is left out) and ``SIM_VERSION``.
    """
    run = resolve_config(cfg)
    sim = {k: v for k, v in run["sim"].items() if k != "workers"}
    key = {k: run[k] for k in ("name", "n", "seed", "bands", "image_size")}
    key.update(sim=sim, sim_version=SIM_VERSION)
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
_WORK_CFG: Optional[dict] = None


def _worker_init(cfg: dict) -> None:
    global _WORK_CFG
    _WORK_CFG = cfg


def _worker_run(bounds: tuple[int, int]) -> Any:
    assert _WORK_CFG is not None
    return _generator(str(_WORK_CFG["sim"].get("generator", "desi"))).simulate_range(_WORK_CFG, *bounds)


def _chunks(n: int, workers: int) -> list[tuple[int, int]]:
    size = int(min(256, max(8, math.ceil(n / (4 * workers)))))
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def _results(run: dict, chunks: list[tuple[int, int]], workers: int) -> Iterator[Any]:
    """Chunk results in order, computed here (workers=1) or by a process pool."""
    if workers <= 1 or len(chunks) <= 1:
        _worker_init(run)
        for bounds in chunks:
            yield _worker_run(bounds)
        return
    methods = mp.get_all_start_methods()
    # forkserver, not fork: the caller has often started threads already (torch/OpenMP, a
    # progress bar), and a child forked from a threaded process can deadlock on a lock it
    # inherited held.  The server is a fresh process; workers fork from it.
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        # import the caller's main module and the simulator once, in the server, rather than in
        # every worker (ignored if this process's fork server is already running)
        ctx.set_forkserver_preload(["__main__", "galframe.sim.desi", "galframe.sim._points"])
    with ctx.Pool(processes=min(workers, len(chunks)), initializer=_worker_init, initargs=(run,)) as pool:
        yield from pool.imap(_worker_run, chunks)


def simulate(
    cfg: Mapping[str, Any],
    out_dir: "str | os.PathLike[str]",
    workers: Optional[int] = None,
    progress: bool = True,
) -> Path:
    """Simulate the dataset a data config describes into the new directory ``out_dir``.

    ``cfg``: the data config (dict or OmegaConf DictConfig) with ``name``, ``n``, ``seed``,
    ``bands``, ``image_size`` and a ``sim`` block.  ``workers``: processes (default
    ``cfg.sim.workers``, else ``os.cpu_count()``); the result does not depend on it.
    Raises ConfigError for a bad config and DataError if ``out_dir`` exists and is not empty.

    With ``workers > 1`` the workers start from a fork server, which imports the caller's main
    module: a script calling this must keep its work under ``if __name__ == "__main__":``.
    """
    from galframe.data.format import DatasetWriter

    run = resolve_config(cfg)
    spec = run["sim"]
    if workers is None:
        workers = spec.get("workers")
    workers = int(workers) if workers else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1 (got {workers}).")
    n = run["n"]
    chunks = _chunks(n, workers)
    config = dict(run)
    config["sim_version"] = SIM_VERSION
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    out_dir = Path(out_dir).expanduser()
    writer = DatasetWriter(
        out_dir,
        name=run["name"],
        bands=run["bands"],
        image_size=run["image_size"],
        pixel_scale=spec["pixel_scale"],
        zeropoint=spec["zeropoint"],
        classes=spec["classes"],
        config=config,
        shard_size=int(spec.get("shard_size") or 2048),
        # a generator that simulates volunteer votes describes them (Galaxy Zoo style schema)
        votes=getattr(_generator(str(spec.get("generator", "desi"))), "vote_schema", lambda spec: None)(spec),
    )
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    start = time.perf_counter()
    side_writer = getattr(_generator(str(spec.get("generator", "desi"))), "side_writer", None)
    side = side_writer(writer.tmp_dir, run) if side_writer is not None else None
    with writer, Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"simulating {run['name']}", total=n, rate="")
        done = 0
        results = _results(run, chunks, workers)
        try:
            for _, images, clean, rows in results:
                if side is not None:
                    rows = side.add(rows)  # the generator's files beside the shards (e.g. spectra)
                writer.add(images, clean, rows)
                done += len(rows)
                rate = done / max(time.perf_counter() - start, 1e-9)
                bar.update(task, completed=done, rate=f"{rate:.0f} stamps/s")
        finally:
            results.close()  # stops the pool at once if anything went wrong
            if side is not None:
                side.close()
        path = writer.close()
    return path


def cached_dataset(cfg: Mapping[str, Any], workers: Optional[int] = None, progress: bool = True) -> Path:
    """The cache directory of the dataset ``cfg`` describes, simulating it there first if needed.

    The directory is ``datasets_dir() / f"{name}-{cache_key[:12]}"``; a complete one (it has a
    manifest) is returned as is.  Concurrent callers each simulate into a private temporary
    directory; the first rename wins and the others use the winner's dataset.
    """
    from galframe.data.format import DatasetExistsError, is_complete, remove_stale_temps
    from galframe.paths import datasets_dir

    run = resolve_config(cfg)
    path = datasets_dir() / f"{run['name']}-{cache_key(cfg)[:12]}"
    if is_complete(path):
        return path
    remove_stale_temps(path)
    try:
        return simulate(cfg, path, workers=workers, progress=progress)
    except DatasetExistsError:
        if is_complete(path):
            return path
        raise
