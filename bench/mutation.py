"""Mutation testing of dsb's core modules with mutmut (not in CI: minutes per module on one thread).

    pip install mutmut                                   # 3.x
    nice -n 15 python bench/mutation.py                  # every core module (hours on one thread)
    nice -n 15 python bench/mutation.py reference trainer   # some of them
    python bench/mutation.py --report                    # rewrite the report from the last run's results
    python bench/mutation.py --plant ema_rate            # replay a planted bug of issue 20: its tests must fail
    python bench/mutation.py --report --work DIR --sample S.json   # score a seeded sample of mutants only (see sample_names)

It copies the working tree to a scratch folder (`--work`, default /tmp/dsb_mutation: mutmut writes a `mutants/`
copy of the sources and must not touch yours), writes mutmut's configuration there (`MUTMUT_CFG` below), runs
`mutmut run` on one process with one thread against the fast test subset `TESTS` (exact engine checks of
seconds), and writes every surviving mutant with its diff to bench/mutation.json and the summary with
the explanation of each accepted survivor to bench/MUTATION.md.

A survivor is a mutant no test of the subset notices. Either the subset lacks a check (add one to
tests/test_planted.py and rerun), or the mutant is equivalent (same behaviour: `x * 1.0` -> `x * 2.0` of a
value that is 0, a message string, a default argument every caller overrides); equivalent ones are explained in
`EXPLAINED` (mutant name -> reason), so the report separates them from the ones that still need a test."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ("reference", "reversal", "gaussian", "imf", "trainer", "ipf", "dsbm", "checkpoint", "metrics")
# mutmut's console script, not `python -m mutmut`: -m would put the work folder (its unmutated dsb/) first on sys.path
MUTMUT = str(Path(sys.executable).parent / "mutmut")
TESTS = ("tests/test_planted.py", "tests/test_core_exact.py", "tests/test_mutants.py")   # the fast subset: seconds in all
MUTMUT_CFG = """[mutmut]
source_paths = dsb/
only_mutate =
{only}
pytest_add_cli_args_test_selection =
{tests}
pytest_add_cli_args =
    -p
    no:cacheprovider
    -x
    -q
