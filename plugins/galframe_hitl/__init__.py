"""galframe human-in-the-loop: active learning, the labeling page and the label store.

``galframe hitl oracle=<catalog|web> acquisition=<name> hitl.rounds=R hitl.per_round=K`` trains a model,
asks an oracle about the K most useful unlabelled galaxies, stores the answers in SQLite and retrains,
R times.  Acquisition functions (``acquisition.<name>``) and oracles (``oracle.<name>``) are plugins.
Importing this package imports neither torch models nor the web server.
"""
from __future__ import annotations
