"""dsb benchmarks: speed at the paper's 2d configuration, 2d sample quality, Gaussian d=5 coupling.

Prints figures; asserts nothing about time. Usage:

    python bench/bench.py speed                 # iterations/s and cache build time (paper 2d config)
    python bench/bench.py quality               # SW2 vs noise floor on scurve, checker, 8gaussians
    python bench/bench.py gaussian              # d=5 coupling vs closed form and DSB's exact iterate (03's GAUSSIAN_BENCHMARK)
    python bench/bench.py solvers               # DSB, DSBM, LightSB: Gaussian d=5, 20, 50 at T=0.5, 1, 2; the EOT mixture benchmark
                                                # at d=2, 16, 64 (cBW2-UVP); 2d and transfer exact W2 / kNN precision and SW2, SDE and ODE
    python bench/bench.py solvers --only 2d     # one part of the solver table: gaussian, eot, 2d or transfer
    python bench/bench.py solvers --only eot --eot-dims 2 16 64 128   # the mixture benchmark, here up to d = 128
    python bench/bench.py solvers --only 2d --set num_iter=1000   # the 2d / transfer rows with other parameters than the presets'
    python bench/bench.py solvers --only 2d --solvers dsbm --seeds 0 1 2   # each row's mean over three training seeds
    python bench/bench.py calibrate             # how the 2d score rates fresh data (a perfect model)
    python bench/bench.py grid                  # the exact first-iteration DSBM drift on 20-100 step grids
    python bench/bench.py all --device cuda     # everything, on a GPU
    python bench/bench.py speed --quick         # tiny sizes (what the tests run)

Every run uses the solvers' presets (dsb.trainer.PRESETS, registered in nbs/09_ipf, nbs/11_dsbm and nbs/12_lightsb): the settings a user
gets with `-p solver NAME`; no setting is tuned here. Results are also written as JSON to bench/out/<name>.json; the solver
table's to bench/results/solvers-<parts>-<device>.json with the date, commit, machine and command (bench/RESULTS.md is made
from those). Every time is the CPU seconds of this process (`time.process_time`, one thread unless OMP_NUM_THREADS says more).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dsb.core import get_device, tune_malloc
from dsb.reference import Schedule
from dsb.ipf import build_cache, PAPER_2D, GAUSSIAN_BENCHMARK_BUDGET
from dsb.trainer import Callback, sample
from dsb.config import make_config
from dsb.data import make_data
from dsb.run import run, build_trainer
from dsb.gaussian import GAUSSIAN_BENCHMARK, gaussian_problem
from dsb.core import relative_error
from dsb.metrics import sliced_wasserstein, coupling_moments, PointScore
from dsb.data import TRANSFER_PAIRS, components_2d

OUT = Path(__file__).parent / "out"
RESULTS = Path(__file__).parent / "results"
SOLVERS_2D = ("scurve", "checker", "8gaussians", "moon", "spirals", "pinwheel")

# The original implementation, measured on the 2-core development machine (issue 3), at PAPER_2D (dsb.ipf):
ORIGINAL = {"all_in_it_per_s": (100, 112), "train_only_it_per_s": 230, "cache_build_s": 0.5}


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def mlp_flops(x_dim=2, batch=1):
    "Multiply-adds of one forward pass of the paper's 2d MLP, times 2 (FLOPs)."
    macs = x_dim * 16 + 16 * 32 + 16 * 16 + 16 * 32 + 64 * 128 + 128 * 128 + 128 * x_dim
    return 2 * macs * batch


def speed(device, quick=False, repeats=3):
    "Cache build time and training iterations/s at the paper's 2d configuration."
    cfg = make_config(**PAPER_2D, device=str(device), progress=False, plots=False)
    if quick: cfg = make_config(**{**PAPER_2D, "cache_npar": 500, "batch_size": 64}, device=str(device), progress=False, plots=False)
    n_iter = 200 if quick else 2000
    data = make_data(cfg)

    def make_trainer(cache_refresh, num_iter, callbacks=()):
        "One stage of training the forward network on chains simulated by the backward EMA network (IPF iteration 0, stage 1)."
        c = make_config(**{**vars(cfg), "n_ipf": 1, "num_iter": num_iter, "cache_refresh": cache_refresh})
        tr = build_trainer(c, data, callbacks)
        tr.position = (0, 1, 0)
        return tr

    tr = make_trainer(cfg.cache_refresh, n_iter)
    schedule, net = Schedule.from_params(cfg.num_steps, cfg.gamma_min, cfg.gamma_max, cfg.gamma_space), tr.solver.forward.ema
    x0 = data.data(cfg.cache_npar, torch.Generator().manual_seed(0)).to(device)
    chunk = tr.policy.cache_chunk
    build_cache(net, x0[:100], *schedule.forward_grid())  # warm up
    times = []
    for r in range(repeats + 2):
        sync(device); t0 = time.perf_counter()
        build_cache(net, x0, *schedule.backward_grid(), generator=torch.Generator(device).manual_seed(r), chunk=chunk)
        sync(device); times.append(time.perf_counter() - t0)
    cache_s = statistics.median(times[2:])
    cache_flops = 2 * cfg.num_steps * mlp_flops(2, cfg.cache_npar)

    rates = {}
    for label, refresh in (("train_only", n_iter), ("all_in", cfg.cache_refresh)):
        runs = []
        for r in range(repeats):
            marks = []
            class Mark(Callback):  # time from the end of the first step: excludes the one cache build
                def after_step(self, tr):
                    if tr.step == 0: sync(device); marks.append(time.perf_counter())
            tr = make_trainer(refresh, n_iter, [Mark()])
            sync(device); t0 = time.perf_counter()
            tr.fit()
            sync(device); t1 = time.perf_counter()
            runs.append((n_iter - 1) / (t1 - marks[0]) if label == "train_only" else n_iter / (t1 - t0))
        rates[label] = statistics.median(runs)
    train_flops = 3 * mlp_flops(2, cfg.batch_size)
    res = {"device": str(device), "config": {**PAPER_2D, **({"cache_npar": cfg.cache_npar, "batch_size": cfg.batch_size} if quick else {})},
           "threads": torch.get_num_threads(), "cache_build_s": cache_s,
           "cache_gflop": cache_flops / 1e9, "cache_gflop_per_s": cache_flops / cache_s / 1e9,
           "train_only_it_per_s": rates["train_only"], "all_in_it_per_s": rates["all_in"],
           "train_gflop_per_s": train_flops * rates["train_only"] / 1e9,
           "speedup_all_in_vs_original": rates["all_in"] / statistics.mean(ORIGINAL["all_in_it_per_s"]),
           "speedup_train_only_vs_original": rates["train_only"] / ORIGINAL["train_only_it_per_s"],
           "all_in_bound_it_per_s_at_measured_rates": 1 / (1 / rates["train_only"] + cache_s / cfg.cache_refresh)}
    return res


def quality(device, quick=False, datasets=("scurve", "checker", "8gaussians"), **overrides):
    "Default-config runs on several 2d data sets: SW2 of generated vs held-out data next to the noise floor."
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            params = dict(data=name, device=str(device), out_dir=tmp, progress=False, plots=False, **overrides)
            if quick: params.update(n_ipf=1, num_iter=100, cache_npar=300, eval_npar=500)
            s = run(**params)
            rows.append({"data": name, "sw2": s["sw2_data"], "floor": s["sw2_floor"], "ratio": s["sw2_data"] / s["sw2_floor"],
                         "sw2_prior": s["sw2_prior"], "wall_s": s["wall_s"], "it_per_s": s["iterations_per_s"]})
    return {"device": str(device), "rows": rows}


# The engine's Gaussian problem is defined once, in 03_gaussian (GAUSSIAN_BENCHMARK: d = 5, N = 20,
# constant gamma = 0.025, T = 0.5, 6 IPF iterations), its training budget in 09_ipf (GAUSSIAN_BENCHMARK_BUDGET).
def gaussian(device, quick=False, **overrides):
    "DSB with networks on GAUSSIAN_BENCHMARK: learned cross-covariance vs the closed form and vs DSB's exact iterate after as many iterations."
    from dsb.gaussian import dsb_ipf_gaussian
    gb = GAUSSIAN_BENCHMARK
    params = dict(dataset="gaussian", data_dim=gb["dim"], num_steps=gb["num_steps"], gamma_min=gb["gamma"], gamma_max=gb["gamma"],
                  mean_final=gb["mean_final"], var_final=gb["var_final"], n_ipf=gb["n_ipf"], **GAUSSIAN_BENCHMARK_BUDGET,
                  eval_npar=100_000, device=str(device), progress=False, plots=False)
    params.update(overrides)
    if quick: params.update(n_ipf=1, num_iter=100, cache_npar=300, eval_npar=2000)
    cfg = make_config(**params)
    with tempfile.TemporaryDirectory() as tmp:
        s = run(**{**params, "out_dir": tmp})
        history = [json.loads(l) for l in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    errs = [r["cross_cov_error"] for r in history if "cross_cov_error" in r]
    schedule = Schedule.from_params(cfg.num_steps, cfg.gamma_min, cfg.gamma_max, cfg.gamma_space)
    exact = dsb_ipf_gaussian(schedule, *gaussian_problem(cfg.data_dim, gb["seed"]), cfg.mean_final, cfg.var_final, cfg.n_ipf)
    exact_errs = [float(e) for e in exact["error"]]
    return {"device": str(device), "schedule": {k: params[k] for k in ("num_steps", "gamma_min", "gamma_max", "var_final")},
            "T": schedule.T, "n_ipf": cfg.n_ipf, "network_error_per_ipf": errs, "exact_dsb_error_per_ipf": exact_errs,
            "network_error": errs[-1], "exact_dsb_error": exact_errs[-1], "gap_pp": 100 * (errs[-1] - exact_errs[-1]),
            "wall_s": s["wall_s"]}


# The solver table: each row trains with the solver's preset for the data (dsb.trainer.PRESETS), so it measures what a user
# gets with `-p solver NAME`. Gaussian rows: data `gaussian_problem(d)` to N(0, I), the horizon T set by gamma = T / num_steps
# of the default schedule (DSBM refines it into its own Euler grid, `grid_steps`); 2d and transfer rows: the exact-W2 and
# kNN score of `dsb.metrics.PointScore` (3 draws of 3,000 points) and SW2 / floor as a ratio of means (20 draws of 10,000).


def _train(params, device):
    cfg = make_config(**params, device=str(device), progress=False, plots=False)
    data = make_data(cfg)
    tr = build_trainer(cfg, data)
    t0, c0 = time.perf_counter(), time.process_time()
    tr.fit()
    return tr, cfg, data, {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


# How the 2d rows score a model. The floor, SW2 between two held-out samples of n points, is a noisy
# quantity: its draws spread by 30-37 %, on 8gaussians (the eight modes' counts vary from draw to draw). The mean
# of per-draw ratios SW2(model)/SW2(floor) is then biased upwards (Jensen: E[a/b] > E[a]/E[b]): fresh data
# in place of the model scores 1.23 on 8gaussians over 60 draws, 1.03 on scurve, 1.05 on checker, so a
# perfect model would fail "<= 1.25" on 8gaussians half of the time. The rows therefore report the ratio of
# the means, mean_k SW2(model_k, held_k) / mean_j SW2(held2_j, held_j), with the floor over FLOOR_DRAWS
# draws and the model over `draws`, and its standard error (delta method). `python bench/bench.py calibrate`
# measures both estimators on fresh data as the model.
FLOOR_DRAWS = 100
_floors = {}

def _held(data, n, k):
    "Held-out draw k of the data end, and the independent second sample of the floor."
    g = lambda j: torch.Generator().manual_seed(j)
    return data.data(n, g(1000 + k)), data.data(n, g(2000 + k))

def _sw(x, held, k):
    return float(sliced_wasserstein(x.float().cpu(), held, generator=torch.Generator().manual_seed(3000 + k)))

def _mean_se(vals):
    return statistics.mean(vals), (statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.)

def sw2_floor(data, n, draws=FLOOR_DRAWS, key=None):
    "Mean and standard error over `draws` of SW2 between two held-out samples of `n` points (cached under `key`)."
    if key is not None and (key, n, draws) in _floors: return _floors[key, n, draws]
    out = _mean_se([_sw(h2, h, k) for k in range(draws) for h, h2 in [_held(data, n, k)]])
    if key is not None: _floors[key, n, draws] = out
    return out

def _ratio(model, floor):
    (m, m_se), (f, f_se) = model, floor
    r = m / f
    return r, r * math.sqrt((m_se / m) ** 2 + (f_se / f) ** 2)

@torch.no_grad()
def _sample_scores(tr, data, draws, n, device, floor_draws=FLOOR_DRAWS, key=None):
    "SW2 of generated (SDE and ODE) vs held-out data over `draws` draws, and its ratio of means to the floor's over `floor_draws`."
    out = {"sde": [], "ode": []}
    g = lambda k: torch.Generator().manual_seed(k)
    for k in range(draws):
        prior, (held, _) = data.prior(n, g(10 + k)).to(device), _held(data, n, k)
        for name in out: out[name].append(_sw(sample(tr.solver, prior, True, name, generator=torch.Generator(device).manual_seed(4000 + k)), held, k))
    floor_draws = max(floor_draws, draws)   # the model's held-out sets are the floor's first ones
    floor = sw2_floor(data, n, floor_draws, key)
    res = {"floor": floor[0], "floor_se": floor[1], "draws": draws, "floor_draws": floor_draws}
    for name, vals in out.items():
        res[name], res[name + "_se"] = _mean_se(vals)
        res[name + "_ratio"], res[name + "_ratio_se"] = _ratio((res[name], res[name + "_se"]), floor)
    return res


class _ExactIteration0:
    """The exact backward drift of DSBM's first iteration (the Markovian projection of reference bridges between
    data and prior drawn independently) for 8gaussians (a Gaussian mixture) and checker (a mixture of uniform
    squares): E[x_0 | x_t] in closed form, then `end_drift`. Sampled on a grid, it measures the grid's own share
    of SW2 / floor, with no network in the way."""
    def __init__(self, name, ref):
        self.name, self.ref = name, ref
        comp = components_2d(name)                # the mixture's parts, in sample_2d's coordinates (05_data)
        if name == "8gaussians": self.s, self.centres = comp["std"], comp["centres"]
        else: self.boxes = comp["boxes"]

    def posterior_mean(self, x, al, tau2):
        "E[x_0 | x_t = x] when x_t = al x_0 + N(0, tau2 I) (the prior end integrated out)."
        if self.name == "8gaussians":
            var = al ** 2 * self.s ** 2 + tau2
            logw = -((x[:, None] - al * self.centres) ** 2).sum(-1) / (2 * var)
            post = self.centres + (al * self.s ** 2 / var) * (x[:, None] - al * self.centres)
        else:  # per coordinate x_0 | x ~ N(x / al, tau2 / al^2) truncated to the box
            N01, al = torch.distributions.Normal(0., 1.), max(al, 1e-4)
            m, sd = x[:, None] / al, math.sqrt(tau2) / al
            lo, hi = self.boxes[None, :, 0::2], self.boxes[None, :, 1::2]
            a, b = (lo - m) / sd, (hi - m) / sd
            Z = (N01.cdf(b) - N01.cdf(a)).clamp_min(1e-300)
            post = m + sd * (N01.log_prob(a).exp() - N01.log_prob(b).exp()) / Z
            logw = Z.log().sum(-1)
        return (torch.softmax(logw, 1)[..., None] * post).sum(1)

    def __call__(self, x, t_norm):
        from dsb.dsbm import end_drift
        x, t = x.double(), torch.as_tensor(t_norm, dtype=torch.float64) * self.ref.T
        al, be, rho = (float(v) for v in self.ref.bridge(t))
        return end_drift(self.ref, x, t, self.posterior_mean(x, al, be ** 2 + rho), "backward").float()


def exact_grid(device, quick=False, names=("8gaussians", "checker"), steps=(20, 40, 100), draws=20, n=10_000, floor_draws=FLOOR_DRAWS, **_):
    "SW2 / floor of the exact first-iteration DSBM drift sampled by Euler–Maruyama on uniform grids of `steps` steps (the default 2d T)."
    from dsb.imf import LinearReference
    from dsb.dsbm import sde_sample, uniform_grid
    if quick: steps, draws, n = (5,), 2, 500
    rows = []
    for name in names:
        cfg = make_config(data=name, device="cpu")
        data, T = make_data(cfg), Schedule.from_params(cfg.num_steps, cfg.gamma_min, cfg.gamma_max, cfg.gamma_space).T
        drift = _ExactIteration0(name, LinearReference.ou(T, cfg.var_final, cfg.mean_final))
        floor = sw2_floor(data, n, 4 if quick else floor_draws, key=("2d", name))
        for N in steps:
            t, gammas = uniform_grid(N, T, "backward")
            vals = [_sw(sde_sample(drift, data.prior(n, torch.Generator().manual_seed(10 + k)), t, gammas, math.sqrt(2.),
                                   generator=torch.Generator().manual_seed(4000 + k), noise_last=False), _held(data, n, k)[0], k)
                    for k in range(draws)]
            r, r_se = _ratio(_mean_se(vals), floor)
            rows.append({"data": name, "steps": N, "T": T, "ratio": r, "ratio_se": r_se, "draws": draws})
            print(f"exact first-iteration drift  {name:11s} {N:4d} uniform steps  SW2 / floor {r:.3f} ± {r_se:.3f}", flush=True)
    return {"device": "cpu", "rows": rows}


def calibrate(device, names=("scurve", "checker", "8gaussians"), n=10_000, draws=60, group=5, **_):
    "Fresh data as the model: the mean of per-draw ratios (biased) vs the ratio of means, over `draws` draws and in groups of `group`."
    rows = []
    for name in names:
        data = make_data(make_config(data=name, device="cpu"))
        a, b = [], []
        for k in range(draws):
            held, held2 = _held(data, n, k)
            a.append(_sw(data.data(n, torch.Generator().manual_seed(7000 + k)), held, k)); b.append(_sw(held2, held, k))
        r = [x / y for x, y in zip(a, b)]
        groups = range(0, draws - group + 1, group)
        per_group = [statistics.mean(r[i:i + group]) for i in groups]
        of_means = [statistics.mean(a[i:i + group]) / statistics.mean(b[i:i + group]) for i in groups]
        rows.append({"data": name, "floor": statistics.mean(b), "floor_rel_spread": statistics.stdev(b) / statistics.mean(b),
                     "mean_of_ratios": statistics.mean(r), "ratio_of_means": statistics.mean(a) / statistics.mean(b),
                     f"mean_of_ratios_{group}_max": max(per_group), f"mean_of_ratios_{group}_spread": statistics.stdev(per_group),
                     f"ratio_of_means_{group}_spread": statistics.stdev(of_means)})
    return {"device": "cpu", "n": n, "draws": draws, "group": group, "rows": rows}


def _gaussian_row(solver, d, T, device, quick):
    p = dict(dataset="gaussian", data_dim=d, solver=solver)
    if quick: p.update(n_ipf=1, num_iter=50, cache_npar=300, cache_refresh=25, num_steps=10, **({"grid_steps": 10, "ode_steps": 10} if solver == "dsbm" else {}))
    gamma = T / make_config(**p).num_steps
    tr, cfg, data, times = _train(dict(p, gamma_min=gamma, gamma_max=gamma), device)
    exact = data.exact_cross_cov(*tr.solver.reference_transition())
    m = 2000 if quick else 100_000
    x, prior = data.data(m, torch.Generator().manual_seed(5)).to(device), data.prior(m, torch.Generator().manual_seed(7)).to(device)
    with torch.no_grad():
        sde = tr.solver.to_prior(x, torch.Generator(device).manual_seed(6))
        gen_sde, gen_ode = tr.solver.to_data(prior, torch.Generator(device).manual_seed(8)), tr.solver.to_data(prior, sampler="ode")
    err = lambda y: relative_error(coupling_moments(x.cpu(), y.cpu()), exact).item()
    cov = torch.cov(data.data(m, torch.Generator().manual_seed(9)).double().T)    # the ODE's coupling is a map, not the bridge's: only its marginal is measured
    cov_err = lambda y: relative_error(torch.cov(y.double().cpu().T), cov).item()
    grid = cfg.grid_steps if solver == "dsbm" and cfg.grid_steps else cfg.num_steps
    budget = f"N={grid} {cfg.n_ipf}x2x{cfg.num_iter} steps, batch {cfg.batch_size}, {cfg.cache_npar} per refresh"
    cv = _cross_cov_cv(tr, data, cfg.var_final, exact, 500 if quick else 20_000, 2 if quick else 5) if solver == "dsbm" else {}
    if solver == "lightsb":   # a closed-form plan: cov(x_0, x_T) = cov(x_0, E[x_T | x_0]), no noise from the far end's draws
        with torch.no_grad(): cv = {"err_plan": err(tr.solver.plan(x, to_data=False).mean()), "plan_floor": _plan_floor(d, cfg.var_final, exact, m)}
        budget = f"K={cfg.n_components} {cfg.n_ipf}x2x{cfg.num_iter} steps, batch {cfg.batch_size}, {cfg.cache_npar} per refresh"
    return {"part": "gaussian", "solver": solver, "d": d, "T": T, "err_sde": err(sde), "mc_floor": _cross_cov_floor(d, cfg.var_final, exact, m),
            "pairs": m, "cov_err_sde": cov_err(gen_sde), "cov_err_ode": cov_err(gen_ode), "budget": budget, **cv, **times}


def _plan_floor(d, var_final, exact, m, draws=5):
    "The error of the conditional-mean estimator for a perfect plan: cov(x_0, E[x_T | x_0]) from `m` exact data points, mean over `draws`."
    mean0, S0 = gaussian_problem(d)
    slope = exact.T @ torch.linalg.inv(S0)                              # E[x_T | x_0] = slope (x_0 - mean0) + mean of x_T
    errs = []
    for k in range(draws):
        x0 = torch.randn(m, d, generator=torch.Generator().manual_seed(k), dtype=torch.float64) @ torch.linalg.cholesky(S0).T + mean0
        errs.append(relative_error(coupling_moments(x0, x0 @ slope.T), exact).item())
    return statistics.mean(errs)


def _eot_row(solver, d, device, quick):
    "The mixture benchmark (`13_eot`) in d dimensions with the solver's preset: cBW2-UVP of its SDE plan, the floor of as many exact draws, the closed form if any."
    p = dict(dataset="eot_mixture", data_dim=d, solver=solver)
    if quick: p.update(n_ipf=1, num_iter=50, cache_npar=300, cache_refresh=25, **({"grid_steps": 10, "ode_steps": 10} if solver == "dsbm" else {}))
    tr, cfg, data, times = _train(p, device)
    c0 = time.process_time()
    score = data.score_bridge(tr.solver, torch.Generator(device).manual_seed(1))
    size = f"K={cfg.n_components} " if solver == "lightsb" else (f"N={cfg.grid_steps or cfg.num_steps} " if solver == "dsbm" else f"N={cfg.num_steps} ")
    budget = size + f"{cfg.n_ipf}x2x{cfg.num_iter} steps, batch {cfg.batch_size}"
    return {"part": "eot", "solver": solver, "d": d, **score, "score_cpu_s": time.process_time() - c0, "budget": budget, **times}


def _cross_cov_floor(d, var_final, exact, m, draws=5):
    """The error a perfect solver would show: `m` pairs drawn from the exact SB coupling (jointly Gaussian), mean over `draws`.
    At T = 2 the cross-covariance is small (|C|_F = 0.47 for d = 5): 100,000 exact pairs alone are 3.5 % off, 10^6 pairs 1.3 %
    (T = 1: 1.5 % and 0.5 %); sampling 10^6 pairs through DSBM's 400-step grid costs about 10 CPU minutes per sampler here."""
    mean0, S0 = gaussian_problem(d)                                   # the 'gaussian' data set's end: N(mean0, S0); prior N(0, var_final I)
    S1 = var_final * torch.eye(d, dtype=torch.float64)
    L = torch.linalg.cholesky(torch.cat([torch.cat([S0, exact], 1), torch.cat([exact.T, S1], 1)]))
    errs = []
    for k in range(draws):
        z = torch.randn(m, 2 * d, generator=torch.Generator().manual_seed(k), dtype=torch.float64) @ L.T
        errs.append(relative_error(coupling_moments(z[:, :d] + mean0, z[:, d:]), exact).item())
    return statistics.mean(errs)


