#!/usr/bin/env python
"""What a CPU budget buys a UNet: FLOPs of a training step per configuration (counted by torch's FlopCounterMode) divided
by the FLOP rate this CPU reaches on the 8 px digits network (timed), so the number of optimiser steps a budget pays for.
Writes bench/results/unet_budget_<device>.json (rows: one per configuration).

    python bench/unet_budget.py                      # the 8 px digits network, the paper's 28 px one, two small 28 px ones
    python bench/unet_budget.py --minutes 30 --batch 128

A training step is counted as three forward passes (the backward pass costs about two); the rate is the one measured on the
8 px network at the same batch, so the step counts ignore that larger convolutions usually run at a higher rate (they
are on the safe side) and the refreshes and evaluations a run also pays for.
"""
import argparse, datetime, json, sys, time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from torch.nn.attention import sdpa_kernel, SDPBackend

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dsb.unet import unet_for                    # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))
from digits import commit, machine               # noqa: E402

CONFIGS = [  # name, image size, channels, UNet overrides
    ("digits 8 px (UNET_CONFIGS[8])", 8, 1, {}),
    ("MNIST 28 px, the paper's (UNET_CONFIGS[28])", 28, 1, {}),
    ("28 px, width 32, 1 block, no attention", 28, 1, dict(model_channels=32, num_res_blocks=1, attention_resolutions=())),
    ("28 px, width 16, 1 block, no attention", 28, 1, dict(model_channels=16, num_res_blocks=1, attention_resolutions=())),
    ("latent 2 x 8 x 8 (as digits, 2 channels)", 8, 2, {}),
]


def forward_flops(size: int, channels: int, **kw) -> int:
    with torch.device("meta"): net = unet_for(size, channels, **kw)
    x, t = torch.zeros(1, channels, size, size, device="meta"), torch.zeros(1, device="meta")
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH): net(x, t)
    return counter.get_total_flops()


def step_seconds(batch: int, repeats: int = 10, size: int = 8, channels: int = 1, **kw) -> float:
    "CPU seconds of one optimiser step of `unet_for(size, channels, **kw)` (default: the 8 px digits network) at `batch`."
    net = unet_for(size, channels, **kw); opt = torch.optim.Adam(net.parameters())
    x, t = torch.randn(batch, channels, size, size), torch.rand(batch)
    def step():
        loss = net(x, t).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
    step()
    c = time.process_time()
    for _ in range(repeats): step()
    return (time.process_time() - c) / repeats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30., help="the CPU budget")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    s8 = step_seconds(args.batch)
    rate = 3 * forward_flops(8, 1) * args.batch / s8
    rows = []
    for name, size, ch, kw in CONFIGS:
        f = forward_flops(size, ch, **kw)
        step = 3 * f * args.batch / rate
        measured = step_seconds(args.batch, 3, size, ch, **kw) if step < 2 else None    # the cheap ones, timed to check the rate
        rows.append({"network": name, "forward MFLOP per image": f / 1e6, "step s (batch %d)" % args.batch: step,
                     f"steps in {args.minutes:g} CPU min": int(args.minutes * 60 / step), "step s, timed": measured})
    for r in rows: print(r)
    res = {"title": f"UNet steps a {args.minutes:g} CPU-minute budget buys", "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
           "machine": machine(args.threads), "commit": commit(), "command": "python bench/unet_budget.py " + " ".join(argv or sys.argv[1:]),
           "note": (f"Measured: a step of the 8 px digits network at batch {args.batch} took {s8 * 1000:.0f} CPU ms, "
                    f"{rate / 1e9:.1f} GFLOP/s; every other row is its FLOPs at that rate (no refresh, no evaluation); the "
                    "last column times the steps that cost under 2 s directly (3 steps): larger networks run at a higher rate. "
                    "The digits preset (DSBM) trains 2,000 steps of the 8 px network."),
           "rows": rows}
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    dev = "cpu"
    (out / f"unet_budget_{dev}.json").write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", out / f"unet_budget_{dev}.json")


if __name__ == "__main__":
    main()
