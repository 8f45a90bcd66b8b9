"""The galaxy10 simulator: Galaxy10 DECaLS-like classes, simulated volunteer votes, survey statistics."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pd = pytest.importorskip("pandas")
pytest.importorskip("galsim")

from galframe.data.datamodule import GalaxyDataModule  # noqa: E402
from galframe.data.format import vote_columns  # noqa: E402
from galframe.errors import ConfigError  # noqa: E402
from galframe.sim import cache_key, galaxy10, resolve_config, simulate, votes  # noqa: E402

from .helpers import compose_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _load_statistics():
    spec = importlib.util.spec_from_file_location("sim_statistics", ROOT / "benchmarks" / "sim_statistics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_cfg(*overrides: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_train("data=sim_galaxy10", *overrides).data, resolve=True)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALFRAME_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """240 objects of the default benchmark configuration, through the real simulate() path."""
    cfg = data_cfg("data.n=240", "data.seed=11")
    return simulate(cfg, tmp_path_factory.mktemp("g10") / "ds", workers=2, progress=False)


@pytest.fixture(scope="module")
def catalog(dataset) -> "pd.DataFrame":
    return pd.read_parquet(dataset / "catalog.parquet")


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def test_config_matches_sim_desi_layout():
    g10, desi = data_cfg(), compose_train("data=sim_desi").data
    assert set(g10) == set(desi)
    assert g10["sim"]["generator"] == "galaxy10" and g10["image_size"] == 64 and g10["bands"] == ["g", "r", "z"]
    run = resolve_config(g10)
    assert run["sim"]["classes"] == list(votes.GALAXY10)
    # the yaml spells out the generator defaults: spelling them out changes nothing
    assert cache_key(g10) == cache_key({**g10, "sim": {"generator": "galaxy10"}})
    assert cache_key(g10) != cache_key({**g10, "sim": {"generator": "galaxy10", "contrast_floor": 0.04}})


@pytest.mark.parametrize(
    "sim, message",
    [
        ({"volunteer": {"n": 3}}, "sim.volunteer"),
        ({"volunteers": {"snr_half": {"arm": 3}}}, "sim.volunteers.snr_half.arm"),
        ({"volunteers": {"n": 0}}, "sim.volunteers.n"),
        ({"class_fractions": [0.5, 0.5]}, "sim.class_fractions"),
        ({"classes": ["smooth", "disk"]}, "sim.classes"),
        ({"truth": {"cigar_q": 0.8}}, "sim.truth.cigar_q"),
        ({"mag_r": {"main": [18, 17]}}, "sim.mag_r.main"),
        ({"features": {"arm_contrast": 0.3}}, "sim.features.arm_contrast"),
        ({"depth": {"g": 24.7, "r": 23.9}}, "sim.depth"),
    ],
)
def test_config_errors_name_the_key(sim, message):
    cfg = data_cfg()
    cfg["sim"] = {"generator": "galaxy10", **sim}
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        resolve_config(cfg)


# ---------------------------------------------------------------------------------------------
# the dataset: format, votes, labels
# ---------------------------------------------------------------------------------------------
def test_dataset_format_and_truth_columns(dataset, catalog):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["classes"] == list(votes.GALAXY10) and manifest["has_clean"] is True
    assert manifest["votes"] == votes.schema()
    assert manifest["votes"]["questions"][1] == {"name": "disk-edge-on", "answers": ["yes", "no"],
                                                 "asked_if": "smooth-or-featured_featured-or-disk"}
    cols = vote_columns(manifest["votes"])
    assert cols[:3] == ["smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk", "smooth-or-featured_artifact"]
    assert set(cols) <= set(catalog.columns) and all(catalog[c].dtype.kind == "i" for c in cols)
    truth = ["true_class", "true_class_name", "bar_strength", "bar_length", "n_arms", "pitch_angle", "arm_contrast",
             "bulge_to_total", "axis_ratio", "asymmetry", "has_tails", "has_shells", "has_offset_light", "has_companion",
             "sersic_n", "bar_sersic_n", "half_light_radius", "inclination", "label_agreement", "n_volunteers",
             "has_neighbour", "neighbour_mag_r", "has_star", "star_mag_r"]
    truth += [f"{k}_{b}" for k in ("mag", "psf_fwhm", "depth", "sky_sigma", "snr") for b in "grz"]
    assert set(truth) <= set(catalog.columns)
    assert catalog["class"].between(0, 9).all() and catalog["true_class"].between(0, 9).all()
    assert (catalog["class_name"] == [votes.GALAXY10[k] for k in catalog["class"]]).all()
    # every band's conditions vary per object (distributions, not one value)
    for b in "grz":
        assert catalog[f"psf_fwhm_{b}"].std() > 0.05 and catalog[f"depth_{b}"].std() > 0.1
    with h5py.File(dataset / "shard-00000.h5", "r") as h5:
        images, clean = h5["images"][:], h5["clean"][:]
    assert images.shape[1:] == clean.shape[1:] == (3, 64, 64) and np.isfinite(images).all()
    # the noise-free image holds the catalogued r flux (compact, single objects)
    n = len(images)
    sub = catalog.iloc[:n]
    alone = (sub["has_companion"] == 0) & (sub["has_neighbour"] == 0) & (sub["has_star"] == 0)
    compact = ((sub["half_light_radius"] < 1.2) & alone & (sub["tidal_fraction"] == 0)).to_numpy()
    ratio = clean[compact, 1].sum(axis=(1, 2)) / 10 ** ((22.5 - sub["mag_r"].to_numpy()[compact]) / 2.5)
    assert compact.sum() >= 10 and np.median(ratio) == pytest.approx(1.0, abs=0.02)


def test_unrelated_neighbours_and_stars(dataset, catalog):
    """Some stamps hold a projected neighbour or a star: in the images, not in the galaxy's truth."""
    assert 0.1 < catalog["has_neighbour"].mean() < 0.45 and 0.05 < catalog["has_star"].mean() < 0.3
    with_nb = catalog[catalog["has_neighbour"] == 1]
    assert (with_nb["neighbour_mag_r"] > with_nb["mag_r"]).all() and catalog.loc[catalog["has_neighbour"] == 0, "neighbour_mag_r"].isna().all()
    with h5py.File(dataset / "shard-00000.h5", "r") as h5:
        clean = h5["clean"][:]
    sub = catalog.iloc[: len(clean)]
    flux_r = 10 ** ((22.5 - sub["mag_r"].to_numpy()) / 2.5)
    star_r = np.nan_to_num(10 ** ((22.5 - sub["star_mag_r"].to_numpy()) / 2.5))
    simple = ((sub["half_light_radius"] < 1.2) & (sub["has_companion"] == 0) & (sub["has_neighbour"] == 0)
              & (sub["tidal_fraction"] == 0) & (sub["has_star"] == 1)).to_numpy()
    assert simple.sum() >= 3
    # the noise-free scene = the galaxy's catalogued flux + the star's
    total = clean[simple, 1].sum(axis=(1, 2))
    assert np.allclose(total / (flux_r[simple] + star_r[simple]), 1.0, atol=0.03)


