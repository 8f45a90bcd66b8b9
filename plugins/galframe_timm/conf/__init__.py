"""Hydra config groups of galframe_timm, on the search path through hydra_plugins.galframe_searchpath."""
