"""Pretext objectives (restore, distill, vicreg): losses that fall, collapse monitors, sky-respecting views, the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

from galframe.api import DataInfo
from galframe.data.scaling import build_scaling
from galframe.errors import ConfigError
from galframe.model import build_backbone

BANDS = ("g", "r", "z")
TINY = {"plugin": "lvm", "img_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1, 1], "num_heads": [1, 2, 4]}


def _parts():
    info = DataInfo(bands=BANDS, image_size=32)
    backbone = build_backbone(TINY, info)
    scaling = build_scaling({"name": "asinh", "softening": {"g": 0.003, "r": 0.0065, "z": 0.017}}, list(BANDS))
    return info, backbone, scaling


def _galaxies(n: int = 16, size: int = 32, seed: int = 0) -> dict:
    """Elliptical blobs of random size, flux, orientation and colour plus noise (flux units)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij")
    imgs = []
    for _ in range(n):
        r = 1.5 + 4 * torch.rand(1, generator=g)
        q = 0.3 + 0.7 * torch.rand(1, generator=g)
        a = math.pi * torch.rand(1, generator=g)
        u = xx * torch.cos(a) + yy * torch.sin(a)
        v = (-xx * torch.sin(a) + yy * torch.cos(a)) / q
        prof = torch.exp(-torch.sqrt(u**2 + v**2) / r)
        colour = 0.05 + 0.3 * torch.rand(3, 1, 1, generator=g)
        imgs.append(colour * prof)
    image = torch.stack(imgs)
    sigma = torch.full((n, 3), 0.004)
    return {"image": image + sigma[:, :, None, None] * torch.randn(image.shape, generator=g), "noise_sigma": sigma, "clean": image}


