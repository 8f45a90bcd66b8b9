"""Few-shot features and heads (galframe_tasks.fewshot) and the cold-start acquisitions (galframe_hitl.coldstart)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galframe_hitl.acquisition import PoolOutputs


def _blobs(n_per: int = 60, centres: int = 5, dim: int = 8, seed: int = 0, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, size=(centres, dim))
    x = np.concatenate([m + spread * rng.normal(size=(n_per, dim)) for m in means])
    y = np.repeat(np.arange(centres), n_per)
    return x, y


def test_whitener_is_fitted_on_the_pool_and_normalises() -> None:
    from galframe_tasks.fewshot import Whitener

    x, _ = _blobs()
    w = Whitener(variance=0.99).fit(x)
    z = w.transform(x[:10])
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0)
    assert z.shape[1] <= x.shape[1]


@pytest.mark.parametrize("head", ["logistic", "propagate", "prototype", "ensemble"])
def test_heads_learn_from_a_few_labels_and_give_absent_classes_no_probability(head) -> None:
    from galframe_tasks.fewshot import FewShotHead, Whitener

    x, y = _blobs()
    z = Whitener().fit(x).transform(x)
    rows = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(4)])  # class 4 never labelled
    model = FewShotHead(6, head=head).fit(z[rows], y[rows], pool=np.delete(z, rows, axis=0))
    p = model.predict(z)
    assert p.shape == (len(z), 6) and np.allclose(p.sum(1), 1.0)
    assert np.all(p[:, 4] == 0) and np.all(p[:, 5] == 0)
    seen = y < 4
    assert (p[seen].argmax(1) == y[seen]).mean() > 0.9
    with pytest.raises(ValueError, match="head must be one of"):
        FewShotHead(3, head="svm")
    if head in ("propagate", "ensemble"):
        with pytest.raises(ValueError, match="pass pool="):
            FewShotHead(6, head=head).fit(z[rows], y[rows])


def test_dihedral_averaged_features_do_not_depend_on_orientation() -> None:
    from galframe.api import DataInfo
    from galframe.data.scaling import build_scaling
    from galframe.model import build_backbone
    from galframe_tasks.fewshot import dihedral, embed

    info = DataInfo(bands=("g", "r", "z"), image_size=32)
    torch.manual_seed(0)
    backbone = build_backbone({"plugin": "lvm", "img_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1],
                               "num_heads": [1, 2]}, info)
    scaling = build_scaling({"name": "asinh", "softening": {"g": 0.003, "r": 0.0065, "z": 0.017}}, ["g", "r", "z"])
    image = torch.rand(4, 3, 32, 32) * 0.05

    class Data(torch.utils.data.Dataset):
        def __init__(self, imgs):
            self.imgs = imgs

        def __len__(self):
            return len(self.imgs)

        def __getitem__(self, i):
            return {"image": self.imgs[i], "id": i}

    a, ids = embed(backbone, scaling, Data(image), views=8)
    b, _ = embed(backbone, scaling, Data(dihedral(image, 5)), views=8)
    c, _ = embed(backbone, scaling, Data(dihedral(image, 5)), views=1)
    d, _ = embed(backbone, scaling, Data(image), views=1)
    assert ids.tolist() == [0, 1, 2, 3] and a.shape[1] == 16 + 32 + 32  # the two stage means + the embedding
    assert np.allclose(a, b, atol=1e-5)  # averaged over the group: the same for a rotated, flipped stamp
    assert not np.allclose(c, d, atol=1e-5)  # one view alone is not
    with pytest.raises(ValueError, match="views must be 1, 4 or 8"):
        embed(backbone, scaling, Data(image), views=3)


def test_typical_covers_every_cluster_before_asking_twice() -> None:
    from galframe_hitl.coldstart import TypicalAcquisition

    x, y = _blobs(n_per=40, centres=6)
    pool = PoolOutputs(ids=np.arange(len(x)), embeddings=x)
    pick = TypicalAcquisition().select(pool, 6, np.random.default_rng(0))
    assert sorted(y[pick].tolist()) == [0, 1, 2, 3, 4, 5]
    # with two clusters labelled, the next picks go to the four others
    labelled = np.concatenate([np.flatnonzero(y == 0)[:1], np.flatnonzero(y == 1)[:1]])
    rest = np.setdiff1d(np.arange(len(x)), labelled)
    pool = PoolOutputs(ids=rest, embeddings=x[rest], labeled_embeddings=x[labelled])
    pick = TypicalAcquisition().select(pool, 4, np.random.default_rng(0))
    assert sorted(y[rest][pick].tolist()) == [2, 3, 4, 5]
    # the most typical object of a cluster is near its centre, not an outlier
    members = np.flatnonzero(y == 2)
    chosen = rest[pick][y[rest][pick] == 2][0]
    dist = np.linalg.norm(x[members] - x[members].mean(0), axis=1)
    assert np.linalg.norm(x[chosen] - x[members].mean(0)) <= np.percentile(dist, 50)


def test_coldstart_discovers_and_refines_without_outliers() -> None:
    from galframe_hitl.coldstart import ColdStartAcquisition

    x, y = _blobs(n_per=40, centres=4)
    outliers = np.random.default_rng(1).normal(0, 30, size=(5, x.shape[1]))
    x = np.concatenate([x, outliers])
    probs = np.full((len(x), 4), 0.25)  # the model is unsure everywhere: margin alone would happily pick outliers
    labelled = np.arange(0, 160, 8)  # 20 labels across the clusters
    rest = np.setdiff1d(np.arange(len(x)), labelled)
    acq = ColdStartAcquisition(warm=10, discover=0.25, outlier_quantile=0.2)
    pool = PoolOutputs(ids=rest, classes=("a", "b", "c", "d"), probs=probs[rest], embeddings=x[rest],
                       labeled_embeddings=x[labelled], labeled_counts=np.array([5, 5, 5, 5]))
    pick = acq.select(pool, 12, np.random.default_rng(0))
    assert len(set(pick.tolist())) == 12
    assert not set(rest[pick].tolist()) & set(range(160, 165))  # no outlier asked
    # below 'warm' labels it is the typical (cluster-covering) acquisition
    few = PoolOutputs(ids=rest, probs=probs[rest], embeddings=x[rest], labeled_embeddings=x[labelled[:3]])
    assert len(ColdStartAcquisition(warm=10).select(few, 4, np.random.default_rng(0))) == 4
    from galframe.errors import ConfigError

    with pytest.raises(ConfigError, match="discover must be a fraction"):
        ColdStartAcquisition(discover=2)
