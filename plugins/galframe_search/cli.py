"""The sub-commands this plugin adds: ``galframe embed``, ``galframe similar`` and ``galframe anomaly``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from galframe.api import Command


@dataclass(frozen=True)
class ReaderCommand(Command):
    """A command whose ``data=<name>`` picks a reader config (conf/reader/), as for ``galframe predict``."""

    def translate(self, args: Sequence[str]) -> list[str]:
        from galframe.readers import reader_overrides

        return reader_overrides(super().translate(args))


def _embed(cfg: Any, run_dir: Any = None) -> Any:
    from galframe_search.embed import run

    return run(cfg, run_dir)


def _similar(cfg: Any, run_dir: Any = None) -> Any:
    from galframe_search.similar import run

    return run(cfg, run_dir)


def _anomaly(cfg: Any, run_dir: Any = None) -> Any:
    from galframe_search.anomaly import run

    return run(cfg, run_dir)


EMBED = ReaderCommand(config_name="embed", run=_embed,
                help="a model's embeddings of a reader's objects as a searchable index (resumable, like predict)")
SIMILAR = Command(config_name="similar", run=_similar, positional="like",
                  help="the objects of an index most like an id, several ids or a FITS cutout (table + PNG grid)")
ANOMALY = Command(config_name="anomaly", run=_anomaly,
                  help="rank an index by anomaly (IsolationForest, kNN distance), re-ranked from a person's scores")