def test_votes_follow_the_decision_tree(catalog):
    schema = votes.schema()
    n = catalog["n_volunteers"].to_numpy()
    assert n.min() >= 36 and n.max() <= 44
    for q in schema["questions"]:
        total = sum(catalog[f"{q['name']}_{a}"] for a in q["answers"]).to_numpy()
        if q["asked_if"] is None:
            assert (total == n).all(), q["name"]
        else:
            # only volunteers whose path reaches a question answer it: counts shrink down the tree
            assert (total == catalog[q["asked_if"]].to_numpy()).all(), q["name"]
    assert (catalog["spiral-winding_tight"] + catalog["spiral-winding_medium"] + catalog["spiral-winding_loose"]
            <= catalog["smooth-or-featured_featured-or-disk"]).all()
    # volunteers disagree: not every galaxy gets a unanimous first answer
    first = catalog[["smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk"]].max(axis=1) / n
    assert (first < 0.9).mean() > 0.2


def test_class_is_the_majority_vote_class(catalog):
    for rec in catalog.to_dict("records"):
        k, agreement, confident = votes.galaxy10_label(rec, 0.55)
        assert k == rec["class"] and agreement == pytest.approx(rec["label_agreement"])
        assert confident == bool(rec["label_confident"])
    # labels are not the truth (volunteers miss faint features, split at boundaries), but track it
    assert 0.35 < (catalog["class"] == catalog["true_class"]).mean() < 0.9
    assert catalog["class"].nunique() >= 8


