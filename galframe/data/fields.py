"""Batch fields by name: the registered ``field.<name>`` plugins, and catalog columns for every other key.

The datamodule, the collate function and the augmentation ask here how a key loads, collates and
moves; none of them names a task's keys (see :class:`galframe.api.Field`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch

from galframe.api import Field, StoredData, StoredObject
from galframe.errors import DataError


class ColumnField(Field):
    """A catalog column: one float32 value per object (a (B,) tensor in the batch); it does not move."""

    def check(self, data: StoredData) -> None:
        if self.name not in data.catalog:
            raise DataError(f"{data.catalog_file}: a task needs column '{self.name}', which the catalog does not have.")

    def open(self, data: StoredData) -> Any:
        return data.catalog[self.name].to_numpy(np.float32)

    def load(self, state: Any, obj: StoredObject) -> Any:
        return torch.tensor(state[obj.i])


@lru_cache(maxsize=None)
def field_for(name: str) -> Field:
    """The field a batch key names: its registered plugin (``field.<name>``), else a catalog column."""
    from galframe import registry

    if name in registry.names("field"):
        return registry.load("field", name)(name)
    return ColumnField(name)


def resolve(names: Iterable[str], given: Optional[Mapping[str, Field]] = None) -> dict[str, Field]:
    """The field of each key: ``given`` (configured fields, e.g. a modality's encoder's), else :func:`field_for`."""
    given = given or {}
    return {str(n): given[str(n)] if str(n) in given else field_for(str(n)) for n in names}