process_isolation = fork
timeout_multiplier = 5.0
timeout_constant = 10.0
"""
# The planted bugs of issue 20: (file, original, planted, tests that catch it). `python bench/mutation.py --plant NAME`
# copies the tree, plants it and runs those tests (they must fail).
PLANTED = {
    "mm_sign": ("dsb/reversal.py", "return x_next + mean.to(x_next.dtype) - mean_fn(x_next, t).to(x_next.dtype)",
                "return x_next - mean.to(x_next.dtype) + mean_fn(x_next, t).to(x_next.dtype)",
                "tests/test_planted.py tests/test_accuracy.py::test_dsb_gaussian_matches_the_exact_dsb_iterate"),
    "noise_last": ("dsb/reference.py", "if sigma2 > 0 and (noise_last or i < n - 1):", "if sigma2 > 0:", "tests/test_planted.py"),
    "dsbflow_index": ("dsb/ipf.py", "half = (self.F(x, t[k]) - self.B(x, t[k + 1])) / 2", "half = (self.F(x, t[k]) - self.B(x, t[k])) / 2",
                      "tests/test_planted.py"),
    "cache_t_build": ("dsb/ipf.py", "t[1:].to(x0), npar)", "t[:-1].to(x0), npar)", "tests/test_planted.py"),
    "cache_t_refresh": ("dsb/ipf.py", "sample.grid[0][1:].to(x)", "sample.grid[0][:-1].to(x)",
                        "tests/test_planted.py tests/test_accuracy.py::test_dsb_gaussian_matches_the_exact_dsb_iterate"),
    "ema_rate": ("dsb/trainer.py", "torch._foreach_lerp_(self.ema_params, self.net_params, 1 - rate)",
                 "torch._foreach_lerp_(self.ema_params, self.net_params, rate)", "tests/test_planted.py"),
    "dsbm_ode_swap": ("dsb/dsbm.py", "return flow_chain(self.forward.ema, self.backward.ema, *grid)",
                      "return flow_chain(self.backward.ema, self.forward.ema, *grid)",
                      "tests/test_planted.py tests/test_accuracy.py::test_dsbm_gaussian_matches_the_exact_imf_iterate_and_its_ode_reaches_the_data "
                      "tests/test_dsbm.py::test_dsbm_run_logs_both_samplers_and_learns"),
    "dsbm_weight": ("dsb/dsbm.py", "self.ref.transition(self.ref.T - t if self.forward_stage else t)",
                    "self.ref.transition(t if self.forward_stage else self.ref.T - t)", "tests/test_planted.py"),
    "optimizer_state": ("dsb/trainer.py",
                        '"optimizer": self.opt.state_dict() if (self.opt is not None and self.position[2] > 0) else None,',
                        '"optimizer": None,', "tests/test_planted.py::test_resume_from_state_dict_continues_adam_exactly"),
    "digit_floor_quarter": ("dsb/image_metrics.py", "self.floor = digit_scores(self.classifier, self.heldout, self.real)",
                            "self.floor = digit_scores(self.classifier, self.heldout[:len(self.heldout) // 4], self.real)",
                            "tests/test_image_metrics.py::test_digit_score_floor_is_the_heldout_digits_at_the_chunk_size"),
}


def plant(name: str, work: Path) -> int:
    "Copy the tree to `work`, plant bug `name` in it and run the tests that must catch it; returns pytest's exit code (1: caught)."
    f, old, new, tests = PLANTED[name]
    copy_tree(work)
    src = (work / f).read_text()
    if src.count(old) != 1: raise SystemExit(f"{name}: the original line is no longer in {f}; update PLANTED")
    (work / f).write_text(src.replace(old, new))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(work)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests.split()], cwd=work, env=env).returncode


# Survivors accepted after reading them: equivalent mutants (no input changes the behaviour) or changes to
# messages and defaults no caller uses. Keys are mutmut's names at the commit of the report (they shift when the
# code changes: rerun and reread after editing a module).
EXPLAINED: dict[str, str] = {
    "dsb.metrics.x__gaussian_args__mutmut_19": "equivalent: check_cov(definite=None) takes the same branch as definite=False (falsy)",
    "dsb.metrics.x_sort_columns__mutmut_6": "equivalent on the CPU: both branches sort the same values (NumPy's sort is a speed path); "
                                            "the mutant only differs on a GPU, where it would fail loudly in .numpy()",
    "dsb.dsbm.x_flow_chain__mutmut_12": "equivalent: t[-1] == t[0] only on a grid without a time span, which no caller builds "
                                        "(uniform_grid and the schedules' grids run from 0 to 1 or back)",
    "dsb.gaussian.xǁGaussianChainǁwith_start__mutmut_14": "equivalent: the chain's __post_init__ converts cov0 to float64 (as_f64), "
                                                          "and a scalar times the identity is exact in float32",
    "dsb.reference.x_sample_chain__mutmut_83": "equivalent in value: with sigma2 = 0 the added noise is sqrt(0) z = 0 "
                                               "(only the generator's state advances, which no caller reads after a noiseless chain)",
    "dsb.trainer.xǁTrainerǁ__init____mutmut_57": "equivalent: the device policy comes from the first network's device, and both "
                                                 "stages' networks of every solver live on the same device",
    "dsb.checkpoint.x_load_checkpoint__mutmut_15": "accepted: map_location=None differs only for checkpoints holding GPU tensors "
                                                   "(loaded back onto the GPU); the CPU-only test machines cannot tell",
    "dsb.checkpoint.x_load_checkpoint__mutmut_18": "accepted: an omitted map_location differs only for checkpoints holding GPU tensors "
                                                   "(loaded back onto the GPU); the CPU-only test machines cannot tell",
    "dsb.checkpoint.x_load_checkpoint__mutmut_16": "equivalent in torch >= 2.6: weights_only=None means the default, True",
    "dsb.checkpoint.x_load_checkpoint__mutmut_19": "equivalent in torch >= 2.6: an omitted weights_only defaults to True",
    "dsb.checkpoint.x_set_aside_stage__mutmut_10": "equivalent in torch >= 2.6: weights_only=None means the default, True",
    "dsb.checkpoint.x_set_aside_stage__mutmut_12": "equivalent in torch >= 2.6: an omitted weights_only defaults to True",
}


def copy_tree(work: Path):
    "Tracked and untracked-but-not-ignored files of the repository into `work` (a fresh folder)."
    if (work / ".git").exists() or work.resolve() in (ROOT, *ROOT.parents):
        raise SystemExit(f"--work {work} is a repository or holds this one: give a scratch folder")
    if work.exists(): shutil.rmtree(work)
    work.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / f)


def sample_names(work: Path, modules: list[str], fraction: float, rerun: tuple = ("not checked",), seed: int = 0) -> dict:
    """A seeded uniform sample of each module's mutants (at least 40, or all): {module: names}. The score of a sample
    estimates the module's score with a binomial standard error; mutants of the sample already run keep their result
    unless their status is in `rerun` (e.g. survivors after tests were added)."""
    import random
    out = {}
    for m in modules:
        meta = work / "mutants" / "dsb" / f"{m}.py.meta"
        names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
        k = min(len(names), max(40, round(fraction * len(names))))
        out[m] = sorted(random.Random(f"{seed}-{m}").sample(names, k))
    return out


def run_names(work: Path, names: list[str]) -> float:
    "Run mutmut on the named mutants only (already generated in `work`)."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(work / "mutants")}
    t0 = time.time()
    subprocess.run([MUTMUT, "run", "--max-children", "1", *names], cwd=work, env=env)
    return time.time() - t0


def run_mutmut(work: Path, modules: list[str]) -> float:
    cfg = MUTMUT_CFG.format(only="\n".join(f"    dsb/{m}.py" for m in modules), tests="\n".join(f"    {t}" for t in TESTS))
    (work / "setup.cfg").write_text(cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": str(work / "mutants")}
    (work / "mutants").mkdir(exist_ok=True)   # before mutmut starts: a PYTHONPATH folder missing at start-up is never searched
    t0 = time.time()
    subprocess.run([MUTMUT, "run", "--max-children", "1"], cwd=work, env=env)
    return time.time() - t0


_EXIT = {0: "survived", 1: "killed", 33: "no tests", 34: "skipped", 35: "suspicious", 36: "timeout", 37: "caught by type check",
         -24: "timeout", 152: "timeout", None: "not checked"}


def _functions(path: Path) -> dict:
    "Source of every function of a mutmut-generated module (`x_f__mutmut_orig`, `x_f__mutmut_3`, methods `xǁCǁm__mutmut_3`)."
    import ast
    src = path.read_text()
    lines = src.splitlines()   # (ast.get_source_segment rescans the whole file per call: quadratic on mutmut's large files)
    return {n.name: "\n".join(lines[n.lineno - 1:n.end_lineno]) for n in ast.walk(ast.parse(src))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in n.name}


def _diff(funcs: dict, name: str) -> str:
    "The changed lines of mutant `name` against its original, as `-`/`+` lines (what `mutmut show` prints, without a process per mutant)."
    import difflib
    short = name.split(".", 2)[2] if name.startswith("dsb.") else name
    orig = funcs.get(re.sub(r"__mutmut_\d+$", "__mutmut_orig", short))
    mut = funcs.get(short)
    if orig is None or mut is None: return ""
    rename = lambda text: text.replace(short, "f").replace(re.sub(r"__mutmut_\d+$", "__mutmut_orig", short), "f")
    lines = difflib.unified_diff(rename(orig).splitlines(), rename(mut).splitlines(), lineterm="", n=0)
    return "\n".join(l for l in lines if l[:1] in "+-" and not l.startswith(("+++", "---")))


def collect(work: Path, modules: list[str]) -> dict:
    "Every mutant's status (from mutmut's `.meta` files: exit code per mutant) and the diff of each survivor."
    status, survivors = {}, {}
    for m in modules:
        meta = work / "mutants" / "dsb" / f"{m}.py.meta"
        if not meta.exists(): continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        funcs = _functions(work / "mutants" / "dsb" / f"{m}.py")
        for name, code in codes.items():
            status[name] = _EXIT.get(code, f"exit code {code}")
            if status[name] == "survived": survivors[name] = dict(status="survived", diff=_diff(funcs, name))
    return dict(status=status, survivors=survivors)


def module_of(name: str) -> str: return name.split(".")[1] if name.startswith("dsb.") else name.split(".")[0]


def docstring_only(diff: str) -> bool:
    "A mutant that only changes a docstring (a line that is one string literal): equivalent, documentation is not behaviour."
    lines = [l[1:].strip() for l in diff.splitlines() if l[:1] in "+-"]
    return bool(lines) and all(l[:1] in "\"'" and l[-1:] in "\"'" and l.count('"') == 2 for l in lines)


_STR = re.compile(r"""[rbfu]*("([^"\\]|\\.)*"|'([^'\\]|\\.)*')""")


