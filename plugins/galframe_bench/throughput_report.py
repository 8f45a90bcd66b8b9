"""The throughput suite's tables and pictures: throughput.md (rates and ratios, training, memory, processes,
the survey estimate), profile.md + profile.png (where predict's time goes per stage), throughput.png."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

#: predict's stages (galframe.predict summary ``stage_seconds``) in the order of the work, for the profile
STAGES = ("start-up", "load model", "read", "conform", "wait for reading", "stack", "network", "rows", "progress", "write parts",
          "merge")


def _machine(rows: Any) -> str:
    import os

    r = rows[0]
    return r.get("gpu") or f"CPU ({os.cpu_count()} cores, {r['threads']} torch threads)"


def _by(rows: Any) -> dict:
    table: dict = {}
    for r in rows:
        table.setdefault(r["backbone"], {}).setdefault(int(r["n"]), {})[r["kind"]] = r
    return table


def profile_rows(result: Mapping[str, Any]) -> list[tuple[str, int, dict[str, float]]]:
    """(backbone, N, stage -> ms per object) for every predict measurement; the network stage split into
    scaling, backbone and heads in the proportions of the bare run's forward."""
    out = []
    for backbone, per_n in _by(result["rows"]).items():
        for n, kinds in sorted(per_n.items()):
            if "predict" not in kinds:
                continue
            stages = dict(kinds["predict"]["stages"])
            split = (kinds.get("bare") or {}).get("network_split") or {"backbone": 1.0}
            network = stages.pop("network", 0.0)
            ms: dict[str, float] = {}
            for stage in STAGES:
                if stage == "network":
                    ms.update({f"network: {k}": 1000.0 * network * v / n for k, v in split.items()})
                elif stage in stages:
                    ms[stage] = 1000.0 * stages.pop(stage) / n
            other = sum(v for k, v in stages.items() if k != "reader")
            ms["other"] = 1000.0 * (other + stages.get("reader", 0.0)) / n
            out.append((backbone, n, ms))
    return out