def _cross_cov_cv(tr, data, var_final, exact, m, draws=5):
    """DSBM's cross-covariance error measured with a control variate: the exact SB's own forward drift (`10_imf`), run on the
    solver's Euler grid with the *same* noise as the network, has a cross-covariance C_grid known in closed form
    (cov(x0, x_{i+1}) = cov(x0, x_i)(I + gamma_i K_i)^T); C_net is estimated as C_grid + mean[x0 xT_net - x0 xT_exact], whose
    Monte-Carlo noise is that of the *difference* of the two chains, small when the network is close to the bridge. Unbiased
    for C_net (up to the O(1/m) of the empirical means). Returns the mean and spread of the error over `draws` draws of `m` pairs,
    and the error of C_grid itself (Euler's share)."""
    from dsb.imf import GaussianCoupling, markov_drift_gaussian
    from dsb.dsbm import sde_sample
    solver, dev = tr.solver, tr.device
    ref, (t, gammas) = solver.ref, solver.forward.grid
    mean0, S0 = gaussian_problem(exact.shape[0])
    d = S0.shape[0]
    sb = GaussianCoupling(mean0, S0, torch.full((d,), float(ref.mean)), var_final * torch.eye(d, dtype=torch.float64), exact)
    K, c = markov_drift_gaussian(ref, sb, t[:-1] * ref.T, "forward")
    C_grid = S0.clone()
    for Ki, gi in zip(K, gammas): C_grid = C_grid @ (torch.eye(d, dtype=torch.float64) + gi * Ki).T
    Kf, cf = K.float().to(dev), c.float().to(dev)
    errs = []
    for k in range(draws):
        x0 = data.data(m, torch.Generator().manual_seed(50 + k)).to(dev)
        step = iter(range(len(gammas)))
        def exact_drift(x, s):
            i = next(step); return x @ Kf[i].T + cf[i]
        with torch.no_grad():
            net = sde_sample(solver.forward.ema, x0, t, gammas, ref.sigma, generator=torch.Generator(dev).manual_seed(60 + k))
            lin = sde_sample(exact_drift, x0, t, gammas, ref.sigma, generator=torch.Generator(dev).manual_seed(60 + k))
        C = C_grid + coupling_moments(x0.cpu(), net.cpu()) - coupling_moments(x0.cpu(), lin.cpu())
        errs.append(relative_error(C, exact).item())
    return {"err_cv": statistics.mean(errs), "err_cv_std": statistics.stdev(errs), "cv_pairs": m, "cv_draws": draws,
            "grid_err": relative_error(C_grid, exact).item()}


