"""Several processes, one run: ranks, the local launcher and cross-rank helpers.

galframe trains on several processes through Lightning's own strategies (``trainer=ddp``,
``trainer=fsdp``).  What galframe adds:

* **Launching local ranks.**  With ``trainer.devices=N`` (N > 1) and no external launcher,
  :func:`launch` starts ranks 1..N-1 itself, the way ``torchrun`` would (``MASTER_ADDR``,
  ``MASTER_PORT``, ``WORLD_SIZE``, ``NODE_RANK``, ``LOCAL_RANK``, ``RANK``), so Lightning sees
  processes created externally and only joins them.  Lightning's own launcher re-runs
  ``sys.argv``, which for ``galframe <command>`` is neither the command nor, in a sweep, a single
  job.  galframe re-runs ``python -m galframe.cli <command>`` with the *job's* overrides plus
  ``hydra.run.dir=<rank 0's run dir>`` and ``hydra.output_subdir=null``: one run directory for all
  ranks, written to by rank 0 only.  Outside Hydra (``galframe.train.run`` from a script) the
  script itself is re-run with the same arguments and ``GALFRAME_RUN_DIR`` names the run directory.
* **External launchers** (SLURM ``srun``/submitit with ``tasks_per_node=N``, ``torchrun``, LSF):
  nothing is launched; Lightning's cluster environment gives the ranks.
* **Rank helpers** (:func:`global_rank`, :func:`is_rank_zero`, :func:`barrier`,
  :func:`on_rank_zero`) that work before, during and after a Lightning run, and :func:`shard` to split a
  list (files, shards) among ranks and DataLoader workers.
* **Runs without Lightning** (``galframe predict``): :func:`process_count` and :func:`join` set up the
  same ranks (galframe's launcher, ``torchrun``, ``srun``, LSF) with a gloo process group of their own.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

T = TypeVar("T")

ENV_RUN_DIR = "GALFRAME_RUN_DIR"
ENV_LAUNCHER_PID = "GALFRAME_LAUNCHER_PID"  # in the ranks launch() starts: the process that started them
#: strategies whose processes Lightning starts by spawning/forking the current one: nothing to launch
IN_PROCESS_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp_spawn", "spawn", "fork")
_ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK", "OMP_NUM_THREADS")


# -- where am I ------------------------------------------------------------------------------------------
def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def global_rank() -> int:
    """This process's rank among all processes of the run (0 without distributed training)."""
    dist = _dist()
    if dist is not None:
        return int(dist.get_rank())
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)  # set by Lightning, else from RANK / LOCAL_RANK / SLURM_PROCID


def world_size() -> int:
    dist = _dist()
    return int(dist.get_world_size()) if dist is not None else int(os.environ.get("WORLD_SIZE", 1) or 1)


def is_rank_zero() -> bool:
    return global_rank() == 0


