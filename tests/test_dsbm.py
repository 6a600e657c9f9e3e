"The DSBM solver and the probability-flow sampler through the runner: 2d, Gaussian, transfer and image runs, papermill, kill-and-resume, bad parameters, exactness of the ODE."
import json, subprocess, sys
from pathlib import Path

import pytest
import torch
from conftest import killed_run, position

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(solver="dsbm", n_ipf=2, num_iter=100, cache_refresh=25, checkpoint_every=25, cache_npar=200, batch_size=64,
            eval_npar=400, score_npar=300, progress=False, plots=False, data="moon", lr=1e-3, grid_steps=0,
            predict="drift")   # not the 2d preset: tiny, and drift networks (predict='end', the preset's, has its own test below)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    "The uninterrupted DSBM run every interrupted one must end like."
    from dsb.run import run
    return run(**TINY, out_dir=str(tmp_path_factory.mktemp("full")), run_name="full")


def _untrained(params: dict) -> dict:
    "SW2 of the untrained solver (zero-initialised drifts) for each logged score, on 2000 points: what a run that learned nothing gets."
    from dsb.run import build_trainer
    from dsb.config import make_config
    from dsb.data import make_data
    from dsb.metrics import sliced_wasserstein
    cfg = make_config(**params)
    data = make_data(cfg)
    solver = build_trainer(cfg, data).solver
    g = lambda k: torch.Generator().manual_seed(k)
    out = {}
    for sampler, suffix in (("sde", ""), ("ode", "_ode")):
        out["sw2_data" + suffix] = sliced_wasserstein(solver.to_data(data.prior(2000, g(1)), g(2), sampler=sampler), data.data(2000, g(3)), generator=g(4))
        out["sw2_prior" + suffix] = sliced_wasserstein(solver.to_prior(data.data(2000, g(1)), g(2), sampler=sampler), data.prior(2000, g(3)), generator=g(4))
    return out


def _learned(full: dict, untrained: dict, margins: dict):
    """Each score at most `margin` x the untrained solver's (measured in the test, on more points, so with less
    small-sample bias than the run's 400: the comparison favours the untrained model). Margins sit above the measured
    ratios (in the callers' comments) with room for platform rounding, far below 1."""
    for k, m in margins.items():
        assert 0 < full[k] < m * untrained[k], (k, full[k], untrained[k], m)


def _same_result(a: dict, b: dict):
    for k in ("sw2_data", "sw2_prior", "sw2_data_ode", "sw2_prior_ode", "sw2_floor", "steps"): assert a[k] == b[k], k


