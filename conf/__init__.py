# galframe's core Hydra config tree, importable as the package ``galframe.conf``: train, predict, ingest and
# simulate, and the core groups (data, reader, trainer, logger, optimizer, scheduler, finetune, paths,
# hydra/launcher, hydra/run_dirs).  Plugins ship their own groups in <package>/conf/ (backbone, task,
# experiment, acquisition, oracle, and the hitl, pretrain and bench configs), on the search path through
# hydra_plugins.galframe_searchpath.
