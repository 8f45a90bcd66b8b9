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
    assert bad.returncode == 2 and "profile=huge is not one of ['full', 'small']" in bad.stderr


def test_crossing_and_ratio_to_resnet18(tmp_path) -> None:
    from galframe_bench.fewshot import HITL, PROBE, RESNET, crossing, report

    assert crossing([100, 1000], [0.8, 0.95]) == pytest.approx(10 ** (2 + 2 / 3))  # log-linear between the points
    assert crossing([100, 1000], [0.91, 0.95]) == 100 and crossing([100, 1000], [0.5, 0.6]) is None

    def row(b, auc, seed=0):
        return {"budget": b, "seed": seed, "macro_auc": auc, "rare_auc": auc - 0.1, "accuracy": 0.5}

    rows = {RESNET: [row(100, 0.7), row(1000, 0.9), row(1000, 0.9, 1)], PROBE: [row(100, 0.9), row(1000, 0.95)],
            HITL: [row(20, 0.8), row(60, 0.9)]}
    meta = {"data": {"n_test": 50, "rare": ["merger"]}}
    result = report(rows, tmp_path, meta)
    assert result["labels_for_auc_0.9"] == pytest.approx({RESNET: 1000.0, PROBE: 100.0, HITL: 60.0})
    assert result["ratio_to_resnet18"][PROBE] == pytest.approx(0.1) and result["ratio_to_resnet18"][HITL] == pytest.approx(0.06)
    assert result["curves"][RESNET][1] == {"labels": 1000, "n": 2, "macro_auc": 0.9, "macro_auc_std": 0.0,
                                           "rare_auc": pytest.approx(0.8), "rare_auc_std": 0.0}
    table = (tmp_path / "fewshot.md").read_text()
    assert "| ResNet18 (scratch) | 0.700 (0.600) | 0.900 (0.800) | 1,000 | 1.00x |" in table
    assert "| LVM + classify (linear probe) | 0.900 (0.800) | 0.950 (0.850) | 100 | 0.10x |" in table
    assert (tmp_path / "fewshot.png").stat().st_size > 10_000


def test_fewshot_suite_runs_every_method_on_the_same_data(tiny_dataset, tmp_path) -> None:
    out = tmp_path / "bench"
    res = galframe_cli(
        "bench", "fewshot", "--profile", "small", f"out={out}", "weights=null", f"paths.runs={tmp_path / 'runs'}",
        f"profiles.small.fewshot.path={tiny_dataset}", "profiles.small.fewshot.data=dir", "profiles.small.fewshot.n=null",
        "profiles.small.fewshot.budgets=[30,60]", "profiles.small.fewshot.seeds=[0,1]", "profiles.small.fewshot.train_seeds=[0]",
        "profiles.small.fewshot.finetune_budgets=[60]", "profiles.small.fewshot.min_steps=3", "profiles.small.fewshot.min_epochs=1",
        "profiles.small.fewshot.hitl.initial=20", "profiles.small.fewshot.hitl.per_round=15", "profiles.small.fewshot.hitl.rounds=2",
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "fewshot" / "fewshot.json").read_text())
    curves = result["curves"]
    assert set(curves) == {"ResNet18 (scratch)", "LVM + classify (linear probe)", "LVM + classify (fine-tuned)", "LVM + classify + HITL"}
    assert [c["labels"] for c in curves["ResNet18 (scratch)"]] == [30, 60]
    assert [c["n"] for c in curves["LVM + classify (linear probe)"]] == [2, 2]  # two label draws per budget
    assert [c["labels"] for c in curves["LVM + classify (fine-tuned)"]] == [60]
    # the HITL loop grows its label store by per_round each round, for each seed
    assert [c["labels"] for c in curves["LVM + classify + HITL"]] == [20, 35, 50]
    for cs in curves.values():
        for c in cs:
            assert 0.0 <= c["macro_auc"] <= 1.0 and 0.0 <= c["rare_auc"] <= 1.0
    # the trained runs' AUC as galframe's own metric computed it agrees with the suite's scoring of their catalogs
    for r in result["runs"]["ResNet18 (scratch)"]:
        assert r["macro_auc"] == pytest.approx(r["galframe_auroc"], abs=0.02)
    assert len(result["data"]["rare"]) == 3
    # the HITL answers went into real SQLite label stores
    assert sorted(p.name for p in (tmp_path / "runs").rglob("hitl/*.sqlite")) == ["labels-seed0.sqlite", "labels-seed1.sqlite"]
    report = (out / "report.md").read_text()
    assert "## Label efficiency (fewshot)" in report and "![fewshot.png](fewshot/fewshot.png)" in report
    assert "| ResNet18 (scratch) |" in report


def test_throughput_suite_measures_predict_and_the_bare_backbone(tmp_path) -> None:
    out = tmp_path / "bench"
    res = galframe_cli("bench", "throughput", f"out={out}", f"paths.runs={tmp_path / 'runs'}", "profiles.small.throughput.n=48",
                       "profiles.small.throughput.backbones=[resnet18]", "profiles.small.throughput.repeats=1",
                       "profiles.small.throughput.batch=16", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "throughput" / "throughput.json").read_text())
    kinds = {r["kind"]: r for r in result["rows"]}
    assert set(kinds) == {"predict", "bare"}
    for r in kinds.values():
        assert r["backbone"] == "resnet18" and r["objects"] == 48 and r["objects_per_s"] > 0 and r["peak_rss_mib"] > 100
    # predict reads, scales, runs the heads and writes a catalog: it cannot beat the bare forward pass
    assert kinds["predict"]["objects_per_s"] < kinds["bare"]["objects_per_s"]
    assert 0.0 < result["overhead"]["resnet18"] < 1.0
    assert "| resnet18 |" in (out / "throughput" / "throughput.md").read_text()
    assert (out / "throughput" / "throughput.png").stat().st_size > 5_000
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
