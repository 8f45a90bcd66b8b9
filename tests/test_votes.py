"""The votes task: Dirichlet-multinomial loss, schema handling, metrics and columns against hand values,
and training end to end on a small dataset with Galaxy Zoo style vote counts."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from galframe.api import DataInfo, Features
from galframe.errors import ConfigError, DataError
from galframe_tasks.votes import VotesTask, dirichlet_multinomial_nll
from tests.helpers import compose_train

SCHEMA = {"questions": [
    {"name": "smooth-or-featured", "answers": ["smooth", "featured", "artifact"], "asked_if": None},
    {"name": "edge-on", "answers": ["yes", "no"], "asked_if": "smooth-or-featured_featured"},
    {"name": "bar", "answers": ["strong", "weak", "none"], "asked_if": "edge-on_no"},
]}
# the batch's vote columns (schema order): sof 0-2, edge-on 3-4, bar 5-7


class _Backbone(torch.nn.Module):
    embed_dim = 4


def _task(data_schema=SCHEMA, **options) -> VotesTask:
    info = DataInfo(bands=("g", "r", "z"), image_size=8, stats={"vote_schema": data_schema} if data_schema else {})
    return VotesTask("votes", _Backbone(), info, **options)


def test_dirichlet_multinomial_nll_matches_hand_values_and_scipy() -> None:
    from scipy.stats import dirichlet_multinomial

    # Dirichlet(1, 1) is a uniform p: one vote for the first answer has probability E[p] = 1/2
    assert float(dirichlet_multinomial_nll(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))) == pytest.approx(math.log(2))
    # two votes split 1-1 under Dirichlet(1, 1): 2 * E[p (1 - p)] = 2 * 1/6
    assert float(dirichlet_multinomial_nll(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0]))) == pytest.approx(math.log(3))
    rng = np.random.default_rng(0)
    for _ in range(5):
        alpha = rng.uniform(0.5, 30.0, size=3)
        counts = rng.integers(0, 25, size=3)
        expected = -dirichlet_multinomial.logpmf(counts, alpha, counts.sum())
        got = dirichlet_multinomial_nll(torch.tensor(counts, dtype=torch.float64), torch.tensor(alpha))
        assert float(got) == pytest.approx(expected, rel=1e-9)
    # nobody answered: exactly nothing to learn
    assert float(dirichlet_multinomial_nll(torch.zeros(3), torch.tensor([2.0, 5.0, 9.0]))) == 0.0


def test_schema_subset_override_and_errors() -> None:
    task = _task()
    assert [q["name"] for q in task.questions] == ["smooth-or-featured", "edge-on", "bar"]
    assert task.column_index.tolist() == list(range(8)) and task.n_answers == 8
    sub = _task(questions=["bar"])
    assert [q["name"] for q in sub.questions] == ["bar"] and sub.column_index.tolist() == [5, 6, 7]
    votes = torch.arange(8.0)[None]
    assert sub.counts({"votes": votes}).tolist() == [[5.0, 6.0, 7.0]]
    # an override schema regroups the data's columns (here: answers reordered, bar left out)
    own = {"questions": [{"name": "edge-on", "answers": ["no", "yes"], "asked_if": None},
                         {"name": "smooth-or-featured", "answers": ["artifact", "smooth", "featured"], "asked_if": None}]}
    over = _task(schema=own)
    assert over.column_index.tolist() == [4, 3, 2, 0, 1]
    # without a data schema, the task's own schema is the batch layout
    alone = _task(data_schema=None, schema=SCHEMA)
    assert alone.column_index.tolist() == list(range(8))

    with pytest.raises(ConfigError, match="unknown question 'barr'. Did you mean 'bar'"):
        _task(questions=["barr"])
    with pytest.raises(ConfigError, match="no vote schema"):
        _task(data_schema=None)
    with pytest.raises(ConfigError, match="not among the data's vote columns"):
        _task(schema={"questions": [{"name": "merger", "answers": ["yes", "no"], "asked_if": None}]})
    bad_tree = {"questions": [{"name": "bar", "answers": ["yes", "no"], "asked_if": "disk_yes"}]}
    with pytest.raises(ConfigError, match="asked_if 'disk_yes', which is not an answer of an earlier question"):
        _task(schema=bad_tree)
    with pytest.raises(ConfigError, match="at least two distinct answers"):
        _task(schema={"questions": [{"name": "q", "answers": ["only"], "asked_if": None}]})
    with pytest.raises(ConfigError, match="alpha_min < alpha_max"):
        _task(alpha_min=5.0, alpha_max=2.0)


def test_loss_sums_questions_and_ignores_unanswered_ones() -> None:
    task = _task()
    alpha = torch.tensor([[2.0, 3.0, 1.0, 4.0, 4.0, 1.0, 2.0, 3.0],
                          [5.0, 1.0, 1.0, 1.5, 2.5, 3.0, 3.0, 3.0]], requires_grad=True)
    votes = torch.tensor([[10.0, 5.0, 0.0, 3.0, 2.0, 0.0, 0.0, 0.0],   # bar not reached
                          [20.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # only the first question
    loss = task.loss({"alpha": alpha}, {"votes": votes})
    a, k = alpha.detach(), votes
    hand = (
        dirichlet_multinomial_nll(k[0, :3], a[0, :3]) + dirichlet_multinomial_nll(k[0, 3:5], a[0, 3:5])
        + dirichlet_multinomial_nll(k[1, :3], a[1, :3])
    ) / 2
    assert float(loss.detach()) == pytest.approx(float(hand), rel=1e-6)
    loss.backward()
    # questions nobody answered send no gradient to their concentrations
    assert torch.all(alpha.grad[0, 5:] == 0) and torch.all(alpha.grad[1, 3:] == 0)
    assert torch.all(alpha.grad[0, :5] != 0)
    # missing counts (NaN) are no votes
    nan_votes = votes.clone()
    nan_votes[0, 5:] = float("nan")
    assert float(task.loss({"alpha": a}, {"votes": nan_votes})) == pytest.approx(float(hand), rel=1e-6)


def test_metrics_match_hand_computed_values() -> None:
    task = _task(questions=["smooth-or-featured", "edge-on"], min_votes=2)
    # predicted fractions: galaxy 0 (0.5, 0.25, 0.25) / (0.75, 0.25); galaxy 1 (0.1, 0.8, 0.1) / (0.5, 0.5)
    alpha = torch.tensor([[4.0, 2.0, 2.0, 3.0, 1.0], [1.0, 8.0, 1.0, 5.0, 5.0]])
    votes = torch.zeros(3, 8)
    votes[0, :5] = torch.tensor([6.0, 2.0, 2.0, 1.0, 1.0])  # edge-on: only 2 votes ... kept (min_votes=2)
    votes[1, :5] = torch.tensor([0.0, 10.0, 0.0, 1.0, 0.0])  # edge-on: 1 vote < min_votes: not counted
    metrics = task.make_metrics()
    task.update_metrics(metrics, {"alpha": alpha}, {"votes": votes[:2]})
    # a third galaxy in a second batch; nobody voted at all: counts nowhere, NLL 0
    task.update_metrics(metrics, {"alpha": torch.ones(1, 5)}, {"votes": votes[2:]})
    values = {k: float(v) for k, v in task.compute_metrics(metrics).items()}
    # smooth-or-featured: galaxy 0 observed (0.6, 0.2, 0.2): |0.1|, |0.05|, |0.05| -> 0.2 / 3
    #                      galaxy 1 observed (0, 1, 0):       0.1, 0.2, 0.1       -> 0.4 / 3
    assert values["smooth-or-featured_fraction_mae"] == pytest.approx((0.2 / 3 + 0.4 / 3) / 2)
    # edge-on: galaxy 0 only, observed (0.5, 0.5): |0.25| both
    assert values["edge-on_fraction_mae"] == pytest.approx(0.25)
    # pooled over the three (galaxy, question) pairs counted
    assert values["fraction_mae"] == pytest.approx((0.2 / 3 + 0.4 / 3 + 0.25) / 3)
    # majority: sof galaxy 0 predicts smooth (6 votes: right), galaxy 1 featured (right);
    # edge-on galaxy 0 predicts yes, observed 1-1: a tie counts as right
    assert values["smooth-or-featured_majority_accuracy"] == 1.0
    assert values["edge-on_majority_accuracy"] == 1.0
    nll = task.nll({"alpha": alpha}, {"votes": votes[:2]}).sum(dim=1)
    assert values["nll"] == pytest.approx(float(nll.sum()) / 3, rel=1e-6)
    # a wrong majority
    wrong = task.make_metrics()
    task.update_metrics(wrong, {"alpha": torch.tensor([[1.0, 5.0, 1.0, 1.0, 9.0]])}, {"votes": votes[:1]})
    assert float(task.compute_metrics(wrong)["smooth-or-featured_majority_accuracy"]) == 0.0
    # nothing counted: NaN, not a number that looks like a result
    empty = task.make_metrics()
    assert math.isnan(float(task.compute_metrics(empty)["fraction_mae"]))


def test_predict_columns() -> None:
    task = _task()
    alpha = torch.tensor([[2.0, 6.0, 2.0, 1.0, 3.0, 1.0, 1.0, 2.0]])
    cols = task.predict_columns({"alpha": alpha})
    assert cols["smooth-or-featured_featured_fraction"] == pytest.approx([0.6])
    assert cols["edge-on_no_fraction"] == pytest.approx([0.75])
    assert cols["bar_none_fraction"] == pytest.approx([0.5])
    assert cols["smooth-or-featured_concentration"] == pytest.approx([10.0])
    # Dirichlet marginal: Beta(6, 4): var = 6 * 4 / (10^2 * 11)
    assert cols["smooth-or-featured_featured_fraction_sigma"] == pytest.approx([math.sqrt(24 / 1100)])
    # the tree: edge-on is reached by the 'featured' 60%, bar by 'featured' then 'no': 0.6 * 0.75
    assert cols["smooth-or-featured_reached"] == pytest.approx([1.0])
    assert cols["edge-on_reached"] == pytest.approx([0.6])
    assert cols["bar_reached"] == pytest.approx([0.45])
    # a question whose parent question is not predicted: unknown
    assert math.isnan(_task(questions=["bar"]).predict_columns({"alpha": alpha[:, 5:]})["bar_reached"][0])


def test_loss_falls_on_a_tiny_problem() -> None:
    torch.manual_seed(0)
    task = _task(hidden=16)
    x = torch.randn(64, 4)
    p_smooth = torch.sigmoid(3 * x[:, 0])
    votes = torch.zeros(64, 8)
    votes[:, 0] = torch.round(30 * p_smooth)
    votes[:, 1] = 30 - votes[:, 0]
    votes[:, 3] = torch.round(votes[:, 1] * torch.sigmoid(3 * x[:, 1]))
    votes[:, 4] = votes[:, 1] - votes[:, 3]
    opt = torch.optim.Adam(task.parameters(), lr=0.02)
    losses = []
    for _ in range(80):
        loss = task.loss(task(Features(maps=[], embedding=x)), {"votes": votes})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    metrics = task.make_metrics()
    task.update_metrics(metrics, task(Features(maps=[], embedding=x)), {"votes": votes})
    assert float(task.compute_metrics(metrics)["smooth-or-featured_fraction_mae"]) < 0.1


# -- end to end ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vote_dataset(tiny_dataset, tmp_path_factory) -> Path:
    """The tiny dataset's images with simulated volunteer votes drawn from each object's class."""
    import h5py
    import pandas as pd

    from galframe.data.format import DatasetWriter

    catalog = pd.read_parquet(Path(tiny_dataset) / "catalog.parquet").sort_values("id")
    manifest = json.loads((Path(tiny_dataset) / "manifest.json").read_text())
    images = []
    for shard in manifest["shards"]:
        with h5py.File(Path(tiny_dataset) / shard["file"], "r") as h5:
            images.append(h5["images"][:])
    images = np.concatenate(images)
    p_first = {"smooth": [0.8, 0.15, 0.05], "featured_disk": [0.15, 0.8, 0.05], "edge_on": [0.2, 0.75, 0.05],
               "irregular": [0.3, 0.6, 0.1], "merger": [0.4, 0.5, 0.1], "star": [0.1, 0.1, 0.8]}
    rng = np.random.default_rng(3)
    rows = []
    for name in catalog["class_name"]:
        sof = rng.multinomial(int(rng.integers(20, 41)), p_first[name])
        edge = rng.multinomial(sof[1], [0.9, 0.1] if name == "edge_on" else [0.1, 0.9])
        bar = rng.multinomial(edge[1], [0.2, 0.3, 0.5])
        counts = np.concatenate([sof, edge, bar]).astype(float)
        rows.append({"class_name": name, **{c: v for c, v in zip(_columns(), counts)}})
    out = tmp_path_factory.mktemp("data") / "votes"
    with DatasetWriter(out, "tiny-votes", manifest["bands"], manifest["image_size"], 0.262, 22.5, None, None, votes=SCHEMA) as w:
        w.add(images, rows=rows)
    return out


def _columns() -> list[str]:
    from galframe.data.format import vote_columns

    return vote_columns(SCHEMA)


def _run(tmp_path: Path, *overrides: str):
    from galframe.train import run

    return run(compose_train(*overrides), run_dir=tmp_path / "run")


def test_fast_dev_run_and_clear_error_without_votes(vote_dataset, tiny_dataset, tmp_path) -> None:
    metrics = _run(tmp_path, "backbone=lvm_tiny", "tasks=[votes]", f"data.path={vote_dataset}", "data.batch_size=8",
                   "trainer=fast", "logger=none")
    assert metrics == {}
    with pytest.raises(DataError, match="a task needs vote counts but the dataset has no vote schema"):
        _run(tmp_path, "backbone=resnet18", "tasks=[votes]", f"data.path={tiny_dataset}", "trainer=fast", "logger=none")


def test_short_run_writes_metrics_columns_and_report(vote_dataset, tmp_path) -> None:
    import pandas as pd

    _run(
        tmp_path, "backbone=resnet18", "tasks=[votes]", f"data.path={vote_dataset}", "data.batch_size=32",
        "tasks.votes.questions=[smooth-or-featured,edge-on]", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
        "trainer.progress_bar=false",
        "logger=none",
    )
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for q in ("smooth-or-featured", "edge-on"):
        assert 0.0 <= metrics[f"test/votes/{q}_fraction_mae"] <= 1.0
        assert 0.0 <= metrics[f"test/votes/{q}_majority_accuracy"] <= 1.0
    assert "test/votes/bar_fraction_mae" not in metrics
    assert np.isfinite(metrics["test/votes/nll"]) and 0.0 <= metrics["test/votes/fraction_mae"] <= 1.0
    pred = pd.read_parquet(run_dir / "predictions_test.parquet")
    fractions = pred[[f"smooth-or-featured_{a}_fraction" for a in ("smooth", "featured", "artifact")]]
    assert np.allclose(fractions.sum(axis=1), 1.0, atol=1e-5)
    assert (pred["smooth-or-featured_concentration"] >= 3.0).all()  # three answers, alpha >= 1 each
    # the catalog's counts reproduce the logged metric
    k = pred[[f"smooth-or-featured_{a}" for a in ("smooth", "featured", "artifact")]].to_numpy()
    observed = k / k.sum(axis=1, keepdims=True)
    mae = np.abs(fractions.to_numpy() - observed).mean()
    assert mae == pytest.approx(metrics["test/votes/smooth-or-featured_fraction_mae"], rel=1e-4)
    assert (run_dir / "votes_votes.png").stat().st_size > 5000
