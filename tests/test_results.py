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
