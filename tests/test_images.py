"Image data (dsb.images): loaders on generated fixtures in torchvision's layouts, the registered data sets, missing data, the download command."
import os, subprocess, sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dsb.data import DATASETS, make_data
from dsb.images import (ImageOptions, ImageTensorSampler, MissingDataError, load_celeba, load_digits, load_emnist_letters,
                        load_folder, load_mnist, load_mnist_offline, main, read_idx, to_model, to_pixels, write_idx)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("mnist", "emnist_mnist", "celeba", "folder", "digits", "mnist_offline")

def cfg(**kw):
    "A stand-in for the run config: the fields the image data sets read."
    from dataclasses import asdict
    return SimpleNamespace(**{**asdict(ImageOptions()), "mean_final": 0., "var_final": 1., "device": "cpu", **kw})

def _letter_l():
    L = np.zeros((28, 28), np.uint8); L[2:26, 4] = 255; L[25, 4:20] = 255
    return L

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    "MNIST (gzipped, train + test), EMNIST letters (plain, stored transposed) and a CelebA-shaped folder, as torchvision lays them out."
    from PIL import Image
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    mnist = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8); mnist[0] = _letter_l()
    write_idx(d / "MNIST/raw/train-images-idx3-ubyte.gz", mnist)
    write_idx(d / "MNIST/raw/t10k-images-idx3-ubyte", mnist[:16])
    letters = np.stack([_letter_l().T] * 48)                     # EMNIST stores each picture transposed
    write_idx(d / "EMNIST/raw/emnist-letters-train-images-idx3-ubyte", letters)
    faces = d / "celeba/img_align_celeba"; faces.mkdir(parents=True)
    for i in range(5):
        a = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8); a[:, :89] = 0    # left half black
        Image.fromarray(a).save(faces / f"{i + 1:06d}.jpg")
    return d

@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    "A user folder: PNGs and JPEGs of mixed sizes, grayscale and RGB, in subfolders, plus a non-picture file."
    from PIL import Image
    d = tmp_path_factory.mktemp("mine")
    (d / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (50, 40), (255, 0, 0)).save(d / "red.png")
    Image.new("L", (17, 33), 128).save(d / "a" / "gray.png")
    Image.new("RGB", (100, 100), (0, 0, 255)).save(d / "a" / "b" / "blue.jpg")
    (d / "notes.txt").write_text("not a picture")
    return d

def test_scaling_round_trip():
    u = torch.rand(8, 3, 5, 5)
    torch.testing.assert_close(to_pixels(to_model(u)), u)
    assert to_model(u).min() >= -1 and to_model(u).max() <= 1
    assert to_pixels(torch.tensor([-5., 5.])).tolist() == [0., 1.]

def test_sampler_seeded_and_in_range():
    s = ImageTensorSampler(torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8), flip=True)
    a, b = s(64, torch.Generator().manual_seed(1)), s(64, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (64, 3, 4, 4) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, s(64, torch.Generator().manual_seed(2)))
    assert s.mean().shape == (3, 4, 4)

def test_idx_round_trip_and_damage(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "x.gz", a)).numpy(), a)
    (tmp_path / "cut").write_bytes(write_idx(tmp_path / "y", a).read_bytes()[:-1])
    with pytest.raises(ValueError, match="incomplete"): read_idx(tmp_path / "cut")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04 hello")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"): read_idx(tmp_path / "junk")

def test_mnist(data_dir):
    x = load_mnist(data_dir)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.uint8
    assert np.array_equal(x[0, 0].numpy(), _letter_l())                 # MNIST is stored upright
    assert load_mnist(data_dir, "test").shape == (16, 1, 28, 28)         # the plain (not gzipped) file
    assert load_mnist(data_dir, max_images=10).shape == (10, 1, 28, 28)

def test_emnist_orientation(data_dir):
    x = load_emnist_letters(data_dir)
    assert x.shape == (48, 1, 28, 28)
    assert np.array_equal(x[0, 0].numpy(), _letter_l())                 # transposed back upright, as MNIST

