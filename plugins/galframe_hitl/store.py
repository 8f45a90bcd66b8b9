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
``opinions`` a view: for each (object, labeler), that labeler's latest answer not undone (several
             labelers per galaxy: :mod:`galframe_hitl.aggregate` combines them).
``labelers`` the people the page knows (name, role ``labeler`` or ``admin``, the SHA-256 of their
             token, never the token itself).  With none, the page runs in single-user mode.

Every write is one ``BEGIN IMMEDIATE`` transaction committed before the call returns, with
``synchronous=FULL``: an answer that was acknowledged is on disk, whatever happens to the process
afterwards.  Several processes and threads may write at once (SQLite serialises the writers; each
waits up to ``timeout`` seconds for the lock).  An optional ``request_id`` makes a retried answer
idempotent: the same request id *of the same labeler* is stored once (another labeler's request with
the same id is a different request); reusing one's own request id for a different answer is refused.

Command line (CSV import / export)::

    python -m galframe_hitl.store export labels.sqlite labels.csv          # current labels: id,label,...
    python -m galframe_hitl.store export labels.sqlite history.csv --history
    python -m galframe_hitl.store import labels.sqlite more.csv --labeler alice
    python -m galframe_hitl.store summary labels.sqlite
    python -m galframe_hitl.store export labels.sqlite labels.csv --aggregate dawid_skene   # several labelers
    python -m galframe_hitl.store export labels.sqlite answers.csv --opinions  # every labeler's answer in force

Exported CSV cells that start with ``= + - @``, a tab or a carriage return get a leading ``'`` so a
spreadsheet shows them as text instead of running them as formulas.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import json
import math
import re
import secrets
import sqlite3
import unicodedata
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from galframe.errors import ConfigError, DataError

SCHEMA_VERSION = 2
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ROLES = ("labeler", "admin")
#: names the labelers command accepts: a letter or digit first (so no cell starts a formula), 1-64 characters
LABELER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
ACTIONS = ("label", "skip", "undo")
EXPORT_COLUMNS = ("id", "label", "labeler", "timestamp", "round", "model_version")
HISTORY_COLUMNS = ("event_id", "id", "action", "label", "labeler", "timestamp", "round", "model_version", "undoes")

_ANSWERS = """(
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('label', 'skip', 'undo')),
    label TEXT,
    labeler TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    round INTEGER,
    model_version TEXT,
    undoes INTEGER REFERENCES answers(event_id),
    request_id TEXT,
    CHECK ((action = 'label') = (label IS NOT NULL)),
    CHECK ((action = 'undo') = (undoes IS NOT NULL))
)"""

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
CREATE TABLE IF NOT EXISTS answers {answers};
CREATE INDEX IF NOT EXISTS answers_object ON answers(object_id, event_id);
CREATE INDEX IF NOT EXISTS answers_labeler ON answers(labeler, event_id);
CREATE UNIQUE INDEX IF NOT EXISTS answers_undone ON answers(undoes) WHERE undoes IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS answers_request ON answers(labeler, request_id) WHERE request_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS labelers (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('labeler', 'admin')),
    token_hash TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    revoked TEXT
);
CREATE VIEW IF NOT EXISTS active AS
    SELECT a.* FROM answers a
    WHERE a.action IN ('label', 'skip')
      AND NOT EXISTS (SELECT 1 FROM answers u WHERE u.undoes = a.event_id);
CREATE VIEW IF NOT EXISTS current AS
    SELECT a.* FROM active a
    WHERE a.event_id = (SELECT MAX(b.event_id) FROM active b WHERE b.object_id = a.object_id);
CREATE VIEW IF NOT EXISTS opinions AS
    SELECT a.* FROM active a
    WHERE a.event_id = (SELECT MAX(b.event_id) FROM active b
                        WHERE b.object_id = a.object_id AND b.labeler = a.labeler);
