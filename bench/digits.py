#!/usr/bin/env python
"""Evidence for the image half: a digit data set trained with its preset (or the parameters given), for one or more
training seeds, scored by the digit classifier next to the real-digit floor. Writes, to bench/results/ (kept in the
repository), stamped with date, machine, thread count and commit:

    <dataset>_<solver>_<device>.json        per seed: CPU seconds, wall seconds, final scores, the score at every
                                            evaluation of the run (its metrics.jsonl: the curve); over the seeds: mean,
                                            standard deviation, min, max
    <dataset>_<solver>_<device>_grid.png    100 samples of the lowest seed's bridge
    <dataset>_<solver>_<device>_chain.png   the denoising chain of 8 samples, as a strip (prior on the left)

    python bench/digits.py                                  # `-p dataset digits` as a user gets it (its default solver), seed 0
    python bench/digits.py --solver dsb --seeds 0 1 2       # one solver's preset, three training seeds
    python bench/digits.py --dataset mnist_offline --seeds 0
    python bench/digits.py --dataset mnist_latent --solver dsbm   # MNIST on a CPU (set DSB_CACHE to an empty folder to count the autoencoder)
    python bench/digits.py -p n_ipf 2 --tag short           # any Config parameter; --tag names the files <...>_<tag>
    python bench/digits.py --figures                        # the curves of both solvers from their JSON files (no training)
    python bench/digits.py --quick                          # a tiny budget, to check the script (writes nothing)
    python bench/digits.py --join a/digits_dsbm_cpu.json b/digits_dsbm_cpu.json   # seeds run in parallel (--out a, --out b), joined

Seeds add up: when the JSON file exists and holds the same configuration (and thread count), the seeds of this run
join (or replace, seed by seed) those it holds, and the summary covers them all, so `--seeds 0 1` then `--seeds 2`
gives the 3-seed file. A file of another configuration is not overwritten: the script stops and names it (give
--tag or --out, or --replace to overwrite it).

Time is counted as the CPU seconds of this process (time.process_time) on --threads threads (default 1): on a
machine shared with other jobs they measure the work, where wall time measures the neighbours too. On an idle
2-core machine a 1-thread run's wall time equals its CPU time, and 2 threads are faster, not slower (the digits preset
by papermill on 2 idle threads: 6.3 minutes, against 8-9 CPU minutes on one; 2026-12-06_digits_papermill_2threads.json),
so CPU seconds on one thread bound the wall time a user waits.
"""
import argparse, datetime, json, math, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsb.config import make_config          # noqa: E402
from dsb.core import derive_seed, get_device   # noqa: E402
from dsb.run import train                    # noqa: E402

QUICK = dict(n_ipf=1, num_iter=20, cache_refresh=10, cache_npar=50, eval_npar=400)
SCORES = ("digit_fd", "digit_confidence", "digit_entropy", "sw2_data")
DATASETS = ("digits", "mnist_offline", "mnist_latent", "mnist_digits")


def machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    return f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({threads} thread{'s' * (threads > 1)})"


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dsb", "nbs"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except OSError: return "unknown"


def value(v):
    try: return json.loads(v)
    except ValueError: return v            # a string ('True' / 'False' are read by make_config)


def spread(xs: list) -> dict:
    "mean, sample standard deviation, min and max of a list of numbers."
    xs = [float(x) for x in xs]
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0., "min": min(xs), "max": max(xs), "n": len(xs)}


def decoded(bridge, x):
    "Pictures from samples of the data end: decoded when the data set lives in a latent space (`DataSpec.decode`)."
    return x if bridge.data.decode is None else bridge.data.decode(x)


def now() -> str: return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


def evaluations(metrics_jsonl: Path, steps_per_iteration: int) -> list:
    "The curve of a run: every evaluation record of its metrics.jsonl (the iteration, the optimiser steps so far, each score)."
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    return [{"iteration": r["eval"], "steps": r["eval"] * steps_per_iteration,
             **{k: r[k] for k in r if k.startswith(("digit_", "sw2_", "transfer_")) and not k.endswith("_floor")}}
            for r in rows if "eval" in r]


