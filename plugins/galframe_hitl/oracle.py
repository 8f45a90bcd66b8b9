"""Oracles: who answers the loop's questions.

``catalog``  answers from a truth catalog (the dataset's own ``catalog.parquet`` by default), with
             optional seeded label noise; used by benchmarks and tests.
``web``      a person, through the local labeling page (:mod:`galframe_hitl.webapp`).  The loop serves
             the page for as long as it runs and waits until each round's queue is answered.

An oracle is a plugin (entry point ``oracle.<name>``) built as ``cls(data=<HitlData>, **options)``;
``ask(store, round, items)`` returns once every item of the round has an answer in the store.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from galframe.api import Oracle
from galframe.errors import ConfigError, DataError

from galframe_hitl.serving import ServerThread, check_bind
from galframe_hitl.store import LabelStore

@dataclass(frozen=True)
class HitlData:
    """What an oracle may know about the data: its directory and classes."""

    root: Path
    classes: tuple[str, ...]


class CatalogOracle(Oracle):
    """Answers from a truth catalog: ``column`` (a class name or index) of the row with the object's id.

    ``noise``: the probability that an answer is replaced by a different class drawn at random; the
    draw depends only on (``seed``, object id), so a run is reproducible whatever the order of questions.
    """

    def __init__(
        self,
        data: HitlData,
        catalog: Optional[str] = None,
        column: str = "class_name",
        noise: float = 0.0,
        seed: int = 0,
        labeler: str = "catalog",
    ) -> None:
        from galframe.data.labels import read_table

        self.classes = tuple(data.classes)
        file = Path(str(catalog)).expanduser() if catalog else Path(data.root) / "catalog.parquet"
        frame = read_table(file, "truth catalog", "the truth catalog", "oracle.catalog")
        for col in ("id", column):
            if col not in frame:
                raise DataError(f"{file}: the truth catalog has no column '{col}' (oracle.column={column}).")
        self.noise = float(noise)
        if not 0.0 <= self.noise <= 1.0:
            raise ConfigError(f"oracle.noise={noise}: a probability in [0, 1].")
        self.seed = int(seed)
        self.labeler = str(labeler) if not self.noise else f"{labeler}(noise={self.noise:g})"
        truth = {}
        for object_id, value in zip(frame["id"].to_numpy(), frame[column].to_numpy()):
            if isinstance(value, str) and value in self.classes:
                truth[int(object_id)] = value
            elif not isinstance(value, str) and 0 <= int(value) < len(self.classes):
                truth[int(object_id)] = self.classes[int(value)]
            else:
                raise DataError(f"{file}: object {int(object_id)} has class {value!r}, not one of {list(self.classes)}.")
        self.truth = truth
        self.file = file

    def answer(self, object_id: int) -> str:
        if object_id not in self.truth:
            raise DataError(f"{self.file}: the truth catalog has no object with id {object_id}.")
        label = self.truth[object_id]
        if self.noise:
            rng = np.random.default_rng([self.seed, int(object_id)])
            if rng.random() < self.noise:
                others = [c for c in self.classes if c != label]
                label = others[int(rng.integers(len(others)))]
        return label

    def ask(self, store: LabelStore, rnd: int, items: Sequence[dict]) -> None:
        store.answer_many([(int(it["id"]), self.answer(int(it["id"]))) for it in items], self.labeler, round=rnd)


class WebOracle(Oracle):
    """A person answers through the labeling page, served while the loop runs.

    ``host``/``port``: where to serve (127.0.0.1 by default; any other address needs ``token``).
    ``timeout_s``: give up on a round after this long (null: wait for ever); ``poll_s``: how often the
    loop looks at the store.
    """

    def __init__(
        self,
        data: HitlData,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: Optional[str] = None,
        timeout_s: Optional[float] = None,
        poll_s: float = 1.0,
        labeler: str = "web",
    ) -> None:
        self.host, self.port = str(host), int(port)
        self.token = None if token in (None, "", "null") else str(token)
        check_bind(self.host, self.token)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.poll_s = float(poll_s)
        self.labeler = str(labeler)
        self.data = data
        self.server: Optional[ServerThread] = None
        self.url = ""

    def start(self, store: LabelStore) -> None:
        from galframe_hitl.webapp import create_app

        app = create_app(store.path, token=self.token, dataset=self.data.root, host=self.host)
        self.server = ServerThread(app, self.host, self.port)
        self.server.start()
        shown = self.host if ":" not in self.host else f"[{self.host}]"
        self.url = f"http://{shown}:{self.server.port}/" + (f"?token={self.token}" if self.token else "")
        print(f"Labeling page: {self.url}", flush=True)
        if store.has_labelers():
            names = ", ".join(r["name"] for r in store.labelers() if r["revoked"] is None)
            print(f"  named labelers ({names}): each signs in with their own link "
                  "(galframe hitl labelers add NAME --store ... prints one)", flush=True)

    def ask(self, store: LabelStore, rnd: int, items: Sequence[dict]) -> None:
        done, total = store.progress(rnd)
        print(f"Round {rnd}: {total - done} of {total} galaxies wait for answers at {self.url}", flush=True)
        start = time.monotonic()
        last = -1
        while True:
            done, total = store.progress(rnd)
            if done != last:
                print(f"  round {rnd}: {done}/{total} answered", flush=True)
                last = done
            if done >= total:
                return
            if self.server is not None and not self.server.thread.is_alive():
                raise DataError("the labeling page stopped unexpectedly; rerun the loop to resume this round.")
            if self.timeout_s is not None and time.monotonic() - start > self.timeout_s:
                raise DataError(
                    f"round {rnd}: {total - done} answers still missing after oracle.timeout_s={self.timeout_s:g} s; "
                    "what was answered is saved; rerun with hitl.resume to continue."
                )
            time.sleep(self.poll_s)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