def message_only(diff: str) -> bool:
    "A mutant that only changes the text of a string in a `raise` / `say(` / `warn(` line: the error and its condition are unchanged."
    minus = [l[1:] for l in diff.splitlines() if l[:1] == "-"]
    plus = [l[1:] for l in diff.splitlines() if l[:1] == "+"]
    if not minus or len(minus) != len(plus): return False
    for a, b in zip(minus, plus):
        if _STR.sub('""', a) != _STR.sub('""', b): return False
        continuation = re.fullmatch(r'\s*(\+\s*)?""\s*\)*\s*,?\s*', _STR.sub('""', a))   # a message's next line: only a string
        if not (continuation or re.search(r"\braise\b|Error\(|\bsay\(|warn\(", a)): return False
    return True


_NAMED = re.compile(r"""\b(check_\w+|as_points|as_f64|_scalar|_as_matrix)\((None|[rbfu]*"[^"]*"|[rbfu]*'[^']*')""")


def name_only(diff: str) -> bool:
    "A mutant that only changes the first argument of a check (`check_int(\"n\", n)`): the name its error message shows."
    minus = [l[1:] for l in diff.splitlines() if l[:1] == "-"]
    plus = [l[1:] for l in diff.splitlines() if l[:1] == "+"]
    norm = lambda l: _NAMED.sub(r"\1(NAME", l)
    return bool(minus) and len(minus) == len(plus) and all(a != b and norm(a) == norm(b) for a, b in zip(minus, plus))


