"Training end to end: papermill smoke run, bad parameters, SIGKILL and resume, NaN loss, damaged checkpoints."
import json, re, subprocess, sys
from pathlib import Path

import pytest
import torch
from conftest import killed_run, position

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_ipf=2, num_iter=300, cache_refresh=50, checkpoint_every=50, cache_npar=300, batch_size=128,
            eval_npar=400, progress=False, data="moon", score_npar=0)


def files_of(d):
    return {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}


def test_papermill_runs_train_notebook(tmp_path):
    import papermill as pm
    out = tmp_path / "out.ipynb"
    params = dict(n_ipf=1, num_iter=40, cache_refresh=20, cache_npar=200, batch_size=64, eval_npar=300,
                  out_dir=str(tmp_path / "runs"), run_name="smoke", progress=False, data="checker")
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(out), parameters=params, kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False)
    nb = json.loads(out.read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"]), "papermill lost the parameters cell"
    run_dir = tmp_path / "runs" / "smoke"
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "checkpoint.pt", "metrics.jsonl", "metrics.json", "samples_ipf01.png", "bridge.gif"} <= names
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["data"] == "checker" and cfg["num_iter"] == 40     # the injected values were used, not the defaults
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["steps"] == 2 * 40 and all(map(lambda k: m[k] == m[k] and m[k] > 0, ("sw2_data", "sw2_floor", "sw2_prior")))


def test_papermill_bad_parameter_fails_before_training(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="dataset='celebb' is not allowed"):
        pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters=dict(dataset="celebb", out_dir=str(tmp_path / "runs")), kernel_name="python3",
                            cwd=str(tmp_path), progress_bar=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("params,match", [
    (dict(num_iter=0), "num_iter must be an integer >= 1"),
    (dict(num_iter="many"), "num_iter='many' must be an int"),
    (dict(n_ipf=-1), "n_ipf"),
    (dict(data="spiral"), "parameter data='spiral' is not allowed"),
    (dict(gamma_max=2.0), "gamma_max=2.0 must be < var_final"),
    (dict(lr=float("nan")), "lr"),
    (dict(cache_npar=1), "cache_npar"),
    (dict(time_sampling="random"), "time_sampling"),
    (dict(batch_sz=3), "unknown parameter(s): batch_sz (did you mean 'batch_size'"),
    (dict(device="meta"), "parameter device='meta'"),
    (dict(device="mps"), "device='mps'"),
    (dict(dataset="gaussian", transfer=True), "parameter transfer=True applies to dataset='2d'"),
    (dict(model="mpl"), "model='mpl' is not allowed (did you mean 'mlp'?)"),
    (dict(solver="imf"), "solver='imf' is not allowed"),
])
def test_bad_parameters_fail_before_any_output(tmp_path, params, match):
    from dsb.run import run
    if params.get("device") == "mps" and torch.backends.mps.is_available(): pytest.skip("this machine has MPS")
    with pytest.raises(ValueError, match=re.escape(match)): run(out_dir=str(tmp_path / "runs"), **params)
    assert not (tmp_path / "runs").exists()


def test_sigkill_and_resume_gives_the_same_metrics(tmp_path):
    from dsb.run import run
    full = run(**TINY, out_dir=str(tmp_path), run_name="full")
    killed_run(tmp_path, "killed", TINY, lambda d: (position(d / "checkpoint.pt") or (0,)) >= (1, 0, 100))   # mid-run, in iteration 2
    resumed = run(resume=str(tmp_path / "killed"), progress=False)
    for k in ("sw2_data", "sw2_prior", "sw2_floor", "steps"): assert resumed[k] == full[k], k
    log = lambda d: (tmp_path / d / "metrics.jsonl").read_text()
    assert log("killed") == log("full")


