#!/usr/bin/env python
"""How the CPU thread count of a run copes with a busy machine: the default run's first IPF iteration,
idle and next to one busy process, with PyTorch's default thread count (dsb before `threads`) and with
dsb's automatic choice (`threads=0`).

    python bench/threads.py                  # 2 repeats of each of the 4 cases, about 5 minutes on 2 cores
    python bench/threads.py --repeats 3 --json out.json

Each measurement is a fresh process (`OMP_NUM_THREADS` unset, so PyTorch starts one thread per core)
running `dsb.run.run(n_ipf=1, plots=False, progress=False)` with every other parameter at its default;
the time is that run's `wall_s` (training and evaluation of the iteration; the process start and the
imports are not in it). "busy" is a Python busy loop (`while True: pass`) in another process, started a
second before the run and stopped after it. The machine's load average and the CPUs found busy by
`dsb.core.busy_cpus` just before each run are printed with it: on a machine others use too, "idle" is
only as idle as they leave it.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import json, sys, tempfile, torch
from dsb.core import busy_cpus
busy = busy_cpus(0.5)
threads = torch.get_num_threads() if sys.argv[1] == "default" else 0   # PyTorch's own count, or dsb's choice
from dsb.run import run
with tempfile.TemporaryDirectory() as d:
    s = run(n_ipf=1, plots=False, progress=False, threads=threads, out_dir=d, run_name="bench")
print(json.dumps({"wall_s": s["wall_s"], "threads": s["threads"], "busy_before": busy, "sw2_data": s["sw2_data"]}))
"""


def measure(mode: str, busy: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if hog: time.sleep(1)
        load = os.getloadavg()[0]
        p = subprocess.run([sys.executable, "-c", RUN, mode], capture_output=True, text=True, env=env, timeout=1800)
    finally:
        if hog: hog.kill(); hog.wait()
    if p.returncode: raise RuntimeError(p.stderr[-3000:])
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "mode": mode, "busy": busy, "load1": load}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="measurements of each case (interleaved)")
    ap.add_argument("--json", help="also write every measurement to this file")
    args = ap.parse_args(argv)
    rows = []
    for r in range(args.repeats):
        for busy in (False, True):
            for mode in ("default", "auto"):
                m = measure(mode, busy)
                rows.append(m)
                print(f"  repeat {r + 1}: {'busy' if busy else 'idle'} {mode:8s} {m['threads']} thread(s) {m['wall_s']:6.1f} s "
                      f"(load {m['load1']:.2f}, {m['busy_before']:.2f} CPUs busy before)", flush=True)
    summary = summarize(rows)
    print(f"\nCPUs: {os.cpu_count()}; the default run's first IPF iteration (wall_s), {args.repeats} repeat(s) each\n")
    print(f"{'behaviour':28s}{'threads':>9s}{'idle (s)':>20s}{'busy (s)':>20s}{'busy / idle':>13s}")
    for r in summary:
        print(f"{r['behaviour']:28s}{r['threads']:>9s}{r['idle_s']:>20s}{r['busy_s']:>20s}{r['busy_over_idle']:>12.2f}x")
    print("\n(threads idle/busy where they differ; times as mean (min-max))")
    if args.json: Path(args.json).write_text(json.dumps(stamped(summary, rows, args.repeats), indent=1))


def summarize(rows: list[dict]) -> list[dict]:
    "One row per behaviour: thread counts, idle and busy times as mean (min-max), and busy / idle."
    out = []
    for mode, label in (("default", "PyTorch's default (before)"), ("auto", "dsb automatic (threads=0)")):
        t = {b: [m["wall_s"] for m in rows if m["mode"] == mode and m["busy"] == b] for b in (False, True)}
        th = [sorted({m["threads"] for m in rows if m["mode"] == mode and m["busy"] == b}) for b in (False, True)]
        threads = "/".join(",".join(map(str, x)) for x in th) if th[0] != th[1] else ",".join(map(str, th[0]))
        fmt = lambda v: f"{statistics.mean(v):.1f} ({min(v):.1f}-{max(v):.1f})" if len(v) > 1 else f"{v[0]:.1f}"
        out.append({"behaviour": label, "threads": threads, "idle_s": fmt(t[False]), "busy_s": fmt(t[True]),
                    "busy_over_idle": round(statistics.mean(t[True]) / statistics.mean(t[False]), 3)})
    return out


def stamped(summary: list[dict], rows: list[dict], repeats: int) -> dict:
    "The measurement as a results file of bench/results (read by bench/results_md.py)."
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"title": "Thread count next to a busy process: the default run's first IPF iteration",
            "date": time.strftime("%Y-%m-%d"), "commit": commit or "unknown",
            "machine": f"{os.cpu_count()} logical cores, no GPU; 'busy' = one Python busy loop beside the run",
            "command": f"python bench/threads.py --repeats {repeats} --json <file>",
            "note": "Targets of issue 19: automatic busy / idle at most 1.3x, and idle no slower than PyTorch's default. "
                    "Each measurement: " + "; ".join(f"{'busy' if m['busy'] else 'idle'} {m['mode']} {m['threads']} thread(s) "
                                                    f"{m['wall_s']:.1f} s (load {m['load1']:.2f})" for m in rows) + ".",
            "rows": summary}

if __name__ == "__main__":
    main()
