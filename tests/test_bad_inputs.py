"Bad inputs raise clear errors naming the argument, instead of producing NaNs later."

import pytest
import torch

from dsb.core import check_cov
from dsb.static import sinkhorn_log, gaussian_sb_cross_cov, gaussian_sb_joint
from dsb.reference import gamma_schedule, Schedule, ReferenceMean, reference_transition, reference_moments
from dsb.reversal import gaussian_backward_kernel

f64 = dict(dtype=torch.float64)
EYE2 = torch.eye(2, **f64)
NOT_PD = torch.tensor([[1., 2.], [2., 1.]], **f64)

@pytest.mark.parametrize("gmin,gmax,match", [(0., 0.1, "gamma_min"), (-0.1, 0.1, "gamma_min"),
                                              (0.1, -0.2, "gamma_max"), (float("nan"), 0.1, "gamma_min")])
def test_gamma_schedule_rejects_nonpositive(gmin, gmax, match):
    with pytest.raises(ValueError, match=match): gamma_schedule(10, gmin, gmax)

@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_gamma_schedule_rejects_bad_num_steps(n):
    with pytest.raises(ValueError, match="num_steps"): gamma_schedule(n, 0.01, 0.1)

def test_gamma_schedule_rejects_unknown_space():
    with pytest.raises(ValueError, match="space"): gamma_schedule(10, 0.01, 0.1, "logspace")

@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 21])
def test_gamma_schedule_any_n(n):
    g = gamma_schedule(n, 0.01, 0.1)
    assert g.shape == (n,) and torch.all(g > 0) and torch.equal(g, g.flip(0))

def test_schedule_rejects_zero_gamma():
    with pytest.raises(ValueError, match="gammas"): Schedule(torch.tensor([0.1, 0.0, 0.1], **f64))

def test_reference_rejects_steps_that_do_not_contract():
    s = Schedule(gamma_schedule(10, 0.1, 0.5))
    with pytest.raises(ValueError, match="var_final"): ReferenceMean(s, 0., 0.4)
    with pytest.raises(ValueError, match="var_final"): reference_transition(s, -1.)

def test_reference_moments_reject_non_pd_cov():
    s = Schedule(gamma_schedule(4, 0.01, 0.1))
    with pytest.raises(ValueError, match="cov0"): reference_moments(s, torch.zeros(2, **f64), NOT_PD)

def test_sinkhorn_rejects_mismatched_sizes():
    a, b = torch.full((3,), 1 / 3, **f64), torch.full((4,), 1 / 4, **f64)
    with pytest.raises(ValueError, match="cost"): sinkhorn_log(a, b, torch.rand(3, 5, **f64), 0.1)

def test_sinkhorn_rejects_negative_weights():
    a, b = torch.tensor([0.5, 0.7, -0.2], **f64), torch.full((3,), 1 / 3, **f64)
    with pytest.raises(ValueError, match="a"): sinkhorn_log(a, b, torch.rand(3, 3, **f64), 0.1)

def test_sinkhorn_rejects_unequal_mass():
    a, b = torch.full((3,), 1 / 3, **f64), torch.full((3,), 0.5, **f64)
    with pytest.raises(ValueError, match="mass"): sinkhorn_log(a, b, torch.rand(3, 3, **f64), 0.1)

@pytest.mark.parametrize("eps", [0., -1., float("nan")])
def test_sinkhorn_rejects_bad_eps(eps):
    a = torch.full((3,), 1 / 3, **f64)
    with pytest.raises(ValueError, match="eps"): sinkhorn_log(a, a, torch.rand(3, 3, **f64), eps)

def test_sinkhorn_never_returns_nan_for_tiny_eps():
    g = torch.Generator().manual_seed(0)
    a = torch.full((20,), 1 / 20, **f64)
    res = sinkhorn_log(a, a, 10 * torch.rand(20, 20, generator=g, **f64), 1e-4, n_iter=200)
    assert torch.isfinite(res.plan).all()