def barrier() -> None:
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def on_rank_zero(fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone, its result given to every rank (a broadcast; ``fn()`` itself without
    distributed training).  If ``fn`` raises, every rank raises, so none waits for a result that will not come:
    rank 0 the exception itself, the others a copy (the same class for galframe's errors) whose attribute
    ``from_rank_zero`` is True (rank 0 reports it; the others may stay quiet)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return fn()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:
            dist.broadcast_object_list([("error", _portable_error(exc))], src=0)
            raise
        dist.broadcast_object_list(box, src=0)
        return box[0][1]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        value.from_rank_zero = True
        raise value
    return value


def _portable_error(exc: Exception) -> Exception:
    """A picklable copy of ``exc``: galframe's errors keep their class, anything else becomes a RuntimeError."""
    import pickle

    from galframe.errors import GalframeError

    if isinstance(exc, GalframeError):
        try:
            copy = pickle.loads(pickle.dumps(type(exc)(str(exc))))
            if isinstance(copy, GalframeError):
                return copy
        except Exception:
            pass
        return GalframeError(str(exc))
    return RuntimeError(f"rank 0 failed: {type(exc).__name__}: {exc}")


def shard(items: Sequence[T], rank: Optional[int] = None, world: Optional[int] = None, workers: bool = True) -> list[T]:
    """This process's share of ``items`` (e.g. files or shards): every ``world``-th from ``rank``, then, inside a
    DataLoader worker, every ``num_workers``-th of those from the worker's id.  Shares are disjoint and cover
    ``items``; order is kept."""
    rank = global_rank() if rank is None else int(rank)
    world = world_size() if world is None else int(world)
    mine = list(items)[rank::world]
    if workers:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None:
            mine = mine[info.id :: info.num_workers]
    return mine


# -- how many processes ------------------------------------------------------------------------------------
def local_process_count(trainer_cfg: Mapping[str, Any]) -> int:
    """Processes per node that ``trainer.devices`` asks for (an int, a list of ids, "0,1", "auto" or -1)."""
    devices = trainer_cfg.get("devices", "auto")
    accelerator = str(trainer_cfg.get("accelerator", "auto") or "auto")
    if isinstance(devices, (list, tuple)):
        return max(len(devices), 1)
    text = str(devices).strip()
    if "," in text:
        return max(len([d for d in text.split(",") if d.strip()]), 1)
    if text in ("auto", "-1", "None", ""):
        if accelerator == "cpu":
            return 1
        import torch

        return max(torch.cuda.device_count(), 1)
    return max(int(text), 1)


def process_count(trainer_cfg: Mapping[str, Any]) -> int:
    """Processes of the whole run: ``trainer.devices`` (per node) x ``trainer.num_nodes``."""
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if nodes < 1:
        from galframe.errors import ConfigError

        raise ConfigError(f"trainer.num_nodes must be at least 1 (got {trainer_cfg.get('num_nodes')}).")
    return local_process_count(trainer_cfg) * nodes


def created_externally() -> bool:
    """Whether a launcher outside galframe made this process one rank of several (torchrun, srun, LSF, ...)."""
    if "LOCAL_RANK" in os.environ:
        return True
    from lightning_fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment

    return any(env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment))


def needs_launch(trainer_cfg: Mapping[str, Any]) -> bool:
    strategy = trainer_cfg.get("strategy", "auto")
    name = str(strategy if isinstance(strategy, str) else "").lower()
    if name.startswith(IN_PROCESS_STRATEGIES) or name in ("single_device", "dp"):
        return False
    return local_process_count(trainer_cfg) > 1 and not created_externally()


# -- the local launcher ------------------------------------------------------------------------------------------
class _Launch:
    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []
        self.saved_env: dict[str, Optional[str]] = {}
        self.saved_threads: Optional[int] = None
        self.observer: Optional[_Observer] = None
        self.atexit = False


_STATE = _Launch()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def quote(value: str) -> str:
    """A Hydra override value, quoted (paths may hold characters Hydra's grammar reserves)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def child_command(command: str, run_dir: Path, extra: Sequence[str] = ()) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) that re-run this run as another rank."""
    env = {ENV_RUN_DIR: str(run_dir)}
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    except Exception:  # pragma: no cover - hydra always importable here
        hydra_cfg = None
    if hydra_cfg is not None:
        keys = {e.split("=", 1)[0].lstrip("+~") for e in extra}
        job = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") not in keys]
        argv = [sys.executable, "-m", "galframe.cli", command, *job, *extra,
                f"hydra.run.dir={quote(str(run_dir))}", "hydra.output_subdir=null"]
        return argv, env
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        head = [sys.executable, "-m", spec.name.removesuffix(".__main__")]
    else:
        head = [sys.executable, os.path.abspath(sys.argv[0])]
    if Path(head[-1]).name.split(".")[0] in ("pytest", "ipykernel_launcher", "ipython", "IPython"):
        from galframe.errors import ConfigError

        raise ConfigError(
            f"several processes need a command to re-run for the other ranks: run 'galframe {command} trainer=ddp ...' "
            f"or a script, not the {command} function inside pytest or a notebook"
            + (" (or use trainer.strategy=ddp_spawn)." if command in ("train", "pretrain") else ".")
        )
    return head + list(sys.argv[1:]), env


def launch(trainer_cfg: Mapping[str, Any], command: str, run_dir: Path, extra: Sequence[str] = ()) -> int:
    """Start local ranks 1..N-1 of this run if it needs them (see the module doc); returns how many were started.

    Call it before building the ``pl.Trainer`` and :func:`finish` at the end of the run.  ``extra``: Hydra
    overrides for the other ranks (e.g. ``resume=<the checkpoint rank 0 resolved>``)."""
    if not needs_launch(trainer_cfg):
        return 0
    n = local_process_count(trainer_cfg)
    argv, env = child_command(command, Path(run_dir), extra)
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)) or 0)
    settings = {
        "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
        "MASTER_PORT": os.environ.get("MASTER_PORT") or str(_free_port()),
        "WORLD_SIZE": str(n * nodes),
        "NODE_RANK": str(node),
        "LOCAL_RANK": "0",
        "RANK": str(node * n),
    }
    if str(trainer_cfg.get("accelerator", "")) == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        import torch

        threads = max(1, (os.cpu_count() or 1) // n)  # n processes share this node's cores
        settings["OMP_NUM_THREADS"] = str(threads)
        _STATE.saved_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    for key, value in settings.items():
        _STATE.saved_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value
    for local in range(1, n):
        child_env = {**os.environ, **env, "LOCAL_RANK": str(local), "RANK": str(node * n + local),
                     ENV_LAUNCHER_PID: str(os.getpid())}
        _STATE.children.append(subprocess.Popen(argv, env=child_env, cwd=os.getcwd()))
    _STATE.observer = _Observer(_STATE.children)
    _STATE.observer.start()
    if not _STATE.atexit:
        atexit.register(_kill_children)
        _STATE.atexit = True
    return n - 1


def finish(timeout: float = 300.0) -> None:
    """End of a run: wait for the ranks :func:`launch` started, leave the process group, restore the environment.

    Raises ``RuntimeError`` if a rank failed."""
    failed = []
    if _STATE.observer is not None:
        _STATE.observer.stop()
    for k, proc in enumerate(_STATE.children, start=1):
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code:
            failed.append(f"local rank {k} exited with code {code}")
    _STATE.children.clear()
    dist = _dist()
    if dist is not None and _STATE.saved_env:
        dist.destroy_process_group()  # a later run in this process (a sweep's next job) starts a new group
    for key, value in _STATE.saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _STATE.saved_env.clear()
    if _STATE.saved_threads is not None:
        import torch

        torch.set_num_threads(_STATE.saved_threads)
        _STATE.saved_threads = None
    if failed:
        raise RuntimeError("; ".join(failed))


def abort() -> None:
    """End the ranks :func:`launch` started now (this rank failed: they would otherwise wait for it) and undo
    what :func:`finish` undoes, without raising."""
    _kill_children()
    try:
        finish(timeout=10.0)
    except RuntimeError:
        pass  # the ranks were killed on purpose


def _kill_children() -> None:
    for proc in _STATE.children:
        if proc.poll() is None:
            proc.kill()


class _Observer(threading.Thread):
    """If a rank fails, the others would wait for it in a collective forever: end them all (as Lightning does)."""

    def __init__(self, children: list[subprocess.Popen], period: float = 2.0) -> None:
        super().__init__(daemon=True, name="galframe-rank-observer")
        self.children, self.period, self._stop_event = list(children), period, threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.period):
            codes = [p.poll() for p in self.children]
            if any(c not in (None, 0) for c in codes):
                bad = next(k for k, c in enumerate(codes, start=1) if c not in (None, 0))
                print(f"galframe: local rank {bad} failed (exit code {codes[bad - 1]}); stopping all ranks.", file=sys.stderr)
                for p in self.children:
                    if p.poll() is None:
                        p.kill()
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGKILL)
            if all(c == 0 for c in codes):
                return