def _points_row(part, name, solver, device, quick, draws, n, overrides=None, **extra):
    p = {**extra, **(overrides or {})}
    if quick: p.update(n_ipf=2, num_iter=50, cache_npar=300, cache_refresh=25, batch_size=256)
    tr, cfg, data, times = _train(dict(p, solver=solver), device)
    scores = _sample_scores(tr, data, 2 if quick else draws, 500 if quick else n, device, 4 if quick else FLOOR_DRAWS,
                            key=(part, name))
    points = _point_scores(tr, data, device, n=300 if quick else 3000, draws=3, seed=cfg.seed)
    budget = f"{cfg.n_ipf}x2x{cfg.num_iter} steps, batch {cfg.batch_size}"
    return {"part": part, "solver": solver, "data": name, **scores, **points, "budget": budget, **times}


@torch.no_grad()
def _point_scores(tr, data, device, n=3000, draws=3, seed=0):
    "Exact W2 and kNN precision / recall (PointScore: `draws` draws of `n` points against the floor) of the SDE and ODE samples."
    score = PointScore(data.data, n=n, draws=draws, seed=seed + 7)
    g = lambda k: torch.Generator().manual_seed(k)
    out = {}
    for name in ("sde", "ode"):
        gen = [sample(tr.solver, data.prior(n, g(20 + j)).to(device), True, name, generator=torch.Generator(device).manual_seed(5000 + j))
               for j in range(draws)]
        r = score(gen)
        out.update({f"{name}_{k}": v for k, v in r.items() if name == "sde" or "floor" not in k})
    return out