def _train_steps(objective, params, batch, steps: int, lr: float = 3e-3) -> list[float]:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        gen = torch.Generator().manual_seed(step % 2)  # two fixed draws of the views
        loss, logs = objective.loss(batch, gen, step / steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        objective.after_step(step / steps)
        losses.append(float(loss))
    return losses


def test_restore_loss_falls_on_a_tiny_batch() -> None:
    from galframe_lvm.pretext import MaskedRestoration

    torch.manual_seed(0)
    info, backbone, scaling = _parts()
    objective = MaskedRestoration(backbone, info, scaling, target="clean")
    assert MaskedRestoration.requires_for({"target": "clean"}) == ("clean",)
    assert MaskedRestoration.requires_for({"target": "input"}) == ()
    losses = _train_steps(objective, list(backbone.parameters()), _galaxies(), 20)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_distill_loss_falls_on_a_tiny_batch_and_trains_only_the_student() -> None:
    from galframe_lvm.pretext import SelfDistillation

    torch.manual_seed(0)
    info, backbone, scaling = _parts()
    # a fixed teacher (momentum 1): the student must learn to match it, so the loss falls
    objective = SelfDistillation(backbone, info, scaling, out_dim=64, hidden_dim=64, bottleneck_dim=32,
                                 mask={"ratio": 0.25}, momentum=[1.0, 1.0], teacher_temp=[0.07, 0.07])
    assert SelfDistillation.requires_for({}) == ()  # the observed image alone: no clean image, no label
    trainable = [p for p in objective.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in objective.teacher.parameters())
    assert all(not any(p is q for q in objective.teacher.parameters()) for p in backbone.parameters())
    before = [p.detach().clone() for p in objective.teacher["backbone"].parameters()]
    losses = _train_steps(objective, list(backbone.parameters()) + trainable, _galaxies(), 25, lr=1e-3)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05
    assert all(torch.equal(a, b) for a, b in zip(before, objective.teacher["backbone"].parameters()))
    # with momentum < 1 the teacher moves towards the student (EMA), without being optimised
    objective.settings["momentum"] = [0.5, 0.5]
    objective.after_step(0.5)
    moved = [float((a - b).abs().max()) for a, b in zip(before, objective.teacher["backbone"].parameters())]
    assert max(moved) > 0
    student = dict(backbone.named_parameters())
    for name, p in objective.teacher["backbone"].named_parameters():
        expected = 0.5 * dict(zip([n for n, _ in backbone.named_parameters()], before))[name] + 0.5 * student[name].detach()
        assert torch.allclose(p, expected, atol=1e-6), name


def test_vicreg_loss_falls_and_its_variance_term_keeps_the_embedding_spread() -> None:
    from galframe_lvm.pretext import VarianceCovariance, effective_rank

    batch = _galaxies(32)
    spread = {}
    for name, weights in {"vicreg": {}, "invariance only": {"variance": 0.0, "covariance": 0.0}}.items():
        torch.manual_seed(0)
        info, backbone, scaling = _parts()
        objective = VarianceCovariance(backbone, info, scaling, hidden_dim=64, out_dim=64, mask={"ratio": 0.25}, **weights)
        losses = _train_steps(objective, list(backbone.parameters()) + list(objective.head.parameters()), batch, 30, lr=1e-3)
        assert all(math.isfinite(v) for v in losses)
        assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, name
        objective.head.eval()
        z = backbone(scaling(batch["image"])).embedding
        spread[name] = float(objective.head(z).std(0).mean())
        values = objective.monitors(batch, torch.Generator().manual_seed(0))
        assert float(values["effective_rank"]) == pytest.approx(float(effective_rank(z)), rel=1e-4)
    assert VarianceCovariance.requires_for({}) == ()  # the observed image alone
    # agreement alone shrinks the embedding towards a point; the variance term holds every dimension apart
    assert spread["vicreg"] > 1.5 * spread["invariance only"], spread
    info, backbone, scaling = _parts()
    with pytest.raises(ConfigError, match="no option 'lambda'"):
        VarianceCovariance(backbone, info, scaling, **{"lambda": 1.0})
    with pytest.raises(ConfigError, match="num_layers"):
        VarianceCovariance(backbone, info, scaling, num_layers=0)


def test_collapse_monitors_on_a_constant_encoder() -> None:
    from galframe_lvm.pretext import effective_rank, teacher_entropy

    constant = torch.ones(64, 32) * 0.3
    assert float(effective_rank(constant)) == pytest.approx(1.0)
    assert float(effective_rank(torch.randn(256, 16, generator=torch.Generator().manual_seed(0)))) > 12
    # one prototype for everything: per-object and batch-mean entropies both ~0
    peaked = torch.zeros(64, 100)
    peaked[:, 3] = 50.0
    per, mean = teacher_entropy(peaked, 0.04)
    assert float(per) < 1e-3 and float(mean) < 1e-3
    # uniform over prototypes: both log K
    per, mean = teacher_entropy(torch.zeros(64, 100), 0.04)
    assert float(per) == pytest.approx(math.log(100), rel=1e-4) and float(mean) == pytest.approx(math.log(100), rel=1e-4)

    # the objective's own monitors on an encoder whose output ignores its input
    from galframe_lvm.pretext import SelfDistillation

    info, backbone, scaling = _parts()
    objective = SelfDistillation(backbone, info, scaling, out_dim=32, hidden_dim=32, bottleneck_dim=16, mask={"ratio": 0.0})
    for net in (backbone, objective.teacher["backbone"]):
        for p in net.parameters():
            torch.nn.init.zeros_(p)
    values = objective.monitors(_galaxies(), torch.Generator().manual_seed(0))
    assert float(values["effective_rank"]) == pytest.approx(1.0)
    assert float(values["student_effective_rank"]) == pytest.approx(1.0)
    assert float(values["teacher_entropy"]) == pytest.approx(float(values["teacher_mean_entropy"]), abs=1e-5)


def test_sky_views_keep_flux_and_colour() -> None:
    from galframe_lvm.pretext import VIEW_DEFAULTS, sky_views

    batch = _galaxies(8, 32)
    cfg = {**VIEW_DEFAULTS, "noise": {"prob": 0.0}, "gain": 0.0, "blur": {"prob": 0.0}, "scale": [1.0, 1.0]}
    view = sky_views(batch["clean"], batch["noise_sigma"], cfg, 0.262, torch.Generator().manual_seed(1))
    assert view.shape == batch["clean"].shape
    flux_in, flux_out = batch["clean"].sum((2, 3)), view.sum((2, 3))
    # rotations, flips and shifts move light around; they neither make nor lose it, nor change colour
    assert torch.allclose(flux_out, flux_in, rtol=0.05)
    assert torch.allclose(flux_out / flux_out.sum(1, keepdim=True), flux_in / flux_in.sum(1, keepdim=True), atol=0.01)
    # small per-band gains: colours change by a few per cent at most
    gained = sky_views(batch["clean"], None, {**cfg, "dihedral": False, "rotate_prob": 0.0, "shift": 0, "gain": 0.05},
                       0.262, torch.Generator().manual_seed(2))
    ratio = gained.sum((2, 3)) / flux_in
    assert (ratio - 1).abs().max() < 0.3 and (ratio - 1).abs().max() > 0


def test_distill_config_errors() -> None:
    from galframe_lvm.pretext import SelfDistillation

    info, backbone, scaling = _parts()
    with pytest.raises(ConfigError, match="no option 'temperature'"):
        SelfDistillation(backbone, info, scaling, temperature=0.1)
    with pytest.raises(ConfigError, match="last stage's stride"):
        SelfDistillation(backbone, info, scaling, mask={"ratio": 0.3, "patch_size": 4})


def test_pretrain_with_distill_only_reads_no_clean_images(tiny_dataset, tmp_path) -> None:
    """distill alone: label-free and clean-free; the teacher's weights are exported, kNN monitored."""
    from tests.test_lvm import _pretrain

    metrics = _pretrain(tiny_dataset, tmp_path / "d", "trainer.max_epochs=1", "logger=none",
                        "pretrain.objectives.restore.weight=0", "pretrain.objectives.distill.weight=1",
                        "pretrain.objectives.distill.out_dim=64", "pretrain.objectives.distill.symmetric=false")
    assert "heldout/l1" not in metrics and 0.0 <= metrics["knn/accuracy"] <= 1.0
    meta = json.loads((tmp_path / "d" / "weights" / "lvm.json").read_text())
    assert list(meta["pretrain"]["objectives"]) == ["distill"]
    history = json.loads((tmp_path / "d" / "knn.json").read_text())
    assert history and history[-1]["epoch"] == 1
    with pytest.raises(ConfigError, match="every objective weight 0"):
        _pretrain(tiny_dataset, tmp_path / "e", "trainer=fast", "logger=none", "pretrain.objectives.restore.weight=0")


def test_shipped_weights_load_and_their_sha256_matches(tmp_path, monkeypatch) -> None:
    """lvm_tiny-g10 ships inside the package: it loads with no user zoo, and its sidecar names how it was made."""
    from pathlib import Path

    import galframe_lvm
    from galframe_lvm.weights import resolve, sha256_of, zoo_entries

    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "empty-cache"))  # no user zoo
    entry = zoo_entries()["lvm_tiny-g10"]
    file, meta, zoo = resolve("lvm_tiny-g10")
    assert Path(file).parent == Path(galframe_lvm.__file__).with_name("zoo")
    assert sha256_of(file) == entry["sha256"] == meta["sha256"]
    assert Path(file).stat().st_size < 8e6  # a few MB
    pre = meta["pretrain"]
    assert pre["command"].startswith("galframe pretrain") and pre["wall_time_s"] > 0 and pre["machine"]
    assert meta["bands"] == list(BANDS)
    # the weights are the ones scripts/pretrain_lvm_tiny_g10.sh makes: its overrides are the recorded command
    import shlex

    script = (Path(__file__).resolve().parents[1] / "scripts" / "pretrain_lvm_tiny_g10.sh").read_text()
    words = shlex.split(script[script.index("galframe pretrain"):].replace("\\\n", " ").split('"$@"')[0])
    assert pre["command"].split() == ["galframe", "pretrain", *words[2:]]
    used = [o.split(".")[2] for o in words if o.startswith("pretrain.objectives.") and o.endswith(".weight=1")]
    assert list(pre["objectives"]) == used
    info = DataInfo(bands=BANDS, image_size=64)
    backbone = build_backbone({"plugin": "lvm", "img_size": 64, "patch_size": 4, "embed_dim": 32, "depths": [2, 2, 2],
                               "num_heads": [2, 4, 8], "weights": "lvm_tiny-g10"}, info)
    assert backbone.weights_meta["zoo_entry"] == "lvm_tiny-g10"