def test_nan_loss_stops_with_position_and_restarts_its_stage(tmp_path, monkeypatch):
    import dsb.ipf
    from dsb.run import run
    real = dsb.ipf.build_cache
    calls = []
    def poisoned(*a, **k):
        cache = real(*a, **k); calls.append(1)
        if len(calls) == 9: cache.target.fill_(float("nan"))   # ninth cache: IPF 0, the forward network (stage 1), step 100
        return cache
    monkeypatch.setattr(dsb.ipf, "build_cache", poisoned)
    with pytest.raises(FloatingPointError, match="at iteration 1, training the forward network, step 101") as e:
        run(**TINY, out_dir=str(tmp_path), run_name="nan")
    assert "a resume restarts from the start of iteration 1, stage 2" in str(e.value)
    assert "-p lr 0.0001 -p grad_clip 1.0" in str(e.value)
    assert position(tmp_path / "nan" / "checkpoint_nonfinite.pt") == (0, 1, 100)     # kept, not deleted
    monkeypatch.setattr(dsb.ipf, "build_cache", real)
    resumed = run(resume=str(tmp_path / "nan"), lr=1e-4, grad_clip=1.0)     # the advice, followed: the changes apply
    assert resumed["steps"] == 2 * 2 * 300
    assert json.loads((tmp_path / "nan" / "config.json").read_text())["lr"] == 1e-4
    log = [json.loads(l) for l in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["changes"] for r in log if r.get("event") == "resume"] == [{"lr": [1e-3, 1e-4]}]


def test_damaged_checkpoints_give_a_clear_error_and_lose_nothing(tmp_path):
    from dsb.run import run
    s = run(**{**TINY, "n_ipf": 1, "num_iter": 100}, out_dir=str(tmp_path), run_name="r")
    run_dir = Path(s["run_dir"])
    for name in ("checkpoint.pt", "checkpoint_prev.pt", "checkpoint_stage.pt"):
        (run_dir / name).write_bytes((run_dir / name).read_bytes()[:100])   # all three truncated
    before = files_of(run_dir)
    with pytest.raises(RuntimeError, match="corrupt or truncated") as e: run(resume=str(run_dir), progress=False)
    assert "weights_only=False" not in str(e.value)      # PyTorch's advice to load unsafely is not passed on
    assert files_of(run_dir) == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    from dsb.run import run
    with pytest.raises(ValueError, match="config.json is missing"): run(resume=str(tmp_path), progress=False)


def test_new_runs_never_overwrite(tmp_path):
    from dsb.run import run
    a = run(**{**TINY, "n_ipf": 1, "num_iter": 50}, out_dir=str(tmp_path), run_name="same", plots=False)
    b = run(**{**TINY, "n_ipf": 1, "num_iter": 50}, out_dir=str(tmp_path), run_name="same", plots=False)
    assert a["run_dir"] != b["run_dir"] and Path(a["run_dir"], "metrics.json").exists()


def test_gaussian_bench_quick_prints_figures():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "gaussian", "--quick"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "exact DSB iterate" in out.stdout


def test_bench_quick_prints_figures():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "speed", "--quick"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "all in (it/s)" in out.stdout and "cache build (s)" in out.stdout


def test_gaussian_run_reports_the_coupling_error(tmp_path):
    "The 'gaussian' data set logs the learned coupling's error against the closed-form bridge, and it falls."
    from dsb.run import run
    s = run(dataset="gaussian", data_dim=2, num_steps=10, gamma_min=0.05, gamma_max=0.05, n_ipf=3, num_iter=300,
            cache_npar=1000, eval_npar=20000, progress=False, out_dir=str(tmp_path))
    errors = [json.loads(l)["cross_cov_error"] for l in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert len(errors) == 3 and errors[-1] == s["cross_cov_error"]
    assert errors[-1] < 0.25 and errors[-1] < errors[0]   # a short run; bench/bench.py gaussian runs the real check
    assert (Path(s["run_dir"]) / "samples_ipf03.png").exists()


def test_options_change_what_is_trained(tmp_path):
    "time_sampling='inverse_gamma' and mean_match=True each change the run (warm_start=False is checked in 09_ipf)."
    from dsb.run import run
    kw = dict(n_ipf=1, num_iter=100, cache_refresh=50, cache_npar=300, batch_size=64, eval_npar=300, progress=False, plots=False,
              gamma_min=0.005, gamma_max=0.05, out_dir=str(tmp_path))
    def losses(s): return [json.loads(l)["loss"] for l in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    base = run(**kw)
    inverse = run(**kw, time_sampling="inverse_gamma")
    mean = run(**kw, mean_match=True)
    assert losses(inverse) != losses(base) and losses(mean) != losses(base)
    assert all(s["sw2_data"] == s["sw2_data"] for s in (inverse, mean))   # finite metrics
    # inverse_gamma draws small steps more often: their targets are less noisy, so the batch loss is lower
    assert sum(losses(inverse)) < sum(losses(base))
