"""The LVM backbone (Swin-Transformer U-Net): sizes, the core's fine-tuning modes, pretraining, weights."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from galframe.api import DataInfo
from galframe.errors import ConfigError, DataError
from tests.helpers import ROOT, build_model, compose_train

CONF = ROOT / "plugins" / "galframe_lvm" / "conf"  # the LVM plugin ships its backbone configs
BANDS = ("g", "r", "z")


def lvm_options(size: str, **overrides) -> dict:
    options = yaml.safe_load((CONF / "backbone" / f"{size}.yaml").read_text())
    assert options.pop("plugin") == "lvm"
    options.update(overrides)
    return options


def build(size: str = "lvm_tiny", bands=BANDS, **overrides):
    from galframe import registry

    options = lvm_options(size, **overrides)
    info = DataInfo(bands=tuple(bands), image_size=int(options["img_size"]))
    return registry.build("backbone", "lvm", options, data=info)


def compose_pretrain(*overrides: str):
    from galframe.build import compose

    return compose("pretrain", overrides, fresh=True)


# -- architecture ------------------------------------------------------------------
@pytest.mark.parametrize("size", ["lvm_tiny", "lvm_small"])
def test_output_shapes(size) -> None:
    torch.manual_seed(0)
    model = build(size).eval()
    s = model.img_size
    x = torch.randn(2, len(BANDS), s, s)
    with torch.no_grad():
        out = model(x, decode=True)
        plain = model(x)
    n_stages = len(model.arch["depths"])
    assert len(out.maps) == n_stages == len(model.feature_channels) == len(model.feature_strides)
    for fmap, channels, stride in zip(out.maps, model.feature_channels, model.feature_strides):
        assert fmap.shape == (2, channels, s // stride, s // stride)
    assert model.feature_strides[0] == model.arch["patch_size"]
    assert out.embedding.shape == (2, model.embed_dim) and model.embed_dim == model.feature_channels[-1]
    assert out.decoded.shape == x.shape
    assert plain.decoded is None and torch.allclose(plain.embedding, out.embedding)
    # the blocks cover every parameter exactly once, encoder first, decoder last
    blocks = model.blocks()
    ids = [id(p) for b in blocks for p in b.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert len(blocks) == 2 * n_stages - 1
    assert len(model.encoder_blocks()) == n_stages


def test_lvm_base_is_about_100m_parameters_and_runs() -> None:
    model = build("lvm_base").eval()
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 100e6) / 100e6 < 0.05, f"lvm_base has {n / 1e6:.2f}M parameters"
    assert model.arch["img_size"] == 128 and model.embed_dim == 768
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128), decode=True)
    assert [m.shape[-1] for m in out.maps] == [32, 16, 8, 4]
    assert out.decoded.shape == (1, 3, 128, 128)


def test_window_clamped_to_small_stages_and_input_checks() -> None:
    model = build("lvm_tiny", window_size=16)  # bigger than every stage: clamped, still works
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64), decode=True).decoded.shape == (1, 3, 64, 64)
    with pytest.raises(DataError, match=r"built for 64 x 64 px stamps .* got 32 x 32"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(DataError, match=r"expects \(batch, 3 bands"):
        model(torch.zeros(1, 2, 64, 64))
    with pytest.raises(DataError, match=r"built for 128 x 128 px stamps .* the data are 64 px"):
        from galframe_lvm import LVMBackbone

        LVMBackbone(DataInfo(bands=BANDS, image_size=64), **lvm_options("lvm_base"))
    with pytest.raises(ConfigError, match="num_heads"):
        build("lvm_tiny", num_heads=[3, 3, 3])
    with pytest.raises(ConfigError, match="decoder_depths"):
        build("lvm_tiny", decoder_depths=[2])


@pytest.mark.parametrize("residual", [False, True])
def test_mask_hides_the_masked_pixels(residual) -> None:
    torch.manual_seed(0)
    model = build("lvm_tiny", residual=residual).eval()
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:5, 3:6] = True
    x = torch.randn(1, 3, 64, 64)
    y = x.clone()
    y[..., 16:40, 24:48] += 100.0  # change only masked pixels
    with torch.no_grad():
        a = model(x, decode=True, mask=mask).decoded
        b = model(y, decode=True, mask=mask).decoded
    assert torch.allclose(a, b, atol=1e-5)


# -- with the core ------------------------------------------------------------------
def test_frozen_last_n_and_layerwise_lr_decay_with_the_core(tiny_dataset) -> None:
    def make(*overrides):
        return build_model(tiny_dataset, "backbone=lvm_tiny", "tasks=[classify]", *overrides)

    model, dm = make("finetune.mode=frozen")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    groups = model.param_groups()
    assert [g["name"] for g in groups] == ["heads"]
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt = torch.optim.SGD([p for g in groups for p in g["params"]], lr=0.1)
    model.train()
    batch = next(iter(dm.train_dataloader()))
    loss, _ = model._losses(model(batch["image"]), batch)
    loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())

    model, _ = make("finetune.mode=last_n", "finetune.n_blocks=2")
    encoder = model.backbone.encoder_blocks()
    decoder = model.backbone.blocks()[len(encoder):]
    assert decoder, "lvm_tiny has decoder stages"
    assert all(not p.requires_grad for b in encoder[:-2] for p in b.parameters())
    assert all(p.requires_grad for b in encoder[-2:] for p in b.parameters())
    # no task decodes: the decoder gets no gradient and no optimizer state
    assert all(not p.requires_grad for b in decoder for p in b.parameters())

    model, _ = make("finetune.mode=full", "finetune.lr_decay=0.5", "optimizer.lr=0.01")
    groups = model.param_groups()
    lrs = [g["lr"] for g in groups if g["name"].startswith("backbone")]
    assert len(lrs) == len(model.backbone.encoder_blocks())
    assert lrs == pytest.approx([0.01 * 0.5 ** (len(lrs) - 1 - i) for i in range(len(lrs))])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable
    n_decoder = sum(p.numel() for b in model.backbone.blocks()[len(model.backbone.encoder_blocks()):] for p in b.parameters())
    assert trainable == sum(p.numel() for p in model.parameters()) - n_decoder


def test_train_fast_dev_run_with_classify(tiny_dataset, tmp_path) -> None:
    from galframe.train import run

    cfg = compose_train(f"data.path={tiny_dataset}", "backbone=lvm_tiny", "tasks=[classify]", "trainer=fast", "logger=none")
    assert run(cfg, run_dir=tmp_path / "run") == {}


# -- pretraining ----------------------------------------------------------------------
def _pretrain(tiny_dataset, run_dir: Path, *overrides: str, callbacks=()):
    from galframe_lvm.pretrain import run_pretrain

    cfg = compose_pretrain(
        f"data.path={tiny_dataset}",
        "data.batch_size=16",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        "++trainer.log_every_n_steps=1",
        "trainer.progress_bar=false",
        "pretrain.warmup_steps=2",
        "pretrain.n_samples=4",
        "pretrain.heldout_max=32",
        *overrides,
    )
    return run_pretrain(cfg, run_dir, callbacks=callbacks)


def _step_recorder():
    """A callback that records the global step of every training batch."""
    import pytorch_lightning as pl

    class Steps(pl.Callback):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.steps.append(int(trainer.global_step))

    return Steps()


def _train_losses(run_dir: Path) -> dict[int, float]:
    frame = pd.read_csv(next(run_dir.rglob("metrics.csv"))).dropna(subset=["train/loss"])
    return dict(zip(frame["step"].astype(int), frame["train/loss"].astype(float)))


def test_pretrain_writes_everything_and_resumes_at_the_saved_step(tiny_dataset, tmp_path, runs_dir) -> None:
    # a constant learning rate, so that a 1-epoch run followed by a resumed 2nd epoch equals a 2-epoch run
    constant_lr = ("pretrain.warmup_steps=0", "pretrain.min_lr_ratio=1.0")
    first = tmp_path / "first"
    metrics = _pretrain(tiny_dataset, first, "trainer.max_epochs=1", "logger=wandb", *constant_lr)
    for key in ("heldout/l1", "heldout/l1_identity", "heldout/l1_zero", "heldout/l1_masked", "heldout/l1_visible"):
        assert 0.0 <= metrics[key] < 100.0, key
    assert metrics["heldout/l1_zero"] > 0 and metrics["global_step"] == 2
    assert json.loads((first / "metrics.json").read_text())["heldout/l1"] == pytest.approx(metrics["heldout/l1"])
    assert (first / "samples" / "epoch_001.png").stat().st_size > 5000
    assert (first / "samples.png").stat().st_size > 5000
    ckpt = first / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 2
    meta = json.loads((first / "weights" / "lvm.json").read_text())
    assert meta["bands"] == list(BANDS) and meta["image_size"] == 64 and meta["architecture"]["embed_dim"] == 32
    assert meta["scaling"]["name"] == "asinh" and meta["pretrain"]["global_step"] == 2
    wandb_runs = list((first / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and list((wandb_runs[0] / "files" / "media" / "images").rglob("*.png"))

    # resumed: continues at step 2 with the same losses as an uninterrupted run
    steps = _step_recorder()
    resumed = tmp_path / "resumed"
    metrics = _pretrain(
        tiny_dataset, resumed, "trainer.max_epochs=2", "logger=csv", f"resume={first}", *constant_lr, callbacks=[steps]
    )
    assert steps.steps == [2, 3] and metrics["global_step"] == 4
    straight = tmp_path / "straight"
    _pretrain(tiny_dataset, straight, "trainer.max_epochs=2", "logger=csv", *constant_lr)
    reference, after = _train_losses(straight), _train_losses(resumed)
    assert sorted(after) == [2, 3]
    for step in after:
        assert after[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-6)

    # the pretrained weights start a downstream model
    model, _ = build_model(tiny_dataset, "backbone=lvm_tiny", f"backbone.weights={first}")
    assert model.backbone.weights_meta["pretrain"]["target"] == "clean"


def test_pretrain_config_errors(tiny_dataset, tmp_path) -> None:
    with pytest.raises(ConfigError, match="pretrain.mask.patch_size=6 must"):
        _pretrain(tiny_dataset, tmp_path / "a", "trainer=fast", "logger=none", "pretrain.mask.patch_size=6")
    with pytest.raises(ConfigError, match="no decoder"):
        _pretrain(tiny_dataset, tmp_path / "b", "trainer=fast", "logger=none", "backbone=resnet18")


def test_corruptions() -> None:
    from galframe_lvm import corrupt

    gen = torch.Generator().manual_seed(0)
    mask = corrupt.random_mask(4, 8, 0.5, gen)
    assert mask.shape == (4, 8, 8) and (mask.flatten(1).sum(1) == 32).all()
    image = torch.zeros(2, 3, 33, 33)
    image[:, :, 16, 16] = 1.0
    out = corrupt.blur(image, {"prob": 1.0, "fwhm": [1.0, 1.0], "profile": "gaussian"}, 0.262, gen)
    assert out.sum().item() == pytest.approx(6.0, rel=1e-4) and out.max() < 0.2
    moffat = corrupt.blur(image, {"prob": 1.0, "fwhm": [1.0, 1.0], "profile": "moffat"}, 0.262, gen)
    assert moffat[0, 0, 16, 28] > out[0, 0, 16, 28]  # wider wings than a Gaussian of the same FWHM
    assert torch.equal(corrupt.blur(image, {"prob": 0.0}, 0.262, gen), image)
    sigma = torch.tensor([[1.0, 2.0, 3.0]] * 2)
    noisy = corrupt.add_noise(torch.zeros(2, 3, 64, 64), sigma, {"prob": 1.0, "factor": [1.0, 1.0]}, gen)
    assert noisy.std(dim=(0, 2, 3)).tolist() == pytest.approx([1.0, 2.0, 3.0], rel=0.05)


# -- weights --------------------------------------------------------------------------
def _same_outputs(a, b) -> bool:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a.eval(), b.eval()
    with torch.no_grad():
        fa, fb = a(x, decode=True), b(x, decode=True)
    return torch.equal(fa.embedding, fb.embedding) and torch.equal(fa.decoded, fb.decoded)


def test_weights_round_trip_and_zoo(tmp_path, monkeypatch) -> None:
    from galframe_lvm.weights import add_to_zoo, sha256_of

    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(3)
    model = build("lvm_tiny")
    file = model.save_weights(tmp_path / "w" / "mine", scaling={"name": "asinh"})
    assert file.name == "mine.safetensors" and file.is_file()
    meta = json.loads(file.with_suffix(".json").read_text())
    assert meta["sha256"] == sha256_of(file) and meta["bands"] == list(BANDS) and meta["galframe_version"]

    torch.manual_seed(4)
    fresh = build("lvm_tiny")
    assert not _same_outputs(model, fresh)
    for spec in (file, file.with_suffix(".json"), file.parent):
        assert _same_outputs(model, build("lvm_tiny", weights=str(spec)))

    # through a zoo entry in the user's cache
    entry = add_to_zoo(file, "galaxy-tiny", "test weights")
    index = tmp_path / "cache" / "zoo" / "index.json"
    assert json.loads(index.read_text()) == [entry]
    loaded = build("lvm_tiny", weights="galaxy-tiny")
    assert _same_outputs(model, loaded) and loaded.weights_meta["zoo_entry"] == "galaxy-tiny"

    # a URL-only entry: never downloaded, the user is told where to put the file
    entries = json.loads(index.read_text()) + [
        {"name": "remote", "file": "remote.safetensors", "sha256": "0" * 64, "bands": list(BANDS),
         "description": "", "url": "https://example.org/remote.safetensors"}
    ]
    index.write_text(json.dumps(entries))
    with pytest.raises(DataError, match=r"download https://example.org/remote.safetensors .* save it as .*zoo/remote.safetensors"):
        build("lvm_tiny", weights="remote")
    with pytest.raises(DataError, match="neither a file nor a zoo entry. Did you mean 'galaxy-tiny'"):
        build("lvm_tiny", weights="galaxy-tiny2")
    with pytest.raises(DataError, match="weights file not found"):
        build("lvm_tiny", weights=str(tmp_path / "missing.safetensors"))


def test_weights_for_other_bands_architectures_or_checksums_are_refused(tmp_path, monkeypatch) -> None:
    import shutil

    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "cache"))
    file = build("lvm_tiny").save_weights(tmp_path / "grz")
    with pytest.raises(DataError, match=r"grz.safetensors: these weights were made for bands \['g', 'r', 'z'\], but the model's data has bands \['g', 'r', 'i'\]"):
        build("lvm_tiny", bands=("g", "r", "i"), weights=str(file))
    with pytest.raises(DataError, match=r"made for bands \['g', 'r', 'z'\].*\['g', 'r'\]"):
        build("lvm_tiny", bands=("g", "r"), weights=str(file))
    with pytest.raises(DataError, match=r"another architecture: embed_dim=32 \(model: 48\)"):
        build("lvm_tiny", embed_dim=48, num_heads=[3, 6, 12], weights=str(file))

    # a wrong checksum in the sidecar, and a file changed after it was written
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(file, bad / "w.safetensors")
    meta = json.loads(file.with_suffix(".json").read_text())
    (bad / "w.json").write_text(json.dumps({**meta, "sha256": "f" * 64}))
    with pytest.raises(DataError, match=r"w.safetensors: sha256 is [0-9a-f]{64}, but its sidecar says f{64}"):
        build("lvm_tiny", weights=str(bad / "w.safetensors"))
    (bad / "w.json").write_text(json.dumps(meta))
    data = bytearray((bad / "w.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "w.safetensors").write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256 is .* corrupt"):
        build("lvm_tiny", weights=str(bad / "w.safetensors"))

    # a zoo entry whose checksum does not match its file
    zoo = tmp_path / "cache" / "zoo"
    zoo.mkdir(parents=True)
    shutil.copy(file, zoo / "z.safetensors")
    (zoo / "index.json").write_text(json.dumps([{"name": "z", "file": "z.safetensors", "sha256": "a" * 64, "bands": ["g", "r", "z"]}]))
    with pytest.raises(DataError, match=r"but the zoo entry says a{64}"):
        build("lvm_tiny", weights="z")


def test_pretrain_registers_in_the_zoo_and_reuses_it(tiny_dataset, tmp_path, monkeypatch) -> None:
    from galframe.train import run

    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "cache"))
    metrics = _pretrain(tiny_dataset, tmp_path / "p1", "trainer.max_epochs=1", "logger=none", "pretrain.zoo_name=my-lvm")
    assert metrics["global_step"] == 2
    index = json.loads((tmp_path / "cache" / "zoo" / "index.json").read_text())
    assert [e["name"] for e in index] == ["my-lvm"] and (tmp_path / "cache" / "zoo" / "my-lvm.safetensors").is_file()
    # reuse=true finds it and trains nothing
    again = _pretrain(tiny_dataset, tmp_path / "p2", "trainer.max_epochs=1", "logger=none", "pretrain.zoo_name=my-lvm", "pretrain.reuse=true")
    assert again == {} and not (tmp_path / "p2" / "checkpoints").exists()
    # and a downstream run starts from it by name
    cfg = compose_train(f"data.path={tiny_dataset}", "backbone=lvm_tiny", "backbone.weights=my-lvm", "trainer=fast", "logger=none")
    assert run(cfg, run_dir=tmp_path / "ft") == {}


def test_weights_from_64px_stamps_load_into_a_128px_model(tmp_path, monkeypatch) -> None:
    """Fields for detection are bigger than the pretraining stamps: the stage whose window was clamped
    at 64 px gets its relative position bias interpolated; everything else is copied as is."""
    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(5)
    small = build("lvm_tiny")
    file = small.save_weights(tmp_path / "w64")
    big = build("lvm_tiny", img_size=128, weights=str(file))
    a, b = small.net.state_dict(), big.net.state_dict()
    tables = [k for k in a if k.endswith("relative_position_bias_table") and a[k].shape != b[k].shape]
    assert tables and all(b[k].shape[0] > a[k].shape[0] for k in tables)
    same = [k for k in a if k not in tables and a[k].shape == b[k].shape]
    assert all(torch.equal(a[k], b[k]) for k in same)
    # the interpolated table keeps the bias of the central offset (0, 0) close to the original's
    k = tables[0]
    n_a, n_b = int(a[k].shape[0] ** 0.5), int(b[k].shape[0] ** 0.5)
    centre_a = a[k].reshape(n_a, n_a, -1)[n_a // 2, n_a // 2]
    centre_b = b[k].reshape(n_b, n_b, -1)[n_b // 2, n_b // 2]
    assert torch.allclose(centre_a, centre_b, atol=0.5 * float(a[k].abs().max()))
    assert big(torch.randn(1, 3, 128, 128)).maps[-1].shape[-1] == 8
