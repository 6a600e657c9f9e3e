"The fast path: the speed table runs (tiny, CPU), bf16 keeps fp32 targets and passes the Gaussian check, a cache too big stops the run."
import sys, tempfile
from pathlib import Path

import pytest
import torch

from dsb.run import run, build_trainer
from dsb.config import make_config
from dsb.data import make_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_speed_table_quick_runs():
    from table import table, show
    res = table("2d", "cpu", quick=True, levers=["base", "loop_ema"], repeats=1)
    show(res)
    assert [r["lever"] for r in res["rows"]] == ["base", "loop_ema"] and res["peak_tflop_per_s"]["fp32"] > 0
    for r in res["rows"]:
        assert all(r[k] > 0 for k in ("step_ms", "cache_s", "s_per_it", "all_in_it_per_s", "train_img_per_s", "cache_traj_per_s",
                                      "step_gflop", "cache_gflop", "train_frac_peak", "peak_mem_gib"))
        assert r["recompiles_second_iteration"] == 0


def test_bf16_targets_are_fp32_and_the_gaussian_check_passes(tmp_path):
    # bf16 autocast runs the networks; the cache's states and targets stay float32
    cfg = make_config(dataset="gaussian", data_dim=5, precision="bf16", cache_npar=64, device="cpu", progress=False)
    tr = build_trainer(cfg, make_data(cfg)); tr.position = (0, 1, 0); tr.iteration, tr.stage, tr.step = 0, 1, 0
    tr.generator = tr.policy.generator(0); tr.solver.refresh(tr)
    assert tr.solver.cache.x.dtype == tr.solver.cache.target.dtype == torch.float32
    # the same short Gaussian run (d = 5, 03's GAUSSIAN_BENCHMARK schedule) in fp32 and bf16: the learned coupling's error
    # agrees within 3 points (measured at 2 IPF iterations x 400 steps: fp32 12.9 %, bf16 12.6 %, exact DSB iterate 4.7 %)
    from bench import gaussian
    err = {p: gaussian(torch.device("cpu"), quick=True, precision=p, batch_size=128)["network_error"] for p in ("fp32", "bf16")}
    assert abs(err["bf16"] - err["fp32"]) < 0.03, err


def test_cache_too_big_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"parameter cache_npar=1000000000: .* Lower cache_npar to \d+ or less"):
        run(cache_npar=10**9, out_dir=str(tmp_path / "runs"), progress=False)
    assert not (tmp_path / "runs").exists()