# -- pretraining is galframe train's machinery with pretexts and no labels ------------------------------
def _pretrain_build(tiny_dataset, *overrides: str):
    from galframe.build import build, compose, to_dict
    from galframe_lvm.pretrain import pretrain_settings, training_config

    cfg = to_dict(compose("pretrain", [f"data.path={tiny_dataset}", *overrides], fresh=True))
    return build(training_config(cfg, pretrain_settings(cfg["pretrain"])), progress=False)


def test_pretrain_builds_a_galaxy_model_of_pretexts_and_no_task(tiny_dataset) -> None:
    from galframe.model import GalaxyModel
    from galframe_lvm.pretext import MaskedRestoration, SelfDistillation

    model, dm = _pretrain_build(tiny_dataset, "pretrain.objectives.distill.weight=0.5", "pretrain.objectives.distill.out_dim=64")
    assert type(model) is GalaxyModel and len(model.tasks) == 0
    assert isinstance(model.pretexts["restore"], MaskedRestoration) and isinstance(model.pretexts["distill"], SelfDistillation)
    assert model.pretext_weights == {"restore": 1.0, "distill": 0.5}
    assert "clean" in dm.requires  # the restoration objective reads the noise-free images; no label column is read
    # the pretraining schedule and weight decay: step-counted warm-up; norms, biases, the mask token and the
    # position-bias tables are not decayed; the EMA teacher is not trained by the optimiser
    assert model.config["scheduler"] == {"name": "cosine", "warmup_steps": 200, "min_lr_ratio": 0.01}
    groups = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = [names[id(p)] for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]]
    decayed = [names[id(p)] for g in groups if "weight_decay" not in g for p in g["params"]]
    assert any(n.endswith("mask_token") for n in exempt) and any(n.endswith("relative_position_bias_table") for n in exempt)
    assert not any(n.endswith(("mask_token", "relative_position_bias_table", ".bias")) for n in decayed) and decayed
    trained = {id(p) for g in groups for p in g["params"]}
    teacher = list(model.pretexts["distill"].teacher.parameters())
    assert teacher and not any(id(p) in trained for p in teacher)
    assert all(id(p) in trained for p in model.pretexts["distill"].head.parameters() if p.requires_grad)


