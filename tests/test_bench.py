"""galframe bench: the command, its suites on tiny data, and the label-efficiency report logic."""
from __future__ import annotations

import json

import pytest

from tests.helpers import galframe_cli


def test_command_translates_a_suite_word_and_long_options() -> None:
    from galframe.api import Command
    from galframe.errors import ConfigError

    cmd = Command("bench", run=lambda cfg, run_dir: None, positional="suite", options=("profile", "max_time"))
    assert cmd.translate(["fewshot", "--profile", "small", "out=/tmp/x"]) == ["suite=fewshot", "profile=small", "out=/tmp/x"]
    assert cmd.translate(["--profile=full", "--max-time", "3"]) == ["profile=full", "max_time=3"]
    # an override first is not the suite; unknown long options pass through to Hydra untouched
    assert cmd.translate(["out=/tmp/x", "--cfg", "job"]) == ["out=/tmp/x", "--cfg", "job"]
    with pytest.raises(ConfigError, match="--profile needs a value"):
        cmd.translate(["detect", "--profile"])


def test_bench_errors_name_the_suite_and_profile() -> None:
    bad = galframe_cli("bench", "fewshoot")
    assert bad.returncode == 2 and "Unknown bench suite 'fewshoot'. Did you mean 'fewshot'?" in bad.stderr
    bad = galframe_cli("bench", "throughput", "--profile", "huge")
    assert bad.returncode == 2 and "profile=huge is not one of ['cpu', 'demo', 'full', 'small']" in bad.stderr


def test_crossing_and_ratio_to_resnet18(tmp_path) -> None:
    from galframe_bench.fewshot import HITL, PROBE, RESNET, crossing, report

    assert crossing([100, 1000], [0.8, 0.95]) == pytest.approx(10 ** (2 + 2 / 3))  # log-linear between the points
    assert crossing([100, 1000], [0.91, 0.95]) == 100 and crossing([100, 1000], [0.5, 0.6]) is None

    def row(b, auc, seed=0):
        return {"budget": b, "seed": seed, "macro_auc": auc, "rare_auc": auc - 0.1, "accuracy": 0.5}

    rows = {RESNET: [row(100, 0.7), row(1000, 0.9), row(100, 0.7, 1), row(1000, 0.9, 1)],
            PROBE: [row(100, 0.9), row(1000, 0.95)], HITL: [row(20, 0.8), row(60, 0.9), row(20, 0.8, 1), row(60, 0.9, 1)]}
    meta = {"data": {"n_test": 50, "rare": ["merger"]}, "protocol": "docs/fewshot_protocol.md", "profile": {"name": "test"}}
    headline = tmp_path / "headline.json"
    headline.write_text(json.dumps({"labels": {"fuzz_5xx": 0}}))
    result = report(rows, tmp_path, meta, headline=headline)
    assert result["labels_for_auc_0.9"] == pytest.approx({RESNET: 1000.0, PROBE: 100.0, HITL: 60.0})
    # the ratio is ResNet18's labels over the method's: 1000 / 60
    assert result["ratio_resnet18_over_method"][HITL] == pytest.approx(1000 / 60)
    assert result["ratio_ci"] == pytest.approx([1000 / 60, 1000 / 60])  # identical seeds: a zero-width interval
    assert result["curves"][RESNET][1]["macro_auc"] == 0.9 and result["curves"][RESNET][1]["n"] == 2
    table = (tmp_path / "fewshot.md").read_text()
    assert "| ResNet18 (scratch) | - | - | 0.700 | 0.900 | 1,000 [1,000, 1,000] | 1.0x |" in table
    assert "| LVM + DST + HITL | 0.800 | 0.900 | - | - | 60 [60, 60] | 16.7x |" in table
    assert (tmp_path / "fewshot.png").stat().st_size > 10_000
    written = json.loads(headline.read_text())
    assert written["labels"] == {"fuzz_5xx": 0}  # another suite's key is kept
    assert written["fewshot"]["labels_to_0.9"] == pytest.approx({"resnet18": 1000.0, "lvm_dst_hitl": 60.0, "lvm_probe": 100.0,
                                                                 "lvm_finetune": None})
    assert written["fewshot"]["ratio"] == pytest.approx(1000 / 60) and written["fewshot"]["seeds"] == 2


