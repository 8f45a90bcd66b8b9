"""Hydra config groups of galframe_tasks, on the search path through hydra_plugins.galframe_searchpath."""