def test_class_scores_by_hand():
    # 40 volunteers: 30 featured, all face-on, no bar, winding 20 tight / 10 medium
    counts = {c: 0 for c in votes.columns()}
    counts.update({"smooth-or-featured_smooth": 10, "smooth-or-featured_featured-or-disk": 30, "disk-edge-on_no": 30,
                   "bar_no": 30, "spiral-winding_tight": 20, "spiral-winding_medium": 10, "how-rounded_round": 10,
                   "merging_none": 40})
    scores = votes.class_scores(counts)
    assert scores[6] == pytest.approx(0.75 * (20 + 5) / 30) and scores[2] == pytest.approx(0.25)
    assert votes.galaxy10_label(counts) == (6, pytest.approx(0.625), True)
    counts.update({"merging_none": 10, "merging_merger": 30})
    assert votes.galaxy10_label(counts)[0] == 1


# ---------------------------------------------------------------------------------------------
# physics: continuous parameters, boundaries inside distributions, visibility
# ---------------------------------------------------------------------------------------------
def test_class_boundaries_fall_inside_continuous_distributions():
    spec = resolve_config(data_cfg())["sim"]
    rng = np.random.default_rng(0)
    pitch = {pop: np.array([galaxy10._draw_params(rng, pop, spec)["pitch_angle"] for _ in range(400)])
             for pop in (galaxy10.TIGHT, galaxy10.LOOSE)}
    cut = spec["truth"]["tight_pitch"]
    assert (pitch[galaxy10.TIGHT] >= cut).mean() > 0.05 and (pitch[galaxy10.LOOSE] < cut).mean() > 0.05
    q = {pop: np.array([galaxy10._draw_params(rng, pop, spec)["q_spheroid"] for _ in range(400)])
         for pop in (galaxy10.ROUND, galaxy10.IN_BETWEEN)}
    assert (q[galaxy10.ROUND] < spec["truth"]["round_q"]).mean() > 0.03
    assert (q[galaxy10.IN_BETWEEN] >= spec["truth"]["round_q"]).mean() > 0.03
    bars = np.array([galaxy10._draw_params(rng, galaxy10.LOOSE, spec)["bar_strength"] for _ in range(400)])
    assert 0.02 < (bars >= spec["truth"]["bar_strength"]).mean() < 0.3 and (bars == 0).mean() > 0.4


def test_true_class_thresholds():
    truth = resolve_config(data_cfg())["sim"]["truth"]
    disk = dict(companion_ratio=0.0, asymmetry=0.0, tidal_fraction=0.0, bt=0.2, inclination=40.0, bar_strength=0.0,
                arm_contrast=0.3, pitch_angle=18.0, axis_ratio=0.7)
    assert galaxy10.true_class(disk, truth) == galaxy10.TIGHT
    assert galaxy10.true_class({**disk, "pitch_angle": 20.0}, truth) == galaxy10.LOOSE
    assert galaxy10.true_class({**disk, "bar_strength": 0.5}, truth) == galaxy10.BARRED
    assert galaxy10.true_class({**disk, "inclination": 85.0}, truth) == galaxy10.EDGE_BULGE
    assert galaxy10.true_class({**disk, "inclination": 85.0, "bt": 0.02}, truth) == galaxy10.EDGE_NO_BULGE
    assert galaxy10.true_class({**disk, "arm_contrast": 0.05}, truth) == galaxy10.IN_BETWEEN
    assert galaxy10.true_class({**disk, "asymmetry": 0.3}, truth) == galaxy10.DISTURBED
    assert galaxy10.true_class({**disk, "companion_ratio": 0.5}, truth) == galaxy10.MERGING
    assert galaxy10.true_class({**disk, "companion_ratio": 0.1}, truth) == galaxy10.DISTURBED


