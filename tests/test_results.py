"bench/RESULTS.md is generated from bench/results/*.json by bench/results_md.py, and is current."
import json, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import results_md  # noqa: E402


def test_results_md_is_current():
    assert results_md.main(["--check"]) == 0, "run: python bench/results_md.py"


def test_rendering_tables_and_stamps(tmp_path):
    stamp = dict(date="2026-12-06 10:00", commit="abc1234", machine="2 cores", command="python bench/x.py")
    (tmp_path / "a.json").write_text(json.dumps({**stamp, "title": "A table", "rows": [{"data": "moon", "w2_ratio": 1.23456}, {"data": "checker"}]}))
    (tmp_path / "b.json").write_text(json.dumps({**stamp, "wall_s": 605.16, "budget": {"n_ipf": 4, "lr": 0.001}}))
    text = results_md.render(tmp_path)
    assert "## A table" in text and "| data | w2_ratio |" in text and "| moon | 1.235 |" in text and "| checker |  |" in text
    assert "commit `abc1234`" in text and "`python bench/x.py`" in text
    assert "| wall_s | 605.2 |" in text and "| budget | n_ipf=4, lr=0.001 |" in text
    (tmp_path / "c.json").write_text(json.dumps({"wall_s": 1.0}))
    with pytest.raises(ValueError, match="missing the stamp field"): results_md.render(tmp_path)


def test_solver_table(tmp_path):
    "The 'Solver table' section: a cell per solver and problem from bench.py's rows, the latest winning, 'not measured' elsewhere."
    stamp = dict(machine="2 cores", command="python bench/bench.py solvers")
    g = dict(part="gaussian", d=20, T=1.0, err_sde=0.05, mc_floor=0.03, pairs=100_000, cpu_s=400.0)
    (tmp_path / "old.json").write_text(json.dumps({**stamp, "date": "2026-12-01", "commit": "aaaaaaa", "rows": [{**g, "solver": "dsbm", "err_sde": 0.09}]}))
    (tmp_path / "new.json").write_text(json.dumps({**stamp, "date": "2026-12-06T10:00", "commit": "bbbbbbb", "rows": [
        {**g, "solver": "dsbm", "err_cv": 0.025, "err_cv_std": 0.0002},
        {**g, "solver": "lightsb", "err_plan": 0.0216, "plan_floor": 0.0111, "cpu_s": 7.0},
        {"part": "2d", "solver": "lightsb", "data": "checker", "sde_w2_ratio": 1.12, "sde_w2_ratio_se": 0.2, "sde_w2_floor": 0.1,
         "sde_precision": 0.983, "sde_precision_floor": 0.998, "cpu_s": 56.0}]}))
    (tmp_path / "tuned.json").write_text(json.dumps({**stamp, "command": "python bench/bench.py solvers --set lr=1", "date": "2026-12-07",
                                                     "commit": "ccccccc", "rows": [{**g, "solver": "dsb"}]}))
    (tmp_path / "levers.json").write_text(json.dumps({**stamp, "command": "python bench/levers.py", "date": "2026-12-06T12:00", "commit": "ddddddd",
        "rows": [dict(lever="preset", stage="final (the new preset)", d=50, T=2.0, cross_cov_err_cv_pct=4.1, cv_spread_pct=0.03,
                      err_sde_20k_pct=20.2, mc_floor_20k_pct=19.9, cpu_s=580),
                 dict(lever="batch", stage="screen", d=50, T=1.0, cross_cov_err_cv_pct=1.0, cv_spread_pct=0.01,
                      err_sde_20k_pct=9.0, mc_floor_20k_pct=9.0, cpu_s=100)]}))
    text = results_md.render(tmp_path)
    assert text.index("## Solver table") < text.index("## old")
    d50 = next(l for l in text.splitlines() if l.startswith("| Gaussian d = 50, T = 2 |"))
    assert "4.10 % ± 0.03 (control variate; plain 20.20 %, floor 19.90 %); 580 CPU s [" in d50   # levers.py's final row
    assert "neural <= 5 % in 10 CPU min: met (dsbm 4.10 %)" in d50
    assert "| Gaussian d = 50, T = 1 | not measured | not measured |" in text                 # a screen is not the preset
    row = next(l for l in text.splitlines() if l.startswith("| Gaussian d = 20, T = 1 |"))
    dsb, dsbm, lightsb, target = [c.strip() for c in row.split("|")[2:6]]
    assert dsb == "not measured"                                     # a --set run is not the preset
    assert dsbm.startswith("2.50 % ± 0.02 (control variate; plain 5.00 %, floor 3.00 %); 400 CPU s [")
    assert lightsb.startswith("2.16 % (closed-form plan; floor 1.11 %); 7 CPU s [")
    assert target == "neural <= 3 % in 10 CPU min: met (dsbm 2.50 %)"
    checker = next(l for l in text.splitlines() if l.startswith("| 2d checker |"))
    assert "W2 1.12 ± 0.20 x floor (0.100); precision 0.983 (floor 0.998); 56 CPU s" in checker
    assert "W2 <= 1.25x: met (lightsb 1.12); precision >= 0.9: met (lightsb 0.983)" in checker
    assert "| 2d moon | not measured | not measured | not measured |" in text
    assert "new.json (2026-12-06, bbbbbbb)" in text and "old.json" not in text.split("## Solver table")[1].split("\n## ")[0]


def test_solver_files_name_their_dimensions(monkeypatch):
    "A narrower rerun of the solver table (--dims, --horizons, --eot-dims) writes a file of its own, not over the wider run's rows."
    import bench
    tags = []
    def fake(device, tag="", **kw):
        tags.append(tag); return {"device": str(device), "rows": []}
    monkeypatch.setattr(bench, "solvers", fake)
    for extra in ([], ["--dims", "50"], ["--dims", "50", "--horizons", "1"], ["--eot-dims", "64"]):
        bench.main(["solvers", "--quick", "--only", "gaussian", "--solvers", "dsb", *extra])
    assert tags == ["-gaussian-dsb", "-gaussian-dsb-d50", "-gaussian-dsb-d50-T1", "-gaussian-dsb-eot64"]
