"""Hydra config groups of galframe_hitl, on the search path through hydra_plugins.galframe_searchpath."""
