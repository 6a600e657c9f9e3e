"""DSBM on the mixture benchmark (`13_eot`), scored after every `every`-th IMF iteration: cBW2-UVP of the SDE plan split
into its conditional-mean and conditional-covariance parts (the two add up to it), the largest per-point errors, and the
generated end's BW2-UVP against the data end's (a Gaussian fit of each, 20,000 points; `marg_floor`: two data samples).
A marginal near its floor with a large cBW2-UVP says the error is in the coupling (which x goes where), not in the marginal.
The last iteration is also scored exactly as the solver table scores it (`bench.py`'s eot row: `data.score_bridge`, seed 1).
Training CPU seconds exclude the scoring.

    python bench/eot_dsbm.py 16 [every=2] [out=runs.jsonl] [dec=256,256] [key=value ...]   # key=value: any run parameter (-p), e.g. n_ipf=12
    python bench/eot_dsbm.py surrogate 16 0.2,0.5,1    # exact IMF on the pair's Gaussian moment-match, horizons T of the OU kernel
"""
import json, sys, time

import torch

from dsb.config import make_config
from dsb.core import derive_seed
from dsb.data import make_data
from dsb.eot import EOTBenchmark, mixture_benchmark
from dsb.imf import LinearReference, imf_gaussian
from dsb.metrics import bures_wasserstein2, cbw2_uvp, sample_moments
from dsb.run import build_trainer
from dsb.trainer import Callback


def _parse(v):
    for f in (int, float):
        try: return f(v)
        except ValueError: pass
    return {"True": True, "False": False}.get(v, v)


