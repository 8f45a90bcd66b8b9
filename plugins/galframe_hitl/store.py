"""The label store: one SQLite file (WAL mode) holding every answer people or oracles gave.

Tables
------
``meta``     key/value: the dataset directory, its classes (JSON), the schema version.
``pool``     the object ids that may be asked about (the training split).
``rounds``   one row per active-learning round: its state (``asking`` -> ``answered`` -> ``trained``),
             the model version that chose its queue, the checkpoint(s) it produced, their version and
             held-out metrics.  The loop resumes from this table.
``queue``    the objects a round asks about, in order, with what the model said about each
             (probabilities, uncertainty, acquisition score, nearest labelled neighbours) as JSON.
``answers``  the append-only history: one row per event (``label``, ``skip`` or ``undo``) with
             object id, label, labeler, timestamp, round and model version.  An undo is its own
             event pointing at the event it takes back (``undoes``); nothing is ever updated or deleted.
``current``  a view: for each object, its latest answer that has not been undone.

Every write is one ``BEGIN IMMEDIATE`` transaction committed before the call returns, with
``synchronous=FULL``: an answer that was acknowledged is on disk, whatever happens to the process
afterwards.  Several processes and threads may write at once (SQLite serialises the writers; each
waits up to ``timeout`` seconds for the lock).  An optional ``request_id`` makes a retried answer
idempotent: the same request id is stored once.

Command line (CSV import / export)::

    python -m galframe_hitl.store export labels.sqlite labels.csv          # current labels: id,label,...
    python -m galframe_hitl.store export labels.sqlite history.csv --history
    python -m galframe_hitl.store import labels.sqlite more.csv --labeler alice
    python -m galframe_hitl.store summary labels.sqlite
"""
from __future__ import annotations

import csv
import json
import sqlite3
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from galframe.errors import ConfigError, DataError

