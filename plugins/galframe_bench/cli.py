"""``galframe bench``: the sub-command this plugin adds (entry point ``command.bench``)."""
from __future__ import annotations

import json
import platform
import os
import time
from pathlib import Path
from typing import Any, Mapping

from galframe.api import Command
from galframe.errors import ConfigError

SUITES = ("fewshot", "detect", "restore", "params", "throughput", "search", "shift")


def _trainer(spec: str) -> str:
    if spec != "auto":
        return spec
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _machine(trainer: str) -> str:
    if trainer == "gpu":
        import torch

        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU, {os.cpu_count()} cores ({platform.machine()})"


def run(cfg: Any, run_dir: Any) -> dict:
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    suite, profile = str(c.get("suite", "all")), str(c.get("profile", "small"))
    profiles = c.get("profiles") or {}
    if profile not in profiles:
        raise ConfigError(f"profile={profile} is not one of {sorted(profiles)} (galframe_bench/conf/bench.yaml: profiles).")
    if suite != "all" and suite not in SUITES:
        from galframe.errors import closest

        best = closest(suite, [*SUITES, "all"])
        raise ConfigError(f"Unknown bench suite '{suite}'." + (f" Did you mean '{best}'?" if best else "") +
                          f" Suites: {', '.join(SUITES)}, all.")
    p = profiles[profile]
    out = Path(c.get("out") or Path("benchmarks") / "results" / f"bench_{profile}")
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(run_dir) / "runs"
    trainer = _trainer(str(c.get("trainer", "auto")))
    weights = None if c.get("weights") in (None, "", "null") else str(c["weights"])
    lvm = str(c.get("lvm", "lvm_tiny"))
    todo = list(SUITES) if suite == "all" else [suite]
    if "restore" in todo and "params" in todo:
        todo.remove("params")  # one classical run gives both tables
    timings: dict[str, float] = {}
    for name in todo:
        start = time.perf_counter()
        print(f"== galframe bench {name} (profile {profile}) -> {out}", flush=True)
        if name == "fewshot":
            from galframe_bench.detect import ensure_pretrained
            from galframe_bench.fewshot import run as fewshot

            if weights == "lvm_tiny-demo":
                ensure_pretrained()
            cache = Path(str((c.get("paths") or {}).get("runs") or "runs")) / "bench-cache" / "features"
            fewshot({"cache": str(cache), **p["fewshot"], "name": profile}, out / "fewshot", weights, lvm, trainer, runs / "fewshot",
                    headline=out.parent / "headline.json" if p["fewshot"].get("headline", True) else None)
        elif name == "detect":
            from galframe_bench.detect import main as detect

            d = p["detect"]
            detect(["--epochs", str(int(d["epochs"])), "--n", str(int(d["n"])), "--out", str(out / "detect"), "--runs", str(runs / "detect"),
                    *(["--headline", str(out.parent / "headline.json")] if d.get("headline", True) else []),
                    *([f"trainer={trainer}"] if trainer != "cpu" else [])])
        elif name in ("restore", "params"):
            from galframe_bench.classical import main as classical

            classical([*[str(a) for a in p.get("classical", [])], "--out", str(out / "classical"),
                       "--machine", _machine(trainer), *(["--headline", str(out.parent / "headline.json")]
                                                         if p.get("classical_headline", True) else []),
                       *([f"trainer={trainer}"] if trainer != "cpu" else [])])
        elif name == "throughput":
            from galframe_bench.throughput import run as throughput

            throughput(p["throughput"], out / "throughput", "cuda" if trainer == "gpu" else "cpu",
                       headline=out.parent / "headline.json" if p["throughput"].get("headline", True) else None)
        elif name == "search":
            from galframe_bench.search import run as search

            s = dict(p.get("search") or {})
            search(s, out / "search", weights, headline=out.parent / "headline.json" if s.get("headline", True) else None)
        elif name == "shift":
            from galframe_bench.shift import run as shift

            s = dict(p.get("shift") or {})
            shift(s, out / "shift", weights, lvm, trainer, runs / "shift",
                  headline=out.parent / "headline.json" if s.get("headline", True) else None)
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"== {name}: {timings[name]:.0f} s", flush=True)
    write_report(out, profile, _machine(trainer), timings)
    return timings


def write_report(out: Path, profile: str, machine: str, timings: Mapping[str, float]) -> Path:
    """report.md: every suite's table and plot found under ``out``, with each suite's latest wall time."""
    known = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    timings = {**known, **timings}
    parts = [f"# galframe bench, profile {profile}", "", f"Machine: {machine}. Written {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    if timings:
        parts += ["| suite | wall time |", "|---|---|", *[f"| {k} | {v / 60:.1f} min |" for k, v in timings.items()],
                  f"| all | {sum(timings.values()) / 60:.1f} min |", ""]
    sections = [("Label efficiency (fewshot)", "fewshot", ["fewshot.md"], ["fewshot.png"]),
                ("Detection (detect)", "detect", ["results.md"], ["completeness.png", "overlays.png"]),
                ("Restoration and parameters against classical methods (restore, params)", "classical", ["classical.md"],
                 ["regress_scatter.png", "restore_examples.png"]),
                ("Throughput", "throughput", ["throughput.md", "profile.md"], ["throughput.png", "profile.png"]),
                ("Similarity search and anomaly ranking (search)", "search", ["search.md"], ["examples.png"]),
                ("Off the training distribution (shift)", "shift", ["shift.md"], ["shift.png"])]
    for title, sub, tables, plots in sections:
        d = out / sub
        if not d.is_dir():
            continue
        parts += [f"## {title}", ""]
        for t in tables:
            if (d / t).is_file():
                parts += [(d / t).read_text().strip(), ""]
        for png in plots:
            if (d / png).is_file():
                parts += [f"![{png}]({sub}/{png})", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"wrote {path}", flush=True)
    return path


COMMAND = Command(
    config_name="bench",
    run=run,
    help="the reference comparisons: fewshot, detect, restore, params, throughput, search, shift or all (--profile small|full)",
    positional="suite",
    options=("profile",),
)
