"""Plugin discovery through the ``galframe.plugins`` entry-point group.

Every plugin, first-party or third-party, is an entry point named
``<kind>.<name>`` whose value is ``module:Class`` (the base class of each kind is
in :mod:`galframe.api`).  Nothing is imported until a plugin is asked for by
name, so ``import galframe`` stays light.  When two distributions register the
same ``<kind>.<name>``, the first found is used and a warning names both.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any, Mapping, Optional

from galframe.errors import ConfigError, PluginError, closest, did_you_mean

GROUP = "galframe.plugins"
KINDS = ("backbone", "task", "field", "pretext", "encoder", "fusion", "acquisition", "reader", "oracle", "command",
         "simulation")


class DuplicatePluginWarning(UserWarning):
    """Two installed distributions register a plugin under the same ``<kind>.<name>``."""


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    value: str  # "module:attr"
    distribution: Optional[str]
    version: Optional[str]
    entry_point: Any = None

    def load(self) -> Any:
        try:
            return self.entry_point.load()
        except Exception as exc:  # a broken plugin should say which one it is
            raise PluginError(
                f"Plugin {self.kind} '{self.name}' ({self.value}, from {self.distribution or '?'}) "
                f"failed to import: {type(exc).__name__}: {exc}"
            ) from exc


@lru_cache(maxsize=1)
def _discover() -> dict[tuple[str, str], PluginInfo]:
    found: dict[tuple[str, str], PluginInfo] = {}
    for ep in metadata.entry_points(group=GROUP):
        kind, sep, name = ep.name.partition(".")
        if not sep or not name:
            continue  # not of the form kind.name: ignore rather than break discovery
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            kind=kind,
            name=name,
            value=ep.value,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
            entry_point=ep,
        )
        first = found.setdefault((kind, name), info)
        if first is not info and (first.distribution, first.value) != (info.distribution, info.value):
            warnings.warn(
                f"{kind} plugin '{name}' is registered twice: by {first.distribution or '?'} ({first.value}) and by "
                f"{info.distribution or '?'} ({info.value}); using the one from {first.distribution or '?'}.",
                DuplicatePluginWarning,
                stacklevel=2,
            )
    return found


def plugins(kind: Optional[str] = None) -> list[PluginInfo]:
    """Every discovered plugin (of one kind), sorted by kind and name."""
    items = [p for p in _discover().values() if kind is None or p.kind == kind]
    return sorted(items, key=lambda p: (p.kind, p.name))


def names(kind: str) -> list[str]:
    return [p.name for p in plugins(kind)]


def info(kind: str, name: str) -> PluginInfo:
    try:
        return _discover()[(kind, name)]
    except KeyError:
        raise PluginError(f"Unknown {kind} plugin '{name}'.{did_you_mean(name, names(kind))}") from None


def load(kind: str, name: str) -> Any:
    """The plugin class (or callable) registered as ``<kind>.<name>``."""
    return info(kind, name).load()


def build(kind: str, plugin: str, options: Mapping[str, Any], **context: Any) -> Any:
    """Instantiate plugin ``plugin`` with the user's ``options`` plus the core's ``context``.

    Options the plugin does not accept are reported with the closest accepted
    one, instead of a ``TypeError`` from deep inside the plugin.
    """
    cls = load(kind, plugin)
    accepted = _accepted_options(cls)
    if accepted is not None:
        for key in options:
            if key not in accepted:
                best = closest(key, accepted)
                hint = f" Did you mean '{best}'?" if best else ""
                raise ConfigError(
                    f"{kind} plugin '{plugin}' has no option '{key}'.{hint} "
                    f"Its options: {', '.join(sorted(accepted)) or '(none)'}."
                )
    return cls(**context, **dict(options))


def _accepted_options(cls: Any) -> Optional[set[str]]:
    target = cls.__init__ if inspect.isclass(cls) else cls
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    skip = {"self", "name", "backbone", "data"}
    return {
        p.name
        for p in params
        if p.name not in skip and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
