"""The construction layer: composing configs, building model and data, loading checkpoints, the zoo."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from galframe.errors import ConfigError, DataError

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.progress_bar=false", "data.batch_size=8", "logger=none", "evaluate=false"]


def test_compose_normalises_the_overrides_users_write() -> None:
    from galframe.build import compose, compose_dict

    cfg = compose("train", ["tasks=[regress]", "data.n=17"])
    assert list(cfg.tasks) == ["regress"] and cfg.data.n == 17
    predict = compose_dict("predict", ["data=hdf5", "data.path=x.h5", "ckpt=run", "out=c.parquet"])
    assert predict["data"]["plugin"] == "hdf5" and predict["data"]["path"] == "x.h5"


def test_build_gives_the_model_and_data_train_uses(tiny_dataset) -> None:
    from galframe.build import build, compose

    model, dm = build(compose("train", [f"data.path={tiny_dataset}", "backbone=resnet18", "tasks=[classify]"]))
    assert list(model.tasks) == ["classify"] and dm.requires == ["label"]
    assert model.bands == list(dm.info().bands)


def _zoo_weights(tiny_dataset, name: str) -> Path:
    """LVM-tiny weights (random init, saved as galframe pretrain saves them) registered in the user zoo."""
    from galframe.build import build, compose
    from galframe_lvm.weights import add_to_zoo, save_weights

    model, _ = build(compose("train", [f"data.path={tiny_dataset}", "backbone=lvm_tiny", "backbone.weights=null"]))
    file = save_weights(model.backbone, Path(str(tiny_dataset)).parent / f"{name}-src", scaling=model.config["scaling"])
    add_to_zoo(file, name, "a test's weights")
    return file


def test_checkpoint_loads_without_the_zoo_weights_it_started_from(tiny_dataset, cache_dir, tmp_path) -> None:
    import galframe
    from galframe import checkpoints, zoo
    from galframe.build import build, compose
    from galframe.train import run
    from galframe_hitl.scoring import load_model as hitl_load

    _zoo_weights(tiny_dataset, "gone-soon")
    entry = zoo.entries("weights")["gone-soon"]
    assert entry["kind"] == "weights" and zoo.file_of(entry).is_file()
    first = tmp_path / "first"
    run(compose("train", [f"data.path={tiny_dataset}", "backbone=lvm_tiny", "backbone.weights=gone-soon", *SHORT]), first)
    x = torch.rand(4, 3, 64, 64) * 0.1
    before, file = checkpoints.load_model(first)
    with torch.no_grad():
        expected = before(x)["classify"]["logits"]

    zoo.file_of(entry).unlink()  # the pretrained weights are gone
    with pytest.raises(DataError, match="not found"):  # a new model would look for them
        build(compose("train", [f"data.path={tiny_dataset}", "backbone=lvm_tiny", "backbone.weights=gone-soon"]))
    stored = torch.load(file, map_location="cpu", weights_only=False)["hyper_parameters"]["config"]
    assert stored["backbone"]["weights"] == "gone-soon"  # the provenance is kept ...
    for model in (checkpoints.load_model(first)[0], checkpoints.model_from_checkpoint(file), hitl_load(first),
                  galframe.load_model(first).network):
        with torch.no_grad():
            assert torch.equal(model(x)["classify"]["logits"], expected)  # ... but never looked for
    # a warm start from that run does not look for them either, and starts from the run's weights
    warm, _ = build(compose("train", [f"data.path={tiny_dataset}", "backbone=lvm_tiny", "backbone.weights=gone-soon",
                                      f"init={first}"]))
    warm.eval()
    with torch.no_grad():
        assert torch.equal(warm(x)["classify"]["logits"], expected)
    # and neither does resuming the run
    run(compose("train", [f"data.path={tiny_dataset}", "backbone=lvm_tiny", "backbone.weights=gone-soon", *SHORT,
                          "trainer.max_epochs=2", f"resume={first}"]), tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").is_file()


def test_one_zoo_holds_weights_and_models(tiny_dataset, cache_dir, tmp_path) -> None:
    from galframe import checkpoints, zoo
    from galframe.build import compose
    from galframe.train import run

    _zoo_weights(tiny_dataset, "zoo-weights")
    run(compose("train", [f"data.path={tiny_dataset}", "backbone=resnet18", *SHORT]), tmp_path / "r")
    checkpoints.register_model(tmp_path / "r", "zoo-model", "a trained test model")
    index = json.loads(zoo.index_path().read_text())
    kinds = {e["name"]: e["kind"] for e in index}
    assert kinds["zoo-weights"] == "weights" and kinds["zoo-model"] == "model"
    assert set(zoo.entries("model")) >= {"zoo-model"} and "zoo-model" not in zoo.entries("weights")
    assert "lvm_tiny-g10" in zoo.entries("weights")  # the LVM plugin's shipped index, found in its package
    from galframe_lvm.weights import zoo_entries

    assert "zoo-weights" in zoo_entries() and "zoo-model" not in zoo_entries()
    assert checkpoints.resolve_checkpoint("zoo-model").name == "zoo-model.ckpt"
    with pytest.raises(ConfigError, match="holds backbone weights .* not a trained model"):
        checkpoints.resolve_checkpoint("zoo-weights")
    with pytest.raises(ConfigError, match="Did you mean 'zoo-model'"):
        checkpoints.resolve_checkpoint("zoo-modle")