def run_seed(dataset: str, params: dict, seed: int, threads: int) -> tuple:
    "Train one seed in a temporary run directory; its record (CPU and wall seconds, scores, curve) and the bridge."
    torch.set_num_threads(threads)
    c0, w0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bridge = train(dataset=dataset, **params, seed=seed, out_dir=tmp, run_name="bench", progress=False, plots=False)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        curve = evaluations(bridge.run_dir / "metrics.jsonl", bridge.solver.n_stages * bridge.config.num_iter)
    m = bridge.metrics
    rec = {"seed": seed, "cpu_s": cpu, "wall_s": wall, **{k: m[k] for k in m if k.startswith(("digit_", "sw2_", "transfer_"))},
           "date": now(), "commit": commit(), "curve": curve}
    print(f"seed {seed}: {cpu:.0f} CPU s ({wall:.0f} s wall), " + ", ".join(f"{k} {m[k]:.4g}" for k in SCORES if k in m), flush=True)
    return rec, bridge


def strip(bridge, n: int = 8, columns: int = 11, seed: int = 95):
    "(n, columns, C, H, W): `columns` states of the chain from the prior (left) to the data (right) for `n` samples."
    path = bridge.sample(n, path=True, seed=seed)                    # (N+1, n, C, H, W)
    idx = torch.linspace(0, len(path) - 1, columns).round().long()
    return decoded(bridge, path[idx].flatten(0, 1)).unflatten(0, (columns, n)).transpose(0, 1), idx.tolist()


def figures(stem: Path, bridge, result: dict, rec: dict, n_grid: int = 100):
    "The grid and the chain of one seed's bridge (`rec`: that seed's record), its own scores under the grid."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from dsb.plots import image_grid
    f = result["floors"]
    x = decoded(bridge, bridge.sample(n_grid, seed=derive_seed(bridge.config.seed, 94))).cpu()
    fig, ax = plt.subplots(figsize=(4.2, 4.9), dpi=72)
    threads = result["threads"]
    image_grid(x, nrow=10, ax=ax, title=f"{result['solver']} on {result['dataset']}, {rec['cpu_s'] / 60:.1f} CPU min ({threads} thread{'s' * (threads > 1)})")
    score = (f"digit FD {rec['digit_fd']:.2f} (floor {f['digit_fd']:.2f}), "
             f"confidence {rec['digit_confidence']:.3f} ({f['digit_confidence']:.3f})" if "digit_fd" in rec else "")
    fig.text(0.5, 0.02, f"seed {rec['seed']}: {score}\n{rec.get('date', result['date'])}, commit {rec.get('commit', result['commit'])}",
             ha="center", fontsize=7)
    fig.subplots_adjust(bottom=0.12, top=0.93, left=0.02, right=0.98)
    fig.savefig(f"{stem}_grid.png"); plt.close(fig)
    states, idx = strip(bridge)
    fig, ax = plt.subplots(figsize=(6.4, 5.0), dpi=72)
    image_grid(states.flatten(0, 1).cpu(), nrow=states.shape[1], ax=ax,
               title=f"{result['solver']} on {result['dataset']}: the chain from the prior (left) to the data (right)\n"
                     f"states {idx[0]}, {idx[1]}, ..., {idx[-1]} of {bridge.config.num_steps if not getattr(bridge.config, 'grid_steps', 0) else bridge.config.grid_steps} steps")
    fig.tight_layout(); fig.savefig(f"{stem}_chain.png"); plt.close(fig)


def curves_figure(dataset: str, out: Path, device: str = "cpu"):
    "Both solvers' score after every iteration (each seed, and the mean), from their JSON files."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = {s: json.loads(p.read_text()) for s in ("dsb", "dsbm") if (p := out / f"{dataset}_{s}_{device}.json").exists()}
    if not runs: raise SystemExit(f"no {dataset}_{{dsb,dsbm}}_{device}.json in {out}: run the benchmarks first")
    fig, axs = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
    for (solver, r), color in zip(runs.items(), ("C0", "C1")):
        for j, (key, ax) in enumerate(zip(("digit_fd", "digit_confidence"), axs)):
            for k, seed in enumerate(r["seeds"]):
                c = seed["curve"]
                ax.plot([p["steps"] for p in c], [p[key] for p in c], color=color, alpha=0.35, lw=1, marker=".",
                        label=f"{solver} ({len(r['seeds'])} seeds)" if k == 0 else None)
            ax.axhline(r["floors"][key], color="k", ls=":", lw=1, label="real digits" if solver == list(runs)[0] else None)
    axs[0].set(yscale="log", xlabel="optimiser steps (both networks)", ylabel="digit FD", title=f"{dataset}: Fréchet distance")
    axs[1].set(xlabel="optimiser steps (both networks)", ylabel="mean max p", title="classifier confidence")
    axs[0].legend(fontsize=7); fig.tight_layout()
    path = out / f"{dataset}_curves_{device}.png"
    fig.savefig(path); plt.close(fig)
    print("wrote", path)


