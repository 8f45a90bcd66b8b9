"""galframe: one large vision model, many downstream tasks, a human in the loop.

Importing galframe is cheap: no plugin, no torch model, no web server is imported
until it is asked for.  In a notebook::

    import galframe
    model = galframe.load_model("lvm_tiny-g10")      # see galframe.notebook
    vectors = model.embed(images)
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "finetune", "Model"]

_NOTEBOOK_API = ("load_model", "finetune", "Model")


def __getattr__(name: str) -> Any:
    """The notebook API (:mod:`galframe.notebook`), imported when first used."""
    if name in _NOTEBOOK_API:
        from galframe import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'galframe' has no attribute '{name}'")
