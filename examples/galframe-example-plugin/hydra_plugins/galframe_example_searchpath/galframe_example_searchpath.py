"""Adds this package's config groups to every Hydra config search path.

Hydra imports every module under the namespace package ``hydra_plugins`` and
calls each ``SearchPathPlugin``, so once this distribution is installed
``galframe train backbone=tiny_cnn task=color`` finds
``galframe_example/conf/backbone/tiny_cnn.yaml`` and ``.../task/color.yaml``.
"""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class GalframeExampleSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # appended, so galframe's own configs win if a name is ever shared
        search_path.append(provider="galframe-example-plugin", path="pkg://galframe_example.conf")
