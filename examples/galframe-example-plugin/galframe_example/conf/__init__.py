# Makes ``pkg://galframe_example.conf`` importable: Hydra reads backbone/*.yaml and task/*.yaml from here.
