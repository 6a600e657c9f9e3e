#!/usr/bin/env python
"""The README's picture of a 2d bridge: DSBM with its `points` preset on the checkerboard, trained through `dsb.train`
(or loaded from a run directory), its SDE carrying 2,000 prior points to the data, as an animated GIF.

    python bench/readme_figures.py                       # train (about 2 CPU minutes), write bench/results/bridge_checker.gif
    python bench/readme_figures.py --run RUN_DIR         # use a finished run instead (dsb.load)
"""
import argparse, tempfile
from pathlib import Path

import torch

import dsb
from dsb.plots import save_gif

OUT = Path(__file__).resolve().parent / "results" / "bridge_checker.gif"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a finished DSBM checker run directory to load instead of training")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.run: bridge = dsb.load(args.run)
    else: bridge = dsb.train(data="checker", solver="dsbm", out_dir=tempfile.mkdtemp(), plots=False, progress=False)
    with torch.no_grad(): path = bridge.sample(2000, path=True, seed=0)
    ref = bridge.data.data(2000, torch.Generator().manual_seed(1))
    every = max(1, (path.shape[0] - 1) // 40)              # about 40 frames whatever the grid
    out = save_gif(path, args.out, fps=12, ref=ref, every=every, px=220)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB, {path.shape[0] - 1} steps, every {every}); "
          f"scores of the run: {', '.join(f'{k}={bridge.metrics[k]:.3g}' for k in ('w2_ratio', 'precision') if k in bridge.metrics)}")


if __name__ == "__main__":
    main()