def test_features_fade_into_smooth_votes_when_faint_or_blurred():
    """The same spirals bright vs faint, sharp vs blurred: volunteers stop seeing arms and vote smooth."""
    def cfg(mag: str, fwhm: str = "{g:1.3,r:1.2,z:1.1}", faint: bool = False):
        where = "faint" if faint else "main"
        return resolve_config(data_cfg(f"data.sim.mag_r.faint_fraction={int(faint)}", f"data.sim.mag_r.{where}={mag}",
                                       f"data.sim.psf.fwhm={fwhm}", "data.sim.psf.scatter=0"))

    runs = {"bright": cfg("[15.0,15.3]"), "faint": cfg("[19.7,20.0]", faint=True),
            "sharp": cfg("[16.5,16.8]", "{g:0.9,r:0.85,z:0.8}"), "blurred": cfg("[16.5,16.8]", "{g:2.2,r:2.0,z:1.9}")}
    spirals = [i for i in range(80) if galaxy10.object_population(runs["bright"], i) in (galaxy10.TIGHT, galaxy10.LOOSE)][:8]
    assert len(spirals) == 8
    featured, arms = {}, {}
    for name, run in runs.items():
        rows = [galaxy10.simulate_object(run, i)[2] for i in spirals]
        # same objects (population, structure) whatever the magnitude and seeing
        assert [r["population"] for r in rows] == [galaxy10.object_population(runs["bright"], i) for i in spirals]
        featured[name] = np.mean([r["smooth-or-featured_featured-or-disk"] / r["n_volunteers"] for r in rows])
        arms[name] = np.median([r["snr_arms"] for r in rows])
    assert featured["bright"] > featured["faint"] + 0.3 and arms["bright"] > 3 * arms["faint"]
    assert featured["sharp"] > featured["blurred"] + 0.05 and arms["sharp"] > 1.5 * arms["blurred"]


def test_simulated_votes_depend_on_visibility():
    seen = dict(snr_total=500.0, snr_arms=200.0, snr_bar=0.0, snr_tidal=0.0, snr_companion=0.0, companion_resolved=0.0,
                q_obs=0.85, bt_obs=0.2, disk_frac=0.8, pitch=30.0, n_arms=2, bar_strength=0.0, disturbance=0.0,
                companion_ratio=0.0, boxy=False)
    cfg = resolve_config(data_cfg())["sim"]["volunteers"]
    clear = votes.simulate_votes(np.random.default_rng(1), seen, cfg)
    faint = votes.simulate_votes(np.random.default_rng(1), {**seen, "snr_arms": 3.0, "snr_total": 40.0}, cfg)
    assert votes.galaxy10_label(clear)[0] == 7  # unbarred loose spiral
    assert votes.galaxy10_label(faint)[0] in (2, 3)  # round / in-between smooth
    assert clear["has-spiral-arms_yes"] > 25 and faint["smooth-or-featured_smooth"] > 25


def test_objects_are_reproducible():
    cfg = resolve_config(data_cfg())
    a, b = galaxy10.simulate_object(cfg, 5), galaxy10.simulate_object(cfg, 5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    other = galaxy10.simulate_object(resolve_config({**data_cfg(), "seed": 1}), 5)
    assert not np.array_equal(a[0], other[0])


def test_feature_visibility_columns(catalog):
    no_arms = catalog["n_arms"] == 0
    assert (catalog.loc[no_arms, "snr_arms"] == 0).all() and (catalog.loc[~no_arms, "snr_arms"] > 0).all()
    assert (catalog.loc[catalog["bar_strength"] > 0, "snr_bar"] > 0).all()
    # brighter galaxies show their arms at higher S/N
    spirals = catalog[~no_arms]
    assert spirals["snr_arms"].corr(-spirals["mag_r"], method="spearman") > 0.3


# ---------------------------------------------------------------------------------------------
# the statistics check and the training path
# ---------------------------------------------------------------------------------------------
def test_statistics_check_passes_and_can_fail(dataset):
    stats = _load_statistics()
    cat, images = stats.load(dataset)
    rows = stats.compare(cat, images)
    names = {r["name"] for r in rows}
    assert {"psf_fwhm_r_median", "depth_z_median", "sky_sigma_g_median", "hlr_mag_slope", "gr_smooth",
            "snr_ratio_r", "noise_ratio_z", "mag_r_count_slope"} <= names
    failing = [(r["name"], r["value"], r["reference"]) for r in rows if not r["ok"]]
    assert not failing, failing
    # a wrong survey (0.5 mag shallower z) fails the depth check
    shallow = cat.copy()
    shallow["depth_z"] -= 0.5
    assert not {r["name"]: r["ok"] for r in stats.compare(shallow)}["depth_z_median"]


def test_datamodule_and_training_run(dataset, runs_dir):
    cfg = data_cfg(f"data.path={dataset}", "data.batch_size=16")
    dm = GalaxyDataModule(cfg, requires=("label", "votes"), progress=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["votes"].shape == (16, len(votes.columns())) and batch["label"].max() < 10
    assert float(batch["votes"][:, 0:3].sum(dim=1).min()) >= 36  # the first question: every volunteer

    from galframe.train import run

    train = compose_train("data=sim_galaxy10", f"data.path={dataset}", "backbone=resnet18", "trainer=fast", "logger=none")
    run(train, run_dir=runs_dir / "g10")
