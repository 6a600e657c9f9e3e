"""dsb speed table: training step, cache build, seconds per iteration, images/s, trajectories/s, peak memory,
and each as a fraction of the machine's measured peak, for a named configuration and each fast-path lever.

    python bench/table.py --config 2d                        # the paper's 2d configuration, on the CPU
    python bench/table.py --config mnist --device cuda       # MNIST UNet (1,2,2), N=30, batch 128, cache 1,000 / 100 steps
    python bench/table.py --config celeba --device cuda      # CelebA 64 UNet (1,2,3,4), N=50, batch 128, cache 300 / 100 steps
    python bench/table.py --config 2d --quick                # tiny sizes (what the tests run)
    python bench/table.py --config 2d --levers base,compile  # only some rows

Rows (levers, each switched on its own against `base` = fp32, fused Adam, foreach EMA, eager):
  base, no_fused_adam (Adam's for-loop kernel), loop_ema (EMA one parameter at a time), bf16 (autocast, drift
  parametrisation: fp32 weights, x + drift and targets in fp32), channels_last (images), compile (torch.compile of
  the step's network and of the cache's sampling network), all (bf16 + channels_last + compile).

How it measures (one process; each row builds its own trainer; timings are medians of repeats):
  step      time of one optimiser step, without cache builds (a stage whose only cache is built before the clock starts)
  cache     time of one cache refresh (`DSB.refresh`: cache_npar chains x N steps, 2 network evaluations per step)
  s/it      step + cache / cache_refresh: the cost of one iteration amortised over refreshes
  all-in    measured rate of a stage with its refreshes, against the bound 1 / (s/it) the two rates above imply
  img/s     training samples per second (batch / step); traj/s: chains per second in the cache (cache_npar / cache)
  FLOPs     counted by torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions) on one training step
            (forward + backward) and on one network forward (x 2 N cache_npar for a cache)
  peak      the same machine's matmul rate, measured here: a square matmul (4096 on CUDA, 1024 on the CPU) in fp32
            and bf16, best of 5; the fraction of each row is against the peak of its precision
  memory    CUDA: torch.cuda.max_memory_allocated over the row; CPU: the process's ru_maxrss (monotone over rows)
  compile   seconds of the first steps beyond the steady step time; recompiles: graphs compiled in a second
            IPF iteration (must be 0)
Results are written as JSON to bench/out/table-<config>-<device>.json (or $OUT).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path

import torch

from dsb.core import get_device, tune_malloc
from dsb.ipf import PAPER_2D
from dsb.config import make_config
from dsb.data import DataSpec, make_data
from dsb.run import build_trainer
from dsb.trainer import Callback, EMA

# what is timed: the paper's 2d configuration (the original code's), and DSB's presets of the image sets (the paper's), with a
# cache refresh every 100 steps so that a timed stage holds several refreshes
CONFIGS = {"2d": dict(dataset="2d", **PAPER_2D), "mnist": dict(dataset="mnist", cache_refresh=100), "celeba": dict(dataset="celeba", cache_refresh=100)}
QUICK = {"2d": dict(cache_npar=500, batch_size=64, cache_refresh=10), "mnist": dict(cache_npar=16, batch_size=8, num_steps=4, cache_refresh=5),
         "celeba": dict(cache_npar=4, batch_size=2, num_steps=2, cache_refresh=5)}
SHAPES = {"mnist": (1, 28, 28), "celeba": (3, 64, 64)}
# The original code on one H200 (issue 9): s/iteration, train step s, cache s, peak GiB
ORIGINAL_H200 = {"mnist": dict(s_per_it=0.085, step_s=0.063, cache_s=2.7, peak_gib=3.7),
                 "celeba": dict(s_per_it=0.148, step_s=0.098, cache_s=7.7, peak_gib=16.3)}
LEVERS = {"base": {}, "no_fused_adam": {}, "loop_ema": {}, "bf16": dict(precision="bf16", mean_match=False),
          "channels_last": dict(channels_last=True), "compile": dict(compile=True),
          "all": dict(precision="bf16", mean_match=False, channels_last=True, compile=True)}


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize(device)


def matmul_peak(device, dtype, n=None, repeats=5) -> float:
    "Measured FLOP/s of a square matmul in `dtype` on `device` (best of `repeats`)."
    n = n or (4096 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b; sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); k = 10 if device.type == "cuda" else 2
        for _ in range(k): a @ b
        sync(device); best = min(best, (time.perf_counter() - t0) / k)
    return 2 * n**3 / best


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as m: fn()
    return m.get_total_flops()


def synthetic(shape, name) -> DataSpec:
    "Random images of `shape` at both ends: the benchmark needs shapes, not pictures."
    sampler = lambda n, g: torch.randn(n, *shape, generator=g).clamp(-1, 1)
    return DataSpec(sampler, lambda n, g: torch.randn(n, *shape, generator=g), tuple(shape), name)


class _LoopEMA(EMA):
    "The EMA update one parameter at a time (the `loop_ema` row: what foreach replaces)."
    @torch.no_grad()
    def after_step(self, tr):
        if self.rate == 0 or self.ema is None: return
        updates = tr.iteration * tr.steps + tr.step
        rate = min(self.rate, (1 + updates) / (10 + updates))
        for e, p in zip(self.ema_params, self.net_params): e.lerp_(p, 1 - rate)


def make(config, device, quick, lever, **over):
    params = {**CONFIGS[config], **(QUICK[config] if quick else {}), **LEVERS[lever], **over}
    cfg = make_config(**params, device=str(device), progress=False, plots=False, n_ipf=3)
    data = make_data(cfg) if config == "2d" else synthetic(SHAPES[config], config)
    return cfg, data


def trainer_for(cfg, data, lever, steps, refresh, position, callbacks=()):
    "A trainer of `cfg` (n_ipf=3) placed at `position`, e.g. (2, 1, 0): its last stage, the forward network on backward chains."
    from dataclasses import replace
    c = replace(cfg, num_iter=steps, cache_refresh=refresh)
    tr = build_trainer(c, data, callbacks)
    if lever == "loop_ema": tr.callbacks = [_LoopEMA(c.ema_rate) if type(cb) is EMA else cb for cb in tr.callbacks]
    if lever == "no_fused_adam": tr.opt_func = lambda params, lr: torch.optim.Adam(params, lr=lr, foreach=False, fused=False)
    tr.position = position
    return tr


class Clock(Callback):
    "Time stamps after every step."
    order = 100
    def __init__(self, device): self.device, self.stamps = device, []
    def after_step(self, tr): sync(self.device); self.stamps.append(time.perf_counter())


def measure(config, device, quick, lever, repeats):
    cfg, data = make(config, device, quick, lever)
    steps = 30 if quick else (400 if config == "2d" else 60)
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)
    from torch._dynamo.utils import counters
    # training step: a stage whose single cache is built before the clock starts
    t_start = time.perf_counter()
    clock = Clock(device); tr = trainer_for(cfg, data, lever, steps, steps, (2, 1, 0), [clock])
    tr.fit()
    first_total = clock.stamps[0] - t_start                      # trainer + cache + first step (+ compile)
    diffs = [b - a for a, b in zip(clock.stamps[:-1], clock.stamps[1:])]
    step_s = statistics.median(diffs[len(diffs) // 3:])
    # cache refresh, timed alone with the trainer's own sampling network
    tr.position = (2, 1, 0); tr.iteration, tr.stage, tr.step = 2, 1, 0
    tr.generator = tr.policy.generator(0)
    times = []
    for r in range(repeats + 1):
        sync(device); t0 = time.perf_counter(); tr.solver.refresh(tr); sync(device); times.append(time.perf_counter() - t0)
    cache_s = statistics.median(times[1:])
    compile_s = max(first_total - times[0] - step_s, 0.0) if cfg.compile else 0.0
    # all-in: IPF iterations 1 and 2 (four stages) with refreshes every cache_refresh steps; the rate is that of
    # iteration 2, and a compiled run must compile nothing new in it
    n_all = cfg.cache_refresh * (2 if quick else 3 if config == "2d" else 1)
    marks = []
    class StageMark(Callback):
        def after_stage(self, tr): sync(device); marks.append((time.perf_counter(), counters["stats"]["unique_graphs"]))
    tr2 = trainer_for(cfg, data, lever, n_all, cfg.cache_refresh, (1, 0, 0), [StageMark()])
    tr2.fit()
    all_in = 2 * n_all / (marks[3][0] - marks[1][0])
    recompiles = marks[3][1] - marks[1][1]
    # FLOPs
    net = tr.solver.pair(1)[0].net
    batch = tr.solver.batch(cfg.batch_size, torch.Generator(device).manual_seed(0))
    x, t = batch[:2]
    def train_step(): tr.solver.loss(net, batch).mean().backward()
    step_flops = count_flops(train_step); net.zero_grad(set_to_none=True)
    with torch.no_grad(): fwd_flops = count_flops(lambda: net(x, t)) / cfg.batch_size
    cache_flops = 2 * cfg.num_steps * cfg.cache_npar * fwd_flops
    peak_mem = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    s_per_it = step_s + cache_s / cfg.cache_refresh
    return dict(lever=lever, precision=cfg.precision, step_ms=1e3 * step_s, cache_s=cache_s, s_per_it=s_per_it,
                it_per_s_bound=1 / s_per_it, all_in_it_per_s=all_in, all_in_vs_bound=all_in * s_per_it,
                train_img_per_s=cfg.batch_size / step_s, cache_traj_per_s=cfg.cache_npar / cache_s,
                step_gflop=step_flops / 1e9, cache_gflop=cache_flops / 1e9,
                train_tflop_per_s=step_flops / step_s / 1e12, cache_tflop_per_s=cache_flops / cache_s / 1e12,
                peak_mem_gib=peak_mem / 2**30, compile_s=compile_s, recompiles_second_iteration=recompiles,
                config={k: getattr(cfg, k) for k in ("num_steps", "batch_size", "cache_npar", "cache_refresh", "model", "mean_match")})


def git_commit() -> str:
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError: return "?"


def table(config="2d", device="cpu", quick=False, levers=None, repeats=3) -> dict:
    "Measure every lever of `config` on `device`; return the rows and the machine's peaks."
    device = get_device(device)
    if device.type == "cpu": tune_malloc()
    levers = levers or [l for l in LEVERS if not (l == "channels_last" and config == "2d")]
    peaks = {"fp32": matmul_peak(device, torch.float32),    # bf16 on a CPU without bf16 units is emulated and slow: a small matmul
             "bf16": matmul_peak(device, torch.bfloat16, None if device.type == "cuda" else 256)}
    rows = []
    for lever in levers:
        r = measure(config, device, quick, lever, repeats)
        peak = peaks[r["precision"]]
        r["train_frac_peak"], r["cache_frac_peak"] = r["train_tflop_per_s"] * 1e12 / peak, r["cache_tflop_per_s"] * 1e12 / peak
        rows.append(r)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return {"config": config, "device": str(device), "hardware": name, "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M"),
            "commit": git_commit(), "torch": torch.__version__, "peak_tflop_per_s": {k: v / 1e12 for k, v in peaks.items()},
            "original_h200": ORIGINAL_H200.get(config), "rows": rows}


def show(res):
    pk = res["peak_tflop_per_s"]
    print(f"\n== {res['config']} on {res['hardware']} ({res['device']}), {res['date']}, commit {res['commit']}, torch {res['torch']}")
    print(f"measured matmul peak: fp32 {pk['fp32']:.3g} TFLOP/s, bf16 {pk['bf16']:.3g} TFLOP/s; config {res['rows'][0]['config']}")
    head = ("lever", "step ms", "cache s", "s/it", "bound it/s", "all-in", "of bound", "img/s", "traj/s",
            "train %pk", "cache %pk", "peak GiB", "compile s", "recomp")
    print("".join(f"{h:>11s}" if i else f"{h:14s}" for i, h in enumerate(head)))
    for r in res["rows"]:
        vals = (r["step_ms"], r["cache_s"], r["s_per_it"], r["it_per_s_bound"], r["all_in_it_per_s"], 100 * r["all_in_vs_bound"],
                r["train_img_per_s"], r["cache_traj_per_s"], 100 * r["train_frac_peak"], 100 * r["cache_frac_peak"],
                r["peak_mem_gib"], r["compile_s"], r["recompiles_second_iteration"])
        print(f"{r['lever']:14s}" + "".join(f"{v:11.4g}" for v in vals))
    if res.get("original_h200"):
        o, b = res["original_h200"], res["rows"][-1]
        print(f"original on one H200: {o['s_per_it']} s/it, step {1e3 * o['step_s']:.0f} ms, cache {o['cache_s']} s, peak {o['peak_gib']} GiB; "
              f"last row: x{o['s_per_it'] / b['s_per_it']:.1f} fewer s/it, train img/s x{o['step_s'] / (b['step_ms'] / 1e3):.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=tuple(CONFIGS), default="2d")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--levers", default="", help=f"comma-separated rows among {', '.join(LEVERS)} (default: all that apply)")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    res = table(a.config, a.device, a.quick, [l for l in a.levers.split(",") if l] or None, a.repeats)
    show(res)
    out = Path(os.environ.get("OUT", Path(__file__).parent / "out")); out.mkdir(parents=True, exist_ok=True)
    if not a.quick: (out / f"table-{a.config}-{get_device(a.device).type}.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
