"""Labels people gave (``data.labels``): the file the labeling loop exports, read for training.

The file has two columns, ``id`` and ``label`` (a class name or index); the datamodule trains on
exactly those objects with those classes instead of the catalog's ``class`` column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from galframe.errors import DataError


def read_table(file: Path, name: str, what: str, key: str) -> Any:
    """A CSV or Parquet table as a DataFrame; a missing or unreadable file is a one-line DataError naming
    ``name`` / ``what`` and the config ``key`` that points at it."""
    import pandas as pd

    if not file.is_file():
        raise DataError(f"{file}: {name} not found ({key}).")
    try:
        return pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    except Exception as exc:
        raise DataError(f"{file}: cannot read {what} ({type(exc).__name__}: {exc})") from exc


def read_labels(spec: Any, classes: Sequence[str]) -> Any:
    """Labels people gave (``data.labels``): a CSV/Parquet file or a mapping, to a frame of ``id`` and class index."""
    import pandas as pd

    if isinstance(spec, Mapping):
        frame = pd.DataFrame({"id": list(spec.keys()), "label": list(spec.values())})
        where = "data.labels"
    else:
        file = Path(str(spec)).expanduser()
        where = str(file)
        frame = read_table(file, "labels file", "the labels", "data.labels")
    missing = {"id", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{where}: labels need columns 'id' and 'label'; missing {sorted(missing)}.")
    frame = frame.drop_duplicates("id", keep="last")
    names = {c: i for i, c in enumerate(classes)}
    index = []
    for value in frame["label"]:
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in names:
                raise DataError(f"{where}: unknown class '{value}'; the dataset's classes are {list(classes)}.")
            index.append(names[value])
        else:
            k = int(value)
            if not 0 <= k < len(classes):
                raise DataError(f"{where}: class index {k} out of range 0..{len(classes) - 1}.")
            index.append(k)
    return pd.DataFrame({"id": frame["id"].astype(np.int64).to_numpy(), "class": np.asarray(index, dtype=np.int64)})
