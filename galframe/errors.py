"""User-facing errors: one clear message, no wall of traceback."""
from __future__ import annotations

import difflib
from typing import Iterable, Optional


class GalframeError(Exception):
    """An error caused by the user's input (config, files, data).

    The command-line interface prints its message alone and exits with status 2.
    """


class ConfigError(GalframeError):
    pass


class DataError(GalframeError):
    pass


class PluginError(GalframeError):
    pass


def closest(name: str, options: Iterable[str]) -> Optional[str]:
    """The option most similar to ``name``, or None if none is close."""
    matches = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, options: Iterable[str]) -> str:
    options = sorted(set(str(o) for o in options))
    best = closest(name, options)
    hint = f" Did you mean '{best}'?" if best else ""
    return f"{hint} Available: {', '.join(options) if options else '(none)'}."


def check_choice(what: str, value: str, options: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``options``, else raise a ConfigError naming the closest."""
    options = list(options)
    if value not in options:
        raise ConfigError(f"Unknown {what} '{value}'.{did_you_mean(value, options)}")
    return value
