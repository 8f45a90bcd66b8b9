"""``galframe hitl``: the sub-command this plugin adds (entry point ``command.hitl``).

``galframe hitl [overrides]`` runs the loop (a Hydra composition); ``galframe hitl labelers ...``
manages who may answer on the labeling page (:mod:`galframe_hitl.labelers`) and needs no composition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from galframe.api import Command


def _run(cfg: Any, run_dir: Any) -> float:
    from galframe_hitl.loop import run

    return run(cfg, run_dir)


@dataclass(frozen=True)
class HitlCommand(Command):
    """The loop, plus the ``labelers`` word, which is handled here and ends the command."""

    def translate(self, args: Sequence[str]) -> list[str]:
        if args and args[0] == "labelers":
            from galframe_hitl.labelers import main

            raise SystemExit(main(list(args[1:]), prog="galframe hitl labelers"))
        return super().translate(args)


COMMAND = HitlCommand(
    config_name="hitl",
    run=_run,
    help="active learning: train, ask an oracle (oracle=catalog|web) about the most useful galaxies, retrain; "
         "'galframe hitl labelers add NAME --store ...' gives a labeler a token",
)
