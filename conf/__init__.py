# galframe's Hydra config tree, importable as the package ``galframe.conf``.
