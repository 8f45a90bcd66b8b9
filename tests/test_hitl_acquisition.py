"""Acquisition functions on hand-made model outputs with known answers, and pool scoring with real models."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from galframe.errors import ConfigError, PluginError

from galframe_hitl.acquisition import (
    ClassBalancedAcquisition,
    PoolOutputs,
    build_acquisition,
    k_center_greedy,
)

LN2, LN3 = np.log(2.0), np.log(3.0)


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pool(probs=None, **kw) -> PoolOutputs:
    if probs is not None:
        n = len(probs)
    elif kw.get("embeddings") is not None:
        n = len(kw["embeddings"])
    else:
        n = np.shape(kw.get("mc_probs", kw.get("ensemble_probs")))[1]
    return PoolOutputs(ids=np.arange(100, 100 + n), probs=None if probs is None else np.asarray(probs, float), **kw)


def select(spec, p: PoolOutputs, k: int) -> list[int]:
    return build_acquisition(spec).select(p, k, rng()).tolist()


def test_entropy_and_margin_rank_the_most_uncertain_first() -> None:
    probs = [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [0.8, 0.1, 0.1]]
    assert select("entropy", pool(probs), 2) == [1, 2]
    assert build_acquisition("entropy").score(pool(probs), rng())[1] == pytest.approx(LN3)
    margins = [[0.5, 0.49, 0.01], [0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.34, 0.33, 0.33]]
    assert select("margin", pool(margins), 3) == [0, 3, 2]  # gaps 0.01, 0.01 (pool order), 0.1


def test_bald_prefers_disagreeing_dropout_samples_over_plain_ambiguity() -> None:
    # object 0: every pass says 50/50 (ambiguous, no model uncertainty); object 1: passes disagree confidently
    mc = np.array(
        [
            [[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]],
            [[0.5, 0.5], [0.0, 1.0], [0.9, 0.1]],
        ]
    )
    p = pool(mc_probs=mc)
    assert select("bald", p, 1) == [1]
    assert build_acquisition("bald").score(p, rng()) == pytest.approx([0.0, LN2, 0.0], abs=1e-9)
    assert select("entropy", p, 1) == [0]  # same mean probabilities: entropy cannot tell them apart


def test_ensemble_disagreement_both_measures() -> None:
    ens = np.array(
        [
            [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1]],
            [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1]],
            [[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]],
        ]
    )  # (members, objects, classes)
    p = pool(ensemble_probs=ens)
    assert select({"plugin": "ensemble", "measure": "vote_entropy"}, p, 3) == [1, 2, 0]
    votes = build_acquisition({"plugin": "ensemble", "measure": "vote_entropy"}).score(p, rng())
    assert votes == pytest.approx([0.0, LN3, -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))])
    assert select({"plugin": "ensemble", "measure": "kl"}, p, 3) == [1, 2, 0]
    assert build_acquisition("ensemble").score(p, rng())[0] == pytest.approx(0.0, abs=1e-9)


def test_class_balanced_gives_rare_predicted_classes_their_quota() -> None:
    # 8 objects predicted class 0 (the most uncertain ones), 3 class 1, 1 class 2 (rare)
    probs = np.array(
        [[0.40 + 0.01 * i, 0.30 - 0.01 * i, 0.30] for i in range(8)]
        + [[0.10, 0.80, 0.10], [0.05, 0.90, 0.05], [0.15, 0.70, 0.15]]
        + [[0.01, 0.01, 0.98]]
    )
    p = pool(probs)
    assert set(select("entropy", p, 6)) <= set(range(8))  # plain uncertainty asks only about class 0
    chosen = select({"plugin": "class_balanced", "inner": "entropy"}, p, 6)
    # quotas 3 / 2 / 1; best of each class first, interleaved
    assert chosen == [0, 10, 11, 1, 8, 2]
    # a class with too few candidates passes its slots on
    assert ClassBalancedAcquisition().allocate(5, np.array([10, 1, 0]), None).tolist() == [4, 1, 0]
    inverse = ClassBalancedAcquisition(quota="inverse_labeled")
    assert inverse.allocate(2, np.array([9, 9, 9]), np.array([10, 0, 0])).tolist() == [0, 1, 1]
    assert inverse.allocate(6, np.array([9, 9, 9]), np.array([10, 0, 0])).tolist() == [1, 3, 2]


def test_k_center_greedy_and_diversity_with_prefilter() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    assert k_center_greedy(x, centres=np.array([[0.0]]), k=3).tolist() == [4, 2, 1]  # ties: lowest index
    assert k_center_greedy(x, centres=np.array([[0.0]]), k=2).tolist() == [4, 2]
    assert k_center_greedy(x, centres=None, k=3, first=0).tolist() == [0, 4, 2]
    emb = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    p = pool(embeddings=emb, labeled_embeddings=np.array([[1.0, 0.0]]))
    p.probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.99, 0.01], [0.5, 0.5]])
    # cosine geometry: (-1, 0) is furthest from the labelled (1, 0), then (0, 1)
    assert select({"plugin": "diversity"}, p, 2) == [3, 2]
    # keeping the 3 most uncertain first (0, 1, 4), the most distant of those from (1, 0) is (0.7, 0.7)
    assert select({"plugin": "diversity", "prefilter": "entropy", "prefilter_factor": 1.5}, p, 2) == [4, 1]


def test_mix_random_and_requirements() -> None:
    probs = [[0.9, 0.1, 0.0], [0.4, 0.35, 0.25], [0.5, 0.49, 0.01]]
    # entropy ranks 1 > 2 > 0; margin ranks 2 > 1 > 0: equal weights tie 1 and 2 -> pool order
    assert select({"plugin": "mix", "components": {"entropy": 0.5, "margin": 0.5}}, pool(probs), 3) == [1, 2, 0]
    assert select({"plugin": "mix", "components": [{"plugin": "margin", "weight": 2.0}, {"plugin": "entropy"}]},
                  pool(probs), 1) == [2]
    a = select("random", pool(probs * 4), 5)
    assert a == select("random", pool(probs * 4), 5) and len(set(a)) == 5  # seeded, distinct
    assert len(select("random", pool(probs), 10)) == 3  # never more than the pool
    assert build_acquisition({"plugin": "class_balanced", "inner": "bald"}).requirements() == {"probs", "mc_probs"}
    assert build_acquisition({"plugin": "diversity", "prefilter": "ensemble"}).requirements() == {
        "embeddings", "ensemble_probs"}


def test_acquisition_config_errors_are_clear() -> None:
    with pytest.raises(PluginError, match="Unknown acquisition plugin 'entropi'. Did you mean 'entropy'"):
        build_acquisition("entropi")
    with pytest.raises(ConfigError, match="has no option 'innr'. Did you mean 'inner'"):
        build_acquisition({"plugin": "class_balanced", "innr": "margin"})
    with pytest.raises(ConfigError, match="has no option 'foo'"):
        build_acquisition({"plugin": "entropy", "foo": 1})
    with pytest.raises(ConfigError, match="mix combines scores"):
        build_acquisition({"plugin": "mix", "components": {"class_balanced": 1.0}})
    with pytest.raises(ConfigError, match="needs the pool's mc_probs"):
        select("bald", pool([[0.5, 0.5]]), 1)


def test_scoring_a_pool_with_real_models(tiny_dataset) -> None:
    """MC dropout, ensemble members and embeddings through the model's own scaling and head."""
    from galframe.data.datamodule import GalaxyDataset

    from galframe_hitl.scoring import model_outputs, nearest_labeled, score_pool
    from tests.helpers import build_model

    model, dm = build_model(tiny_dataset, "backbone=resnet18", "tasks.classify.dropout=0.5")
    model.eval()
    plain = copy.deepcopy(model)  # a second member: other head weights, no dropout
    torch.nn.init.normal_(plain.tasks["classify"].head[-1].weight)
    for m in plain.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    rows = dm.splits["train"].head(20)
    pool_ds = GalaxyDataset(dm.root, dm.manifest, rows.iloc[:16], keys=())
    lab_ds = GalaxyDataset(dm.root, dm.manifest, rows.iloc[16:], keys=())
    out = model_outputs(model, pool_ds, "classify", mc_samples=4, embeddings=True, batch_size=8, seed=3)
    assert out["mc_probs"].shape == (4, 16, 6) and out["embeddings"].shape == (16, model.backbone.embed_dim)
    assert not np.allclose(out["mc_probs"][0], out["mc_probs"][1])  # dropout active in the passes
    again = model_outputs(model, pool_ds, "classify", mc_samples=4, batch_size=8, seed=3)
    np.testing.assert_allclose(again["mc_probs"], out["mc_probs"])  # seeded
    np.testing.assert_allclose(again["probs"], out["probs"])
    assert not model.training and all(not m.training for m in model.modules())  # back in eval mode
    with pytest.raises(ConfigError, match="set tasks.classify.dropout"):
        model_outputs(plain, pool_ds, "classify", mc_samples=2)
    scored = score_pool([model, plain], pool_ds, lab_ds, "classify", {"probs", "ensemble_probs", "embeddings"}, batch_size=8)
    assert scored.ensemble_probs.shape == (2, 16, 6)
    np.testing.assert_allclose(scored.ensemble_probs[0], out["probs"], rtol=1e-5, atol=1e-6)
    assert scored.labeled_embeddings.shape[0] == 4 and list(scored.ids) == rows["id"].iloc[:16].tolist()
    near = nearest_labeled(scored, [0, 1], k=3)
    assert all(len(v) == 3 and set(v) <= set(rows["id"].iloc[16:]) for v in near.values())


def test_nearest_labelled_neighbours_known_answer() -> None:
    p = PoolOutputs(ids=np.array([7, 8]), embeddings=np.array([[1.0, 0.0], [0.0, 2.0]]),
                    labeled_embeddings=np.array([[0.0, 1.0], [3.0, 0.1], [1.0, 1.0]]),
                    extra={"labeled_ids": np.array([100, 101, 102])})
    from galframe_hitl.scoring import nearest_labeled

    assert nearest_labeled(p, [0, 1], 2) == {7: [101, 102], 8: [100, 102]}
