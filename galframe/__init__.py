"""galframe: one large vision model, many downstream tasks, a human in the loop.

Importing galframe is cheap: no plugin, no torch model, no web server is imported
until it is asked for.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
