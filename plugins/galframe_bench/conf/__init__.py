"""Hydra config groups of galframe_bench, on the search path through hydra_plugins.galframe_searchpath."""