def test_dsbm_run_logs_both_samplers_and_learns(full):
    assert full["solver"] == "dsbm" and full["steps"] == 2 * 2 * 100
    # measured: trained / untrained 0.283 / 0.438, 0.112 / 0.290, 0.268 / 0.360, 0.265 / 0.356 (ratios 0.65, 0.39, 0.74, 0.74)
    _learned(full, _untrained(TINY), dict(sw2_data=0.8, sw2_prior=0.55, sw2_data_ode=0.88, sw2_prior_ode=0.88))
    history = [json.loads(l) for l in (Path(full["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in history if r.get("name") == "training the backward drift" and r["iteration"] == 1]
    assert losses[-1] < losses[0]                                 # the regression makes progress


def test_killed_dsbm_run_resumes_bitwise(tmp_path, full):
    "SIGKILL after a mid-stage checkpoint; the resumed run ends exactly like the uninterrupted one."
    from dsb.run import run
    run_dir = killed_run(tmp_path, "killed", TINY, lambda d: (position(d / "checkpoint.pt") or (0,)) >= (0, 1, 25))
    _same_result(run(resume=str(run_dir)), full)


def test_resume_extends_a_finished_dsbm_run(tmp_path, full):
    from dsb.run import run
    first = run(**{**TINY, "n_ipf": 1}, out_dir=str(tmp_path), run_name="r")
    with pytest.raises(ValueError, match="solver='dsb' differs from the run being resumed"): run(resume=first["run_dir"], solver="dsb")
    _same_result(run(resume=first["run_dir"], n_ipf=2), full)


def test_gaussian_dsbm_measures_against_its_own_reference(tmp_path):
    "On 'gaussian' the cross-covariance is measured against the closed form for the continuous OU kernel (a_T, v_T)."
    from dsb.run import run, build_trainer
    from dsb.config import make_config
    from dsb.data import make_data
    from dsb.imf import LinearReference
    params = dict({k: v for k, v in TINY.items() if k != "data"}, dataset="gaussian", data_dim=3, n_ipf=1, num_iter=60, eval_npar=2000,
                  gamma_min=0.05, gamma_max=0.05, ode_steps=0)
    s = run(**params, out_dir=str(tmp_path))
    cfg = make_config(**params)
    # the untrained drifts are zero (zero-initialised last layers): x_N = x_0 + noise, so cov(x_0, x_N) = cov(x_0); its error
    # against the closed form (236 % here) is what a run that learned nothing scores. 60 steps of one stage reach 125 %.
    data = make_data(cfg)
    x0 = data.data(200_000, torch.Generator().manual_seed(0)).double()
    a1, v1 = LinearReference.ou(1.0, 1.0).endpoint_transition()
    exact = data.exact_cross_cov(a1, v1)
    untrained = ((torch.cov(x0.T) - exact).norm() / exact.norm()).item()
    assert 0 <= s["cross_cov_error"] < 0.75 * untrained and "cross_cov_error_ode" not in s and s["T"] == pytest.approx(1.0)
    a, v = build_trainer(cfg, make_data(cfg)).solver.reference_transition()
    a_T, v_T = LinearReference.ou(1.0, 1.0).endpoint_transition()
    assert (a.item(), v.item()) == pytest.approx((a_T, v_T), rel=1e-12)


def test_predict_end_learns_and_extends_exactly(tmp_path):
    "predict='end': both directions are EndDrift networks, the regression learns, and extending a finished run ends like an uninterrupted one."
    from dsb.run import run, build_trainer
    from dsb.config import make_config
    from dsb.data import make_data
    from dsb.dsbm import EndDrift
    p = dict(TINY, predict="end")
    cfg = make_config(**p)
    data = make_data(cfg)
    solver = build_trainer(cfg, data).solver
    assert isinstance(solver.forward.net, EndDrift) and isinstance(solver.backward.net, EndDrift)
    assert solver.forward.net.direction == "forward" and solver.backward.net.direction == "backward"
    full = run(**p, out_dir=str(tmp_path), run_name="full")
    # measured: SDE trained / untrained 0.242 / 0.433 (data), 0.130 / 0.282 (prior): ratios 0.56 and 0.46.
    # The ODE is NOT asserted to learn: with predict='end' this tiny run's probability flow scores 1.09 (data) and 0.82
    # (prior) against the untrained model's 0.36 and 0.36 (worse than untrained; open, see issue 20's report).
    _learned(full, _untrained(p), dict(sw2_data=0.7, sw2_prior=0.6))
    assert all(0 < full[k] < float("inf") for k in ("sw2_data_ode", "sw2_prior_ode"))
    first = run(**{**p, "n_ipf": 1}, out_dir=str(tmp_path), run_name="first")
    with pytest.raises(ValueError, match="predict='drift' differs from the run being resumed"): run(resume=first["run_dir"], predict="drift")
    _same_result(run(resume=first["run_dir"], n_ipf=2), full)


def test_transfer_and_dsb_ode(tmp_path):
    "Transfer mode with DSBM and the ODE as the main sampler; DSB's probability flow through the runner."
    from dsb.run import run
    s = run(**dict(TINY, n_ipf=1, transfer=True, data="scurve", data_transfer="circle", sampler="ode", plots=True), out_dir=str(tmp_path))
    assert {"sw2_data", "sw2_data_sde", "sw2_prior_sde"} <= set(s) and (Path(s["run_dir"]) / "bridge.gif").exists()
    d = run(**dict(TINY, solver="dsb", n_ipf=1), out_dir=str(tmp_path))
    assert d["sw2_data_ode"] > 0 and d["sw2_data_ode"] == d["sw2_data_ode"]


def test_tiny_image_run_with_dsbm(tmp_path):
    "The offline 8x8 digits through DSBM with the UNet: the same path as DSB's images."
    from dsb.run import run
    s = run(dataset="digits", solver="dsbm", n_ipf=1, num_iter=4, cache_refresh=2, cache_npar=4, batch_size=2, eval_npar=8,
            num_steps=3, checkpoint_every=2, progress=False, out_dir=str(tmp_path))
    assert s["steps"] == 2 * 4 and s["sw2_data"] == s["sw2_data"] and "sw2_data_ode" not in s    # ODE metrics only where cheap
    assert (Path(s["run_dir"]) / "bridge.gif").exists()


def test_papermill_solver_dsbm(tmp_path):
    import papermill as pm
    params = dict(solver="dsbm", n_ipf=1, num_iter=40, cache_refresh=20, cache_npar=200, batch_size=64, eval_npar=300,
                  out_dir=str(tmp_path / "runs"), run_name="smoke", progress=False, data="checker", ode_steps=30)
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False)
    run_dir = tmp_path / "runs" / "smoke"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["solver"] == "dsbm" and cfg["ode_steps"] == 30
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["solver"] == "dsbm" and m["steps"] == 2 * 40 and m["sw2_data_ode"] > 0


@pytest.mark.parametrize("params,match", [
    (dict(sampler="euler"), "parameter sampler='euler' is not allowed"),
    (dict(ode_steps=-1), "ode_steps"),
    (dict(ode_steps=2.5), "parameter ode_steps=2.5 must be an int"),
    (dict(solver="dsb", ode_steps=50), "ode_steps=50: solver='dsb' runs its probability flow on the chain's grid of num_steps=20"),
    (dict(solver="dsbmx"), "parameter solver='dsbmx' is not allowed .*choose one of 'dsb', 'dsbm'"),
    (dict(solver="dsbm", dataset="gaussian", transfer=True), "applies to dataset='2d'"),   # data='moon' of TINY, and transfer
    (dict(solver="dsb", predict="end"), "parameter predict='end' applies to solver='dsbm'"),
    (dict(predict="x0"), "parameter predict='x0' is not allowed"),
])
def test_bad_parameters_fail_before_any_output(tmp_path, params, match):
    from dsb.run import run
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        run(**{**TINY, **params}, out_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_probability_flow_is_exact_on_gaussians():
    "float64: the velocity (f - b)/2 of the exact drifts is 10_imf's probability flow, and the ODE maps the prior end onto the data."
    from dsb.dsbm import flow_velocity, flow_sample, uniform_grid, bridge_targets
    from dsb.imf import LinearReference, GaussianCoupling, markov_drift_gaussian, probability_flow_gaussian
    from dsb.static import gaussian_sb_cross_cov
    from dsb.gaussian import gaussian_problem
    d, T = 4, 2.0
    ref = LinearReference.ou(T, var_final=1.)
    m0, S0 = gaussian_problem(d, seed=0)
    m1, S1 = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    sb = GaussianCoupling(m0, S0, m1, S1, gaussian_sb_cross_cov(S0, S1, *ref.endpoint_transition()).to(torch.float64))
    drift = lambda direction: lambda x, t: (lambda K, c: x @ K[0].T + c[0])(*markov_drift_gaussian(ref, sb, (t * T).reshape(1), direction))
    f, b = drift("forward"), drift("backward")
    x = torch.randn(7, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (0.05, 0.5, 0.95):
        U, u = probability_flow_gaussian(ref, sb, torch.tensor([t * T], dtype=torch.float64))
        assert torch.allclose(flow_velocity(f, b, x, torch.tensor(t, dtype=torch.float64)), x @ U[0].T + u[0], atol=1e-12, rtol=0)
    L = torch.linalg.cholesky(S1)
    out = flow_sample(f, b, torch.cat([m1[None], m1 + L.T]), *uniform_grid(2000, T, "backward"))
    A = (out[1:] - out[0]).T
    assert (out[0] - m0).norm() < 1e-2 * m0.norm() and (A @ A.T - S0).norm() < 1e-2 * S0.norm()
    back = flow_sample(f, b, out, *uniform_grid(2000, T, "forward"))          # and back up: the flow is invertible
    assert (back[0] - m1).norm() < 1e-2 and ((back[1:] - back[0]).T - L).norm() < 2e-2
    # a wrong sign in the backward target would not reproduce the drift: the check can fail
    x0, xT = sb.sample(50_000, torch.Generator().manual_seed(1))
    xt, tf, tb = bridge_targets(ref, x0, xT, torch.full((50_000,), 1.0, dtype=torch.float64), torch.Generator().manual_seed(2))
    X = torch.cat([xt, torch.ones(len(xt), 1, dtype=torch.float64)], 1)
    K, c = markov_drift_gaussian(ref, sb, torch.tensor([1.0], dtype=torch.float64), "backward")
    coef = torch.linalg.lstsq(X, tb).solution
    assert (coef[:d].T - K[0]).norm() < 0.05 * K[0].norm() and (torch.linalg.lstsq(X, -tb).solution[:d].T - K[0]).norm() > K[0].norm()


def test_dsb_flow_refuses_other_step_counts():
    from dsb.config import make_config
    from dsb.data import make_data
    from dsb.run import build_trainer
    cfg = make_config(n_ipf=1, progress=False)
    solver = build_trainer(cfg, make_data(cfg)).solver
    x = torch.randn(5, 2)
    assert torch.equal(solver.to_data(x, sampler="ode"), solver.to_data(x, sampler="ode", steps=20))   # deterministic, the chain's grid
    with pytest.raises(ValueError, match="ode_steps=7: DSB's probability flow runs on its chain's grid of num_steps=20"):
        solver.to_data(x, sampler="ode", steps=7)


def test_bench_solvers_quick_prints_the_table():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "solvers", "--quick"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    for part in ("gaussian", "2d", "transfer"):
        for solver in ("dsb", "dsbm"): assert any(l.startswith(part) and f" {solver} " in l for l in lines), (part, solver, out.stdout)
    assert "cross-cov err (SDE)" in out.stdout and "SW2/floor: SDE" in out.stdout and "ODE" in out.stdout


def test_bench_seeds_average_the_training_seeds(capsys):
    "`bench solvers --seeds`: one row per data set, the mean of the per-seed SW2 / floor with its standard error over the seeds; `--seeds` with `--set seed=N` is refused before any training."
    sys.path.insert(0, str(ROOT / "bench"))
    import bench
    rows = [{"part": "2d", "solver": "dsbm", "data": "checker", "floor": 0.01, "floor_se": 0.001, "floor_draws": 100, "draws": 20,
             "sde_ratio": v, "ode_ratio": v + 0.1, "sde_ratio_se": 0.05, "ode_ratio_se": 0.05, "seed": k, "budget": "2x2x2000 steps",
             "cpu_s": 110. + k, "wall_s": 120.} for k, v in enumerate((1.2, 1.3, 1.1))]
    r = bench._over_seeds(rows)
    assert r["seeds"] == [0, 1, 2] and r["sde_ratio_per_seed"] == [1.2, 1.3, 1.1]
    assert r["sde_ratio"] == pytest.approx(1.2) and r["ode_ratio"] == pytest.approx(1.3)
    assert r["sde_ratio_se"] == pytest.approx(0.1 / 3 ** 0.5) and r["cpu_s"] == pytest.approx(111.)
    bench._show_solver_row(r)
    assert "mean of 3 training seeds [0, 1, 2]: SDE 1.20 ± 0.06 (1.20, 1.30, 1.10)" in capsys.readouterr().out
    with pytest.raises(SystemExit): bench.main(["solvers", "--only", "2d", "--seeds", "0", "1", "--set", "seed=3"])
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit): bench.main(["solvers", "--only", "2d", "--solvers", "dsb", "--set", "predict=end"])
    assert "predict='end' applies to solver='dsbm'" in capsys.readouterr().err   # checked against the solvers that run


def test_control_variate_cross_covariance_is_unbiased_and_precise():
    "bench's control variate: for a linear 'network' (the exact SB drift plus a known error) it finds the chain's closed-form cross-covariance, with far less noise than the direct estimate."
    sys.path.insert(0, str(ROOT / "bench"))
    import bench
    from torch import nn
    from dsb.config import make_config
    from dsb.data import make_data
    from dsb.run import build_trainer
    from dsb.gaussian import gaussian_problem
    from dsb.imf import GaussianCoupling, markov_drift_gaussian
    from dsb.core import relative_error
    from dsb.metrics import coupling_moments
    from dsb.dsbm import sde_sample
    d, N = 3, 50
    cfg = make_config(dataset="gaussian", data_dim=d, solver="dsbm", num_steps=N, gamma_min=1 / N, gamma_max=1 / N, grid_steps=0, progress=False, plots=False)
    data = make_data(cfg)
    tr = build_trainer(cfg, data); s = tr.solver
    exact = data.exact_cross_cov(*s.reference_transition())
    mean0, S0 = gaussian_problem(d)
    eye = torch.eye(d, dtype=torch.float64)
    t, gammas = s.forward.grid
    K, c = markov_drift_gaussian(s.ref, GaussianCoupling(mean0, S0, torch.zeros(d), eye, exact), t[:-1] * s.ref.T, "forward")
    D = 0.3 * torch.tensor([[1., 0.5, 0.], [0., -1., 0.], [0.2, 0., 0.5]], dtype=torch.float64)   # the 'network's' error
    class Linear(nn.Module):
        def forward(self, x, tn): i = round(tn.item() * N); return x @ (K[i] + D).T.to(x) + c[i].to(x)
    s.forward.ema = Linear()
    C = S0.clone()
    for Ki, gi in zip(K, gammas): C = C @ (eye + gi * (Ki + D)).T          # the perturbed chain's cross-covariance, closed form
    truth = relative_error(C, exact).item()
    res = bench._cross_cov_cv(tr, data, cfg.var_final, exact, 20_000, 3)
    assert abs(res["err_cv"] - truth) < 0.003 * truth + 1e-4, (res, truth)
    x0 = data.data(20_000, torch.Generator().manual_seed(0))
    direct = [relative_error(coupling_moments(x0, sde_sample(s.forward.ema, x0, t, gammas, s.ref.sigma, generator=torch.Generator().manual_seed(k))), C).item()
              for k in range(3)]
    assert res["err_cv_std"] < 0.2 * sum(direct) / 3, (res, direct)       # the direct estimate's own error is several times larger


def test_registered_coupling_starts_dsbm(tmp_path):
    "-p coupling NAME: iteration 0 regresses on the registered coupling's pairs (every refresh of stage 0, seeded by the block), later ones on simulated pairs."
    from dsb.run import run
    from dsb.dsbm import COUPLINGS
    calls = []
    @COUPLINGS.register("test_pairs")
    def test_pairs(cfg, data):
        def draw(n, generator):
            x0 = data.data(n, generator); xT = data.prior(n, generator)
            calls.append((n, generator.initial_seed(), x0[:2].clone()))
            return x0, xT
        return draw
    try:
        with pytest.raises(ValueError, match="coupling='test_pairs' applies to solver='dsbm'"):
            run(**{**TINY, "solver": "dsb", "coupling": "test_pairs"}, out_dir=str(tmp_path / "no"))
        res = run(**TINY, coupling="test_pairs", out_dir=str(tmp_path))
        assert len(calls) == TINY["num_iter"] // TINY["cache_refresh"]                  # stage 0 of iteration 0 only
        assert all(n == TINY["cache_npar"] for n, _, _ in calls) and len({s for _, s, _ in calls}) == len(calls)
        assert json.loads((Path(res["run_dir"]) / "config.json").read_text())["coupling"] == "test_pairs"
        with pytest.raises(ValueError, match="coupling='independent' differs from the run being resumed"):
            run(resume=res["run_dir"], coupling="independent", n_ipf=3)
    finally: COUPLINGS.entries.pop("test_pairs", None)


def test_bench_scores_a_perfect_model_near_one_and_a_shrunk_one_far_above():
    "bench's 2d score is a ratio of means: fresh data as the 'model' scores about 1 (the mean of per-draw ratios would not), a shrunk copy of the data far above."
    sys.path.insert(0, str(ROOT / "bench"))
    import bench
    from types import SimpleNamespace
    from dsb.config import make_config
    from dsb.data import make_data
    data = make_data(make_config(data="8gaussians", device="cpu"))
    g = torch.Generator().manual_seed(99)
    from dsb.reference import Chain
    from dsb.trainer import Solver
    class Fake(Solver):
        "The SDE draws fresh data (a perfect sampler); the ODE the data's clusters pulled 10 % to the centre."
        def chain(self, to_data): return Chain(lambda x, t: data.data(len(x), g), torch.zeros(2), torch.ones(1), sigma2=0.)
        def flow(self, to_data, steps=None): return Chain(lambda x, t: 0.9 * data.data(len(x), g), torch.zeros(2), torch.ones(1), sigma2=0.)
    res = bench._sample_scores(SimpleNamespace(solver=Fake()), data, 30, 2000, torch.device("cpu"), floor_draws=60)
    assert res["floor_draws"] == 60 and res["draws"] == 30 and res["sde_ratio_se"] > 0
    assert abs(res["sde_ratio"] - 1) < 3 * res["sde_ratio_se"] and res["sde_ratio_se"] < 0.1, res
    assert res["ode_ratio"] > 1 + 5 * res["ode_ratio_se"], res
    cal = bench.calibrate(torch.device("cpu"), names=("8gaussians",), n=2000, draws=20)["rows"][0]
    assert cal["mean_of_ratios"] > cal["ratio_of_means"]      # Jensen: the per-draw mean is biased upwards


def test_bench_exact_first_iteration_drift_reproduces_the_data_on_a_fine_grid():
    "bench's exact first-iteration DSBM drift (closed-form E[x_0 | x_t] for 8gaussians and checker): on a fine grid its samples score about 1, on a coarse one far above."
    sys.path.insert(0, str(ROOT / "bench"))
    import bench
    res = bench.exact_grid(torch.device("cpu"), names=("8gaussians", "checker"), steps=(4, 100), draws=10, n=2000, floor_draws=30)["rows"]
    coarse, fine = {r["data"]: r for r in res if r["steps"] == 4}, {r["data"]: r for r in res if r["steps"] == 100}
    for name in ("8gaussians", "checker"):
        assert abs(fine[name]["ratio"] - 1) < 0.3, fine[name]          # measured 1.07 and 0.78 (10 draws of 2,000 points: noisy)
        assert coarse[name]["ratio"] > fine[name]["ratio"] + 1, (coarse[name], fine[name])   # measured 3.0 and 3.9
