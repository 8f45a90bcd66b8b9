"""Simulated Galaxy Zoo volunteers: decision-tree votes that depend on what is visible.

The tree is Galaxy Zoo DECaLS's (DR5 workflow), with its hyphenated question and answer names, so
the catalog columns ``<question>_<answer>`` read like the GZ DECaLS volunteer catalogs.  ``asked_if``
names the ``<question>_<answer>`` column that leads to a question (``None``: asked of everyone).

Each simulated volunteer walks the tree once.  What they answer depends on the galaxy's *true*
features only through what the image shows (``Seen``, measured by the generator on the PSF-convolved
noise-free image): the signal-to-noise of each feature against the sky noise after seeing, the
observed (PSF-rounded) axis ratio, the bulge prominence after blurring.  A feature is seen by a
volunteer with probability ``1 / (1 + (snr_half / (s_v * snr)) ** steepness)``, where ``s_v`` is the
volunteer's own sensitivity (log-normal): faint or unresolved arms, bars and tidal features are
missed, and the volunteer falls back to "smooth" / "no" answers, as real volunteers do.
Continuous quantities (axis ratio, pitch angle, bulge size, bar strength) are perceived with noise
and cut at fixed points, so galaxies near a boundary split the vote.  A small ``lapse`` rate of
random answers stands in for mis-clicks.

``galaxy10_label(counts)`` turns the counts into a Galaxy10 DECaLS class: see its docstring.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

#: Galaxy10 DECaLS classes, in its label order (0..9)
GALAXY10 = (
    "disturbed",
    "merging",
    "round_smooth",
    "in_between_round_smooth",
    "cigar_shaped_smooth",
    "barred_spiral",
    "unbarred_tight_spiral",
    "unbarred_loose_spiral",
    "edge_on_without_bulge",
    "edge_on_with_bulge",
)

SCHEMA: dict[str, Any] = {
    "questions": [
        {"name": "smooth-or-featured", "answers": ["smooth", "featured-or-disk", "artifact"], "asked_if": None},
        {"name": "disk-edge-on", "answers": ["yes", "no"], "asked_if": "smooth-or-featured_featured-or-disk"},
        {"name": "has-spiral-arms", "answers": ["yes", "no"], "asked_if": "disk-edge-on_no"},
        {"name": "bar", "answers": ["strong", "weak", "no"], "asked_if": "disk-edge-on_no"},
        {"name": "bulge-size", "answers": ["dominant", "large", "moderate", "small", "none"], "asked_if": "disk-edge-on_no"},
        {"name": "how-rounded", "answers": ["round", "in-between", "cigar-shaped"], "asked_if": "smooth-or-featured_smooth"},
        {"name": "edge-on-bulge", "answers": ["boxy", "none", "rounded"], "asked_if": "disk-edge-on_yes"},
        {"name": "spiral-winding", "answers": ["tight", "medium", "loose"], "asked_if": "has-spiral-arms_yes"},
        {"name": "spiral-arm-count", "answers": ["1", "2", "3", "4", "more-than-4", "cant-tell"], "asked_if": "has-spiral-arms_yes"},
        {"name": "merging", "answers": ["none", "minor-disturbance", "major-disturbance", "merger"], "asked_if": None},
    ]
}

#: volunteer model settings (``sim.volunteers`` of the galaxy10 generator); see ``simulate_votes``
DEFAULTS: dict[str, Any] = {
    "n": 40,  # volunteers per galaxy (mean)
    "spread": 4,  # +- uniform spread of that number
    "lapse": 0.05,  # probability that an answer is random
    "sensitivity_scatter": 0.45,  # log-normal sigma of a volunteer's sensitivity
    "steepness": 2.5,  # of the seen-probability curve in log S/N
    # matched-filter S/N of a feature (after PSF, against the sky) seen by half the volunteers
    "snr_half": {"arms": 20.0, "bar": 15.0, "tidal": 25.0, "companion": 12.0},
    # perception noise: axis ratio, pitch angle (deg), bulge-to-total, bar strength
    "q_noise": 0.08,
    "pitch_noise": 5.0,
    "bt_noise": 0.1,
    "bar_noise": 0.15,
    # cut points volunteers use
    "cuts": {
        "round": 0.75,  # perceived q above: round
        "cigar": 0.42,  # perceived q below: cigar-shaped (smooth)
        "edge_on": 0.36,  # perceived q below: edge-on (featured)
        "tight": 15.0,  # perceived pitch (deg) below: tight
        "loose": 23.0,  # perceived pitch above: loose
        "bar_strong": 0.6,  # perceived bar strength above: strong (else weak)
    },
}


def schema() -> dict[str, Any]:
    """A copy of the vote schema (for ``DatasetWriter(votes=...)``)."""
    return copy.deepcopy(SCHEMA)


def columns() -> list[str]:
    return [f"{q['name']}_{a}" for q in SCHEMA["questions"] for a in q["answers"]]


def _seen(rng: np.random.Generator, snr: float, half: float, sens: np.ndarray, steep: float) -> np.ndarray:
    """Per volunteer: does this volunteer see a feature of matched-filter S/N ``snr``?"""
    if not (snr > 0) or not math.isfinite(snr):
        return np.zeros(len(sens), dtype=bool)
    p = 1.0 / (1.0 + (half / (sens * snr)) ** steep)
    return rng.random(len(sens)) < p


def visibility(snr: float, half: float, steepness: float = 2.5) -> float:
    """Fraction of typical (sensitivity 1) volunteers who see a feature of matched-filter S/N ``snr``."""
    if not (snr > 0):
        return 0.0
    return float(1.0 / (1.0 + (half / snr) ** steepness))


def simulate_votes(rng: np.random.Generator, seen: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, int]:
    """Vote counts ``{"<question>_<answer>": count}`` of one galaxy.

    ``seen`` (measured by the generator):

    * ``snr_total``: matched-filter S/N of the galaxy (r band);
    * ``snr_arms``, ``snr_bar``: S/N of the non-axisymmetric part of the arms / bar image after the PSF;
    * ``snr_tidal``: S/N of the tidal light and offset light after the PSF;
    * ``snr_companion``: S/N of a companion galaxy, ``companion_resolved`` in [0, 1] (separation vs seeing);
    * ``q_obs``: observed axis ratio (PSF-convolved, noise-free), ``bt_obs``: bulge prominence after blurring,
      ``disk_frac``: light not in the spheroid;
    * the true ``pitch`` (deg), ``n_arms``, ``bar_strength``, ``disturbance`` (tidal + asymmetric light
      fraction), ``companion_ratio`` (flux ratio, 0 if none), ``boxy`` (whether an edge-on bulge is boxy);
    * optionally a projected (unrelated) neighbour: ``snr_neighbour``, ``neighbour_ratio`` (flux ratio)
      and ``neighbour_confusion`` (probability that a volunteer who sees it takes it for a partner).
    """
    crowd = _perceive(rng, seen, cfg)
    counts = {c: 0 for c in columns()}
    smooth, feat = _ask_smooth_or_featured(crowd, seen, counts)
    edge, face = _ask_disk_edge_on(crowd, feat, counts)
    spiral = _ask_face_on_disk(crowd, face, counts)
    _ask_how_rounded(crowd, smooth, counts)
    _ask_edge_on_bulge(crowd, seen, edge, counts)
    _ask_spiral_arms(crowd, seen, spiral, counts)
    _ask_merging(crowd, seen, counts)
    counts["n_volunteers"] = crowd.n
    return counts


@dataclass
class _Crowd:
    """The volunteers of one galaxy: what each perceives (one value per volunteer)."""

    rng: np.random.Generator
    cfg: Mapping[str, Any]
    n: int
    sens: np.ndarray
    arms: np.ndarray
    bar: np.ndarray
    tidal: np.ndarray
    comp: np.ndarray
    q_v: np.ndarray
    bt_v: np.ndarray
    disk_v: np.ndarray
    arm_vis: float
    pitch_v: np.ndarray
    bar_v: np.ndarray

    def cut(self, key: str) -> float:
        return float(self.cfg["cuts"][key])

    def lapsed(self, choice: np.ndarray, k: int) -> np.ndarray:
        """Replace a ``lapse`` fraction of answers by uniformly random ones (k answers)."""
        mask = self.rng.random(len(choice)) < float(self.cfg["lapse"])
        choice = choice.copy()
        choice[mask] = self.rng.integers(0, k, size=int(mask.sum()))
        return choice


def _perceive(rng: np.random.Generator, seen: Mapping[str, Any], cfg: Mapping[str, Any]) -> _Crowd:
    """How many volunteers, and which features each sees and how it reads the shape."""
    n_mean, spread = int(cfg["n"]), int(cfg["spread"])
    n = int(rng.integers(max(1, n_mean - spread), n_mean + spread + 1))
    steep = float(cfg["steepness"])
    half = cfg["snr_half"]
    sens = np.exp(rng.normal(0.0, float(cfg["sensitivity_scatter"]), size=n))

    arms = _seen(rng, float(seen["snr_arms"]), float(half["arms"]), sens, steep)
    bar = _seen(rng, float(seen["snr_bar"]), float(half["bar"]), sens, steep)
    tidal = _seen(rng, float(seen["snr_tidal"]), float(half["tidal"]), sens, steep)
    comp = _seen(rng, float(seen["snr_companion"]), float(half["companion"]), sens, steep)
    comp &= rng.random(n) < float(seen["companion_resolved"])
    # the overall image quality: noisier images give noisier perception
    blur = 1.0 + 3.0 / (1.0 + float(seen["snr_total"]) / 30.0)
    q_v = float(seen["q_obs"]) + rng.normal(0.0, float(cfg["q_noise"]) * blur, size=n)
    bt_v = float(seen["bt_obs"]) + rng.normal(0.0, float(cfg["bt_noise"]) * blur, size=n)
    disk_v = float(seen["disk_frac"]) + rng.normal(0.0, 0.12, size=n)
    # arms seen at low S/N give a poor read of their winding
    arm_vis = visibility(float(seen["snr_arms"]), float(half["arms"]), steep)
    pitch_v = float(seen["pitch"]) + rng.normal(0.0, float(cfg["pitch_noise"]) * (1.0 + 1.5 * (1.0 - arm_vis)), size=n)
    bar_v = float(seen["bar_strength"]) + rng.normal(0.0, float(cfg["bar_noise"]), size=n)
    return _Crowd(rng, cfg, n, sens, arms, bar, tidal, comp, q_v, bt_v, disk_v, arm_vis, pitch_v, bar_v)


def _ask_smooth_or_featured(v: _Crowd, seen: Mapping[str, Any], counts: dict) -> tuple[np.ndarray, np.ndarray]:
    """1. smooth-or-featured: 0 smooth, 1 featured-or-disk, 2 artifact; returns (smooth, featured) per volunteer."""
    rng, n = v.rng, v.n
    thin_disk = (v.q_v < v.cut("edge_on") + 0.05) & (v.disk_v > 0.45)
    featured = v.arms | v.bar | thin_disk | (v.tidal & (rng.random(n) < 0.35))
    p_art = 0.005 + 0.08 / (1.0 + (float(seen["snr_total"]) / 10.0) ** 2)
    a1 = np.where(featured, 1, 0)
    a1 = np.where(rng.random(n) < p_art, 2, a1)
    a1 = v.lapsed(a1, 3)
    _count(counts, "smooth-or-featured", ["smooth", "featured-or-disk", "artifact"], a1)
    return a1 == 0, a1 == 1


def _ask_disk_edge_on(v: _Crowd, feat: np.ndarray, counts: dict) -> tuple[np.ndarray, np.ndarray]:
    """2. disk-edge-on (featured): 0 yes, 1 no; returns (edge-on, face-on) per volunteer."""
    a2 = np.where(v.q_v < v.cut("edge_on"), 0, 1)
    a2 = v.lapsed(a2, 2)
    _count(counts, "disk-edge-on", ["yes", "no"], a2[feat])
    return feat & (a2 == 0), feat & (a2 == 1)


def _ask_face_on_disk(v: _Crowd, face: np.ndarray, counts: dict) -> np.ndarray:
    """3. has-spiral-arms, 4. bar, 5. bulge-size (face-on featured); returns who saw spiral arms."""
    rng, n = v.rng, v.n
    # 3. has-spiral-arms: 0 yes, 1 no
    a3 = np.where(v.arms | (rng.random(n) < 0.08), 0, 1)
    a3 = v.lapsed(a3, 2)
    _count(counts, "has-spiral-arms", ["yes", "no"], a3[face])
    spiral = face & (a3 == 0)

    # 4. bar: 0 strong, 1 weak, 2 no
    strong = v.bar_v > v.cut("bar_strong")
    a4 = np.where(v.bar, np.where(strong, 0, 1), np.where(rng.random(n) < 0.05, 1, 2))
    a4 = v.lapsed(a4, 3)
    _count(counts, "bar", ["strong", "weak", "no"], a4[face])

    # 5. bulge-size: 0 dominant, 1 large, 2 moderate, 3 small, 4 none
    a5 = 4 - np.digitize(v.bt_v, [0.04, 0.15, 0.35, 0.6])
    a5 = v.lapsed(a5, 5)
    _count(counts, "bulge-size", ["dominant", "large", "moderate", "small", "none"], a5[face])
    return spiral


def _ask_how_rounded(v: _Crowd, smooth: np.ndarray, counts: dict) -> None:
    """6. how-rounded (smooth): 0 round, 1 in-between, 2 cigar-shaped."""
    a6 = np.where(v.q_v > v.cut("round"), 0, np.where(v.q_v < v.cut("cigar"), 2, 1))
    a6 = v.lapsed(a6, 3)
    _count(counts, "how-rounded", ["round", "in-between", "cigar-shaped"], a6[smooth])


def _ask_edge_on_bulge(v: _Crowd, seen: Mapping[str, Any], edge: np.ndarray, counts: dict) -> None:
    """7. edge-on-bulge (edge-on): 0 boxy, 1 none, 2 rounded."""
    has_bulge = v.bt_v > 0.1
    boxy = v.rng.random(v.n) < (0.6 if seen.get("boxy") else 0.1)
    a7 = np.where(has_bulge, np.where(boxy, 0, 2), 1)
    a7 = v.lapsed(a7, 3)
    _count(counts, "edge-on-bulge", ["boxy", "none", "rounded"], a7[edge])


def _ask_spiral_arms(v: _Crowd, seen: Mapping[str, Any], spiral: np.ndarray, counts: dict) -> None:
    """8. spiral-winding, 9. spiral-arm-count (those who saw arms)."""
    rng, n = v.rng, v.n
    # 8. spiral-winding: 0 tight, 1 medium, 2 loose
    a8 = np.where(v.pitch_v < v.cut("tight"), 0, np.where(v.pitch_v > v.cut("loose"), 2, 1))
    a8 = v.lapsed(a8, 3)
    _count(counts, "spiral-winding", ["tight", "medium", "loose"], a8[spiral])

    # 9. spiral-arm-count: 0 "1", 1 "2", 2 "3", 3 "4", 4 more-than-4, 5 cant-tell
    true_m = int(seen.get("n_arms") or 2)
    m_v = true_m + rng.choice([-1, 0, 0, 0, 0, 1], size=n)
    a9 = np.clip(m_v, 1, 5) - 1
    a9 = np.where(rng.random(n) < 0.1 + 0.5 * (1.0 - v.arm_vis), 5, a9)
    a9 = v.lapsed(a9, 6)
    _count(counts, "spiral-arm-count", ["1", "2", "3", "4", "more-than-4", "cant-tell"], a9[spiral])


def _ask_merging(v: _Crowd, seen: Mapping[str, Any], counts: dict) -> None:
    """10. merging (everyone): 0 none, 1 minor-disturbance, 2 major-disturbance, 3 merger."""
    rng, n = v.rng, v.n
    ratio_v = float(seen["companion_ratio"]) * np.exp(rng.normal(0.0, 0.3, size=n))
    dist_v = float(seen["disturbance"]) * np.exp(rng.normal(0.0, 0.4, size=n))
    a10 = np.zeros(n, dtype=np.int64)
    a10 = np.where(v.tidal & (dist_v > 0.06), np.where(dist_v > 0.18, 2, 1), a10)
    a10 = np.where(v.comp, np.where(ratio_v > 0.2, 3, 2), a10)
    # a bright projected neighbour close enough to pass for a partner fools some of those who notice it
    if float(seen.get("neighbour_confusion", 0.0)) > 0:
        fooled = _seen(rng, float(seen["snr_neighbour"]), float(v.cfg["snr_half"]["companion"]), v.sens, float(v.cfg["steepness"]))
        fooled &= rng.random(n) < float(seen["neighbour_confusion"])
        ratio_nb = float(seen["neighbour_ratio"]) * np.exp(rng.normal(0.0, 0.3, size=n))
        a10 = np.where(fooled & (a10 == 0) & (ratio_nb > 0.25), 3, a10)
    a10 = v.lapsed(a10, 4)
    _count(counts, "merging", ["none", "minor-disturbance", "major-disturbance", "merger"], a10)


def _count(counts: dict[str, int], question: str, answers: list[str], choice: np.ndarray) -> None:
    tally = np.bincount(np.asarray(choice, dtype=np.int64), minlength=len(answers))
    for a, c in zip(answers, tally):
        counts[f"{question}_{a}"] = int(c)


def _fractions(counts: Mapping[str, float], question: str, answers: list[str]) -> np.ndarray:
    k = np.array([float(counts.get(f"{question}_{a}", 0) or 0) for a in answers])
    total = k.sum()
    return k / total if total > 0 else np.full(len(answers), 1.0 / len(answers))


def class_scores(counts: Mapping[str, float]) -> np.ndarray:
    """The ten Galaxy10 class scores of a galaxy's vote counts (in ``GALAXY10`` order).

    Each score is the product of the vote fractions along the class's path through the tree (the
    fraction of volunteers whose answers describe that class): with ``f(q_a)`` the fraction of
    question ``q``'s voters who answered ``a`` and ``m = f(merging_none)``,

    * disturbed = f(minor-disturbance) + f(major-disturbance); merging = f(merger);
    * round / in-between / cigar = m f(smooth) f(how-rounded_<answer>);
    * edge-on without / with bulge = m f(featured) f(edge-on_yes) f(edge-on-bulge_none) / (f(boxy) + f(rounded));
    * barred spiral = m f(featured) f(edge-on_no) (f(bar_strong) + f(bar_weak));
    * unbarred tight / loose = m f(featured) f(edge-on_no) f(bar_no) (f(tight) + f(medium)/2) / (f(loose) + f(medium)/2).

    A question nobody reached counts as an even split.  The scores sum to 1 less the artifact share.
    """
    sf = _fractions(counts, "smooth-or-featured", ["smooth", "featured-or-disk", "artifact"])
    eo = _fractions(counts, "disk-edge-on", ["yes", "no"])
    bar = _fractions(counts, "bar", ["strong", "weak", "no"])
    rnd = _fractions(counts, "how-rounded", ["round", "in-between", "cigar-shaped"])
    eob = _fractions(counts, "edge-on-bulge", ["boxy", "none", "rounded"])
    wind = _fractions(counts, "spiral-winding", ["tight", "medium", "loose"])
    mrg = _fractions(counts, "merging", ["none", "minor-disturbance", "major-disturbance", "merger"])
    m = mrg[0]
    face = m * sf[1] * eo[1]
    unbarred = face * bar[2]
    return np.array(
        [
            mrg[1] + mrg[2],
            mrg[3],
            m * sf[0] * rnd[0],
            m * sf[0] * rnd[1],
            m * sf[0] * rnd[2],
            face * (bar[0] + bar[1]),
            unbarred * (wind[0] + 0.5 * wind[1]),
            unbarred * (wind[2] + 0.5 * wind[1]),
            m * sf[1] * eo[0] * eob[1],
            m * sf[1] * eo[0] * (eob[0] + eob[2]),
        ]
    )


def galaxy10_label(counts: Mapping[str, float], threshold: float = 0.55) -> tuple[int, float, bool]:
    """(class index, agreement, confident) of a galaxy's vote counts.

    The class is the one with the largest ``class_scores`` (the majority-vote class: the class most
    volunteers' answers describe); ``agreement`` is its score.  Galaxy10 keeps only galaxies whose
    top class passes a vote-fraction threshold (55% in the original Galaxy10): here every galaxy keeps
    its class and ``confident`` (agreement >= ``threshold``) marks those Galaxy10 would have kept.
    """
    scores = class_scores(counts)
    k = int(np.argmax(scores))
    return k, float(scores[k]), bool(scores[k] >= threshold)