def test_gaussian_sb_rejects_non_pd_and_bad_reference():
    with pytest.raises(ValueError, match="positive definite"): gaussian_sb_cross_cov(NOT_PD, EYE2, 0.5, 1.)
    with pytest.raises(ValueError, match="a"): gaussian_sb_cross_cov(EYE2, EYE2, 0., 1.)
    with pytest.raises(ValueError, match="v"): gaussian_sb_cross_cov(EYE2, EYE2, 0.5, -1.)
    with pytest.raises(ValueError): gaussian_sb_cross_cov(EYE2, torch.eye(3, **f64), 0.5, 1.)
    with pytest.raises(ValueError): gaussian_sb_joint(torch.zeros(3, **f64), EYE2, torch.zeros(2, **f64), EYE2, 0.5, 1.)

def test_backward_kernel_rejects_non_pd():
    with pytest.raises(ValueError): gaussian_backward_kernel(torch.zeros(2, **f64), NOT_PD, EYE2, torch.zeros(2, **f64), EYE2)

def test_check_cov_names_argument():
    with pytest.raises(ValueError, match="my_cov must be positive definite"): check_cov("my_cov", NOT_PD)


# -- issue 19, items 3, 7 and 18: pictures and downloads; each replays the defect it fixes

import re
from pathlib import Path
import numpy as np
from dsb.images import load_folder
from dsb.data import make_data
from dsb.config import make_config

def test_16_bit_pictures_are_scaled_by_their_range_not_clipped(tmp_path):
    "Issue 19 item 3: 16-bit grayscale PNGs used to go through convert('L'), which clips: 99.6 % of pixels came out 255."
    from PIL import Image
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)   # 0 .. 65,520: the full 16-bit range
    Image.fromarray(ramp).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im: assert im.mode.startswith("I")              # Pillow reads it as a 16-bit mode
    x = load_folder(tmp_path, image_size=8)
    assert x.shape == (1, 1, 8, 8)
    expected = torch.from_numpy(np.round(ramp / 65535 * 255).astype(np.uint8))
    assert (x[0, 0].int() - expected.int()).abs().max() <= 1                                # scaled, not clipped
    assert (x == 255).float().mean() < 0.05
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(tmp_path / "b.png")   # an 8-bit one beside it
    both = load_folder(tmp_path, image_size=8)
    assert both.shape == (2, 1, 8, 8) and both[1, 0, 0, 1] == 4                             # 8-bit pictures unchanged

def test_pictures_of_unknown_range_are_refused_by_name(tmp_path):
    "32-bit integer and float pictures have no range of their own: refused with the file named, not guessed."
    from PIL import Image
    Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif.*32-bit"): load_folder(tmp_path, image_size=8)

def test_a_truncated_jpeg_is_named_with_its_folder(tmp_path):
    "Issue 19 item 7: one cut JPEG among 12 failed with PIL's `OSError: Truncated File Read`, naming neither file nor folder."
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(12): Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.jpg")
    cut = tmp_path / "07.jpg"; cut.write_bytes(cut.read_bytes()[:400])
    with pytest.raises(ValueError) as e: load_folder(tmp_path, image_size=8)
    assert str(cut) in str(e.value) and "parameter data_dir" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(ValueError, match=re.escape(str(cut))):
        make_data(make_config(dataset="folder", data_dir=str(tmp_path), image_size=8))          # a run stops before training, naming it

def test_a_failed_download_leaves_no_empty_folder_and_names_the_offline_sets(tmp_path, monkeypatch):
    "Issue 19 item 18: a failed download left an empty data/MNIST/raw and did not mention the sets that need no download."
    import torchvision.datasets as tvd, urllib.error
    def fail(self, root, download=True, **kw):                   # what torchvision does without network: folders first, then the error
        (Path(root) / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(tvd.MNIST, "__init__", fail)
    from dsb.images import download
    data = tmp_path / "data"
    with pytest.raises(RuntimeError) as e: download("mnist", data)
    assert not data.exists(), sorted(str(p) for p in data.rglob("*"))       # everything this call created is gone
    assert "-p dataset digits" in str(e.value) and "mnist_offline" in str(e.value)
    keep = tmp_path / "mine"; (keep / "MNIST").mkdir(parents=True); (keep / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError): download("mnist", keep)
    assert sorted(p.relative_to(keep).as_posix() for p in keep.rglob("*")) == ["MNIST", "notes.txt"]   # what was there stays