def _over_seeds(rows):
    """One row from the same 2d / transfer row trained with several seeds: SW2 / floor as the mean over the seeds, with the
    standard error over the seeds (the training seed moves a 2d score by more than one model's sampling noise), and each seed's."""
    out = {k: v for k, v in rows[0].items() if k in ("part", "solver", "data", "floor", "floor_se", "floor_draws", "draws")
           or k.startswith("sde_") and "floor" in k}
    out["seeds"] = [r["seed"] for r in rows]
    for name in ("sde_ratio", "ode_ratio", "sde_w2_ratio", "ode_w2_ratio", "sde_precision", "ode_precision", "sde_recall", "ode_recall"):
        if name not in rows[0]: continue
        vals = [r[name] for r in rows]
        out[name], out[name + "_se"] = _mean_se(vals)
        out[name + "_per_seed"] = vals
    out["budget"] = " / ".join(r["budget"] for r in rows)
    out["cpu_s"], out["wall_s"] = (statistics.mean(r[k] for r in rows) for k in ("cpu_s", "wall_s"))
    return out


def _provenance() -> dict:
    "When, from which commit (and whether the tree had changes), on which machine and by which command a result was made."
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "machine": {"node": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__},
            "command": " ".join(["python", *sys.argv])}


def solvers(device, quick=False, only=None, draws=20, n=10_000, dims=(5, 20, 50), horizons=(0.5, 1., 2.), tag="",
            names=("dsb", "dsbm", "lightsb"), data=None, overrides=None, seeds=None, eot_dims=(2, 16, 64)):
    """DSB, DSBM and LightSB: Gaussian cross-covariance vs the closed form; the EOT mixture benchmark's cBW2-UVP; 2d and transfer
    exact W2 / kNN and SW2 against their floors with SDE and ODE sampling; CPU seconds of training.
    `seeds`: train each 2d / transfer row once per seed and report the mean over the seeds (`_over_seeds`)."""
    rows, meta = [], _provenance()
    def add(row):
        rows.append(row); _show_solver_row(row)
        if not quick:
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / f"solvers{tag}-{device.type}.json").write_text(json.dumps({**meta, "device": str(device), "rows": rows}, indent=1))
    def points(*args, **extra):
        if not seeds: return add(_points_row(*args, overrides=overrides, **extra))
        per = []
        for seed in seeds:
            per.append(_points_row(*args, overrides={**(overrides or {}), "seed": seed}, **extra))
            per[-1]["seed"] = seed; print("  seed", seed, end=": "); _show_solver_row(per[-1])
        add(_over_seeds(per))
    if only in (None, "gaussian"):
        for d in ((5,) if quick else dims):
            for T in ((1.,) if quick else horizons):
                for solver in names: add(_gaussian_row(solver, d, T, device, quick))
    if only in (None, "eot"):
        for d in ((2,) if quick else eot_dims):
            for solver in names: add(_eot_row(solver, d, device, quick))
    if only in (None, "2d"):
        for name in (("scurve",) if quick else data or SOLVERS_2D):
            for solver in names: points("2d", name, solver, device, quick, draws, n, data=name)
    if only in (None, "transfer"):
        for a, b in (TRANSFER_PAIRS[:1] if quick else [(a, b) for a, b in TRANSFER_PAIRS if not data or f"{a}-{b}" in data]):
            for solver in names:
                points("transfer", f"{a}-{b}", solver, device, quick, draws, n, data=a, data_transfer=b, transfer=True)
    return {"device": str(device), "rows": rows}