def test_protocol_refuses_labels_beyond_the_budget() -> None:
    import numpy as np

    from galframe_bench.protocol import BudgetExceeded, LabelBudget, check_trained_overrides

    budget = LabelBudget(np.arange(100) % 7, 10, "probe")
    assert budget.reveal([1, 2, 3]).tolist() == [1, 2, 3]
    assert budget.reveal([3, 4]).tolist() == [3, 4] and budget.used == 4  # asking again costs nothing
    budget.reveal(range(10))
    with pytest.raises(BudgetExceeded, match="asked for 11 labels, but its budget is 10"):
        budget.reveal([50])
    assert budget.used == 10  # the refused request revealed nothing
    # a trained method that would pick its checkpoint on the labelled validation split is refused
    with pytest.raises(BudgetExceeded, match="limit_val_batches=0"):
        check_trained_overrides("ResNet18", ["data.n_labeled=20", "select=last"])
    with pytest.raises(BudgetExceeded, match="select=last"):
        check_trained_overrides("ResNet18", ["trainer.limit_val_batches=0", "select=best"])
    check_trained_overrides("ResNet18", ["trainer.limit_val_batches=0", "select=last"])


def test_fewshot_suite_runs_every_method_on_the_same_data(tiny_dataset, tmp_path) -> None:
    """The demo's comparison (make demo runs this profile) on a tiny dataset, from the shipped LVM weights."""
    out = tmp_path / "bench"
    P = "profiles.demo.fewshot"
    res = galframe_cli(
        "bench", "fewshot", "--profile", "demo", f"out={out}", f"paths.runs={tmp_path / 'runs'}",
        f"{P}.path={tiny_dataset}", f"{P}.data=dir", f"{P}.n=null", f"{P}.budgets=[30,60]", f"{P}.seeds=[0,1]",
        f"{P}.resnet_budgets=[60]", f"{P}.train_seeds=[0]", f"{P}.finetune_budgets=[60]", f"{P}.min_steps=3",
        f"{P}.min_epochs=1", f"{P}.views=4", f"{P}.hitl.max_budget=60", f"{P}.ablations=[no_semi,hitl_random]",
        f"{P}.headline=true",
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "60 labels, held-out macro AUC: LVM + DST + HITL 0." in res.stdout and "against ResNet18 (scratch) 0." in res.stdout
    result = json.loads((out / "fewshot" / "fewshot.json").read_text())
    assert result["weights"] == "lvm_tiny-g10"
    curves = result["curves"]
    assert set(curves) == {"ResNet18 (scratch)", "LVM probe (frozen features, random labels)",
                           "LVM + DST (semi-supervised head, random labels)", "LVM + DST + HITL",
                           "LVM + HITL, logistic head (no semi-supervision)", "LVM + DST, random draws in the HITL loop",
                           "LVM fine-tuned (LP-FT, layer-wise decay)"}
    assert [c["labels"] for c in curves["ResNet18 (scratch)"]] == [60]
    assert [c["n"] for c in curves["LVM probe (frozen features, random labels)"]] == [2, 2]  # two label draws per budget
    # the HITL rounds end exactly at each budget, for each seed
    assert [(c["labels"], c["n"]) for c in curves["LVM + DST + HITL"]] == [(30, 2), (60, 2)]
    for cs in curves.values():
        for c in cs:
            assert 0.0 <= c["macro_auc"] <= 1.0 and 0.0 <= c["rare_auc"] <= 1.0
            lo, hi = c["macro_auc_ci"]
            assert lo <= hi and 0.0 <= c["unlabelled_classes"] <= len(result["data"]["classes"])
    # the trained runs' AUC as galframe's own metric computed it agrees with the suite's scoring of their catalogs
    for r in result["runs"]["ResNet18 (scratch)"]:
        assert r["macro_auc"] == pytest.approx(r["galframe_auroc"], abs=0.02)
    assert len(result["data"]["rare"]) == 3
    # the HITL answers went into real SQLite label stores, one per loop and seed
    assert len(list((tmp_path / "runs").rglob("hitl/*.sqlite"))) == 6
    headline = json.loads((tmp_path / "headline.json").read_text())["fewshot"]
    assert headline["protocol"] == "docs/fewshot_protocol.md" and headline["seeds"] == 2
    assert set(headline["labels_to_0.9"]) == {"resnet18", "lvm_dst_hitl", "lvm_probe", "lvm_finetune"}
    report = (out / "report.md").read_text()
    assert "## Label efficiency (fewshot)" in report and "![fewshot.png](fewshot/fewshot.png)" in report
    assert "| ResNet18 (scratch) |" in report


def test_throughput_suite_measures_predict_train_and_their_bare_loops(tmp_path) -> None:
    out = tmp_path / "bench"
    res = galframe_cli("bench", "throughput", f"out={out}", f"paths.runs={tmp_path / 'runs'}", "profiles.small.throughput.ns=[48]",
                       "profiles.small.throughput.backbones=[resnet18]", "profiles.small.throughput.batch=16",
                       "profiles.small.throughput.train_steps=5", "profiles.small.throughput.train_batch=8",
                       "profiles.small.throughput.memory_ns=[48]", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "throughput" / "throughput.json").read_text())
    kinds = {r["kind"]: r for r in result["rows"]}
    assert set(kinds) == {"predict", "bare", "train", "bare_train"}
    for kind in ("predict", "bare"):
        r = kinds[kind]
        assert r["backbone"] == "resnet18" and r["objects"] == 48 and r["objects_per_s"] > 0 and r["peak_rss_mib"] > 100
    assert kinds["train"]["steps"] == kinds["bare_train"]["steps"] == 5 and kinds["train"]["steps_per_s"] > 0
    # predict's stages: every part of the work is timed, the start-up apart from the rate
    stages = kinds["predict"]["stages"]
    assert {"load model", "network", "rows", "write parts", "merge", "start-up"} <= set(stages)
    # read ahead by a thread where a core is free for it (read_ahead=auto), else read in turn
    reading = kinds["predict"]["stages_read_ahead"]
    if reading:
        assert "wait for reading" in stages and {"read", "conform"} <= set(reading)
    else:
        assert {"read", "conform"} <= set(stages)
    assert 0 < kinds["predict"]["startup_s"] and sum(stages.values()) > 0
    assert set(kinds["bare"]["network_split"]) == {"scaling", "backbone", "heads"}
    headline = json.loads((out.parent / "headline.json").read_text())["throughput"]
    assert set(headline) == {"n", "predict_over_bare", "train_over_bare", "startup_s", "peak_rss_mib"}
    assert headline["n"] == 48 and set(headline["predict_over_bare"]) == {"resnet18"} and list(headline["peak_rss_mib"]) == ["48"]
    table = (out / "throughput" / "throughput.md").read_text()
    assert "| resnet18 | 48 |" in table and "train / bare" in table and "76 million" in table
    assert "| network: backbone |" in (out / "throughput" / "profile.md").read_text()
    for png in ("throughput.png", "profile.png"):
        assert (out / "throughput" / png).stat().st_size > 5_000
    assert "## Throughput" in (out / "report.md").read_text()