""".replace("{answers}", _ANSWERS)

# schema 1 -> 2: request ids become unique per labeler (the answers table is rebuilt: a column's UNIQUE
# cannot be dropped in SQLite); the labelers table and the opinions view are new.
_ANSWERS_V2 = "CREATE TABLE answers_v2 " + _ANSWERS


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
        self._migrate(conn)
        conn.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif int(version) != SCHEMA_VERSION:
            raise DataError(f"{self.path}: label store schema {version}, this galframe reads {SCHEMA_VERSION}.")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring a schema-1 store to schema 2 in one transaction (another process may be doing the same)."""
        def version() -> Optional[int]:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
                return None
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            return None if row is None else int(json.loads(row[0]))

        if version() != 1:
            return
        conn.execute("PRAGMA foreign_keys=OFF")  # the table is rebuilt under its own self-reference
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if version() == 1:
                    conn.execute("DROP VIEW IF EXISTS current")
                    conn.execute("DROP VIEW IF EXISTS active")
                    conn.execute(_ANSWERS_V2)
                    conn.execute("INSERT INTO answers_v2 SELECT event_id, object_id, action, label, labeler, timestamp, "
                                 "round, model_version, undoes, request_id FROM answers")
                    conn.execute("DROP TABLE answers")
                    conn.execute("ALTER TABLE answers_v2 RENAME TO answers")
                    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(SCHEMA_VERSION),))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.execute("PRAGMA foreign_keys=ON")

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
        """A class name, or a class index (an integer, or a string of ASCII digits); its name is returned."""
        classes = self.classes
        if not classes:
            raise StoreError(f"{self.path}: the store has no classes yet (not bound to a dataset).", 409)
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise StoreError(f"{where}: a class is a name or an index, not {type(label).__name__}.", 422)
        if isinstance(label, int):
            if 0 <= label < len(classes):
                return classes[label]
            raise StoreError(f"{where}: class index {short(label)} is not in 0..{len(classes) - 1}.", 422)
        text = label.strip()
        if text in classes:
            return text
        if re.fullmatch(r"[0-9]{1,6}", text) and int(text) < len(classes):
            return classes[int(text)]
        raise StoreError(f"{where}: unknown class {short(label)}; the classes are {classes}.", 422)

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
        nothing.  A repeated ``request_id`` of the same labeler returns the answer stored the first time
        (409 if that request was a different answer or an undo).
        """
        labeler = check_labeler(labeler)
        request_id = check_request_id(request_id)
        if skip and label is not None:
            raise StoreError("an answer is either a label or a skip, not both.", 422)
        if not skip:
            if label is None:
                raise StoreError("an answer needs a label (or skip).", 422)
            label = self.check_label(label)
        object_id = check_id(object_id)
        action = "skip" if skip else "label"
        with self._write() as c:
            if request_id is not None:
                row = c.execute("SELECT * FROM answers WHERE labeler = ? AND request_id = ?", (labeler, request_id)).fetchone()
                if row is not None:
                    if (row["action"], row["object_id"], row["label"]) != (action, object_id, label):
                        raise StoreError(f"request_id {short(request_id)} was already used by {labeler} for "
                                         f"another request (event {row['event_id']}); send a new request_id.", 409)
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
                (object_id, action, label, labeler, now(), rnd, version, request_id),
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

    def undo(
        self,
        labeler: str,
        request_id: Optional[str] = None,
        *,
        owner: Optional[str] = None,
        event_id: Optional[int] = None,
    ) -> Answer:
        """Take back an answer still in force; returns the undone answer.  The undo event is ``labeler``'s.

        By default ``labeler``'s own latest answer; ``owner``: the latest of that labeler instead (an admin's
        undo); ``event_id``: that answer (of ``owner``, when given).  A repeated ``request_id`` of the same
        labeler returns what its first undo took back (409 if that request id was an answer).
        """
        labeler = check_labeler(labeler)
        owner = labeler if owner is None and event_id is None else (None if owner is None else check_labeler(owner))
        request_id = check_request_id(request_id)
        with self._write() as c:
            if request_id is not None:
                row = c.execute("SELECT * FROM answers WHERE labeler = ? AND request_id = ?", (labeler, request_id)).fetchone()
                if row is not None:
                    if row["action"] != "undo":
                        raise StoreError(f"request_id {short(request_id)} was already used by {labeler} for an "
                                         f"answer (event {row['event_id']}), not an undo; send a new request_id.", 409)
                    undone = c.execute("SELECT * FROM answers WHERE event_id = ?", (row["undoes"],)).fetchone()
                    return _answer(undone)
            if event_id is not None:
                event_id = check_id(event_id, "event_id")
                row = c.execute("SELECT * FROM active WHERE event_id = ?", (event_id,)).fetchone()
                if row is None:
                    raise StoreError(f"event {event_id} is not an answer in force (unknown, an undo, or undone).", 409)
                if owner is not None and row["labeler"] != owner:
                    raise StoreError(f"event {event_id} is {row['labeler']}'s answer, not {owner}'s.", 403)
            else:
                row = c.execute(
                    "SELECT * FROM active WHERE labeler = ? ORDER BY event_id DESC LIMIT 1", (owner,)
                ).fetchone()
                if row is None:
                    raise StoreError(f"labeler '{owner}' has no answer to undo.", 409)
            c.execute(
                "INSERT INTO answers(object_id, action, label, labeler, timestamp, round, model_version, undoes, request_id)"
                " VALUES (?, 'undo', NULL, ?, ?, ?, ?, ?, ?)",
                (row["object_id"], labeler, now(), row["round"], row["model_version"], row["event_id"], request_id),
            )
        return _answer(row)

    # -- labelers --------------------------------------------------------------
    def add_labeler(self, name: str, role: str = "labeler") -> str:
        """Register a labeler; returns their new token (only its SHA-256 is stored)."""
        name = check_new_labeler(name)
        if role not in ROLES:
            raise StoreError(f"role {short(role)}: one of {list(ROLES)}.", 422)
        token = new_token()
        with self._write() as c:
            row = c.execute("SELECT revoked FROM labelers WHERE name = ?", (name,)).fetchone()
            if row is not None and row["revoked"] is None:
                raise StoreError(f"labeler '{name}' exists already (rotate their token with 'labelers token {name}').", 409)
            c.execute("INSERT OR REPLACE INTO labelers(name, role, token_hash, created, revoked) VALUES (?, ?, ?, ?, NULL)",
                      (name, role, token_hash(token), now()))
        return token

    def rotate_token(self, name: str) -> str:
        """A new token for a labeler; the old one stops working at once."""
        token = new_token()
        with self._write() as c:
            cur = c.execute("UPDATE labelers SET token_hash = ? WHERE name = ? AND revoked IS NULL", (token_hash(token), str(name)))
            if cur.rowcount != 1:
                raise StoreError(f"no labeler '{short(name)}' (see 'labelers list').", 404)
        return token

    def remove_labeler(self, name: str) -> None:
        """Revoke a labeler's token (their answers stay, attributed to them)."""
        with self._write() as c:
            cur = c.execute("UPDATE labelers SET revoked = ? WHERE name = ? AND revoked IS NULL", (now(), str(name)))
            if cur.rowcount != 1:
                raise StoreError(f"no labeler '{short(name)}' (see 'labelers list').", 404)

    def labelers(self) -> list[dict]:
        """Every registered labeler: name, role, created, revoked (None while active)."""
        return [dict(r) for r in self._query("SELECT name, role, created, revoked FROM labelers ORDER BY name")]

    def has_labelers(self) -> bool:
        return bool(self._query("SELECT 1 FROM labelers WHERE revoked IS NULL LIMIT 1"))

    def authenticate(self, token: str) -> Optional[tuple[str, str]]:
        """(name, role) of the active labeler whose token this is, else None (digests compared in constant time)."""
        if not token or len(token) > 200:
            return None
        digest = token_hash(token)
        found = None
        for row in self._query("SELECT name, role, token_hash FROM labelers WHERE revoked IS NULL"):
            if hmac.compare_digest(row["token_hash"], digest):
                found = (row["name"], row["role"])
        return found

    # -- reading ---------------------------------------------------------------
    def current(self, include_skips: bool = False) -> list[Answer]:
        where = "" if include_skips else " WHERE action = 'label'"
        return [_answer(r) for r in self._query(f"SELECT * FROM current{where} ORDER BY object_id")]

    def in_force(self, object_id: int) -> Optional[Answer]:
        """The answer (label or skip) in force for one object, or None."""
        rows = self._query("SELECT * FROM current WHERE object_id = ?", (check_id(object_id),))
        return _answer(rows[0]) if rows else None

    def labels(self) -> dict[int, str]:
        """Object id -> its label in force (skipped and undone objects are absent)."""
        return {a.object_id: a.label for a in self.current()}  # type: ignore[misc]

    def n_labels(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM current WHERE action = 'label'")[0][0])

    def answered_ids(self) -> set[int]:
        """Objects with a label or a skip in force."""
        return {int(r[0]) for r in self._query("SELECT object_id FROM current")}

    def history(self, labeler: Optional[str] = None) -> list[Answer]:
        """Every event in order (only ``labeler``'s, when given)."""
        if labeler is None:
            return [_answer(r) for r in self._query("SELECT * FROM answers ORDER BY event_id")]
        return [_answer(r) for r in self._query("SELECT * FROM answers WHERE labeler = ? ORDER BY event_id", (labeler,))]

    def opinions(self, include_skips: bool = False) -> list[Answer]:
        """Each labeler's answer in force per object (several per galaxy when several people answered)."""
        where = "" if include_skips else " WHERE action = 'label'"
        return [_answer(r) for r in self._query(f"SELECT * FROM opinions{where} ORDER BY object_id, labeler")]

    def count_events(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM answers")[0][0])

    def opinions_of(self, labeler: str, object_ids: Iterable[int]) -> dict[int, str]:
        """``labeler``'s answer in force (a class or 'skip') for each of ``object_ids`` they answered."""
        wanted = {check_id(i) for i in object_ids}
        rows = self._query("SELECT object_id, action, label FROM opinions WHERE labeler = ?", (str(labeler),))
        return {int(r["object_id"]): (r["label"] if r["action"] == "label" else "skip")
                for r in rows if int(r["object_id"]) in wanted}

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
            "SELECT round, position, score, info FROM queue WHERE object_id = ? ORDER BY round DESC LIMIT 1", (check_id(object_id),)
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
    def export_csv(self, path: Union[str, Path], history: bool = False, aggregate: Optional[str] = None,
                   opinions: bool = False) -> Path:
        """Current labels as ``id,label,labeler,timestamp,round,model_version`` (readable as ``data.labels``),
        or with ``history`` every event, with ``opinions`` every labeler's answer in force, with
        ``aggregate`` (``majority`` or ``dawid_skene``) one label per object combined from all labelers'
        answers (labeler column: the method; timestamp, round and version of the latest answer)."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            if history:
                writer.writerow(HISTORY_COLUMNS)
                for a in self.history():
                    writer.writerow(csv_row([a.event_id, a.object_id, a.action, a.label or "", a.labeler, a.timestamp,
                                             _blank(a.round), a.model_version or "", _blank(a.undoes)]))
            else:
                writer.writerow(EXPORT_COLUMNS)
                for a in self.exported(aggregate, opinions):
                    writer.writerow(export_row(a))
        tmp.replace(path)
        return path

    def exported(self, aggregate: Optional[str] = None, opinions: bool = False) -> list[Answer]:
        """The rows of a labels export (see :meth:`export_csv`)."""
        if opinions:
            return self.opinions()
        if aggregate in (None, "latest"):
            return self.current()
        from dataclasses import replace

        from galframe_hitl.aggregate import aggregate_store

        try:
            combined = aggregate_store(self, aggregate)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        latest: dict[int, Answer] = {}
        for a in self.opinions():  # ordered by object, then labeler: keep each object's newest answer
            if a.object_id not in latest or a.event_id > latest[a.object_id].event_id:
                latest[a.object_id] = a
        return [replace(latest[i], label=label, labeler=str(aggregate)) for i, label in sorted(combined.items())]

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
                object_id = check_id(rec["id"], "id")
            except StoreError as exc:
                raise DataError(f"{path}, line {line}: {exc}") from None
            if pool and object_id not in pool:
                raise DataError(f"{path}, line {line}: object id {object_id} is not in the pool (the training split).")
            try:
                label = self.check_label(rec["label"], where=f"{path}, line {line}")
            except StoreError as exc:
                raise DataError(str(exc)) from None
            who = labeler or rec.get("labeler") or f"import:{path.name}"
            rnd = int(rec["round"]) if re.fullmatch(r"-?[0-9]{1,9}", rec.get("round", "")) else None
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
    """A labeler name: 1-64 printable characters (no control or format characters, valid Unicode)."""
    text = str(labeler or "").strip()
    if not text or len(text) > 64 or not printable(text):
        raise StoreError(f"labeler name {short(labeler)} must be 1-64 printable characters on one line.", 422)
    return text


def check_new_labeler(name: Any) -> str:
    text = str(name or "")
    if not LABELER_NAME.fullmatch(text):
        raise StoreError(f"labeler name {short(name)}: 1-64 of A-Z a-z 0-9 . _ @ + -, starting with a letter or digit.", 422)
    return text


def check_request_id(request_id: Any) -> Optional[str]:
    if request_id is None:
        return None
    text = str(request_id)
    if not re.fullmatch(r"[\x21-\x7e]{1,100}", text):
        raise StoreError(f"request_id {short(request_id)}: 1-100 printable ASCII characters without spaces.", 422)
    return text


def check_id(value: Any, what: str = "object id") -> int:
    """An integer that fits SQLite's INTEGER (signed 64 bits)."""
    if isinstance(value, bool):
        raise StoreError(f"{what} {value!r} is not an integer.", 422)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise StoreError(f"{what} {short(value)} is not an integer.", 422) from None
    if isinstance(value, float) and number != value:
        raise StoreError(f"{what} {short(value)} is not an integer.", 422)
    if not INT64_MIN <= number <= INT64_MAX:
        raise StoreError(f"{what} {short(number)} is outside the 64-bit integer range.", 422)
    return number


def printable(text: str) -> bool:
    """True for valid Unicode (no lone surrogates) without control, format or unassigned characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(unicodedata.category(ch)[0] == "C" for ch in text)


def short(value: Any, limit: int = 40) -> str:
    """``repr`` of a value cut to ``limit`` characters, ASCII only (safe to put in any error message)."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


#: a spreadsheet runs a cell starting with one of these as a formula
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: text that a spreadsheet would run as a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_row(values: Iterable[Any]) -> list:
    return [csv_cell(v) for v in values]


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


def export_row(a: Answer) -> list:
    """One row of the labels export (``EXPORT_COLUMNS``), formula-safe."""
    return csv_row([a.object_id, a.label, a.labeler, a.timestamp, _blank(a.round), a.model_version or ""])


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
    p.add_argument("--history", action="store_true", help="every event, undos included")
    p.add_argument("--opinions", action="store_true", help="every labeler's answer in force (several rows per object)")
    p.add_argument("--aggregate", choices=("latest", "majority", "dawid_skene"), default=None,
                   help="one label per object from every labeler's answer (default: the latest answer)")
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
            out = store.export_csv(args.csv, history=args.history, aggregate=args.aggregate, opinions=args.opinions)
            n = sum(1 for _ in out.open()) - 1
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