class PlanScore(Callback):
    "After every `every`-th iteration (and the last): the split cBW2-UVP and the marginal's BW2-UVP, printed and kept in `rows`."
    order = 60
    def __init__(self, bench, data, every=1, n_cond=64, n_draws=1000, n_marg=20_000):
        self.bench, self.data, self.every, self.n_draws, self.rows, self.cpu = bench, data, every, n_draws, [], 0.
        self.x = bench.prior(n_cond, torch.Generator().manual_seed(derive_seed(0, 0)))   # bridge_score's conditioning points
        self.m, self.S = bench.plan(self.x).moments()
        self.total_var = bench.total_var(seed=derive_seed(0, 1))
        held, held2 = (bench.data(n_marg, torch.Generator().manual_seed(k)).double() for k in (11, 12))
        self.held = held.mean(0), torch.cov(held.T)
        self.uvp = lambda y, ref: 100 * bures_wasserstein2(y.mean(0), torch.cov(y.T), *ref).item() / self.total_var
        self.marg_floor, self.prior_x = self.uvp(held2, self.held), bench.prior(n_marg, torch.Generator().manual_seed(13))
    def before_fit(self, tr): self.c0 = time.process_time()
    @torch.no_grad()
    def after_iteration(self, tr):
        self.cpu += time.process_time() - self.c0
        it = tr.iteration + 1
        if it % self.every == 0 or it == tr.iterations:
            y = tr.solver.to_data(self.x.repeat_interleave(self.n_draws, 0), torch.Generator().manual_seed(100 + it))
            mm, SS = sample_moments(y.double().reshape(len(self.x), self.n_draws, -1))
            value, se = cbw2_uvp(mm, SS, self.m, self.S, self.total_var)
            per = (100 * bures_wasserstein2(mm, SS, self.m, self.S) / self.total_var).sort().values
            zero = torch.zeros_like(mm)
            gen = tr.solver.to_data(self.prior_x, torch.Generator().manual_seed(14)).double()
            r = dict(iteration=it, cpu_s=round(self.cpu, 1), cbw2_uvp=round(value, 3), cbw2_uvp_se=round(se, 3),
                     mean_part=round(100 * (mm - self.m).square().sum(-1).mean().item() / self.total_var, 3),
                     cov_part=round(100 * bures_wasserstein2(zero, SS, zero, self.S).mean().item() / self.total_var, 3),
                     per_point_median=round(per[len(per) // 2].item(), 3), per_point_top4=[round(u, 1) for u in per[-4:].tolist()],
                     marginal_bw2_uvp=round(self.uvp(gen, self.held), 3), marginal_floor=round(self.marg_floor, 3))
            if it == tr.iterations:
                r["table_score"] = self.data.score_bridge(tr.solver, torch.Generator(tr.device).manual_seed(1))
            self.rows.append(r); print(r, flush=True)
        self.c0 = time.process_time()


def surrogate(d: int, T: float, n_iter: int = 8, n: int = 100_000) -> dict:
    """What IMF alone gives: exact IMF (`10_imf`, no network, no Euler) between Gaussians with the pair's means and covariances
    (n draws of each end), the OU kernel of horizon T; cBW2-UVP of each backward iterate's Gaussian plan x_0 | x_T against
    the Gaussian SB's, in closed form (mean part tr(dA S_T dA^T), A = C S_T^-1; covariance part BW2 of S_0 - A C^T)."""
    ref = LinearReference.ou(T, 1., 0.)
    a, v = (float(u) for u in ref.endpoint_transition())
    b = EOTBenchmark(*mixture_benchmark(d), a, v)
    y, x = b.data(n, torch.Generator().manual_seed(0)).double(), b.prior(n, torch.Generator().manual_seed(1)).double()
    S0, S1 = torch.cov(y.T), torch.cov(x.T)
    r = imf_gaussian(ref, y.mean(0), S0, x.mean(0), S1, n_iter=n_iter, n_steps=256)
    plan = lambda C: (C @ torch.linalg.inv(S1), S0 - C @ torch.linalg.inv(S1) @ C.T)
    A_sb, S_sb = plan(r["target"])
    zero = torch.zeros(d, dtype=torch.float64)
    def uvp(C):
        A, S = plan(C)
        return (100 * (torch.trace((A - A_sb) @ S1 @ (A - A_sb).T) + bures_wasserstein2(zero, S, zero, S_sb)) / torch.trace(S0)).item()
    return dict(d=d, T=T, a=a, v=v, eps_brownian=v / a ** 2, independent=uvp(torch.zeros(d, d, dtype=torch.float64)),
                cbw2_backward_per_iteration=[round(uvp(C), 3) for C in r["cross_cov_backward"]])


if __name__ == "__main__" and sys.argv[1] == "surrogate":
    for T in sys.argv[3].split(","): print(json.dumps(surrogate(int(sys.argv[2]), float(T))))
elif __name__ == "__main__":
    d = int(sys.argv[1])
    over = {k: _parse(v) for k, v in (kv.split("=", 1) for kv in sys.argv[2:])}
    every, out = over.pop("every", 1), over.pop("out", None)
    if "dec" in over:                                   # SkipMLP's decoder widths, e.g. dec=256,256 (as bench/levers.py)
        import dsb.models as M
        widths, sizes = tuple(int(w) for w in str(over.pop("dec")).split(",")), M.mlp_sizes
        M.mlp_sizes = lambda d: {**sizes(d), "decoder_layers": widths}
    p = dict(dataset="eot_mixture", data_dim=d, solver="dsbm", **over)
    cfg = make_config(**p, device="cpu", progress=False, plots=False)
    data = make_data(cfg)
    tr = build_trainer(cfg, data)
    a, v = (float(u) for u in tr.solver.reference_transition())
    score = PlanScore(EOTBenchmark(*mixture_benchmark(d), a, v, cfg.mean_final), data, every)
    tr.callbacks.append(score)
    tr.fit()
    result = dict(command=" ".join(["python", *sys.argv]), d=d, params=p, kernel=(a, v), total_var=score.total_var, rows=score.rows)
    if out:
        with open(out, "a") as f: f.write(json.dumps(result) + "\n")
