"""``galframe hitl``: the sub-command this plugin adds (entry point ``command.hitl``)."""
from __future__ import annotations

from typing import Any

from galframe.api import Command


def _run(cfg: Any, run_dir: Any) -> float:
    from galframe_hitl.loop import run

    return run(cfg, run_dir)


COMMAND = Command(
    config_name="hitl",
    run=_run,
    help="active learning: train, ask an oracle (oracle=catalog|web) about the most useful galaxies, retrain",
)
