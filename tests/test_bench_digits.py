"""bench/digits.py keeps what it measured: a run of more seeds of the same configuration joins the file's seeds (so
`--seeds 0 1` then `--seeds 2` makes the 3-seed file), and a file of another configuration is not overwritten unless
asked (issue 22: a 1-seed run used to replace a committed 3-seed file without a word). Training is replaced by a fake
record here: seconds."""
import importlib.util, json
from types import SimpleNamespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def digits(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_digits", ROOT / "bench" / "digits.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    def fake_run_seed(dataset, params, seed, threads):
        rec = {"seed": seed, "cpu_s": 100. + seed, "wall_s": 100. + seed, "digit_fd": 10. + seed, "digit_fd_floor": 5.6,
               "digit_confidence": 0.96, "digit_confidence_floor": 0.978, "curve": [{"iteration": 1, "steps": 1000, "digit_fd": 20.}]}
        return rec, SimpleNamespace(device="cpu")   # the bridge: only figures (replaced here) draw from it
    monkeypatch.setattr(mod, "run_seed", fake_run_seed)
    monkeypatch.setattr(mod, "figures", lambda *a, **k: None)
    return mod


def test_seeds_of_one_configuration_add_up(digits, tmp_path):
    digits.main(["--seeds", "0", "1", "--out", str(tmp_path)])
    path = tmp_path / "digits_dsbm_cpu.json"                      # `digits` names DSBM: no --solver needed
    digits.main(["--seeds", "2", "--out", str(tmp_path)])
    r = json.loads(path.read_text())
    assert [s["seed"] for s in r["seeds"]] == [0, 1, 2]           # before the fix: [2], the file overwritten
    assert r["summary"]["digit_fd"]["n"] == 3 and r["summary"]["digit_fd"]["mean"] == pytest.approx(11.)
    assert r["command"].count("python bench/digits.py") == 2      # both commands, each with its date and commit
    digits.main(["--seeds", "1", "--out", str(tmp_path)])          # a seed run again replaces that seed only
    assert [s["seed"] for s in json.loads(path.read_text())["seeds"]] == [0, 1, 2]


def test_a_file_of_another_configuration_is_not_overwritten(digits, tmp_path):
    digits.main(["--seeds", "0", "1", "2", "--out", str(tmp_path)])
    path = tmp_path / "digits_dsbm_cpu.json"
    before = path.read_text()
    with pytest.raises(SystemExit, match=r"holds seeds \[0, 1, 2\] of another run \(differs in: n_ipf 4 -> 3\).*--tag.*--out.*--replace"):
        digits.main(["--seeds", "0", "-p", "n_ipf", "3", "--out", str(tmp_path)])
    assert path.read_text() == before
    digits.main(["--seeds", "0", "-p", "n_ipf", "3", "--tag", "short", "--out", str(tmp_path)])
    assert (tmp_path / "digits_dsbm_cpu_short.json").exists() and path.read_text() == before
    digits.main(["--seeds", "0", "-p", "n_ipf", "3", "--replace", "--out", str(tmp_path)])
    r = json.loads(path.read_text())
    assert [s["seed"] for s in r["seeds"]] == [0] and r["config"]["n_ipf"] == 3


def test_seeds_run_apart_are_joined(digits, tmp_path):
    "Seeds trained in parallel (each with its own --out) join into one file; a file of another configuration is refused."
    for seed in (2, 0):
        digits.main(["--seeds", str(seed), "--out", str(tmp_path / f"s{seed}")])
        (tmp_path / f"s{seed}" / "digits_dsbm_cpu_grid.png").write_bytes(b"seed %d" % seed)
    digits.main(["--join", *(str(tmp_path / f"s{seed}" / "digits_dsbm_cpu.json") for seed in (2, 0)), "--out", str(tmp_path / "all")])
    r = json.loads((tmp_path / "all" / "digits_dsbm_cpu.json").read_text())
    assert [s["seed"] for s in r["seeds"]] == [0, 2] and r["summary"]["digit_fd"]["mean"] == pytest.approx(11.)
    assert (tmp_path / "all" / "digits_dsbm_cpu_grid.png").read_bytes() == b"seed 0"   # the lowest seed's figures
    digits.main(["--seeds", "1", "-p", "n_ipf", "3", "--out", str(tmp_path / "other")])
    with pytest.raises(SystemExit, match=r"differs in: n_ipf 4 -> 3"):
        digits.main(["--join", str(tmp_path / "other" / "digits_dsbm_cpu.json"), "--out", str(tmp_path / "all")])
