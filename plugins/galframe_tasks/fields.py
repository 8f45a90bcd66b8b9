"""The batch fields of the first-party tasks (entry points ``field.label``, ``field.votes``, ``field.clean``).

``label``  the class index (catalog column ``class``), an int64 per object: classification.
``votes``  Galaxy Zoo style vote counts, (n_answers,) float32 per object in the order of the
           dataset's vote schema (manifest ``votes``); the schema is added to ``DataInfo.stats``.
``clean``  the noise-free image stored beside ``images`` (simulations), (bands, H, W) flux that
           moves with the image under augmentation: restoration targets.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from galframe.api import Field, StoredData, StoredObject
from galframe.data.format import vote_columns
from galframe.errors import DataError


class LabelField(Field):
    def check(self, data: StoredData) -> None:
        if "class" not in data.catalog:
            raise DataError(f"{data.catalog_file}: a task needs class labels but the catalog has no 'class' column.")

    def open(self, data: StoredData) -> Any:
        return data.catalog["class"].to_numpy().astype(np.int64) if "class" in data.catalog else None

    def load(self, state: Any, obj: StoredObject) -> Any:
        return int(state[obj.i])


class VotesField(Field):
    def check(self, data: StoredData) -> None:
        cols = vote_columns(data.manifest.get("votes"))
        if not cols:
            raise DataError(f"{data.manifest_file}: a task needs vote counts but the dataset has no vote schema.")
        absent = [c for c in cols if c not in data.catalog]
        if absent:
            raise DataError(f"{data.catalog_file}: vote columns missing from the catalog: {absent[:5]}.")

    def open(self, data: StoredData) -> Any:
        cols = vote_columns(data.manifest.get("votes"))
        return (data.catalog[cols].to_numpy(np.float32) if cols else None), str(data.root)

    def load(self, state: Any, obj: StoredObject) -> Any:
        votes, root = state
        if votes is None:
            raise DataError(f"{root}: this dataset has no vote counts (needed by a task).")
        return torch.from_numpy(votes[obj.i].copy())

    def stats(self, data: StoredData) -> dict:
        schema = data.manifest.get("votes")
        return {"vote_schema": schema} if schema else {}


class CleanField(Field):
    geometric = True

    def check(self, data: StoredData) -> None:
        if not data.manifest.get("has_clean", False):
            raise DataError(f"{data.root}: a task needs noise-free 'clean' images; this dataset has none.")

    def load(self, state: Any, obj: StoredObject) -> Any:
        return torch.from_numpy(obj.plane(self.name))
