"""galframe-example-plugin: how a third party extends galframe without touching it.

* ``galframe_example.backbone.TinyCNN``  -- entry point ``backbone.tiny_cnn``
* ``galframe_example.task.ColorTask``    -- entry point ``task.color``
* ``galframe_example.reader.NpyReader``  -- entry point ``reader.npy``
* ``galframe_example/conf/``             -- their Hydra configs (``backbone=tiny_cnn``, ``task=color``,
  ``data=npy``), put on Hydra's search path by ``hydra_plugins/galframe_example_searchpath``.
"""

__version__ = "0.1.0"