def launcher_alive() -> bool:
    """False in a rank :func:`launch` started once the process that started it (local rank 0) is gone, e.g.
    killed: work that meets the other ranks only at its end (``galframe predict``) stops instead of running on
    for nothing.  True everywhere else."""
    pid = os.environ.get(ENV_LAUNCHER_PID)
    if not pid or os.environ.get("LOCAL_RANK", "0") == "0":
        return True
    return os.getppid() == int(pid)


def rank_run_dir(run_dir: Optional[Path]) -> Optional[Path]:
    """The run directory of this rank: rank 0's (``GALFRAME_RUN_DIR``) in a rank galframe launched."""
    given = os.environ.get(ENV_RUN_DIR)
    if given and "LOCAL_RANK" in os.environ and os.environ.get("LOCAL_RANK") != "0":
        return Path(given)
    return run_dir


# -- ranks without Lightning (galframe predict) ------------------------------------------------------------------
#: how long a rank waits for the others in a collective (e.g. at the end of predict, for the slowest rank)
WAIT_S = 7 * 24 * 3600.0


def cluster_ranks(processes_per_node: int = 1, num_nodes: int = 1) -> dict:
    """This process's place in the run as its launcher describes it: ``world_size``, ``rank``, ``local_rank``,
    ``address``, ``port`` and ``launcher`` (SLURM ``srun``, ``torchrun``, LSF, or the environment variables that
    :func:`launch` or a user set: ``WORLD_SIZE``, ``RANK`` or ``NODE_RANK`` + ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``; without ``WORLD_SIZE``, a ``NODE_RANK`` means ``processes_per_node x num_nodes``)."""
    if _cluster_hints():  # Lightning's detectors (a second of imports) only where a cluster launcher may be
        from lightning_fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment

        for cls, name in ((SLURMEnvironment, "SLURM"), (TorchElasticEnvironment, "torchrun"), (LSFEnvironment, "LSF")):
            if cls.detect():
                env = cls()
                return {"world_size": int(env.world_size()), "rank": int(env.global_rank()),
                        "local_rank": int(env.local_rank()), "address": str(env.main_address), "port": int(env.main_port),
                        "launcher": name}
    local = int(os.environ.get("LOCAL_RANK", 0) or 0)
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)) or 0)
    rank = int(os.environ["RANK"]) if os.environ.get("RANK") else node * max(int(processes_per_node), 1) + local
    if os.environ.get("WORLD_SIZE"):
        world = int(os.environ["WORLD_SIZE"])
    else:
        world = max(int(processes_per_node), 1) * max(int(num_nodes), 1) if "NODE_RANK" in os.environ else 1
    return {"world_size": world, "rank": rank, "local_rank": local,
            "address": os.environ.get("MASTER_ADDR", "127.0.0.1"), "port": int(os.environ.get("MASTER_PORT", 0) or 0),
            "launcher": "environment"}


