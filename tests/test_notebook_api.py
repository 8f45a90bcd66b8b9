"""The notebook API: the README's example runs as written; load_model, embed, finetune and predict agree
with the machinery they stand for."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from galframe.errors import ConfigError, DataError
from tests.helpers import ROOT


def readme_example() -> str:
    """The first Python block of the README's notebook section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## In a notebook", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md: the notebook section has no python block"
    return blocks[0]


@pytest.fixture(scope="module")
def example(tmp_path_factory, cache_dir):
    """The README's example, executed in a fresh folder (its survey and runs land there)."""
    import os

    where = tmp_path_factory.mktemp("notebook")
    old_cwd, old_runs = os.getcwd(), os.environ.get("GALFRAME_RUNS")
    os.chdir(where)
    os.environ["GALFRAME_RUNS"] = str(where / "runs")
    namespace: dict = {}
    try:
        exec(compile(readme_example(), "README.md (notebook example)", "exec"), namespace)
    finally:
        os.chdir(old_cwd)
        if old_runs is None:
            os.environ.pop("GALFRAME_RUNS", None)
        else:
            os.environ["GALFRAME_RUNS"] = old_runs
    namespace["where"] = where
    return namespace


def test_the_readme_example_runs(example) -> None:
    survey, model, tuned, table, vectors = (example[k] for k in ("survey", "model", "tuned", "table", "vectors"))
    assert model.network is None and model.bands == ["g", "r", "z"]
    assert vectors.shape[0] == 120 and vectors.ndim == 2 and np.isfinite(vectors).all()
    assert model.embed(example["cutouts"]).shape == (4, vectors.shape[1])
    assert tuned.tasks == ["classify"] and tuned.checkpoint.is_file()
    assert tuned.checkpoint.parents[1].parent == example["where"] / "runs" / "finetune"
    assert 0.0 <= tuned.metrics["test/classify/auroc"] <= 1.0 and tuned.metrics["n_train"] == 60
    frame = table.to_pandas()
    assert len(frame) == 120 and frame["id"].is_unique and table.meta["rejects"] == 0
    probs = frame[[c for c in frame.columns if c.startswith("classify_p_")]].to_numpy()
    assert probs.shape[1] >= 2 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_embeddings_of_a_reader_are_those_of_its_images(example) -> None:
    """model.embed(reader) runs the predict path (conforming stamps); on stamps of the model's size it gives
    what model.embed(array) gives for the same images."""
    from galframe.build import build_datamodule, compose

    model, survey = example["model"], example["survey"]
    dm = build_datamodule(compose("train", ["data=dir", f"data.path={survey}", "data.split={train:1.0,val:0.0,test:0.0}"]))
    dm.prepare()
    ds = dm.dataset("train")
    items = [ds[i] for i in range(5)]
    images = np.stack([it["image"].numpy() for it in items])
    order = [str(i) for i in example["tuned"].predict(survey)["id"]]  # the catalog's ids, as predict writes them
    rows = [order.index(str(int(it["id"]))) for it in items]
    from_reader = model.embed(survey)[rows]
    np.testing.assert_allclose(model.embed(images), from_reader, rtol=1e-4, atol=1e-5)


def test_loaded_weights_are_the_zoo_weights(example) -> None:
    """galframe.load_model(<zoo weights>) is the backbone that backbone.weights=<name> builds, fed with the
    scaling the weights were pretrained with (their sidecar's)."""
    import json

    from galframe import zoo
    from galframe.build import build, compose

    model, survey = example["model"], example["survey"]
    net, _ = build(compose("train", ["data=dir", f"data.path={survey}", "backbone=lvm_tiny", "backbone.weights=lvm_tiny-g10"]))
    own = model.encoder.backbone.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in net.backbone.state_dict().items())
    sidecar = zoo.file_of(zoo.entries("weights")["lvm_tiny-g10"]).with_suffix(".json")
    softening = json.loads(sidecar.read_text())["scaling"]["softening"]
    x = torch.as_tensor(example["cutouts"], dtype=torch.float32)
    from galframe.data.scaling import build_scaling

    pretrained = build_scaling({"name": "asinh", "softening": softening}, ["g", "r", "z"])
    net.eval()
    with torch.no_grad():
        expected = net.backbone(pretrained(x), decode=False).embedding.numpy()
    np.testing.assert_allclose(model.embed(x), expected, rtol=1e-4, atol=1e-5)


def test_a_finetuned_run_loads_back_and_predicts_the_same(example) -> None:
    import galframe

    tuned = example["tuned"]
    again = galframe.load_model(tuned.checkpoint.parents[1])
    assert again.tasks == tuned.tasks
    np.testing.assert_allclose(again.embed(example["cutouts"]), tuned.embed(example["cutouts"]), rtol=1e-5, atol=1e-6)


def test_clear_errors(example) -> None:
    import galframe

    with pytest.raises(ConfigError, match="Did you mean 'lvm_tiny-g10'"):
        galframe.load_model("lvm_tiny-g1O")
    with pytest.raises(ConfigError, match="no task to predict"):
        example["model"].predict(example["survey"])
    with pytest.raises(DataError, match=r"expects \(N, 3 bands"):
        example["model"].embed(np.zeros((2, 4, 64, 64)))
    with pytest.raises(DataError, match="no column 'nope'"):
        galframe.finetune(example["model"], example["survey"], label_col="nope")


def test_finetune_on_another_label_column_as_a_linear_probe(example, tmp_path) -> None:
    """label_col names any catalog column of class names (here class_name); mode=frozen trains the head only."""
    import galframe

    model = example["model"]
    before = {k: v.clone() for k, v in model.encoder.backbone.state_dict().items()}
    probe = galframe.finetune(model, example["survey"], label_col="class_name", n_labeled=24, epochs=1, mode="frozen",
                              run_dir=tmp_path / "probe")
    assert probe.metrics["n_train"] == 24 and probe.checkpoint.parents[1] == tmp_path / "probe"
    after = probe.encoder.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: the backbone is the one it started from
    assert not (tmp_path / "probe" / "start_backbone.ckpt").exists()