def _show_solver_row(r):
    if r["part"] == "eot":
        exact = f", closed form {r['cbw2_uvp_exact']:.3f} %" if "cbw2_uvp_exact" in r else ""
        print(f"eot      d={r['d']:<3d}       {r['solver']:7s} cBW2-UVP {r['cbw2_uvp']:7.3f} +- {r['cbw2_uvp_se']:.3f} % (floor of as many exact "
              f"draws {r['cbw2_uvp_floor']:.3f} %{exact})   cpu {r['cpu_s']:5.0f} s   ({r['budget']})", flush=True)
        return
    if r["part"] == "gaussian":
        print(f"gaussian d={r['d']:<3d} T={r['T']:<4} {r['solver']:5s} cross-cov err (SDE) {100 * r['err_sde']:6.2f} % "
              f"(floor of {r['pairs']} exact pairs {100 * r['mc_floor']:.2f} %)   "
              f"data cov err: SDE {100 * r['cov_err_sde']:5.2f} %  ODE {100 * r['cov_err_ode']:5.2f} %"
              f"   cpu {r['cpu_s']:5.0f} s  wall {r['wall_s']:5.0f} s   ({r['budget']})", flush=True)
        if "err_plan" in r:
            print(f"{'':24s}closed-form plan: cross-cov err {100 * r['err_plan']:6.2f} % (floor of {r['pairs']} exact data points "
                  f"{100 * r['plan_floor']:.2f} %)", flush=True)
        if "err_cv" in r:
            print(f"{'':24s}control variate: cross-cov err {100 * r['err_cv']:6.2f} ± {100 * r['err_cv_std']:.2f} % ({r['cv_pairs']} pairs x {r['cv_draws']} draws; "
                  f"the exact drift on the same grid: {100 * r['grid_err']:.2f} %)", flush=True)
    elif "seeds" in r:
        each = lambda k: ", ".join(f"{v:.2f}" for v in r[k + "_per_seed"])
        if "sde_w2_ratio" in r:
            print(f"{r['part']:8s} {r['data']:18s} {r['solver']:5s} W2/floor, mean of {len(r['seeds'])} training seeds: "
                  f"SDE {r['sde_w2_ratio']:.2f} ± {r['sde_w2_ratio_se']:.2f} ({each('sde_w2_ratio')});  precision SDE "
                  f"{r['sde_precision']:.2f} ({each('sde_precision')})", flush=True)
        print(f"{r['part']:8s} {r['data']:18s} {r['solver']:5s} SW2/floor, mean of {len(r['seeds'])} training seeds {r['seeds']}: "
              f"SDE {r['sde_ratio']:.2f} ± {r['sde_ratio_se']:.2f} ({each('sde_ratio')})  ODE {r['ode_ratio']:.2f} ± {r['ode_ratio_se']:.2f} "
              f"({each('ode_ratio')})  (± standard errors over the seeds)   cpu {r['cpu_s']:5.0f} s per seed", flush=True)
    else:
        if "sde_w2_ratio" in r:
            print(f"{r['part']:8s} {r['data']:18s} {r['solver']:5s} W2/floor: SDE {r['sde_w2_ratio']:.2f} ± {r['sde_w2_ratio_se']:.2f}  "
                  f"ODE {r['ode_w2_ratio']:.2f} ± {r['ode_w2_ratio_se']:.2f};  precision SDE {r['sde_precision']:.2f} ODE {r['ode_precision']:.2f} "
                  f"(floor {r['sde_precision_floor']:.2f});  recall SDE {r['sde_recall']:.2f} ODE {r['ode_recall']:.2f} (floor {r['sde_recall_floor']:.2f})", flush=True)
        print(f"{r['part']:8s} {r['data']:18s} {r['solver']:5s} SW2/floor: SDE {r['sde_ratio']:.2f} ± {r['sde_ratio_se']:.2f}  "
              f"ODE {r['ode_ratio']:.2f} ± {r['ode_ratio_se']:.2f}  (floor {r['floor']:.4f} ± {r['floor_se']:.4f}, {r['floor_draws']} draws; "
              f"model {r['draws']} draws; ± standard errors)"
              f"   cpu {r['cpu_s']:5.0f} s  wall {r['wall_s']:5.0f} s   ({r['budget']})", flush=True)