def test_suites_compose_inside_the_running_bench_command(tiny_fields) -> None:
    """galframe bench calls the suites inside its own Hydra job: their configs must compose there too."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from galframe_bench.classical import compose as classical_compose
    from galframe_bench.detect import test_split

    GlobalHydra.instance().clear()
    with initialize_config_module("galframe.conf", version_base="1.3"):
        dm = test_split([f"data.path={tiny_fields}"])
        assert len(dm.splits["test"]) > 0 and "instances" in dm.requires
        assert classical_compose(["data.n=123"])["data"]["n"] == 123
        assert GlobalHydra.instance().is_initialized()
    GlobalHydra.instance().clear()


def test_detect_suite_trains_and_loads_through_the_python_api(tiny_dataset, tmp_path, monkeypatch, capsys) -> None:
    """bench detect trains in this process (galframe.build + galframe.train), not through the CLI in a subprocess."""
    import subprocess

    from galframe_bench import detect

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError(f"bench detect started a process: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    run_dir = tmp_path / "resnet18"
    overrides = [f"data.path={tiny_dataset}", "data.n_labeled=null", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "trainer.progress_bar=false", "data.batch_size=8"]
    metrics = detect.train("baseline_resnet18", run_dir, overrides)
    assert 0.0 <= metrics["test/classify/auroc"] <= 1.0 and metrics["wall_seconds"] is not None
    assert (run_dir / "csv" / "metrics.csv").is_file()  # logger=csv, as the suite asks
    assert list(detect.load_model(run_dir).tasks) == ["classify"]
    assert detect.train("baseline_resnet18", run_dir, overrides) == metrics  # a finished run is reused
    assert "done already" in capsys.readouterr().out


def test_throughput_repeats_alternate_the_two_sides_of_a_ratio(monkeypatch, tmp_path) -> None:
    """predict and bare run in turn within every repeat (a load change falls on both), the best of each is kept."""
    import subprocess

    from galframe_bench import throughput

    calls: list[str] = []
    rates = iter([10.0, 20.0, 30.0, 5.0, 1.0, 40.0])

    def fake_run(cmd, **kwargs):
        kind = cmd[cmd.index("--one") + 1]
        calls.append(kind)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps({"kind": kind, "objects_per_s": next(rates)}), stderr="")

    monkeypatch.setattr(throughput.subprocess, "run", fake_run)
    best = throughput._measure(("predict", "bare"), "resnet18", tmp_path, tmp_path / "m.ckpt", 8, "cpu", repeats=3)
    assert calls == ["predict", "bare"] * 3
    assert best["predict"]["objects_per_s"] == 30.0 and best["bare"]["objects_per_s"] == 40.0
