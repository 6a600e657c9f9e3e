"The LightSB solver through the runner: 2d and Gaussian runs, both samplers, papermill, kill-and-resume, bad parameters."
import json
from pathlib import Path

import pytest
import torch
from conftest import killed_run, position

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(solver="lightsb", n_components=4, n_ipf=2, num_iter=60, cache_refresh=20, checkpoint_every=20,
            cache_npar=500, batch_size=64, eval_npar=400, score_npar=300, progress=False, plots=False, data="moon", lr=1e-2)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    "The uninterrupted LightSB run every interrupted one must end like."
    from dsb.run import run
    return run(**TINY, out_dir=str(tmp_path_factory.mktemp("full")), run_name="full")


def _same_result(a: dict, b: dict):
    for k in ("sw2_data", "sw2_prior", "sw2_data_ode", "sw2_prior_ode", "sw2_floor", "steps", "w2"): assert a[k] == b[k], k


def test_lightsb_run_logs_both_samplers_and_learns(full):
    assert full["solver"] == "lightsb" and full["steps"] == 2 * 2 * 60
    for k in ("sw2_data", "sw2_prior", "sw2_data_ode", "sw2_prior_ode"): assert 0 < full[k] < 1.5, (k, full[k])
    history = [json.loads(l) for l in (Path(full["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in history if r.get("name") == "training the backward potential" and r["iteration"] == 1]
    assert losses[-1] < losses[0]                                 # the objective decreases


def test_killed_lightsb_run_resumes_bitwise(tmp_path, full):
    "SIGKILL after a mid-stage checkpoint; the resumed run ends exactly like the uninterrupted one."
    from dsb.run import run
    run_dir = killed_run(tmp_path, "killed", TINY, lambda d: (position(d / "checkpoint.pt") or (0,)) >= (0, 1, 20))
    _same_result(run(resume=str(run_dir)), full)


def test_resume_extends_a_finished_lightsb_run(tmp_path, full):
    from dsb.run import run
    first = run(**{**TINY, "n_ipf": 1}, out_dir=str(tmp_path), run_name="r")
    with pytest.raises(ValueError, match="n_components=3 differs from the run being resumed"):
        run(resume=first["run_dir"], solver="lightsb", n_components=3)          # K is the potential's shape: not resumable
    with pytest.raises(ValueError, match="n_components=3 differs from the run being resumed"):
        run(resume=first["run_dir"], n_components=3)     # checked against the run's own solver (not the default 'dsb': issue 23)
    _same_result(run(resume=first["run_dir"], n_ipf=2), full)


def test_load_samples_like_the_run(tmp_path, full):
    "`load` rebuilds the solver from config.json (plugins imported) and samples with the saved potentials."
    from dsb.run import load
    bridge = load(full["run_dir"])
    x = bridge.sample(200, seed=3)
    assert x.shape == (200, 2) and torch.isfinite(x).all()
    assert bridge.sample(200, sampler="ode", steps=20).shape == (200, 2)
    assert bridge.to_prior(x, path=True).shape == (21, 200, 2)         # the exact bridge on the schedule's 20-step grid


def test_gaussian_lightsb_is_exact_with_one_component(tmp_path):
    "On 'gaussian' with K = 1 the learned plan's cross-covariance (closed form) is close to 00's bridge of the OU kernel."
    from dsb.run import train
    from dsb.data import make_data
    from dsb.static import gaussian_sb_cross_cov
    from dsb.gaussian import gaussian_problem
    params = {k: v for k, v in TINY.items() if k != "data"}           # 'data' names a 2d set: not an option of dataset='gaussian'
    b = train(**{**params, "n_components": 1, "n_ipf": 1, "num_iter": 400, "batch_size": 512, "cache_npar": 20_000, "eval_npar": 2000},
              dataset="gaussian", data_dim=3, gamma_min=0.05, gamma_max=0.05, out_dir=str(tmp_path))
    solver = b.solver
    a, v = (u.item() for u in solver.reference_transition())
    pot = solver.potential(True)
    U = pot.prec_chol[0].double().detach()
    Sigma = torch.linalg.inv(U @ U.T)
    C = Sigma * (a / v)                                              # cov(x_0, x_T) = Sigma (a / v) Cov(x_T), Cov(x_T) = I
    exact = gaussian_sb_cross_cov(gaussian_problem(3)[1], torch.eye(3, dtype=torch.float64), a, v)
    assert (C - exact).norm() / exact.norm() < 0.05
    assert b.metrics["cross_cov_error"] < 0.1


def test_papermill_solver_lightsb(tmp_path):
    import papermill as pm
    params = dict(solver="lightsb", n_ipf=1, num_iter=40, cache_refresh=20, cache_npar=300, batch_size=64, eval_npar=300,
                  score_npar=100, out_dir=str(tmp_path / "runs"), run_name="smoke", progress=False, data="checker", ode_steps=30,
                  n_components=6)
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False)
    run_dir = tmp_path / "runs" / "smoke"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["solver"] == "lightsb" and cfg["n_components"] == 6 and cfg["ode_steps"] == 30
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["solver"] == "lightsb" and m["steps"] == 2 * 40 and m["sw2_data_ode"] > 0


@pytest.mark.parametrize("params,match", [
    (dict(n_components=0), "parameter n_components must be an integer >= 1"),
    (dict(n_components=2.5), "parameter n_components=2.5 must be an int"),
    (dict(precision="bf16"), "precision='bf16' applies to solver='dsb' only"),
    (dict(solver="dsbm", n_components=3), "parameter n_components=3 applies to solver='lightsb'"),
    (dict(predict="end"), "parameter predict='end' applies to solver='dsbm'"),
    (dict(sampler="euler"), "parameter sampler='euler' is not allowed"),
    (dict(solver="lightsbx"), "parameter solver='lightsbx' is not allowed .*'lightsb'"),
])
def test_bad_parameters_fail_before_any_output(tmp_path, params, match):
    from dsb.run import run
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        run(**{**TINY, **params}, out_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_image_data_is_refused(tmp_path):
    from dsb.run import run
    with pytest.raises(ValueError, match="solver='lightsb' takes points of shape"):
        run(**{**TINY, "data": "scurve"}, dataset="digits", num_steps=3, out_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
