"Image data sets through train.ipynb, on generated fixtures in torchvision's layout: the CPU smoke runs of the GPU commands."
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# tiny overrides: everything else is the data set's paper default (UNet, N, gammas, lr, ...)
TINY = dict(n_ipf=1, num_iter=4, cache_refresh=2, cache_npar=4, batch_size=2, eval_npar=8, num_steps=3, checkpoint_every=2,
            progress=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    "MNIST and EMNIST letters as IDX files, a CelebA-shaped folder of 178x218 JPEGs and a user folder of mixed pictures."
    from PIL import Image
    from dsb.images import write_idx
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    write_idx(d / "MNIST/raw/train-images-idx3-ubyte.gz", rng.integers(0, 256, (32, 28, 28), dtype=np.uint8))
    write_idx(d / "EMNIST/raw/emnist-letters-train-images-idx3-ubyte", rng.integers(0, 256, (32, 28, 28), dtype=np.uint8))
    faces = d / "celeba/img_align_celeba"; faces.mkdir(parents=True)
    for i in range(6): Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(faces / f"{i + 1:06d}.jpg")
    mine = d / "mine" / "sub"; mine.mkdir(parents=True)
    for i in range(6): Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(mine / f"{i}.png")
    return d


@pytest.mark.parametrize("dataset,extra,shape", [
    ("mnist", {}, (1, 28, 28)),
    ("emnist_mnist", {}, (1, 28, 28)),
    ("celeba", {"image_size": 32}, (3, 32, 32)),     # the layout and loader of CelebA at a size the CPU can run
    ("folder", {"image_size": 8, "progress": True, "num_iter": 24, "cache_refresh": 12}, (3, 8, 8)),   # progress as papermill shows it
])
def test_image_data_sets_run_through_train_notebook(data_dir, tmp_path, dataset, extra, shape, capfd, monkeypatch):
    import papermill as pm
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)     # else ipykernel leaves fd 2 alone: the notebook would not get the lines
    data = str(data_dir / "mine") if dataset == "folder" else str(data_dir)
    params = dict(TINY, dataset=dataset, data_dir=data, out_dir=str(tmp_path / "runs"), run_name="r")
    params.update(extra)
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"), parameters=params,
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    run_dir = tmp_path / "runs" / "r"
    cfg = json.loads((run_dir / "config.json").read_text())
    paper = dataset != "folder"                                                          # 'folder' has a CPU preset
    assert cfg["model"] == "unet" and cfg["dataset"] == dataset and (cfg["lr"] == 1e-4) == paper
    if params["progress"]:   # issue 22: papermill's terminal showed nothing but its cell counter for 9 minutes
        nb = json.loads((tmp_path / "out.ipynb").read_text())
        kept = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
        shown = capfd.readouterr().err                                   # the kernel's stderr is papermill's terminal
        for text in (shown, kept):                                       # the plan, an estimate, the end: on screen and in the notebook
            assert "training: 1 iteration x 2 stages x 24 steps" in text and "estimate: " in text and "training stopped after" in text
    names = {p.name for p in run_dir.iterdir()}
    assert {"checkpoint.pt", "metrics.json", "samples_ipf01.png", "bridge.gif"} <= names
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["steps"] == 2 * params["num_iter"] and m["sw2_data"] == m["sw2_data"]
    import dsb
    bridge = dsb.load(run_dir)
    assert tuple(bridge.data.shape) == shape and bridge.sample(3).shape == (3, *shape)


