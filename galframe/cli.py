"""The ``galframe`` command: ``galframe <command> [hydra overrides]``.

Commands: train, pretrain, simulate, plugins, plus any that plugins add through
``command.<name>`` entry points (a :class:`galframe.api.Command`).  Every command composes its config from
the package's ``conf/`` tree plus the config groups that plugins add; ``-m``
runs a Hydra multirun (sweep), e.g. ``galframe train -m data.n_labeled=50,200,1000``.
"""
from __future__ import annotations

import re
import sys
from typing import Callable, Optional, Sequence

from galframe.build import CONFIG_MODULE, normalise_overrides  # noqa: F401  (normalise_overrides: importable here too)
from galframe.errors import ConfigError, GalframeError, closest

USAGE = """usage: galframe <command> [key=value ...] [-m]

commands:
  train      train a backbone with one or more tasks, then evaluate on the held-out split
  pretrain   self-supervised pretraining of a backbone on unlabeled images (galframe pretrain backbone=lvm_tiny)
  simulate   write a simulated dataset: galframe simulate data=sim_desi data.n=5000 out=<dir>
  predict    a trained model over survey files, one catalog row per object:
             galframe predict ckpt=<run dir|.ckpt|zoo name> data=<reader: fits|hdf5|galaxy10|gz_decals|image|mosaic> data.path=<files> out=catalog.parquet
  ingest     survey files to a galframe dataset for training: galframe ingest data=<reader> data.path=<files> out=<dir>
  plugins    list every discovered plugin (name, kind, distribution, version)

Compose with Hydra overrides, e.g.
  galframe train backbone=resnet50 'tasks=[classify]' trainer.max_epochs=10
  galframe train -m data.n_labeled=50,200,1000
  galframe train --cfg job        (print the composed config)
"""


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """Replace sweep values (a,b,c / range / choice) by their first value, for validating the composition."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    result = []
    for raw, ov in zip(overrides, parsed):
        if ov.is_sweep_override():
            first = next(iter(ov.sweep_string_iterator()))
            result.append(f"{ov.get_key_element()}={first}")
        else:
            result.append(raw)
    return result


def validate(config_name: str, overrides: list[str]) -> None:
    """Compose once and turn Hydra's composition errors into one clear message."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from galframe.build import compose

    try:
        compose(config_name, _first_of_sweeps(overrides), fresh=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(explain_config_error(exc, config_name, overrides)) from None


def explain_config_error(exc: Exception, config_name: str, overrides: list[str]) -> str:
    """One paragraph: what is wrong and the closest valid spelling."""
    text = str(exc).strip()
    m = re.search(r"Key '[^']+' is not in struct\s+full_key: (\S+)", text) or re.search(
        r"Could not override '([^']+)'", text
    )
    if m:
        full_key = m.group(1)
        parent, _, key = full_key.rpartition(".")
        keys = _keys_at(config_name, parent, [o for o in overrides if full_key not in o])
        if key not in keys:
            best = closest(key, keys)
            hint = f" Did you mean '{(parent + '.') if parent else ''}{best}'?" if best else ""
            where = f"'{parent}'" if parent else "the top level"
            return (
                f"Unknown config key '{full_key}': {where} has no key '{key}'.{hint} "
                f"Valid keys there: {', '.join(sorted(keys))}. (Use +{full_key}=... to add a new key on purpose.)"
            )
    m = re.search(r"Could not find '([^']+)'", text)
    if m:
        group, _, option = m.group(1).rpartition("/")
        options = _group_options(group)
        best = closest(option, options)
        hint = f" Did you mean '{best}'?" if best else ""
        return f"Unknown {group} '{option}'.{hint} Available {group} configs: {', '.join(options) or '(none)'}."
    return f"Invalid configuration: {text.splitlines()[0]}" + (
        "\n" + "\n".join(text.splitlines()[1:4]) if len(text.splitlines()) > 1 else ""
    )


def _keys_at(config_name: str, dotted: str, overrides: Sequence[str] = ()) -> list[str]:
    """Keys of node ``dotted`` in the composed config (with the user's group choices, where they compose)."""
    from omegaconf import OmegaConf

    from galframe.build import compose

    group_choices = [o for o in overrides if "." not in o.split("=", 1)[0]]
    for attempt in (list(overrides), group_choices, []):
        try:
            cfg = compose(config_name, _first_of_sweeps(attempt), fresh=True)
        except Exception:
            continue
        node = OmegaConf.select(cfg, dotted) if dotted else cfg
        return [str(k) for k in node.keys()] if hasattr(node, "keys") else []
    return []


def _group_options(group: str) -> list[str]:
    from galframe.build import hydra_session

    try:
        with hydra_session(fresh=True) as hydra:
            options: set[str] = set()
            for source in hydra.config_loader().get_sources():  # type: ignore[attr-defined]
                if source.is_group(group):
                    options.update(
                        o.rsplit("/", 1)[-1].removesuffix(".yaml")
                        for o in source.list(group, results_filter=None)  # type: ignore[arg-type]
                        if o.endswith(".yaml") or "." not in o
                    )
            return sorted(o for o in options if o != "__init__")
    except Exception:
        return []


def run_hydra(config_name: str, task_fn: Callable, args: list[str]) -> None:
    """Run ``task_fn(cfg)`` under hydra.main, so -m sweeps, --cfg and output directories work."""
    import hydra

    overrides = [a for a in args if not a.startswith("-")]
    if not any(a in ("--cfg", "-c", "--help", "-h", "--info", "--hydra-help") for a in args):
        validate(config_name, overrides)
    sys.argv = [f"galframe-{config_name}", *args]
    hydra.main(config_path="pkg://" + CONFIG_MODULE, config_name=config_name, version_base="1.3")(task_fn)()


def _train(cfg) -> float:  # type: ignore[no-untyped-def]
    from hydra.core.hydra_config import HydraConfig

    from galframe.train import run

    metrics = run(cfg, run_dir=HydraConfig.get().runtime.output_dir)
    return objective(cfg, metrics)


def objective(cfg, metrics: dict) -> float:  # type: ignore[no-untyped-def]
    """The sweep objective: the metric the config's ``optimized_metric`` names (an experiment, or the primary
    config), else the first of ``tasks`` whose YAML declares one, else ``test/loss``."""
    name = cfg.get("optimized_metric")
    if name is None:
        declared = (t.get("optimized_metric") for t in (cfg.get("tasks") or {}).values() if hasattr(t, "get"))
        name = next((n for n in declared if n), None)
    if name is None:
        return float(metrics.get("test/loss", 0.0)) if metrics else 0.0
    if name not in metrics:
        if not metrics:
            return 0.0
        raise ConfigError(
            f"optimized_metric '{name}' is not among the run's metrics: {', '.join(sorted(metrics))}."
        )
    return float(metrics[name])


def _pretrain(cfg) -> float:  # type: ignore[no-untyped-def]
    """Self-supervised pretraining: galframe train's loop by the backbone plugin's recipe (``Backbone.pretrain``)."""
    from hydra.core.hydra_config import HydraConfig

    from galframe.train import pretrain

    metrics = pretrain(cfg, HydraConfig.get().runtime.output_dir)
    # the declared objective (heldout/l1) exists only with the restoration objective: 0 without it
    return float(metrics.get(str(cfg.get("optimized_metric") or "heldout/l1"), 0.0))


def _simulate(cfg) -> None:  # type: ignore[no-untyped-def]
    from omegaconf import OmegaConf

    from galframe.sim import simulate

    data = OmegaConf.to_container(cfg.data, resolve=True)
    path = simulate(data, cfg.out, workers=cfg.get("workers"))
    print(f"Wrote {data['n']} objects to {path}")


def _plugin_commands() -> dict:
    """``command.<name>`` entry points: sub-commands contributed by plugins (loaded lazily)."""
    from galframe import registry

    return {p.name: p for p in registry.plugins("command") if p.name not in COMMANDS and p.name != "plugins"}


def _load_command(info):  # type: ignore[no-untyped-def]
    from galframe.api import Command

    cmd = info.load()
    if not isinstance(cmd, Command):
        raise ConfigError(f"Plugin command '{info.name}' ({info.value}) is not a galframe.api.Command.")
    return cmd


def _plugin_command(info) -> tuple[str, Callable]:  # type: ignore[no-untyped-def]
    cmd = _load_command(info)

    def task_fn(cfg):  # type: ignore[no-untyped-def]
        from hydra.core.hydra_config import HydraConfig

        return cmd.run(cfg, HydraConfig.get().runtime.output_dir)

    task_fn.__name__ = f"_{info.name}"
    return cmd.config_name, task_fn


def usage() -> str:
    extra = _plugin_commands()
    if not extra:
        return USAGE
    lines = []
    for name, info in extra.items():
        try:
            help_text = info.load().help
        except Exception as exc:  # a broken plugin must not break the help text
            help_text = f"(failed to load: {exc})"
        lines.append(f"  {name:<10} {help_text}")
    head, _, tail = USAGE.partition("\nCompose with")
    return head.rstrip("\n") + "\n" + "\n".join(lines) + "\n\nCompose with" + tail


def plugins_table() -> None:
    from rich.console import Console
    from rich.table import Table

    from galframe import registry

    table = Table(title="galframe plugins")
    for col in ("kind", "name", "class", "distribution", "version"):
        table.add_column(col)
    for p in registry.plugins():
        table.add_row(p.kind, p.name, p.value, p.distribution or "?", p.version or "?")
    Console(width=200).print(table)


def _predict(cfg) -> None:  # type: ignore[no-untyped-def]
    from galframe.predict import run

    run(cfg)


def _ingest(cfg) -> None:  # type: ignore[no-untyped-def]
    from galframe.ingest import run

    run(cfg)


COMMANDS = {
    "train": ("train", _train),
    "pretrain": ("pretrain", _pretrain),
    "simulate": ("simulate", _simulate),
    "predict": ("predict", _predict),
    "ingest": ("ingest", _ingest),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = args[0], normalise_overrides(args[1:], args[0])
    try:
        if command == "plugins":
            plugins_table()
            return 0
        extra = _plugin_commands() if command not in COMMANDS else {}
        if command not in COMMANDS and command not in extra:
            best = closest(command, [*COMMANDS, *extra, "plugins"])
            raise ConfigError(
                f"Unknown command '{command}'." + (f" Did you mean '{best}'?" if best else "") + "\n" + usage()
            )
        if command in extra:
            rest = _load_command(extra[command]).translate(rest)
        config_name, fn = COMMANDS[command] if command in COMMANDS else _plugin_command(extra[command])
        run_hydra(config_name, _wrap(fn), rest)
        return 0
    except GalframeError as exc:
        print(f"galframe {command}: error: {exc}", file=sys.stderr)
        return 2


def _wrap(fn: Callable) -> Callable:
    """Inside hydra.main, report galframe's own errors in one line and exit 2 (Hydra would print a traceback)."""

    def task(cfg):  # type: ignore[no-untyped-def]
        try:
            return fn(cfg)
        except GalframeError as exc:
            print(f"galframe: error: {exc}", file=sys.stderr)
            sys.exit(2)

    task.__name__ = fn.__name__
    task.__module__ = fn.__module__
    return task


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