COMPARED_OUT = ("out_dir", "run_name", "resume", "progress", "plots", "seed")   # not part of what a file's seeds share


def differences(old: dict, new: dict) -> dict:
    "{name: (old, new)} of the parameters both configs name and set differently (a parameter added since is not compared)."
    return {k: (old[k], new[k]) for k in old.keys() & new.keys() if old[k] != new[k]}


def existing(path: Path, dataset: str, solver: str, threads: int, config: dict, replace: bool) -> dict | None:
    """The results file at `path` this run's seeds join: None when there is none (or `replace`); a file of another
    configuration, thread count or data set stops the script, naming what differs and how to keep both."""
    if replace or not path.exists(): return None
    old = json.loads(path.read_text())
    diff = differences(old.get("config", {}), config)
    if old.get("threads", 1) != threads: diff["threads"] = (old.get("threads", 1), threads)
    for k, v in (("dataset", dataset), ("solver", solver)):
        if old.get(k) != v: diff[k] = (old.get(k), v)
    if "seeds" not in old: diff["format"] = ("no seeds", "seeds")
    if diff:
        raise SystemExit(f"{path} holds seeds {[r['seed'] for r in old.get('seeds', [])]} of another run (differs in: "
                         + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
                         + "); it is not overwritten: give --tag NAME or --out DIR for these seeds, or --replace to overwrite it")
    return old


def merged(old: dict | None, result: dict) -> dict:
    "`result` with the seeds of the file `old` (as it was before this run) that it does not replace, and the file's commands kept."
    if old is None: return result
    new_seeds = {r["seed"] for r in result["seeds"]}
    kept = [r for r in old["seeds"] if r["seed"] not in new_seeds]
    old_cmd = old["command"] if "(" in old["command"] else f"{old['command']} ({old['date']}, commit {old['commit']})"
    return {**result, "command": f"{old_cmd}; {result['command']} ({result['date']}, commit {result['commit']})",
            "seeds": sorted(kept + result["seeds"], key=lambda r: r["seed"])}


def summarise(args, argv, cfg, device: str, records: list, stem: Path, old: dict | None) -> dict:
    "The result of the seeds trained so far, with those of the file `old` they join: printed, and (not --quick) written."
    result = {"dataset": args.dataset, "solver": cfg.solver, "device": device, "date": now(), "machine": machine(args.threads),
              "threads": args.threads, "commit": commit(),
              "command": "python bench/digits.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "time": "CPU seconds of the process (time.process_time), one training seed at a time",
              "config": {k: v for k, v in vars(cfg).items() if k not in COMPARED_OUT}, "seeds": records}
    return finish(merged(old, result), args.dataset, args.threads, device, stem, args.quick)