def test_celeba(data_dir):
    x = load_celeba(data_dir)
    assert x.shape == (5, 3, 64, 64) and x.dtype == torch.uint8
    assert x[:, :, :, :20].float().mean() < 10 < x[:, :, :, 44:].float().mean()   # crop keeps the left half dark
    assert load_celeba(data_dir, max_images=2).shape == (2, 3, 64, 64)

def test_folder(pictures, tmp_path):
    x = load_folder(pictures, image_size=16)
    assert x.shape == (3, 3, 16, 16)                                      # recursive, RGB since not all are gray
    assert load_folder(pictures, image_size=8, channels=1).shape == (3, 1, 8, 8)
    with pytest.raises(MissingDataError, match="no pictures"): load_folder(tmp_path, 16)

def test_offline_sets():
    d, m = load_digits(), load_mnist_offline()
    assert d.shape == (1797, 1, 8, 8) and d.min() == 0 and d.max() == 1
    assert m.shape == (5000, 1, 28, 28) and m.dtype == torch.uint8 and m.max() == 255

@pytest.mark.parametrize("name", NAMES)
def test_registered(name, data_dir, pictures):
    assert name in DATASETS and DATASETS.info(name)["family"] == "images"
    where = {"folder": pictures}.get(name, data_dir)
    spec = make_data(cfg(dataset=name, data_dir=str(where), image_size=16, var_final=DATASETS.info(name)["defaults"].get("var_final", 1.)))
    g = torch.Generator().manual_seed(0)
    x, y = spec.data(7, g), spec.prior(7, g)
    assert spec.kind == "images" and x.shape == y.shape == (7, *spec.shape)
    assert x.dtype == y.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    expected = {"mnist": (1, 28, 28), "emnist_mnist": (1, 28, 28), "celeba": (3, 16, 16), "folder": (3, 16, 16),
                "digits": (1, 8, 8), "mnist_offline": (1, 28, 28)}[name]
    assert spec.shape == expected
    if name == "emnist_mnist": assert y.min() >= -1 and y.max() <= 1      # the other end is letters, not Gaussian

def test_celeba_prior_is_centred_on_the_mean_face(data_dir):
    spec = make_data(cfg(dataset="celeba", data_dir=str(data_dir), var_final=0.5))
    assert spec.shape == (3, 64, 64)                                      # the paper's size when image_size is not set
    y = spec.prior(2000, torch.Generator().manual_seed(0))
    centre = spec.data.mean()
    assert torch.allclose(y.mean(0), centre, atol=0.1)
    assert abs(y.var(0).mean().item() - 0.5) < 0.05

@pytest.mark.parametrize("name,cmd", [("mnist", "mnist"), ("emnist_mnist", "emnist"), ("celeba", "celeba")])
def test_missing_data_names_folder_and_command(name, cmd, tmp_path):
    with pytest.raises(MissingDataError) as e: make_data(cfg(dataset=name, data_dir=str(tmp_path)))
    msg = str(e.value)
    assert "parameter data_dir" in msg and str(tmp_path) in msg
    assert f"python -m dsb.images download {cmd} --data-dir {tmp_path}" in msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, FileNotFoundError)
    if name == "emnist_mnist": assert "download mnist" in msg               # both missing sets named at once

def test_incomplete_mnist(tmp_path):
    raw = tmp_path / "MNIST/raw"; raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(write_idx(tmp_path / "full", np.zeros((4, 28, 28))).read_bytes()[:500])
    with pytest.raises(MissingDataError, match="incomplete download.*download mnist"): load_mnist(tmp_path)

def test_bad_parameters():
    with pytest.raises(ValueError, match="dataset='mnits' is not allowed.*did you mean 'mnist'"): make_data(cfg(dataset="mnits"))
    with pytest.raises(MissingDataError, match="parameter data_dir='/no/such/dir': no such folder"):
        make_data(cfg(dataset="folder", data_dir="/no/such/dir"))
    from dsb.config import make_config
    with pytest.raises(ValueError, match="transfer=True applies to dataset='2d'"): make_config(dataset="digits", transfer=True)

