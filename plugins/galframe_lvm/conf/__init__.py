"""Hydra config groups of galframe_lvm, on the search path through hydra_plugins.galframe_searchpath."""