@pytest.mark.parametrize("params,match", [
    (dict(dataset="mnsit"), "dataset='mnsit' is not allowed (did you mean 'mnist'"),
    (dict(dataset="folder", image_size=48), "parameter image_size: image_size=48 has no UNet configuration"),
    (dict(dataset="mnist", attention_resolutions="168"), "parameter attention_resolutions"),
    (dict(dataset="mnist", data_dir="/no/such/folder"), "download it with: python -m dsb.images download mnist --data-dir /no/such/folder"),
])
def test_bad_image_parameters_fail_before_training(data_dir, tmp_path, params, match):
    import re
    from dsb.run import run
    if params.get("dataset") == "folder": params = {**params, "data_dir": str(data_dir / "mine")}
    elif "data_dir" not in params: params = {**params, "data_dir": str(data_dir)}
    with pytest.raises(ValueError, match=re.escape(match)): run(**TINY, **params, out_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_digits_run_logs_the_digit_score_next_to_its_floor(tmp_path, monkeypatch):
    "`digits` trains on the 997 `train` digits only, and every IPF iteration logs the digit classifier's score and its floor."
    monkeypatch.setenv("DSB_CACHE", str(tmp_path / "cache"))
    from dsb.images import load_digits
    from dsb.data import make_data
    from dsb.config import make_config
    from dsb.run import run
    data = make_data(make_config(dataset="digits"))
    assert data.scorer == "digits8"
    train = {tuple(x) for x in load_digits(split="train").flatten(1).mul(16).round().int().tolist()}
    unseen = {tuple(x) for x in load_digits(split="real").flatten(1).mul(16).round().int().tolist()} - train
    import torch
    drawn = {tuple(x) for x in ((data.data(3000, torch.Generator().manual_seed(0)) + 1) * 8).flatten(1).round().int().tolist()}
    assert drawn <= train and not drawn & unseen                    # the score's `real` digits are never trained on
    s = run(dataset="digits", **{**TINY, "eval_npar": 64}, out_dir=str(tmp_path / "runs"), run_name="d", plots=True)
    assert 0.9 < s["digit_confidence_floor"] <= 1 and 2.2 < s["digit_entropy_floor"] <= 2.303 and 0 < s["digit_fd_floor"] < 20
    assert 0.1 <= s["digit_confidence"] <= 1 and s["digit_fd"] > s["digit_fd_floor"]   # 4 training steps: far from digits
    evals = [json.loads(l) for l in (tmp_path / "runs/d/metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert len(evals) == 1 and "digit_fd" in evals[0]


def test_image_transfer_runs_offline(tmp_path):
    "Issue 22 item 3: `mnist_digits`, shrunk MNIST digits carried to scikit-learn's digits, scored as digits and by the labels kept."
    from dsb.run import run
    m = run(dataset="mnist_digits", solver="dsbm", **{**TINY, "eval_npar": 64}, out_dir=str(tmp_path / "runs"), run_name="t", plots=True)
    assert 0 <= m["transfer_labels_kept"] <= 1 and 0.3 < m["transfer_labels_untransferred"] < 0.8 and m["digit_fd"] > m["digit_fd_floor"]
    assert (tmp_path / "runs/t/samples_ipf01.png").exists()


def test_mnist_latent_runs_end_to_end_and_loads(tmp_path, monkeypatch):
    "Issue 22 item 2: MNIST bridged in an autoencoder's 2 x 8 x 8 latent space, samples decoded to 28 px for the grid and the score; load decodes alike."
    import shutil, torch
    from dsb.image_metrics import default_cache_dir
    from dsb.run import train, load
    cache = tmp_path / "cache"; cache.mkdir()
    for f in default_cache_dir().glob("digit_classifier_mnist28_v*.pt"): shutil.copy(f, cache)   # the score's classifier, if built
    monkeypatch.setenv("DSB_CACHE", str(cache))                  # the autoencoder of 200 digits is trained here (seconds)
    b = train(dataset="mnist_latent", solver="dsbm", max_images=200, **{**TINY, "eval_npar": 64}, out_dir=str(tmp_path / "runs"),
              run_name="m", plots=True)
    assert b.data.shape == (2, 8, 8) and list(cache.glob("mnist_autoencoder_v*_n200.pt"))
    m = b.metrics                                                 # the mnist28 score of decoded samples, next to its floor
    assert 0.9 < m["digit_confidence_floor"] <= 1 and 0 < m["digit_confidence"] <= 1 and m["digit_fd"] > m["digit_fd_floor"]
    assert (tmp_path / "runs/m/samples_ipf01.png").exists()
    z = b.sample(4, seed=1)
    x = b.data.decode(z)
    assert z.shape == (4, 2, 8, 8) and x.shape == (4, 1, 28, 28) and x.abs().max() <= 1
    again = load(tmp_path / "runs/m")
    assert torch.equal(again.data.decode(again.sample(4, seed=1)), x)
    # the cached autoencoder replaced by other weights (trained again elsewhere): load and resume stop, naming both
    f = next(cache.glob("mnist_autoencoder_v*_n200.pt")); state = torch.load(f, weights_only=True)
    k = next(k for k, v in state.items() if v.is_floating_point()); state[k] = state[k] + 1e-3
    torch.save(state, f)
    run_files = {p.name: p.read_bytes() for p in (tmp_path / "runs/m").iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"trained on data built with mnist_autoencoder_v\d+_n200 sha256:\w+, but here 'mnist_latent'"):
        load(tmp_path / "runs/m")
    with pytest.raises(ValueError, match="Copy the cached file"):
        train(resume=str(tmp_path / "runs/m"), progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "runs/m").iterdir() if p.is_file()} == run_files   # nothing written
