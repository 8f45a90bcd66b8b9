"""The active-learning loop behind ``galframe hitl``.

Round 0 asks the oracle about ``hitl.initial`` objects drawn at random from the pool (the training
split), unless the store already holds that many labels (``hitl.import_labels``), and trains the first
model.  Each round r = 1..``hitl.rounds`` then

1. scores the unlabelled pool with round r-1's model(s) (probabilities, and what the acquisition
   needs: MC-dropout samples, ensemble members, embeddings),
2. selects ``hitl.per_round`` objects with the acquisition function and stores them as round r's queue
   (with the model's probabilities, uncertainty and nearest labelled neighbours, for the web page),
3. asks the oracle and waits until every queued object has an answer (a label or a skip),
4. exports the labels in force to ``round_<r>/labels.csv`` and trains on exactly those
   (``data.labels``), warm-started from round r-1's weights, evaluating on the held-out split,
5. reports every round so far: a table, ``hitl_rounds.json`` and ``learning_curve.png``.

Every step is recorded in the store (``rounds``: asking -> answered -> trained), so a stopped loop
resumes where it stopped (``hitl.resume=<store or run dir>|last``): a round's queue is never drawn
twice, answers already given are kept, and trained rounds are not trained again.  Skipped objects
leave the pool.  Validation and test splits keep the catalog's truth: they measure the model.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

from galframe.errors import ConfigError, DataError

from galframe_hitl.acquisition import Acquisition, PoolOutputs, build_acquisition, entropy
from galframe_hitl.oracle import HitlData, Oracle
from galframe_hitl.store import LabelStore

STORE_NAME = "labels.sqlite"


def build_oracle(cfg: Any, data: HitlData) -> Oracle:
    from galframe import registry
    from galframe.model import split_plugin_cfg

    name, _, options = split_plugin_cfg(dict(cfg), "oracle")
    oracle = registry.build("oracle", name, options, data=data)
    if not isinstance(oracle, Oracle):
        raise ConfigError(f"oracle plugin '{name}' did not build a galframe_hitl Oracle.")
    return oracle


def resolve_store(hitl: dict, run_dir: Path, runs_root: Path) -> Path:
    """The store this run writes: ``hitl.resume`` (an earlier store, run dir, or ``last``), ``hitl.store``, or a new one."""
    spec = hitl.get("resume")
    if spec:
        if str(spec) == "last":
            found = [p for p in Path(runs_root).glob(f"hitl*/**/{STORE_NAME}") if run_dir not in p.parents]
            if not found:
                raise DataError(f"{runs_root}: hitl.resume=last found no {STORE_NAME} in an earlier hitl run.")
            return max(found, key=lambda p: p.stat().st_mtime)
        path = Path(str(spec)).expanduser()
        if path.is_dir():
            path = path / STORE_NAME
        if not path.is_file():
            raise DataError(f"{path}: no label store to resume from (hitl.resume={spec}).")
        return path.resolve()
    if hitl.get("store"):
        return Path(str(hitl["store"])).expanduser().resolve()
    return run_dir / STORE_NAME


def file_version(path: Path, round_: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"r{round_}-{h.hexdigest()[:10]}"


class Loop:
    """One ``galframe hitl`` run: ``Loop(cfg, run_dir).run()``."""

    def __init__(self, cfg: dict, run_dir: Path) -> None:
        from galframe.build import build_datamodule

        self._trained = 0
        self.cfg = cfg
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        hitl = dict(cfg["hitl"])
        self.hitl = hitl
        self.rounds = _int(hitl, "rounds", 0)
        self.per_round = _int(hitl, "per_round", 1)
        self.initial = _int(hitl, "initial", 1)
        self.ensemble = _int(hitl, "ensemble", 1)
        self.mc_samples = _int(hitl, "mc_samples", 2)
        self.neighbours = _int(hitl, "neighbours", 0)
        self.batch_size = _int(hitl, "batch_size", 1)
        self.seed = int(cfg.get("seed", 0))
        self.task = str(hitl["task"])
        tasks = cfg.get("tasks") or {}
        if self.task not in tasks:
            raise ConfigError(f"hitl.task='{self.task}' is not among the selected tasks {sorted(tasks)}.")
        if tasks[self.task].get("plugin") != "classify":
            raise ConfigError(f"hitl.task='{self.task}' must be a classify task (it is '{tasks[self.task].get('plugin')}').")
        self.acquisition: Acquisition = build_acquisition(cfg["acquisition"])
        self.needs = self.acquisition.requirements()
        if "mc_probs" in self.needs and not float(tasks[self.task].get("dropout") or 0) > 0:
            raise ConfigError(
                f"acquisition '{self.acquisition.describe()}' uses MC dropout, and tasks.{self.task}.dropout is 0: "
                f"set tasks.{self.task}.dropout=0.3 (for example)."
            )
        if "ensemble_probs" in self.needs and self.ensemble < 2:
            raise ConfigError(
                f"acquisition '{self.acquisition.describe()}' compares ensemble members: set hitl.ensemble=3 (for example)."
            )
        data = dict(cfg["data"])
        if data.get("n_labeled") is not None:
            raise ConfigError("data.n_labeled is set, but in hitl the loop chooses the labelled objects: unset it.")
        if data.get("labels"):
            raise ConfigError("data.labels is set: in hitl, give starting labels with hitl.import_labels=<csv>.")
        if cfg.get("resume"):
            raise ConfigError("resume= continues a killed training run; to continue a hitl loop use hitl.resume=<run dir>|last.")
        progress = (cfg.get("trainer") or {}).get("progress_bar", "rich")
        self.dm = build_datamodule(cfg, progress=bool(progress))  # the data the selected tasks read, as train loads it
        self.dm.prepare()
        self.classes = tuple(self.dm.manifest.get("classes") or ())
        if not self.classes:
            raise DataError(f"{self.dm.root}: the dataset has no classes to ask about.")
        self.train_split = self.dm.splits["train"].reset_index(drop=True)
        self.train_ids = self.train_split["id"].to_numpy().astype(np.int64)
        from galframe_hitl.report import rare_classes

        self.rare = rare_classes(hitl.get("rare_classes"), self.classes, self.train_split["class"].to_numpy())
        # the oracle first: a refused one (e.g. an open bind without a token) leaves nothing behind
        self.oracle = build_oracle(cfg["oracle"], HitlData(Path(self.dm.root), self.classes))
        self._oracle_started = False
        self.store_path = resolve_store(hitl, self.run_dir, Path(cfg.get("paths", {}).get("runs", "runs")).resolve())
        self.store = LabelStore(self.store_path)
        self.store.bind(self.dm.root, self.classes, self.train_ids)
        if hitl.get("import_labels"):
            n = self.store.import_csv(str(hitl["import_labels"]))
            print(f"Imported {n} labels from {hitl['import_labels']} into {self.store_path}")
        print(f"Label store: {self.store_path}")

    # -- the loop --------------------------------------------------------------
    def run(self) -> dict:
        self._trained = 0
        try:
            for r in range(self.rounds + 1):
                if not self.step(r):
                    break
        finally:
            self.oracle.close()
            if self.hitl.get("export"):
                out = self.store.export_csv(str(self.hitl["export"]))
                print(f"Exported {len(self.store.labels())} labels to {out}")
        rows = self.report(show=not self._trained)  # each training already printed the table
        return rows[-1] if rows else {}

    def step(self, r: int) -> bool:
        """Bring round ``r`` to ``trained``; False when the pool has nothing left to ask about."""
        info = self.store.round_info(r)
        if info is None:
            if r > 0 and (self.store.round_info(r - 1) or {}).get("state") != "trained":
                raise DataError(f"{self.store_path}: round {r - 1} is not trained; cannot start round {r}.")
            if not self.select(r):
                print(f"Round {r}: the pool has no unlabelled object left; stopping.")
                return False
            info = self.store.round_info(r)
        if info["state"] == "asking":
            self.ask(r)
            self.store.set_round(r, state="answered")
            info = self.store.round_info(r)
        if info["state"] == "answered":
            self.train(r)
            self._trained += 1
            self.report()
        return True

    def pool_ids(self) -> np.ndarray:
        """Training-split objects without an answer in force (labels and skips both leave the pool)."""
        answered = self.store.answered_ids()
        return np.asarray([i for i in self.train_ids if int(i) not in answered], dtype=np.int64)

    def _dataset(self, ids: np.ndarray) -> Any:
        from galframe.data.datamodule import GalaxyDataset

        keep = set(int(i) for i in ids)
        rows = self.train_split[self.train_split["id"].isin(keep)]
        return GalaxyDataset(self.dm.root, self.dm.manifest, rows, keys=())

    def select(self, r: int) -> bool:
        pool_ids = self.pool_ids()
        if r == 0:
            have = len(self.store.labels())
            need = min(max(self.initial - have, 0), len(pool_ids))
            rng = np.random.default_rng([self.seed, 0])
            picks = rng.choice(len(pool_ids), need, replace=False) if need else np.zeros(0, dtype=np.int64)
            if have == 0 and need == 0:
                return False
            queue = [{"id": int(pool_ids[i]), "score": None, "info": {}} for i in picks]
            self.store.start_round(0, queue, "random (seed labels)", None)
            print(f"Round 0: {len(queue)} objects drawn at random to start from ({have} labels already in the store).")
            return True
        if len(pool_ids) == 0:
            return False
        prev = self.store.round_info(r - 1)
        models = self.load_models(prev)
        labels = self.store.labels()
        counts = np.bincount([self.classes.index(v) for v in labels.values()], minlength=len(self.classes))
        from galframe_hitl.scoring import nearest_labeled, score_pool

        pool = score_pool(
            models, self._dataset(pool_ids), self._dataset(np.asarray(sorted(labels), dtype=np.int64)), self.task,
            self.needs, mc_samples=self.mc_samples, batch_size=self.batch_size, seed=self.seed * 1009 + r,
            labeled_counts=counts, always_embed=self.neighbours > 0,
        )
        rng = np.random.default_rng([self.seed, r])
        picks = self.acquisition.select(pool, self.per_round, rng)
        scores = self._scores(pool)
        near = nearest_labeled(pool, picks, self.neighbours)
        queue = [self._queue_item(pool, int(i), None if scores is None else float(scores[i]), near) for i in picks]
        self.store.start_round(r, queue, self.acquisition.describe(), prev.get("trained_version"))
        print(f"Round {r}: {len(queue)} of {len(pool)} pool objects chosen by {self.acquisition.describe()}.")
        return True

    def _scores(self, pool: PoolOutputs) -> Optional[np.ndarray]:
        """The acquisition's own score per object, where it has one (shown on the page)."""
        acq = self.acquisition
        acq = getattr(acq, "inner", None) or getattr(acq, "prefilter", None) or acq  # a set picker shows its ranking
        if acq.name == "random":
            return None
        try:
            return acq.score(pool, np.random.default_rng(0))
        except NotImplementedError:
            return None

    def _queue_item(self, pool: PoolOutputs, i: int, score: Optional[float], near: dict) -> dict:
        p = pool.mean_probs()[i]
        top2 = np.sort(p)[-2:]
        info: dict[str, Any] = {
            "probs": {c: round(float(v), 5) for c, v in zip(self.classes, p)},
            "predicted": self.classes[int(np.argmax(p))],
            "entropy": float(entropy(p)),
            "margin": float(top2[1] - top2[0]) if len(top2) == 2 else 1.0,
            "neighbours": near.get(int(pool.ids[i]), []),
        }
        if pool.mc_probs is not None:
            mc = pool.mc_probs[:, i]
            info["bald"] = float(entropy(mc.mean(0)) - entropy(mc).mean())
        if pool.ensemble_probs is not None:
            ens = pool.ensemble_probs[:, i]
            info["ensemble_mi"] = float(entropy(ens.mean(0)) - entropy(ens).mean())
        if score is not None:
            info["score"] = score
        return {"id": int(pool.ids[i]), "score": score, "info": info}

    def ask(self, r: int) -> None:
        waiting = [q for q in self.store.queue(r) if q["answer"] is None]
        if not waiting:
            return
        if not self._oracle_started:
            self.oracle.start(self.store)
            self._oracle_started = True
        self.oracle.ask(self.store, r, waiting)
        done, total = self.store.progress(r)
        if done < total:
            raise DataError(f"round {r}: the oracle returned with {total - done} of {total} objects unanswered.")

    def load_models(self, info: dict) -> list:
        from galframe_hitl.scoring import load_model

        files = [info["checkpoint"], *(info.get("members") or [])]
        missing = [f for f in files if not f or not Path(f).is_file()]
        if missing:
            raise DataError(
                f"{self.store_path}: round {info['round']}'s checkpoint {missing[0]} is gone; "
                "the loop cannot score the pool without it."
            )
        return [load_model(f) for f in files]

    def train(self, r: int) -> dict:
        from galframe.train import run as train_run

        labels = self.store.labels()
        if not labels:
            raise DataError(f"round {r}: no labels in {self.store_path} to train on (every answer was a skip?).")
        round_dir = self.run_dir / f"round_{r:02d}"
        labels_csv = self.store.export_csv(round_dir / "labels.csv")
        prev = self.store.round_info(r - 1) if r > 0 else None
        warm = bool(self.hitl.get("warm_start", True)) and prev is not None and prev.get("checkpoint")
        checkpoints: list[str] = []
        metrics: dict = {}
        for m in range(self.ensemble):
            cfg = copy.deepcopy(self.cfg)
            for key in ("hitl", "oracle", "acquisition"):
                cfg.pop(key, None)
            cfg["data"]["labels"] = str(labels_csv)
            cfg["seed"] = self.seed + 1000 * m
            member_dir = round_dir if m == 0 else round_dir / f"member_{m}"
            start = None
            if warm:
                previous = [prev["checkpoint"], *(prev.get("members") or [])]
                start = previous[m] if m < len(previous) else previous[0]
            elif r == 0 and self.cfg.get("init"):
                start = str(self.cfg["init"])
            cfg["init"] = str(start) if start else None  # init keeps this round's task buffers (class weights)
            if m > 0:
                cfg["evaluate"] = False
            print(f"Round {r}: training on {len(labels)} labels" + (f" (ensemble member {m})" if m else "")
                  + (f", warm start from {start}" if start else ""), flush=True)
            result = train_run(cfg, member_dir)
            ckpt = best_checkpoint(member_dir)
            checkpoints.append(str(ckpt))
            if m == 0:
                metrics = result
        version = file_version(Path(checkpoints[0]), r)
        self.store.set_round(r, state="trained", checkpoint=checkpoints[0], members=checkpoints[1:],
                             trained_version=version, n_labels=len(labels), metrics=metrics)
        return metrics

    def report(self, show: bool = True) -> list[dict]:
        from galframe_hitl import report

        rows = report.round_rows(self.store.rounds(), self.task, self.classes, self.rare)
        report.write(rows, self.run_dir, self.classes, self.rare, title=f"hitl: {self.acquisition.describe()}", show=show)
        return rows


def best_checkpoint(run_dir: Path) -> Path:
    for name in ("best.ckpt", "last.ckpt"):
        path = Path(run_dir) / "checkpoints" / name
        if path.is_file():
            return path
    raise DataError(f"{run_dir}: training wrote no checkpoint.")


def _int(d: dict, key: str, minimum: int) -> int:
    try:
        value = int(d[key])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"hitl.{key} must be an integer (got {d.get(key)!r}).") from None
    if value < minimum:
        raise ConfigError(f"hitl.{key}={value}: must be at least {minimum}.")
    return value


def run(cfg: Any, run_dir: Any) -> float:
    """``galframe hitl``: the loop; returns the last round's held-out macro AUC (for sweeps)."""
    from galframe.build import to_dict
    from galframe.train import quiet_known_warnings

    quiet_known_warnings()
    last = Loop(to_dict(cfg), Path(run_dir)).run()
    return float(last.get("macro_auc") or 0.0)
