"""Modalities besides the image (galframe/modalities.py, galframe_multimodal): each encoder's output shape and
masking, the fusions leaving absent modalities out, a batch where half the objects lack the spectrum trains
and predicts, checkpoints round-trip, and a tiny `galframe train ... 'modalities=[image,tabular]'` run."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from galframe import registry
from galframe.api import DataInfo
from galframe.errors import ConfigError, DataError
from tests.helpers import compose_train

pytest.importorskip("galsim")

COLUMNS = ["phot_mag_g", "phot_mag_W1", "phot_mag_err_W1"]
INFO = DataInfo(bands=("g", "r", "z"), image_size=32,
                stats={"column_mean": {"phot_mag_g": 20.0, "phot_mag_W1": 19.0, "phot_mag_err_W1": 0.2},
                       "column_std": {"phot_mag_g": 1.0, "phot_mag_W1": 1.5, "phot_mag_err_W1": 0.1},
                       "spectrum_wavelength": list(np.linspace(400, 900, 64)), "spectrum_flux_scale": 2.0})
#: a small LVM, so a model builds and trains in a second
SMALL = ["backbone=lvm_tiny", "backbone.img_size=32", "backbone.embed_dim=16", "backbone.depths=[1,1]",
         "backbone.num_heads=[1,2]", "backbone.window_size=4", "data.image_size=32", "data.batch_size=8"]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.progress_bar=false", "logger=none"]


def _encoder(plugin: str, **options):
    return registry.build("encoder", plugin, options, name=plugin, data=INFO)


# -- encoders ---------------------------------------------------------------------------------------------
def test_tabular_encoder_shape_and_missing_values_masked_not_imputed():
    torch.manual_seed(0)
    enc = _encoder("tabular", columns=COLUMNS, hidden=16, depth=2, embed_dim=12).eval()
    x = torch.tensor([[20.5, 18.0, 0.1], [21.0, math.nan, math.nan], [math.nan] * 3, [19.0, 19.5, 0.3]])
    out = enc(x)
    assert out.shape == (4, 12) and enc.embed_dim == 12 and torch.isfinite(out).all()
    assert enc.present(x).tolist() == [True, True, False, True]
    # a missing value's stand-in does not matter (inf is as missing as NaN), and objects do not mix
    y = x.clone()
    y[1, 1], y[1, 2] = math.inf, -math.inf
    y[0] = torch.tensor([17.0, 22.0, 1.0])
    assert torch.equal(enc(y)[1:], out[1:])
    # missing is not "measured at the mean": the indicator goes in
    at_mean = x[1:2].clone()
    at_mean[0, 1], at_mean[0, 2] = 19.0, 0.2
    assert not torch.allclose(enc(at_mean), out[1:2])
    # the training statistics are buffers a checkpoint carries
    assert {"mean", "std"} <= set(dict(enc.named_buffers()))
    with pytest.raises(DataError, match="expected"):
        enc(x[:, :2])
    with pytest.raises(DataError, match="training statistics"):
        _encoder("tabular", columns=["not_a_column"])


def test_spectrum_encoder_shape_and_masked_pixels_carry_nothing():
    torch.manual_seed(0)
    enc = _encoder("spectrum", channels=[4, 8], kernel=5, embed_dim=10).eval()
    gen = torch.Generator().manual_seed(1)
    flux = torch.randn(3, 64, generator=gen) + 2.0
    ivar = torch.full((3, 64), 10.0)
    mask = torch.zeros(3, 64)
    mask[0, 10:20] = 1.0
    mask[2] = 1.0  # the third object has no spectrum
    x = torch.stack([flux, ivar, mask], dim=1)
    out = enc(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all() and float(enc.flux_scale) == 2.0
    assert enc.present(x).tolist() == [True, True, False]
    y = x.clone()
    y[0, 0, 10:20] = torch.tensor(float("nan"))  # flux under the mask: anything, NaN included
    y[0, 1, 10:20] = 123.0
    y[2, 0] = 50.0
    y[1, 1, 30] = 0.0  # ivar 0 is a bad pixel too: it changes only object 1
    again = enc(y)
    assert torch.equal(again[[0, 2]], out[[0, 2]]) and not torch.allclose(again[1], out[1])
    with pytest.raises(DataError, match="wavelength grid"):
        enc(x[:, :, :32])


def test_first_party_encoders_keep_the_contract():
    from galframe.testing import check_encoder

    tab = torch.tensor([[20.5, math.nan, 0.1], [math.nan] * 3, [19.0, 19.5, 0.3]])
    check_encoder(registry.load("encoder", "tabular"), tab, data=INFO, name="tabular", columns=COLUMNS, embed_dim=8)
    spec = torch.stack([torch.randn(3, 64), torch.full((3, 64), 4.0), torch.zeros(3, 64)], dim=1)
    spec[1, 0] = math.nan  # an absent spectrum: NaN flux under a full mask
    spec[1, 2] = 1.0
    check_encoder(registry.load("encoder", "spectrum"), spec, data=INFO, name="spectrum", channels=[4], embed_dim=8)


@pytest.mark.parametrize("plugin", ["concat", "gated", "attention"])
def test_fusion_leaves_absent_modalities_out(plugin):
    torch.manual_seed(0)
    dims = {"image": 16, "tabular": 8, "spectrum": 6}
    fusion = registry.build("fusion", plugin, {}, dims=dims, embed_dim=16).eval()
    gen = torch.Generator().manual_seed(2)
    emb = {m: torch.randn(4, d, generator=gen) for m, d in dims.items()}
    present = {"image": torch.ones(4, dtype=torch.bool), "tabular": torch.tensor([True, False, True, False]),
               "spectrum": torch.tensor([True, True, False, False])}
    out = fusion(emb, present)
    assert out.shape == (4, 16) and torch.isfinite(out).all()
    other = {m: e.clone() for m, e in emb.items()}
    other["tabular"][[1, 3]] = 100.0
    other["spectrum"][[2, 3]] = -7.0
    assert torch.allclose(fusion(other, present), out, atol=1e-6)
    # a present modality does count, and nothing present at all is still defined
    other["tabular"][0] = 100.0
    assert not torch.allclose(fusion(other, present)[0], out[0])
    nothing = {m: torch.zeros(4, dtype=torch.bool) for m in dims}
    assert torch.isfinite(fusion(emb, nothing)).all()


def test_attention_heads_must_divide_the_width():
    with pytest.raises(ConfigError, match="heads"):
        registry.build("fusion", "attention", {"heads": 3}, dims={"image": 16}, embed_dim=16)


# -- configuration -----------------------------------------------------------------------------------------
def test_image_only_is_the_default_and_builds_no_fusion():
    from galframe.build import model_config
    from galframe.modalities import fields, selected

    cfg = compose_train()
    assert list(cfg.modalities) == ["image"] and cfg.fusion.plugin == "concat" and cfg.encoders.tabular.plugin == "tabular"
    assert fields(_dict(cfg)) == {} and not {"modalities", "encoders", "fusion"} & set(model_config(_dict(cfg), INFO))
    assert selected(_dict(compose_train("modalities=[image,tabular]"))) == ["image", "tabular"]
    with pytest.raises(ConfigError, match="spectrum"):
        selected(_dict(compose_train("modalities=[image,spectra]")))
    with pytest.raises(ConfigError, match="more than once"):
        selected({"modalities": ["image", "image"]})


def _dict(cfg):
    from galframe.build import to_dict

    return to_dict(cfg)


# -- a model of several modalities on the simulator's data -------------------------------------------------------
@pytest.fixture(scope="module")
def mm_data(tmp_path_factory) -> Path:
    """40 simulated sim_multimodal objects (32 px), about half with a spectrum, W1/W2 sometimes missing."""
    from galframe.build import compose_dict
    from galframe.sim import simulate

    data = compose_dict("train", ["data=sim_multimodal", "data.n=40", "data.seed=3", "data.image_size=32"])["data"]
    return simulate(data, tmp_path_factory.mktemp("mm") / "mm", progress=False, workers=1)


def _build(data: Path, *overrides: str):
    from galframe.build import build

    return build(compose_train("data=sim_multimodal", f"data.path={data}", *SMALL, "tasks=[regress]",
                               "tasks.regress.params=[z]", *overrides), progress=False)


def _batch(dm, split: str = "train", n: int = 8) -> dict:
    from galframe.data.datamodule import collate

    ds = dm.dataset(split)
    return collate([ds[i] for i in range(n)])


def test_the_batch_carries_tabular_and_spectrum(mm_data):
    model, dm = _build(mm_data, "modalities=[image,tabular,spectrum]")
    batch = _batch(dm)
    assert batch["tabular"].shape == (8, 10) and batch["tabular"].dtype == torch.float32
    assert batch["spectrum"].shape == (8, 3, 310)
    rows = dm.splits["train"]["spectrum_row"].to_numpy()[:8]
    assert model.modal.encoders["spectrum"].present(batch["spectrum"]).tolist() == (rows >= 0).tolist()
    assert np.isnan(batch["tabular"].numpy()).sum() == dm.splits["train"][dm.fields["tabular"].columns].iloc[:8].isna().to_numpy().sum()
    assert len(dm.info().stats["spectrum_wavelength"]) == 310 and dm.info().stats["spectrum_flux_scale"] > 0


def test_half_the_objects_without_a_spectrum_train_and_predict(mm_data):
    torch.manual_seed(0)
    model, dm = _build(mm_data, "modalities=[image,spectrum]", "fusion=attention")
    batch = _batch(dm)
    spectra = batch["spectrum"]
    good = (spectra[:, 2] == 0).any(dim=1)
    assert good.any()
    absent = torch.arange(8) % 2 == 1  # half the batch lacks the spectrum
    spectra[absent] = torch.stack([torch.full((310,), 5.0), torch.zeros(310), torch.ones(310)])
    spectra.requires_grad_(True)
    here = model.modal.encoders["spectrum"].present(spectra)
    assert not here[absent].any()
    model.train()
    loss = model._losses(model(batch["image"], batch), batch)[0]
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.modal.encoders["spectrum"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert spectra.grad[absent].abs().sum() == 0 and spectra.grad[here].abs().sum() > 0
    # what an absent object's spectrum holds does not matter
    model.eval()
    with torch.no_grad():
        before = model(batch["image"], batch)["regress"]
        spectra.data[absent, 0] = -40.0
        assert torch.equal(model(batch["image"], batch)["regress"]["mean"], before["mean"])
        cols = model.predict_step(batch, 0)
        assert np.isfinite(cols["z_mean"]).all() and len(cols["id"]) == 8
        # images alone (a survey without spectra): the spectrum is absent for every object
        alone = model(batch["image"])["regress"]["mean"]
        none = {**batch, "spectrum": torch.stack([torch.zeros(8, 310), torch.zeros(8, 310), torch.ones(8, 310)], dim=1)}
        assert torch.allclose(alone, model(batch["image"], none)["regress"]["mean"], atol=1e-6)


def test_catalog_only_model_runs_no_backbone(mm_data):
    model, dm = _build(mm_data, "modalities=[tabular]", "fusion=gated")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(g["name"].startswith("heads") for g in model.param_groups())
    batch = _batch(dm)
    out, features = model.forward_features(batch["image"], batch)
    assert features.maps == [] and features.embedding.shape == (8, model.backbone.embed_dim)
    assert torch.isfinite(out["regress"]["mean"]).all()


def test_train_image_and_catalog_end_to_end_and_the_checkpoint_round_trips(mm_data, tmp_path):
    import pandas as pd

    from galframe.checkpoints import load_model
    from galframe.inference import outputs
    from galframe.train import run

    cfg = compose_train("data=sim_multimodal", f"data.path={mm_data}", *SMALL, *SHORT, "tasks=[regress]",
                        "tasks.regress.params=[z]", "modalities=[image,tabular]",
                        "trust.k=3")  # 6 validation objects: the trust reference set of fused embeddings
    metrics = run(cfg, run_dir=tmp_path / "run")
    assert math.isfinite(metrics["test/regress/nll"])
    pred = pd.read_parquet(tmp_path / "run" / "predictions_test.parquet")
    assert np.isfinite(pred["z_mean"]).all() and np.isfinite(pred["ood_score"]).all()
    model, _ = load_model(tmp_path / "run")
    assert list(model.modal.encoders) == ["tabular"] and model.config["modalities"] == ["image", "tabular"]
    _, dm = _build(mm_data, "modalities=[image,tabular]")
    batch = _batch(dm, "test", 4)
    with model.inputs_from(batch):  # the inference path is handed the image only
        got = outputs(model, batch["image"])["regress"]
    expect = pred.set_index("id").loc[batch["id"].numpy(), "z_mean"].to_numpy()
    assert np.allclose(model.tasks["regress"].predict_columns(got)["z_mean"], expect, atol=1e-4)
    # without the catalog the tabular data is absent: another answer, still defined
    alone = model.tasks["regress"].predict_columns(outputs(model, batch["image"])["regress"])["z_mean"]
    assert np.isfinite(alone).all() and not np.allclose(alone, expect, atol=1e-4)
