#!/usr/bin/env python
"""One short DSBM (or DSB) run on the 'gaussian' data set in d dimensions at horizon T, with parameter overrides, scored
against the closed-form bridge: the cross-covariance error by the control variate of `bench.py` (3 draws of 20,000 pairs),
the Euler grid's own share, the error of the forward end's covariance against the prior's, and CPU seconds of training.
Used to measure the levers of issue 23 one at a time (bench/results/*_dsbm_levers.json).

    python bench/levers.py d=20 T=1 n_ipf=3 num_iter=1000 grid_steps=200              # the product's network for d
    python bench/levers.py d=20 T=1 paper=1 n_ipf=3 num_iter=1000 grid_steps=200      # the paper's 2d MLP at any d
    python bench/levers.py d=20 T=1 paper=1 enc=64 temb=32 dec=256,256 ...             # the paper's MLP, widened
    python bench/levers.py d=20 T=1 dec=128,128 ...                                   # SkipMLP with other widths

Any other KEY=VALUE is a config parameter. One JSON line per run: the settings, then the figures.
"""
import functools, json, sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B
import dsb.models as M
from dsb.config import make_config
from dsb.core import tune_malloc


def main(argv):
    tune_malloc()
    args = dict(a.split("=", 1) for a in argv)
    d, T, solver = int(args.pop("d")), float(args.pop("T")), args.pop("solver", "dsbm")
    widths = {}
    if "enc" in args: widths["encoder_layers"] = tuple(json.loads("[" + args.pop("enc") + "]"))
    if "dec" in args: widths["decoder_layers"] = tuple(json.loads("[" + args.pop("dec") + "]"))
    if "temb" in args: widths["temb_dim"] = int(args.pop("temb"))
    paper = args.pop("paper", "0") == "1"
    if paper: M.PAPER_MLP_DIM = 10 ** 9                                    # `mlp` builds the paper's MLP at every d
    if widths and paper: M.MLP = functools.partial(M.MLP, **widths)
    elif widths:                                                          # SkipMLP's sizes past PAPER_MLP_DIM
        sizes = M.mlp_sizes
        M.mlp_sizes = lambda d: {**sizes(d), **widths}
    over = {k: json.loads(v) if v[:1].isdigit() or v[:1] in "-[" or v in ("true", "false") else v for k, v in args.items()}
    p = dict(dataset="gaussian", data_dim=d, solver=solver, **over)
    gamma = T / make_config(**p).num_steps
    tr, cfg, data, times = B._train(dict(p, gamma_min=gamma, gamma_max=gamma), "cpu")
    exact = data.exact_cross_cov(*tr.solver.reference_transition())
    m = 20_000
    out = dict(times, params=sum(q.numel() for q in tr.solver.forward.net.parameters()) if solver == "dsbm" else None)
    if solver == "dsbm": out.update(B._cross_cov_cv(tr, data, cfg.var_final, exact, m, 3))
    x = data.data(m, torch.Generator().manual_seed(5))
    with torch.no_grad(): y = tr.solver.to_prior(x, torch.Generator().manual_seed(6))
    out["fwd_cov_err"] = B.relative_error(torch.cov(y.double().T), cfg.var_final * torch.eye(d, dtype=torch.float64)).item()
    out["err_sde"], out["mc_floor"] = B.relative_error(B.coupling_moments(x, y), exact).item(), B._cross_cov_floor(d, cfg.var_final, exact, m)
    net = "paper MLP" if paper else ("SkipMLP" if d > M.PAPER_MLP_DIM else "paper MLP")
    print(json.dumps(dict(d=d, T=T, solver=solver, net=net + (" " + json.dumps(widths) if widths else ""), **over)),
          json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