def show(name, res):
    print(f"\n== {name} ({res.get('device')})")
    if name == "grid": return     # printed row by row
    if name == "calibrate":
        g = res["group"]
        print(f"fresh data as the model, {res['draws']} draws of {res['n']} points; the spreads are those of {g}-draw averages")
        print(f"{'data':12s}{'floor':>8s}{'its spread':>12s}{'mean of ratios':>16s}{f'({g}: spread, max)':>18s}{'ratio of means':>16s}{f'({g}: spread)':>13s}")
        for r in res["rows"]:
            print(f"{r['data']:12s}{r['floor']:8.4f}{100 * r['floor_rel_spread']:11.0f}%{r['mean_of_ratios']:16.3f}"
                  f"{r[f'mean_of_ratios_{g}_spread']:11.2f}, {r[f'mean_of_ratios_{g}_max']:.2f}{r['ratio_of_means']:16.3f}{r[f'ratio_of_means_{g}_spread']:13.2f}")
    if name == "speed":
        c = res["config"]
        print(f"config: N={c['num_steps']} batch={c['batch_size']} cache={c['cache_npar']} refresh={c['cache_refresh']} threads={res['threads']}")
        print(f"{'':28s}{'dsb':>10s}{'original':>12s}")
        print(f"{'cache build (s)':28s}{res['cache_build_s']:10.3f}{ORIGINAL['cache_build_s']:12.2f}   ({res['cache_gflop']:.1f} GFLOP at {res['cache_gflop_per_s']:.0f} GFLOP/s)")
        print(f"{'training only (it/s)':28s}{res['train_only_it_per_s']:10.0f}{ORIGINAL['train_only_it_per_s']:12d}   ({res['train_gflop_per_s']:.0f} GFLOP/s)")
        lo, hi = ORIGINAL["all_in_it_per_s"]
        print(f"{'all in (it/s)':28s}{res['all_in_it_per_s']:10.0f}{f'{lo}-{hi}':>12s}   (x{res['speedup_all_in_vs_original']:.1f})")
    elif name == "quality":
        print(f"{'data':12s}{'SW2':>8s}{'floor':>8s}{'ratio':>8s}{'SW2 prior':>11s}{'wall s':>8s}{'it/s':>7s}")
        for r in res["rows"]:
            print(f"{r['data']:12s}{r['sw2']:8.3f}{r['floor']:8.3f}{r['ratio']:8.2f}{r['sw2_prior']:11.3f}{r['wall_s']:8.0f}{r['it_per_s']:7.0f}")
    elif name == "gaussian":
        print(f"schedule {res['schedule']} T={res['T']:.2f}, {res['n_ipf']} IPF iterations")
        print(f"{'IPF':>4s}{'network err %':>15s}{'exact DSB iterate err %':>25s}")
        for i, (a, b) in enumerate(zip(res["network_error_per_ipf"], res["exact_dsb_error_per_ipf"])):
            print(f"{i + 1:4d}{100 * a:15.2f}{100 * b:25.2f}")
        print(f"final: network {100 * res['network_error']:.2f} %, exact DSB iterate {100 * res['exact_dsb_error']:.2f} %, gap {res['gap_pp']:+.2f} pp")