def write_report(result: Mapping[str, Any], out: Path) -> None:
    rows = result["rows"]
    table = _by(rows)
    dev = _machine(rows)
    head = result["headline"]
    lines = [f"`galframe predict` against the bare backbone forward over the same stamps (64 px, g r z; batch "
             f"{result['batch']}) on {dev}; best of {result['repeats']} run(s), each in a fresh process. The ratio is "
             "the figure (machines are shared); start-up is not in the predict rate.", "",
             "| backbone | N | predict (objects/s) | bare forward (objects/s) | predict / bare | start-up (s) | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for b, per_n in table.items():
        for n, t in sorted(per_n.items()):
            if "predict" in t and "bare" in t:
                pr, ba = t["predict"], t["bare"]
                lines.append(f"| {b} | {n} | {pr['objects_per_s']:.0f} | {ba['objects_per_s']:.0f} | "
                             f"**{pr['objects_per_s'] / ba['objects_per_s']:.2f}x** | {pr['startup_s']:.1f} | {pr['peak_rss_mib']:.0f} |")
    trains = [(b, t) for b, per_n in table.items() for t in per_n.values() if "train" in t and "bare_train" in t]
    if trains:
        lines += ["", "| backbone | galframe train (steps/s) | bare PyTorch loop (steps/s) | train / bare |", "|---|---|---|---|"]
        for b, t in trains:
            g, ba = t["train"]["steps_per_s"], t["bare_train"]["steps_per_s"]
            lines.append(f"| {b} | {g:.3f} | {ba:.3f} | **{g / ba:.2f}x** |")
    if result.get("memory"):
        lines += ["", "Predict's peak RSS by number of objects (flat: memory does not grow with N): "
                  + ", ".join(f"N={k}: {v:.0f} MiB" for k, v in result["memory"].items()) + "."]
    if result.get("processes"):
        procs = result["processes"]
        lines += ["", f"Several processes on this machine (`trainer=ddp trainer.devices=P`, the cores shared): "
                  + ", ".join(f"P={p['processes']}: {p['wall_s']:.1f} s" for p in procs)
                  + f" for N={max(result['ns'])}; efficiency {result['multi_process_efficiency']:.2f} (1 process's wall time "
                  "/ P processes' on the same cores; 1.0 = the distributed path costs nothing)."]
    if result.get("survey"):
        lines += ["", "Predicting 76 million stamps from the measured per-process rate (times the efficiency above):", "",
                  "| unit | units | wall time (h) | unit-hours |", "|---|---|---|---|"]
        for s in result["survey"]:
            lines.append(f"| {s['unit']} | {s['units']} | {s['hours']:.1f} | {s['unit_hours']:.0f} |")
    lines += ["", f"Headline (N={head['n']}): predict/bare "
              + ", ".join(f"{b} {v:.2f}x" for b, v in head["predict_over_bare"].items())
              + ("; train/bare " + ", ".join(f"{b} {v:.2f}x" for b, v in head["train_over_bare"].items()) if head["train_over_bare"] else "")
              + (f"; start-up at most {head['startup_s']:.1f} s." if head.get("startup_s") is not None else ".")]
    (out / "throughput.md").write_text("\n".join(lines) + "\n")
    _profile(result, out, dev)
    _rates_plot(table, out, dev)
    print("\n".join(lines), flush=True)


def _profile(result: Mapping[str, Any], out: Path, dev: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    prof = profile_rows(result)
    if not prof:
        return
    stages = list(dict.fromkeys(k for _, _, ms in prof for k in ms))
    labels = [f"{b} N={n}" for b, n, _ in prof]
    lines = [f"Where `galframe predict`'s time goes, ms per object, on {dev} (start-up and model load spread over N; "
             "the network split as in the bare run's forward).", "",
             "| stage | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for s in stages:
        lines.append(f"| {s} | " + " | ".join(f"{ms.get(s, 0.0):.3f}" for _, _, ms in prof) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(ms.values()):.3f}**" for _, _, ms in prof) + " |")
    ahead = [(b, n, kinds["predict"].get("stages_read_ahead") or {}) for b, per_n in _by(result["rows"]).items()
             for n, kinds in sorted(per_n.items()) if "predict" in kinds]
    if any(st for _, _, st in ahead):
        lines += ["", "Read ahead by a thread while the model runs (overlapping the stages above; the main thread waits "
                  "only for what is not ready, `wait for reading`), ms per object:", "",
                  "| stage (read-ahead thread) | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for stage in ("read", "conform"):
            lines.append(f"| {stage} | " + " | ".join(f"{1000.0 * st.get(stage, 0.0) / n:.3f}" for _, n, st in ahead) + " |")
    (out / "profile.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(prof), 4.2))
    bottom = np.zeros(len(prof))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(stages), 2)))
    for s, c in zip(stages, colours):
        vals = np.array([ms.get(s, 0.0) for _, _, ms in prof])
        ax.bar(np.arange(len(prof)), vals, 0.6, bottom=bottom, label=s, color=c)
        bottom += vals
    ax.set(xticks=np.arange(len(prof)), ylabel="ms per object", title=f"galframe predict, per stage ({dev})")
    ax.set_xticklabels(labels, rotation=20, fontsize=8)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "profile.png", dpi=100)
    plt.close(fig)


def _rates_plot(table: Mapping[str, Any], out: Path, dev: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pairs = [(f"{b}\nN={n}", t) for b, per_n in table.items() for n, t in sorted(per_n.items()) if "predict" in t and "bare" in t]
    if not pairs:
        return
    x = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(2 + 1.3 * len(pairs), 3.8))
    ax.bar(x - 0.2, [t["predict"]["objects_per_s"] for _, t in pairs], 0.4, label="galframe predict")
    ax.bar(x + 0.2, [t["bare"]["objects_per_s"] for _, t in pairs], 0.4, label="bare backbone forward")
    for i, (_, t) in enumerate(pairs):
        ax.text(i, max(t["predict"]["objects_per_s"], t["bare"]["objects_per_s"]) * 1.05,
                f"{t['predict']['objects_per_s'] / t['bare']['objects_per_s']:.2f}x", ha="center", fontsize=8)
    ax.set(xticks=x, ylabel="objects / s", title=f"throughput on {dev}")
    ax.set_xticklabels([p for p, _ in pairs], fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)