def _cluster_hints() -> bool:
    """Whether the environment has a variable of SLURM, LSF (jsrun) or torchrun (each detector needs one)."""
    return any(k.startswith(("SLURM_", "LSB_", "JSM_")) or k in ("GROUP_RANK", "TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE")
               for k in os.environ)


def join(trainer_cfg: Mapping[str, Any], command: str, run_dir: Path, backend: str = "gloo",
         timeout_s: float = WAIT_S) -> dict:
    """Become one rank of a run of ``process_count(trainer_cfg)`` processes without Lightning: start the other
    local ranks if nobody else does (:func:`launch`), then join a ``backend`` process group (gloo: CPU
    collectives, also when the work runs on GPUs).  Returns :func:`cluster_ranks` plus ``joined`` (whether a
    group was made here: leave it with :func:`leave`).  One process: nothing is started or joined.

    A launcher that started another number of processes than the config asks for is a ConfigError (every
    process would otherwise do the whole work, or wait for ranks that never come)."""
    wanted = process_count(trainer_cfg)
    per_node = local_process_count(trainer_cfg)
    if wanted > 1 and not created_externally():
        launch({**dict(trainer_cfg), "strategy": "ddp"}, command, run_dir)  # any strategy: predict is not Lightning's
    try:
        return _join(trainer_cfg, wanted, per_node, backend, timeout_s)
    except BaseException:
        abort()  # the ranks just started would wait for this one
        raise