def finish(result: dict, dataset: str, threads: int, device: str, stem: Path, quick: bool) -> dict:
    "`result` with its summary over its seeds, title, note and table rows: printed, and (not `quick`) written to `stem`.json."
    records = result["seeds"]
    keys = [k for k in records[0] if k.startswith(("digit_", "sw2_", "transfer_")) and not k.endswith("_floor")] + ["cpu_s", "wall_s"]
    result["summary"] = {k: spread([r[k] for r in records if k in r]) for k in keys}
    result["floors"] = {k[:-len("_floor")]: records[0][k] for k in records[0] if k.endswith("_floor")}
    shown = [k for k in ("digit_fd", "digit_confidence", "digit_entropy", "transfer_labels_kept", "transfer_labels_untransferred",
                         "cpu_s", "wall_s") if k in result["summary"]]
    result["title"] = f"{dataset}, {result['solver']}: {len(records)} training seed(s) on {device.split(':')[0]}"
    result["note"] = ("Digit score of the samples (FD: Frechet distance in the digit classifier's features; confidence: mean max "
                      "probability) against real unseen digits: " + ", ".join(f"{k} floor {v:.4g}" for k, v in result["floors"].items()
                                                                                  if k in ("digit_fd", "digit_confidence", "digit_entropy"))
                      + f". Time: {result['time']}, {threads} thread(s), on a machine shared with other jobs (wall > CPU).")
    result["rows"] = ([{"seed": r["seed"], **{k: r[k] for k in shown}} for r in records]
                      + [{"seed": stat, **{k: result["summary"][k][stat] for k in shown}} for stat in ("mean", "std")])
    s, f = result["summary"], result["floors"]
    print(f"{len(records)} seed(s) {[r['seed'] for r in records]}\n{'':<18} {'mean':>9} {'std':>7} {'floor':>8} {'ratio':>6}")
    for k in ("digit_fd", "digit_confidence", "digit_entropy"):
        if k in s: print(f"{k:<18} {s[k]['mean']:9.4f} {s[k]['std']:7.4f} {f[k]:8.4f} {s[k]['mean'] / f[k]:6.3f}")
    print(f"{'cpu_s':<18} {s['cpu_s']['mean']:9.1f} {s['cpu_s']['std']:7.1f}", flush=True)
    if not quick:
        Path(f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        print("wrote", f"{stem}.json", flush=True)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits", choices=DATASETS, help="a data set with a digit score")
    ap.add_argument("--solver", default=None, help="dsb or dsbm (default: the data set's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1; see the docstring)")
    ap.add_argument("--quick", action="store_true", help="tiny budget (checks the script, not the model; writes nothing)")
    ap.add_argument("--figures", action="store_true", help="only draw the curves of both solvers from their JSON files")
    ap.add_argument("--tag", default="", help="suffix of the file names")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="a Config parameter")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder of the results")
    ap.add_argument("--replace", action="store_true", help="overwrite a results file of another configuration (default: stop)")
    ap.add_argument("--join", nargs="+", metavar="FILE", help="no training: add the seeds of these results files of one "
                    "configuration (seeds run in parallel, each with its own --out) to this configuration's file in --out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.figures: return curves_figure(args.dataset, out)
    params = {**(QUICK if args.quick else {}), **{k: value(v) for k, v in args.p}}
    if args.solver: params["solver"] = args.solver
    cfg = make_config(dataset=args.dataset, **params)
    device = str(get_device(cfg.device))
    stem = out / f"{args.dataset}_{cfg.solver}_{device.split(':')[0]}{'_' + args.tag if args.tag else ''}"
    if args.join:
        out.mkdir(parents=True, exist_ok=True)
        return join(args.join, stem, args.replace)
    old = None
    if not args.quick:                                             # a file of another configuration: stop before training
        out.mkdir(parents=True, exist_ok=True)
        old = existing(Path(f"{stem}.json"), args.dataset, cfg.solver, args.threads,
                       {k: v for k, v in vars(cfg).items() if k not in COMPARED_OUT}, args.replace)
        if old: print(f"{stem.name}.json: these seeds join its seeds {[r['seed'] for r in old['seeds']]} (same configuration)", flush=True)
    records, result = [], None
    for seed in args.seeds:
        rec, bridge = run_seed(args.dataset, params, seed, args.threads)
        records.append(rec)
        result = summarise(args, argv, cfg, device, records, stem, old)    # written after every seed: a cut run keeps what it measured
        if not args.quick and seed == result["seeds"][0]["seed"]:      # the lowest seed of the file draws its figures
            figures(stem, bridge, result, rec)
            print("wrote", f"{stem}_grid.png, {stem}_chain.png", flush=True)
    return result


def join(files: list, stem: Path, replace: bool) -> dict:
    """Add the seeds of results `files` (runs of one configuration made apart, e.g. two seeds in parallel with --out
    elsewhere) to the file `stem`.json, under the rules of seeds adding up; the figures of the file's lowest seed come along."""
    result = None
    for f in map(Path, files):
        new = json.loads(f.read_text())
        old = existing(Path(f"{stem}.json"), new["dataset"], new["solver"], new.get("threads", 1), new["config"], replace and result is None)
        result = finish(merged(old, new), new["dataset"], new.get("threads", 1), new["device"], stem, False)
        if result["seeds"][0]["seed"] == min(r["seed"] for r in new["seeds"]) and f.with_suffix("") != stem:
            for part in ("grid", "chain"):
                src = f.with_name(f"{f.stem}_{part}.png")
                if src.exists(): shutil.copyfile(src, f"{stem}_{part}.png")
    return result


if __name__ == "__main__":
    main()
