"""Hydra config groups of galframe_mmdet, on the search path through hydra_plugins.galframe_searchpath."""