def reason(name: str, v: dict) -> str | None:
    if name in EXPLAINED: return EXPLAINED[name]
    if docstring_only(v["diff"]): return "equivalent: changes a docstring only"
    if message_only(v["diff"]): return "accepted: changes only the wording of an error message or notice (its condition and type are unchanged)"
    if name_only(v["diff"]): return "accepted: changes only the parameter name a check puts in its error message"
    return None


def summarise(res: dict) -> dict:
    per = {}
    for name, st in res["status"].items():
        if res.get("sample") is not None and name not in res["sample"]: continue
        m = per.setdefault(module_of(name), dict(total=0, killed=0, survived=0, no_tests=0, timeout=0, other=0, equivalent=0, not_run=0))
        if st == "not checked": m["not_run"] += 1; continue
        m["total"] += 1
        key = {"killed": "killed", "survived": "survived", "no tests": "no_tests", "timeout": "timeout"}.get(st, "other")
        m[key] += 1
        if st == "survived" and reason(name, res["survivors"][name]): m["equivalent"] += 1
    for m in per.values():
        real = m["total"] - m["equivalent"] - m["other"]
        m["score"] = round((m["killed"] + m["timeout"]) / real, 4) if real else None
        m["score_se"] = round((m["score"] * (1 - m["score"]) / real) ** 0.5, 4) if real else None
    return per


def write_report(res: dict, modules: list[str], seconds: float | None):
    if res.get("sample") is not None:
        res = {**res, "survivors": {k: v for k, v in res["survivors"].items() if k in res["sample"]}}
    per = summarise(res)
    out = dict(modules=modules, tests=list(TESTS), seconds=seconds, per_module=per, sample=res.get("sample_info"),
               survivors={k: {**v, "explained": reason(k, v)} for k, v in res["survivors"].items()})
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "mutation.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# Mutation testing", "",
             "Generated by `python bench/mutation.py --report` from bench/mutation.json. Do not edit by hand;",
             "the text of the contributors' section lives in `bench/mutation.py` (its docstring and `CONTRIBUTING`).", "",
             "Mutants counts the mutants run; `not run` ones (a run stopped before them) are left out of the score.",
             *([f"Scores from a seeded uniform sample of each module's mutants ({res['sample_info']}): each score is an estimate "
                "of the module's, with its binomial standard error."] if res.get("sample_info") else []), "",
             "| module | mutants | killed | timeout | survived | no tests | equivalent | not run | score (killed / non-equivalent) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mod, m in sorted(per.items()):
        score = "n/a" if m["score"] is None else f"{100 * m['score']:.1f} % ± {100 * m['score_se']:.1f}"
        lines.append(f"| {mod} | {m['total']} | {m['killed']} | {m['timeout']} | {m['survived']} | {m['no_tests']} | {m['equivalent']} | {m['not_run']} | {score} |")
    tot = {k: sum(m[k] for m in per.values()) for k in ("total", "killed", "timeout", "survived", "no_tests", "equivalent", "other", "not_run")}
    real = tot["total"] - tot["equivalent"] - tot["other"]
    if real: lines.append(f"| **all** (pooled) | {tot['total']} | {tot['killed']} | {tot['timeout']} | {tot['survived']} | {tot['no_tests']} | {tot['equivalent']} | {tot['not_run']} | {100 * (tot['killed'] + tot['timeout']) / real:.1f} % |")
    sized = [(m, res["module_sizes"][mod]) for mod, m in per.items() if m["score"] is not None and mod in res.get("module_sizes", {})]
    if sized and res.get("sample_info"):   # each module weighted by its number of mutants: the estimate of the whole set's score
        W = sum(n for _, n in sized)
        est = sum(m["score"] * n for m, n in sized) / W
        se = sum((m["score_se"] * n) ** 2 for m, n in sized) ** 0.5 / W
        lines.append(f"| **all** (modules weighted by size, {W} mutants) | | | | | | | | {100 * est:.1f} % ± {100 * se:.1f} |")
    lines += ["", f"Test subset: {', '.join(TESTS)}." + (f" Run time {seconds / 60:.0f} min on one thread." if seconds else ""), "",
              "## Survivors", ""]
    for name, v in sorted(res["survivors"].items()):
        why = reason(name, v) or "**not yet explained: needs a test or a reason**"
        lines += [f"- `{name}` ({v['status']}): {why}", "", "  ```diff", *("  " + l for l in v["diff"].splitlines()), "  ```", ""]
    lines += ["## For contributors", "", CONTRIBUTING]
    (ROOT / "bench" / "MUTATION.md").write_text("\n".join(lines) + "\n")


