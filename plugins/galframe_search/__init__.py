"""galframe_search: embeddings as a product.

``galframe embed`` streams a model's embeddings over a reader into an index directory (a faiss index with
the catalog beside it, resumable as ``galframe predict`` is); ``galframe similar`` finds the objects most
like one (an id, a FITS cutout, or several ids' prototype); ``galframe anomaly`` ranks the index by
unsupervised anomaly scores and re-ranks it from a person's scores.  In Python::

    from galframe_search import Index, rank

    index = Index.open("runs/embed/south")
    table = index.similar("obj00042", k=50)          # a pandas DataFrame, nearest first
    ranking = rank(index, user_scores={"obj00007": 5, "obj00100": 0})

See docs/search.md.
"""
from __future__ import annotations

from galframe_search.anomaly import rank
from galframe_search.index import Index, build_index, dihedral_views

__all__ = ["Index", "build_index", "dihedral_views", "rank"]