def solvers_tag(a, parser) -> str:
    """The part of the solver table's file name that says what was run: the part, the solvers, the data sets, the --set
    overrides, the seeds, and every list of dimensions or horizons not at its default (a narrower rerun writes its own file
    rather than replacing the rows of a wider one)."""
    lists = [("d", "dims"), ("T", "horizons"), ("eot", "eot_dims")]
    changed = [k + "_".join(f"{v:g}" for v in getattr(a, name)) for k, name in lists
               if getattr(a, name) != parser.get_default(name)]
    return "".join(f"-{x}" for x in [a.only or "all", *a.solvers, *(a.data or []), *a.set, *changed,
                                     *(["seeds" + "".join(map(str, a.seeds))] if a.seeds else [])])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("speed", "quality", "gaussian", "solvers", "calibrate", "grid", "all"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--only", choices=("gaussian", "eot", "2d", "transfer"), help="solvers: one part of the table")
    p.add_argument("--dims", type=int, nargs="+", default=[5, 20, 50], help="solvers: Gaussian dimensions")
    p.add_argument("--eot-dims", type=int, nargs="+", default=[2, 16, 64], help="solvers: dimensions of the EOT mixture benchmark")
    p.add_argument("--solvers", nargs="+", default=["dsb", "dsbm", "lightsb"], choices=("dsb", "dsbm", "lightsb"), help="solvers: which solvers")
    p.add_argument("--data", nargs="+", help="solvers: 2d data sets / transfer pairs ('scurve-circle') to run")
    p.add_argument("--horizons", type=float, nargs="+", default=[0.5, 1., 2.], help="solvers: Gaussian horizons T")
    p.add_argument("--draws", type=int, default=20, help=f"solvers: draws of 10,000 generated points per 2d / transfer row "
                   f"(the floor takes {FLOOR_DRAWS})")
    p.add_argument("--seeds", type=int, nargs="+", help="solvers: train each 2d / transfer row with each of these seeds and report "
                   "the mean over them, e.g. --seeds 0 1 2 (a 2d score moves more with the training seed than with sampling)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="solvers: config fields for the 2d / transfer rows "
                   "in place of the solvers' presets, e.g. --set num_iter=1000 lr=0.003 (added to the output file's name)")
    a = p.parse_args(argv)
    overrides = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep: p.error(f"--set takes KEY=VALUE, got {item!r}")
        try: overrides[key] = json.loads(value)
        except json.JSONDecodeError: overrides[key] = value
    if a.seeds and "seed" in overrides: p.error("give the training seed by --seeds or by --set seed=N, not both")
    try:                                     # a bad field or value fails here, before any training, for each solver run
        for solver in a.solvers: make_config(**{"solver": solver, **overrides})
    except (TypeError, ValueError) as e: p.error(f"--set: {e}")
    device = get_device(a.device)
    if device.type == "cpu": tune_malloc()
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    if a.what in ("calibrate", "grid"):
        res = calibrate(device, draws=4 if a.quick else 60, n=500 if a.quick else 10_000) if a.what == "calibrate" else exact_grid(device, a.quick)
        show(a.what, res)
        if not a.quick: (OUT / f"{a.what}-cpu.json").write_text(json.dumps(res, indent=1))
        return {a.what: res}
    for name, fn in (("speed", speed), ("quality", quality), ("gaussian", gaussian), ("solvers", solvers)):
        if a.what in (name, "all"):
            res = fn(device, quick=a.quick, only=a.only, dims=a.dims, horizons=a.horizons, names=a.solvers, data=a.data,
                     draws=a.draws, overrides=overrides, seeds=a.seeds, eot_dims=a.eot_dims,
                     tag=solvers_tag(a, p)) if name == "solvers" else fn(device, quick=a.quick)
            results[name] = res
            show(name, res)
            if not a.quick and name != "solvers": (OUT / f"{name}-{device.type}.json").write_text(json.dumps(res, indent=1))
    return results


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they finish, also when the output goes to a file
    main()