def test_cli_arguments(capsys):
    with pytest.raises(SystemExit) as e: main(["download", "cifar"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err

def test_download_without_network_fails_in_one_line(tmp_path):
    "The test machine has no route to the MNIST hosts: the command must say so in one line and exit 1."
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "dsb.images", "download", "mnist", "--data-dir", str(tmp_path), "--timeout", "5"],
                       capture_output=True, text=True, env=env, timeout=300)
    if r.returncode == 0: pytest.skip("this machine has network access: the download worked")
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and r.stdout.strip() == "", (r.stdout, r.stderr)
    assert "download" in lines[0] and ("network" in lines[0] or "ossci-datasets" in lines[0])


# -- issue 22: every power of two from 8 to 64 builds a UNet; other sizes say what works, before anything is written

@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_folder_sizes_build_a_unet(size):
    from dsb.config import make_config
    from dsb.unet import unet
    cfg = make_config(dataset="folder", image_size=size)
    with torch.device("meta"): net = unet(cfg, (3, size, size))
    assert net.image_size == size

def test_an_unconfigured_size_names_parameters_that_work(tmp_path):
    from dsb.config import make_config
    from dsb.run import run
    with pytest.raises(ValueError) as e: make_config(dataset="folder", image_size=48)
    msg = str(e.value)
    assert "parameter image_size" in msg and "-p image_size 32" in msg and "-p unet_mult 1,2,2,2" in msg
    make_config(dataset="folder", image_size=32)                          # each suggestion is accepted
    make_config(dataset="folder", image_size=48, unet_mult="1,2,2,2")
    with pytest.raises(ValueError, match="parameter image_size"):
        run(dataset="folder", data_dir=str(tmp_path), image_size=48, out_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()

def test_unet_size_parameters():
    from dsb.config import make_config
    from dsb.models import make_model
    cfg = make_config(dataset="digits", unet_channels=24, unet_mult="1,2,2", unet_res_blocks=2)
    net = make_model(cfg, (1, 8, 8), False).net
    assert (net.model_channels, net.channel_mult, net.num_res_blocks, net.num_heads) == (24, (1, 2, 2), 2, 2)
    with pytest.raises(ValueError, match="parameter unet_mult='1,x'"): make_config(dataset="digits", unet_mult="1,x")
    with pytest.raises(ValueError, match="applies to model='unet'"): make_config(dataset="2d", unet_channels=8)


# -- issue 22: image transfer without a download

def test_mnist_digits_transfer_ends():
    spec = make_data(cfg(dataset="mnist_digits"))
    g = torch.Generator().manual_seed(0)
    x, y = spec.data(64, g), spec.prior(64, g)
    assert spec.shape == (1, 8, 8) and x.shape == y.shape == (64, 1, 8, 8) and spec.scorer == "digits8"
    assert y.min() == -1 and (y.flatten(1).amax(1) == 1).all()              # shrunk MNIST digits, not Gaussian noise
    assert spec.score_bridge is not None


@pytest.mark.parametrize("solver", ["dsb", "dsbm"])
def test_folder_has_a_cpu_preset(solver):
    "Issue 22 item 4: the folder preset kept 2,500 chains per refresh, N = 50 and 4,000 evaluation samples (9 minutes for 2 x 200 steps at 8 px)."
    from dsb.config import make_config
    cfg = make_config(dataset="folder", solver=solver)
    assert (cfg.image_size, cfg.unet_channels, cfg.batch_size) == (16, 16, 64)
    assert cfg.cache_npar <= 500 and cfg.num_steps <= 20 and cfg.eval_npar <= 500 and cfg.n_ipf * cfg.num_iter <= 1000
    assert make_config(dataset="folder", solver=solver, image_size=32).image_size == 32        # the user's size wins