CONTRIBUTING = """- Run `pip install mutmut` (3.x), then `nice -n 15 python bench/mutation.py MODULE ...` (names from `CORE`); the
  full set takes hours on one thread, one module minutes to an hour. `--work DIR` picks the scratch folder.
- The subset it runs per mutant is `TESTS` in bench/mutation.py: exact engine checks of seconds (closed forms,
  hand-computed recursions, replayed random numbers). A slow test there multiplies the run time by the number of
  mutants: keep new checks in it fast, and put training runs in tests/test_accuracy.py instead.
- After changing a core module, rerun its mutants. A new survivor either needs a check (add it to
  tests/test_planted.py or tests/test_core_exact.py) or is equivalent: then add its name and the reason to `EXPLAINED`
  and regenerate the report with `python bench/mutation.py --report`.
- On a busy machine the full set does not fit in a session (5,215 mutants; about 0.1-2 per second on one thread,
  depending on the load): `sample_names` draws a seeded uniform sample per module and `run_names` runs only those;
  `--report --sample FILE` then reports each module's score on its sample with a binomial standard error.
- Target: at least 85 % of the non-equivalent mutants of each module killed."""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", default=list(CORE), help=f"core modules to mutate (default all: {' '.join(CORE)})")
    ap.add_argument("--work", action="append", help="scratch folder for the copy and mutmut's mutants/ (default /tmp/dsb_mutation); "
                    "with --report, several folders (runs of different modules) are merged")
    ap.add_argument("--plant", choices=sorted(PLANTED), help="replay one planted bug of issue 20 and run the tests that catch it")
    ap.add_argument("--report", action="store_true", help="only collect the last run's results in --work and write the report")
    ap.add_argument("--sample", help="JSON {module: [mutant names]}: report the score of these samples only (see sample_names)")
    a = ap.parse_args()
    bad = [m for m in a.modules if m not in CORE]
    if bad: ap.error(f"unknown modules {bad}; choose from {CORE}")
    works = [Path(w) for w in (a.work or ["/tmp/dsb_mutation"])]
    if a.plant:
        code = plant(a.plant, works[0])
        print(f"{a.plant}: {'caught (the tests fail)' if code == 1 else 'NOT caught' if code == 0 else f'pytest exit code {code}'}")
        sys.exit(0 if code == 1 else 1)
    seconds = None
    if not a.report:
        copy_tree(works[0])
        seconds = run_mutmut(works[0], a.modules)
    res = dict(status={}, survivors={})
    for w in works:
        r = collect(w, a.modules)
        res["status"].update(r["status"]); res["survivors"].update(r["survivors"])
    res["survivors"] = {k: v for k, v in res["survivors"].items() if res["status"][k] == "survived"}   # a later folder wins
    res["module_sizes"] = {m: sum(module_of(k) == m for k in res["status"]) for m in a.modules}
    if a.sample:
        smp = json.loads(Path(a.sample).read_text())
        res["sample"] = {n for names in smp.values() for n in names}
        res["sample_info"] = ", ".join(f"{m} {len(v)} of {res['module_sizes'].get(m, '?')}" for m, v in smp.items())
    write_report(res, a.modules, seconds)
    print((ROOT / "bench" / "MUTATION.md").read_text().split("## Survivors")[0])


if __name__ == "__main__":
    main()