def _join(trainer_cfg: Mapping[str, Any], wanted: int, per_node: int, backend: str, timeout_s: float) -> dict:
    import torch.distributed as dist

    from galframe.errors import ConfigError

    ranks = cluster_ranks(per_node, int(trainer_cfg.get("num_nodes", 1) or 1))
    if ranks["world_size"] != wanted:
        started = f"{ranks['launcher']} started {ranks['world_size']} process(es)"
        raise ConfigError(
            f"trainer.devices x trainer.num_nodes asks for {wanted} process(es), but {started}: "
            + ("pass trainer=ddp trainer.devices=<processes per node> (and trainer.num_nodes) to match the launcher."
               if wanted == 1 else "start as many (srun --ntasks-per-node, torchrun --nproc-per-node) or set "
               "trainer.devices and trainer.num_nodes to match.")
        )
    ranks["joined"] = False
    if wanted > 1 and not (dist.is_available() and dist.is_initialized()):
        from datetime import timedelta

        if not ranks["port"]:
            raise ConfigError("several processes need MASTER_PORT (and MASTER_ADDR) to find each other; set them.")
        dist.init_process_group(
            backend, init_method=f"tcp://{ranks['address']}:{ranks['port']}", world_size=ranks["world_size"],
            rank=ranks["rank"], timeout=timedelta(seconds=float(timeout_s)),
        )
        ranks["joined"] = True
    return ranks


def leave(ranks: Mapping[str, Any], failed: bool = False) -> None:
    """End of a :func:`join`: wait for the local ranks it started (``failed``: end them now), then leave the
    process group.  Raises ``RuntimeError`` if a started rank failed (not when ``failed``)."""
    try:
        if failed:
            abort()
        else:
            finish()  # also leaves a group made for the ranks launch() started
    finally:
        dist = _dist()
        if ranks.get("joined") and dist is not None:
            dist.destroy_process_group()


# -- Trainer settings and rank-0 outputs ---------------------------------------------------------------------
def trainer_kwargs(trainer_cfg: Mapping[str, Any]) -> dict:
    """``trainer:`` as ``pl.Trainer`` arguments: a ``strategy`` given as a mapping with ``_target_`` (e.g.
    FSDPStrategy with a wrap policy, conf/trainer/fsdp.yaml) is instantiated, and Lightning keeps galframe's
    rank-aware batch sampler instead of putting a DistributedSampler in (``use_distributed_sampler=False``)."""
    kwargs = dict(trainer_cfg)
    strategy = kwargs.get("strategy")
    if isinstance(strategy, Mapping) and "_target_" in strategy:
        from hydra.utils import instantiate

        kwargs["strategy"] = instantiate(dict(strategy), _convert_="all")
    kwargs.setdefault("use_distributed_sampler", False)
    return kwargs


def shards_parameters(trainer: Any) -> bool:
    """Whether the strategy splits the model's parameters among ranks (FSDP, DeepSpeed): then the module in
    one process is not the whole model."""
    name = type(getattr(trainer, "strategy", None)).__name__
    return any(key in name for key in ("FSDP", "DeepSpeed", "ModelParallel"))


def whole_model(model: Any, trainer: Any, checkpoint: Optional[str]) -> Any:
    """The model rank 0 reports with: ``model`` itself, or, when the strategy shards parameters, a fresh copy
    loaded from ``checkpoint`` (a full, consolidated Lightning checkpoint)."""
    if not shards_parameters(trainer) or not checkpoint:
        return model
    from galframe.checkpoints import model_from_checkpoint

    return model_from_checkpoint(checkpoint, type(model))  # never re-reads the pretrained backbone.weights