def test_a_task_and_a_pretext_train_together(tiny_dataset) -> None:
    import pytorch_lightning as pl

    from galframe.build import build, compose, to_dict

    cfg = to_dict(compose("train", [f"data.path={tiny_dataset}", "tasks=[classify]", "data.batch_size=16"], fresh=True))
    cfg["pretexts"] = {"restore": {"plugin": "restore", "weight": 0.5, "mask": {"ratio": 0.5, "patch_size": 8}}}
    model, dm = build(cfg, progress=False)
    assert list(model.tasks) == ["classify"] and list(model.pretexts) == ["restore"] and "clean" in dm.requires
    trainer = pl.Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    logged = trainer.logged_metrics
    total = float(logged["train/loss"])
    parts = float(logged["train/classify/loss"]) + 0.5 * float(logged["train/restore/loss"])
    assert total == pytest.approx(parts, rel=1e-5)
    assert "val/restore/loss" in logged and "val/classify/loss" in logged


def test_pretraining_reaches_nothing_private_of_the_trainer() -> None:
    import ast
    import inspect

    import galframe_lvm.pretrain as pretrain

    tree = ast.parse(inspect.getsource(pretrain))
    imported = [(node.module, a.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names]
    assert not [x for x in imported if x[0] and x[0].startswith("galframe.") and x[1].startswith("_")], imported
    # the model, its backbone, scaling and data module come from galframe.build, not rebuilt here
    rebuilt = ("GalaxyModel", "build_backbone", "build_scaling", "GalaxyDataModule", "augment_batch", "data_info_from")
    assert not [x for x in imported if x[1] in rebuilt], imported
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and "LightningModule" in ast.unparse(n)]
    # and it runs no trainer of its own: galframe train's loop does, by the plugin's recipe
    assert "Trainer(" not in inspect.getsource(pretrain)


def test_pretrain_is_train_run_by_the_backbone_plugins_recipe(tiny_dataset, tmp_path, monkeypatch) -> None:
    """`galframe pretrain` = galframe.train.run with ``Backbone.pretrain()``; a recipe's hooks shape the loop."""
    import galframe.train as train
    from galframe import registry
    from galframe_lvm.pretrain import PretrainRecipe
    from tests.test_lvm import compose_pretrain

    assert isinstance(registry.load("backbone", "lvm").pretrain(), PretrainRecipe)
    assert registry.load("backbone", "timm").pretrain is None
    seen: list = []

    class Recording(PretrainRecipe):
        def finish(self, trainer, model, dm, cfg, run_dir, checkpoint):
            seen.append((self.job, sorted(model.pretexts), trainer.global_step))
            return {"steps": float(trainer.global_step), **super().finish(trainer, model, dm, cfg, run_dir, checkpoint)}

    monkeypatch.setattr(registry.load("backbone", "lvm"), "pretrain", staticmethod(Recording))
    cfg = compose_pretrain(f"data.path={tiny_dataset}", "data.batch_size=16", "trainer=fast", "logger=none",
                           "trainer.progress_bar=false", "pretrain.n_samples=2", "pretrain.heldout_max=16")
    metrics = train.pretrain(cfg, tmp_path / "p")
    assert seen == [("pretrain", ["restore"], 1)] and metrics["steps"] == 1.0 and "heldout/l1" in metrics
    assert (tmp_path / "p" / "weights" / "lvm.safetensors").is_file()

    class Nothing(train.Recipe):  # configure -> None: nothing is built or trained
        def build(self, *a):
            raise AssertionError("built")

        def configure(self, cfg):
            return None

    assert train.run(cfg, tmp_path / "q", recipe=Nothing()) == {}
    with pytest.raises(ConfigError, match="no self-supervised pretraining. Backbones that do: lvm"):
        train.pretrain(compose_pretrain(f"data.path={tiny_dataset}", "backbone=resnet18"), tmp_path / "r")
