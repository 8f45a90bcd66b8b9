"""Puts the config groups of galframe's first-party plugins on every Hydra config search path.

Each first-party plugin package ships its own YAML in ``<package>/conf/`` (``galframe_lvm/conf/backbone/``,
``galframe_hitl/conf/acquisition/`` ...), as an out-of-tree plugin does (examples/galframe-example-plugin):
Hydra imports every module under the namespace package ``hydra_plugins`` and calls each
``SearchPathPlugin``.  Core ``galframe.conf`` keeps the core groups (data, reader, trainer, logger,
optimizer, scheduler, finetune, paths, hydra).  The plugins' folders are appended, so a core config wins
if a name is ever shared.
"""
from __future__ import annotations

from importlib.util import find_spec

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

# the first-party plugin packages of the galframe distribution that ship a conf/ package
PLUGIN_CONF_PACKAGES = (
    "galframe_timm",
    "galframe_tasks",
    "galframe_lvm",
    "galframe_hitl",
    "galframe_mmdet",
    "galframe_bench",
    "galframe_search",
    "galframe_multimodal",
)


class GalframePluginsSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for package in PLUGIN_CONF_PACKAGES:
            if find_spec(package) is not None:  # a missing package leaves its groups out, nothing else
                search_path.append(provider=package, path=f"pkg://{package}.conf")