SCHEMA_VERSION = 1
ACTIONS = ("label", "skip", "undo")
EXPORT_COLUMNS = ("id", "label", "labeler", "timestamp", "round", "model_version")
HISTORY_COLUMNS = ("event_id", "id", "action", "label", "labeler", "timestamp", "round", "model_version", "undoes")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pool (object_id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('asking', 'answered', 'trained')),
    acquisition TEXT,
    model_version TEXT,
    checkpoint TEXT,
    members TEXT,
    trained_version TEXT,
    n_labels INTEGER,
    metrics TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    round INTEGER NOT NULL REFERENCES rounds(round),
    position INTEGER NOT NULL,
    object_id INTEGER NOT NULL,
    score REAL,
    info TEXT,
    PRIMARY KEY (round, object_id)
);
CREATE INDEX IF NOT EXISTS queue_object ON queue(object_id);
CREATE TABLE IF NOT EXISTS answers (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('label', 'skip', 'undo')),
    label TEXT,
    labeler TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    round INTEGER,
    model_version TEXT,
    undoes INTEGER REFERENCES answers(event_id),
    request_id TEXT UNIQUE,
    CHECK ((action = 'label') = (label IS NOT NULL)),
    CHECK ((action = 'undo') = (undoes IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS answers_object ON answers(object_id, event_id);
CREATE INDEX IF NOT EXISTS answers_labeler ON answers(labeler, event_id);
CREATE UNIQUE INDEX IF NOT EXISTS answers_undone ON answers(undoes) WHERE undoes IS NOT NULL;
CREATE VIEW IF NOT EXISTS active AS
    SELECT a.* FROM answers a
    WHERE a.action IN ('label', 'skip')
      AND NOT EXISTS (SELECT 1 FROM answers u WHERE u.undoes = a.event_id);
CREATE VIEW IF NOT EXISTS current AS
    SELECT a.* FROM active a
    WHERE a.event_id = (SELECT MAX(b.event_id) FROM active b WHERE b.object_id = a.object_id);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StoreError(DataError):
    """A request the store refuses (unknown id or label, nothing to undo); nothing was written."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Answer:
    event_id: int
    object_id: int
    action: str
    label: Optional[str]
    labeler: str
    timestamp: str
    round: Optional[int]
    model_version: Optional[str]
    undoes: Optional[int] = None


class LabelStore:
    """A label store at ``path`` (created if missing).  Safe to share between threads; open one per process."""

    def __init__(self, path: Union[str, Path], timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.timeout = float(timeout)
        self._local = threading.local()
        if self.path.exists() and self.path.is_dir():
            raise ConfigError(f"{self.path}: the label store must be a file, not a directory.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a galframe label store ({exc}).") from exc
        if str(mode).lower() != "wal":
            raise DataError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); is it on a network filesystem?")
        conn.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif int(version) != SCHEMA_VERSION:
            raise DataError(f"{self.path}: label store schema {version}, this galframe reads {SCHEMA_VERSION}.")

    # -- connections -----------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            # FULL: the WAL is fsynced at every commit, so an acknowledged answer survives a power cut,
            # not only a killed process.  Answers come at human speed, so the cost does not matter.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) and committed before returning."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, tuple(args)).fetchall()

    # -- metadata --------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def set_meta(self, key: str, value: Any) -> None:
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    @property
    def classes(self) -> list[str]:
        return list(self.get_meta("classes") or [])

    def bind(self, dataset: Union[str, Path], classes: Sequence[str], pool_ids: Iterable[int]) -> None:
        """Tie the store to a dataset (its classes and its pool); a store made for another dataset is refused."""
        classes = [str(c) for c in classes]
        have = self.get_meta("classes")
        if have is not None and list(have) != classes:
            raise ConfigError(
                f"{self.path}: this label store was made for classes {have}, the data has {classes}; "
                "use another hitl.store."
            )
        ids = sorted({int(i) for i in pool_ids})
        known = self.pool_ids()
        if known and known != set(ids):
            raise ConfigError(
                f"{self.path}: this label store was made for a training split of {len(known)} objects; this "
                f"composition's has {len(ids)} ({len(known ^ set(ids))} differ). Use the same data.seed and "
                "data.split as the loop that made it, or another hitl.store."
            )
        with self._write() as c:
            if have is None:
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('classes', ?)", (json.dumps(classes),))
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dataset', ?)", (json.dumps(str(dataset)),))
            if not known:
                c.executemany("INSERT OR IGNORE INTO pool(object_id) VALUES (?)", [(i,) for i in ids])

    @staticmethod
    def _has_pool(c: sqlite3.Connection) -> bool:
        return c.execute("SELECT 1 FROM pool LIMIT 1").fetchone() is not None

    def pool_ids(self) -> set[int]:
        return {int(r[0]) for r in self._query("SELECT object_id FROM pool")}

    # -- answers ---------------------------------------------------------------
    def check_label(self, label: Any, where: str = "label") -> str:
        classes = self.classes
        if not classes:
            raise StoreError(f"{self.path}: the store has no classes yet (not bound to a dataset).", 409)
        text = str(label).strip()
        if text in classes:
            return text
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(classes):
            return classes[int(text)]
        raise StoreError(f"{where}: unknown class {label!r}; the classes are {classes}.", 422)

    def _queued_round(self, c: sqlite3.Connection, object_id: int) -> Optional[int]:
        row = c.execute("SELECT MAX(round) FROM queue WHERE object_id = ?", (object_id,)).fetchone()
        return None if row[0] is None else int(row[0])

    def _model_version(self, c: sqlite3.Connection, rnd: Optional[int]) -> Optional[str]:
        if rnd is None:
            return None
        row = c.execute("SELECT model_version FROM rounds WHERE round = ?", (rnd,)).fetchone()
        return row[0] if row else None

    def answer(
        self,
        object_id: int,
        label: Optional[str],
        labeler: str,
        *,
        skip: bool = False,
        request_id: Optional[str] = None,
        queued_only: bool = True,
        round: Optional[int] = None,
        model_version: Optional[str] = None,
    ) -> Answer:
        """Record one answer (a class, or ``skip=True``) at once.

        With ``queued_only`` (the web app), the object must be in some round's queue; otherwise it must be
        in the pool (when the store has one).  An unknown id or class raises :class:`StoreError` and writes
        nothing.  A repeated ``request_id`` returns the answer stored the first time.
        """
        labeler = check_labeler(labeler)
        if skip and label is not None:
            raise StoreError("an answer is either a label or a skip, not both.", 422)
        if not skip:
            if label is None:
                raise StoreError("an answer needs a label (or skip).", 422)
            label = self.check_label(label)
        try:
            object_id = int(object_id)
        except (TypeError, ValueError):
            raise StoreError(f"object id {object_id!r} is not an integer.", 422) from None
        with self._write() as c:
            if request_id is not None:
                row = c.execute("SELECT * FROM answers WHERE request_id = ?", (str(request_id),)).fetchone()
                if row is not None:
                    return _answer(row)
            queued = self._queued_round(c, object_id)
            if queued_only and queued is None:
                raise StoreError(f"object id {object_id} is not in any round's queue.", 404)
            if not queued_only and self._has_pool(c):
                if c.execute("SELECT 1 FROM pool WHERE object_id = ?", (object_id,)).fetchone() is None:
                    raise StoreError(f"object id {object_id} is not in the pool (the training split).", 404)
            rnd = queued if round is None else int(round)
            version = model_version if model_version is not None else self._model_version(c, rnd)
            cur = c.execute(
                "INSERT INTO answers(object_id, action, label, labeler, timestamp, round, model_version, request_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (object_id, "skip" if skip else "label", label, labeler, now(), rnd, version, request_id),
            )
            row = c.execute("SELECT * FROM answers WHERE event_id = ?", (cur.lastrowid,)).fetchone()
        return _answer(row)

    def answer_many(self, rows: Iterable[tuple[int, Optional[str]]], labeler: str, round: Optional[int] = None) -> int:
        """Many answers (``(id, label)``; label None = skip) in one transaction, e.g. from an oracle."""
        labeler = check_labeler(labeler)
        prepared = [(int(i), None if lab is None else self.check_label(lab)) for i, lab in rows]
        with self._write() as c:
            pool = self._has_pool(c)
            for object_id, label in prepared:
                if pool and c.execute("SELECT 1 FROM pool WHERE object_id = ?", (object_id,)).fetchone() is None:
                    raise StoreError(f"object id {object_id} is not in the pool (the training split).", 404)
                rnd = round if round is not None else self._queued_round(c, object_id)
                c.execute(
                    "INSERT INTO answers(object_id, action, label, labeler, timestamp, round, model_version)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (object_id, "skip" if label is None else "label", label, labeler, now(), rnd, self._model_version(c, rnd)),
                )
        return len(prepared)

    def undo(self, labeler: str, request_id: Optional[str] = None) -> Answer:
        """Take back ``labeler``'s latest answer that is still in force; returns the undone answer."""
        labeler = check_labeler(labeler)
        with self._write() as c:
            if request_id is not None:
                row = c.execute("SELECT * FROM answers WHERE request_id = ?", (str(request_id),)).fetchone()
                if row is not None:
                    undone = c.execute("SELECT * FROM answers WHERE event_id = ?", (row["undoes"],)).fetchone()
                    return _answer(undone)
            row = c.execute(
                "SELECT * FROM active WHERE labeler = ? ORDER BY event_id DESC LIMIT 1", (labeler,)
            ).fetchone()
            if row is None:
                raise StoreError(f"labeler '{labeler}' has no answer to undo.", 409)
            c.execute(
                "INSERT INTO answers(object_id, action, label, labeler, timestamp, round, model_version, undoes, request_id)"
                " VALUES (?, 'undo', NULL, ?, ?, ?, ?, ?, ?)",
                (row["object_id"], labeler, now(), row["round"], row["model_version"], row["event_id"], request_id),
            )
        return _answer(row)

    # -- reading ---------------------------------------------------------------
    def current(self, include_skips: bool = False) -> list[Answer]:
        where = "" if include_skips else " WHERE action = 'label'"
        return [_answer(r) for r in self._query(f"SELECT * FROM current{where} ORDER BY object_id")]

    def in_force(self, object_id: int) -> Optional[Answer]:
        """The answer (label or skip) in force for one object, or None."""
        rows = self._query("SELECT * FROM current WHERE object_id = ?", (int(object_id),))
        return _answer(rows[0]) if rows else None

    def labels(self) -> dict[int, str]:
        """Object id -> its label in force (skipped and undone objects are absent)."""
        return {a.object_id: a.label for a in self.current()}  # type: ignore[misc]

    def n_labels(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM current WHERE action = 'label'")[0][0])

    def answered_ids(self) -> set[int]:
        """Objects with a label or a skip in force."""
        return {int(r[0]) for r in self._query("SELECT object_id FROM current")}

    def history(self) -> list[Answer]:
        return [_answer(r) for r in self._query("SELECT * FROM answers ORDER BY event_id")]

    def count_events(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM answers")[0][0])

    # -- rounds and queues -----------------------------------------------------
    def rounds(self) -> list[dict]:
        out = []
        for r in self._query("SELECT * FROM rounds ORDER BY round"):
            d = dict(r)
            d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else None
            d["members"] = json.loads(d["members"]) if d["members"] else []
            out.append(d)
        return out

    def round_info(self, rnd: int) -> Optional[dict]:
        return next((r for r in self.rounds() if r["round"] == rnd), None)

    def start_round(self, rnd: int, queue: Sequence[Mapping[str, Any]], acquisition: str, model_version: Optional[str]) -> None:
        """Create round ``rnd`` (state ``asking``) with its queue: dicts of ``id``, ``score``, ``info``."""
        ts = now()
        with self._write() as c:
            if c.execute("SELECT 1 FROM rounds WHERE round = ?", (rnd,)).fetchone():
                raise DataError(f"{self.path}: round {rnd} already exists.")
            c.execute(
                "INSERT INTO rounds(round, state, acquisition, model_version, created, updated) VALUES (?, 'asking', ?, ?, ?, ?)",
                (rnd, acquisition, model_version, ts, ts),
            )
            c.executemany(
                "INSERT INTO queue(round, position, object_id, score, info) VALUES (?, ?, ?, ?, ?)",
                [
                    (rnd, pos, int(item["id"]), _float_or_none(item.get("score")), json.dumps(item.get("info") or {}))
                    for pos, item in enumerate(queue)
                ],
            )

    def set_round(self, rnd: int, **fields: Any) -> None:
        allowed = {"state", "checkpoint", "members", "trained_version", "n_labels", "metrics", "model_version"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown round fields {sorted(bad)}")
        for key in ("metrics", "members"):
            if fields.get(key) is not None:
                fields[key] = json.dumps(fields[key], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._write() as c:
            c.execute(f"UPDATE rounds SET {sets}, updated = ? WHERE round = ?", (*fields.values(), now(), rnd))

    def queue(self, rnd: int) -> list[dict]:
        """Round ``rnd``'s queue in order, each with the answer in force (``answer``: label, 'skip' or None)."""
        rows = self._query(
            "SELECT q.position, q.object_id, q.score, q.info, c.action, c.label, c.labeler FROM queue q "
            "LEFT JOIN current c ON c.object_id = q.object_id WHERE q.round = ? ORDER BY q.position",
            (rnd,),
        )
        out = []
        for r in rows:
            answer = None if r["action"] is None else (r["label"] if r["action"] == "label" else "skip")
            out.append(
                {
                    "id": int(r["object_id"]),
                    "position": int(r["position"]),
                    "score": r["score"],
                    "info": json.loads(r["info"] or "{}"),
                    "answer": answer,
                    "labeler": r["labeler"],
                }
            )
        return out

    def queued(self, object_id: int) -> Optional[dict]:
        rows = self._query(
            "SELECT round, position, score, info FROM queue WHERE object_id = ? ORDER BY round DESC LIMIT 1", (int(object_id),)
        )
        if not rows:
            return None
        r = rows[0]
        return {"id": int(object_id), "round": int(r["round"]), "position": int(r["position"]), "score": r["score"],
                "info": json.loads(r["info"] or "{}")}

    def progress(self, rnd: int) -> tuple[int, int]:
        """(answered, queued) for round ``rnd``."""
        row = self._query(
            "SELECT COUNT(*), COUNT(c.object_id) FROM queue q LEFT JOIN current c ON c.object_id = q.object_id "
            "WHERE q.round = ?",
            (rnd,),
        )[0]
        return int(row[1]), int(row[0])

    def open_round(self) -> Optional[int]:
        """The round people are asked about now: the latest one still ``asking``, else None."""
        rows = self._query("SELECT MAX(round) FROM rounds WHERE state = 'asking'")
        return None if rows[0][0] is None else int(rows[0][0])

    def latest_round(self) -> Optional[int]:
        rows = self._query("SELECT MAX(round) FROM rounds")
        return None if rows[0][0] is None else int(rows[0][0])

    # -- CSV -------------------------------------------------------------------
    def export_csv(self, path: Union[str, Path], history: bool = False) -> Path:
        """Current labels as ``id,label,labeler,timestamp,round,model_version`` (readable as ``data.labels``),
        or with ``history`` every event."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            if history:
                writer.writerow(HISTORY_COLUMNS)
                for a in self.history():
                    writer.writerow([a.event_id, a.object_id, a.action, a.label or "", a.labeler, a.timestamp,
                                     _blank(a.round), a.model_version or "", _blank(a.undoes)])
            else:
                writer.writerow(EXPORT_COLUMNS)
                for a in self.current():
                    writer.writerow([a.object_id, a.label, a.labeler, a.timestamp, _blank(a.round), a.model_version or ""])
        tmp.replace(path)
        return path

    def import_csv(self, path: Union[str, Path], labeler: Optional[str] = None) -> int:
        """Add the labels of a CSV (columns ``id``, ``label``, optional ``labeler``, ``round``) as new events.

        The whole file is checked first (every id in the pool, every label a class); a bad row names the
        file, line and problem, and nothing is imported.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: labels CSV not found.")
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            missing = {"id", "label"} - set(fields)
            if missing:
                raise DataError(f"{path}: a labels CSV needs columns 'id' and 'label'; missing {sorted(missing)}.")
            raw = list(reader)
        pool = self.pool_ids()
        rows = []
        for line, rec in enumerate(raw, start=2):
            rec = {str(k).strip(): (v or "").strip() for k, v in rec.items() if k is not None}
            try:
                object_id = int(rec["id"])
            except ValueError:
                raise DataError(f"{path}, line {line}: id {rec['id']!r} is not an integer.") from None
            if pool and object_id not in pool:
                raise DataError(f"{path}, line {line}: object id {object_id} is not in the pool (the training split).")
            try:
                label = self.check_label(rec["label"], where=f"{path}, line {line}")
            except StoreError as exc:
                raise DataError(str(exc)) from None
            who = labeler or rec.get("labeler") or f"import:{path.name}"
            rnd = int(rec["round"]) if rec.get("round", "").lstrip("-").isdigit() else None
            rows.append((object_id, label, check_labeler(who), rnd))
        with self._write() as c:
            for object_id, label, who, rnd in rows:
                c.execute(
                    "INSERT INTO answers(object_id, action, label, labeler, timestamp, round, model_version)"
                    " VALUES (?, 'label', ?, ?, ?, ?, ?)",
                    (object_id, label, who, now(), rnd, "import"),
                )
        return len(rows)


def check_labeler(labeler: Any) -> str:
    text = str(labeler or "").strip()
    if not text or len(text) > 64 or any(ch in text for ch in "\n\r\t"):
        raise StoreError(f"labeler name {labeler!r} must be 1-64 characters on one line.", 422)
    return text


def _answer(row: sqlite3.Row) -> Answer:
    return Answer(
        event_id=int(row["event_id"]),
        object_id=int(row["object_id"]),
        action=row["action"],
        label=row["label"],
        labeler=row["labeler"],
        timestamp=row["timestamp"],
        round=None if row["round"] is None else int(row["round"]),
        model_version=row["model_version"],
        undoes=None if row["undoes"] is None else int(row["undoes"]),
    )


def _float_or_none(x: Any) -> Optional[float]:
    return None if x is None else float(x)


def _blank(x: Any) -> str:
    return "" if x is None else str(x)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m galframe_hitl.store", description="galframe label store: CSV import/export")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("export", help="write the labels in force (or, with --history, every event) to a CSV")
    p.add_argument("store")
    p.add_argument("csv")
    p.add_argument("--history", action="store_true")
    p = sub.add_parser("import", help="add the labels of a CSV (id,label[,labeler,round]) to the store")
    p.add_argument("store")
    p.add_argument("csv")
    p.add_argument("--labeler", default=None)
    p = sub.add_parser("summary", help="rounds, labels per class, labelers")
    p.add_argument("store")
    args = parser.parse_args(argv)
    try:
        if not Path(args.store).expanduser().is_file():
            raise DataError(f"{args.store}: label store not found.")
        store = LabelStore(args.store)
        if args.cmd == "export":
            out = store.export_csv(args.csv, history=args.history)
            n = store.count_events() if args.history else len(store.current())
            print(f"Wrote {n} {'events' if args.history else 'labels'} to {out}")
        elif args.cmd == "import":
            n = store.import_csv(args.csv, labeler=args.labeler)
            print(f"Imported {n} labels from {args.csv} into {args.store}")
        else:
            print(json.dumps(summary(store), indent=2))
        return 0
    except (DataError, ConfigError) as exc:
        print(f"galframe_hitl.store: error: {exc}", file=sys.stderr)
        return 2


def summary(store: LabelStore) -> dict:
    from collections import Counter

    current = store.current()
    return {
        "store": str(store.path),
        "dataset": store.get_meta("dataset"),
        "classes": store.classes,
        "labels": len(current),
        "per_class": dict(Counter(a.label for a in current)),
        "labelers": dict(Counter(a.labeler for a in current)),
        "events": store.count_events(),
        "rounds": [{k: r[k] for k in ("round", "state", "n_labels", "model_version")} for r in store.rounds()],
    }


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
