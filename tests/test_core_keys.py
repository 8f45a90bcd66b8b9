"""The core (galframe/) holds no task's batch keys: tasks declare them, plugins' fields load them.

A batch key a task reads is written in the core only where the *dataset format* stores it: the
writer of the format (the ``clean`` plane beside ``images``, the ``instances`` side table, the vote
schema in the manifest), the simulators that produce those, the readers whose sources carry a vote
schema, and the ``data.labels`` file (columns ``id``, ``label``; ``labels`` is also that config key).
Everywhere else (datamodule, augmentation, model, training, prediction, reports) a quoted task key
is a regression.
"""
from __future__ import annotations

import io
import tokenize
from pathlib import Path

from tests.helpers import ROOT

#: the batch keys of first-party tasks (classify, votes, restore, detect) and what they carry
TASK_KEYS = {"label", "labels", "votes", "clean", "instances", "boxes", "masks"}

#: (file, key): the stored dataset format, which names what it stores
FORMAT_PLACES = {
    ("galframe/data/format.py", "clean"): "the writer's noise-free image plane beside images",
    ("galframe/data/format.py", "instances"): "rows' per-object instances, written to instances.parquet",
    ("galframe/data/format.py", "votes"): "the manifest's vote schema",
    ("galframe/data/labels.py", "label"): "the data.labels file's column",
    ("galframe/data/datamodule.py", "labels"): "the data.labels config key",
    ("galframe/notebook.py", "labels"): "the data.labels config key finetune() sets",
    ("galframe/sim/fields.py", "instances"): "the field simulator's per-object truth rows",
    ("galframe/readers/dataset.py", "votes"): "a dataset's manifest vote schema, carried as Reader.votes",
    ("galframe/readers/catalog.py", "votes"): "the GZ DECaLS reader's columns=votes option",
}


def quoted_keys(path: Path) -> list[tuple[int, str]]:
    """(line, key) of every string literal in ``path`` that is exactly a task key."""
    found = []
    with open(path, "rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type != tokenize.STRING:
                continue
            text = tok.string.lstrip("rbuRBU")
            for quote in ('"""', "'''", '"', "'"):
                if text.startswith(quote) and text.endswith(quote) and len(text) >= 2 * len(quote):
                    if text[len(quote) : -len(quote)] in TASK_KEYS:
                        found.append((tok.start[0], text[len(quote) : -len(quote)]))
                    break
    return found


def test_the_core_names_no_task_key_outside_the_dataset_format():
    offending = []
    for path in sorted((ROOT / "galframe").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        offending += [f"{rel}:{line}: '{key}'" for line, key in quoted_keys(path) if (rel, key) not in FORMAT_PLACES]
    assert not offending, "task keys in the core (declare them in a plugin's batch field):\n" + "\n".join(offending)
    assert all((ROOT / rel).is_file() for rel, _ in FORMAT_PLACES)


def test_the_scan_sees_quoted_keys_and_skips_prose(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""A docstring about the clean image."""\nx = batch["label"]\ny = {\'votes\': 1}  # "clean"\nz = f"clean"\n')
    assert quoted_keys(sample) == [(2, "label"), (3, "votes")]
    assert quoted_keys(ROOT / "plugins" / "galframe_tasks" / "fields.py")  # where the keys do live
