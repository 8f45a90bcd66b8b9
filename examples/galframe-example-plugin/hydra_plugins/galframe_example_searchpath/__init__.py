"""Hydra SearchPathPlugin of galframe-example-plugin (see galframe_example_searchpath.py)."""
