#!/usr/bin/env python
"""Evidence for the image half: a digit data set trained at its default budget (or the one given), scored by
the digit classifier next to the real-digit floor. Writes a sample grid (PNG) and the figures (JSON), stamped
with date, machine and commit, to bench/results/<dataset>_<device>.{png,json} (kept in the repository).

    python bench/digits.py                 # `digits` at its default budget (= papermill nbs/train.ipynb out.ipynb -p dataset digits)
    python bench/digits.py --quick         # a tiny budget, to check the script
    python bench/digits.py -p n_ipf 2      # any Config parameter
    python bench/digits.py --dataset mnist_offline -p device cuda -p n_ipf 2 --out $OUT    # the GPU check (bench/gpu_check.sh)
"""
import argparse, datetime, json, os, platform, subprocess, sys, tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsb.config import make_config          # noqa: E402
from dsb.core import derive_seed            # noqa: E402
from dsb.run import train                    # noqa: E402
from dsb.image_metrics import SCORERS       # noqa: E402

QUICK = dict(n_ipf=1, num_iter=20, cache_refresh=10, cache_npar=50, eval_npar=400)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    return f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dsb", "nbs"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except OSError: return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits", choices=("digits", "mnist_offline"), help="a data set with a digit score")
    ap.add_argument("--quick", action="store_true", help="tiny budget (checks the script, not the model)")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="a Config parameter")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for <dataset>_<device>.png / .json")
    args = ap.parse_args(argv)
    def value(v):
        try: return json.loads(v)
        except ValueError: return v            # a string ('True' / 'False' are read by make_config)
    params = {**(QUICK if args.quick else {}), **{k: value(v) for k, v in args.p}}
    cfg = make_config(dataset=args.dataset, **params)
    with tempfile.TemporaryDirectory() as tmp:
        bridge = train(dataset=args.dataset, **params, out_dir=tmp, run_name="digits", progress=False, plots=False)
        summary = bridge.metrics
    x = bridge.sample(100, seed=derive_seed(cfg.seed, 94))        # 100 fresh samples for the picture (not the ones the metrics used)
    device = summary["device"].split(":")[0]
    stamp = dict(dataset=args.dataset, device=summary["device"], date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), machine=machine(), commit=commit(),
                 command="python bench/digits.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    keys = ("digit_confidence", "digit_entropy", "digit_fd", "sw2_data")
    figures = {k: summary[k] for k in summary if k.startswith(("digit_", "sw2_"))}
    result = {**stamp, "budget": {k: getattr(cfg, k) for k in ("n_ipf", "num_iter", "num_steps", "batch_size", "cache_npar", "cache_refresh", "lr")},
              "wall_s": summary["wall_s"], "steps": summary["steps"], **figures}
    print(json.dumps(result, indent=1))
    rows = [("", "samples", "real floor", "ratio")]
    for k in keys[:3]:
        rows.append((k, f"{summary[k]:.3f}", f"{summary[k + '_floor']:.3f}", f"{summary[k] / summary[k + '_floor']:.2f}"))
    print("\n".join(f"{a:<18} {b:>9} {c:>10} {d:>6}" for a, b, c, d in rows))
    if args.quick: return result
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from dsb.plots import image_grid
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.2, 4.9), dpi=72)
    image_grid(x.cpu(), nrow=10, ax=ax, title=f"dsb {args.dataset}, {summary['wall_s'] / 60:.1f} min on {device.upper()}")
    fig.text(0.5, 0.02, f"digit FD {summary['digit_fd']:.2f} (floor {summary['digit_fd_floor']:.2f}), "
                        f"confidence {summary['digit_confidence']:.3f} ({summary['digit_confidence_floor']:.3f})\n"
                        f"{stamp['date']}, commit {stamp['commit']}, {os.cpu_count()} cores", ha="center", fontsize=7)
    fig.subplots_adjust(bottom=0.12, top=0.93, left=0.02, right=0.98)
    stem = out / f"{args.dataset}_{device}"
    fig.savefig(stem.with_suffix(".png")); plt.close(fig)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", stem.with_suffix(".png"), "and", stem.with_suffix(".json"))
    return result


if __name__ == "__main__":
    main()
