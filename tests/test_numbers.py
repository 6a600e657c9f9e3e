"`.ci/check_numbers.py`: numbers in prose must be printed or asserted; it passes on a true notebook and catches a planted mismatch."
import importlib.util, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cn():
    "The module `.ci/check_numbers.py` (not a package: loaded from its file)."
    spec = importlib.util.spec_from_file_location("check_numbers", ROOT / ".ci" / "check_numbers.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


PROSE = ("After 1,500 steps the error is 3.28 % (below), the rate per iteration $\\rho = 0.303$ and the\n"
         "marginals are kept to $10^{-9}$; at the end the three runs are at 4.0, 2.5 and 1.4 %.")
CODE = "tol = 1e-9\nprint(f'steps {1500}, error {100 * err:.3f} %, rate {rate:.4f}')\nprint(errors)"
OUTPUT = "steps 1500, error 3.278 %, rate 0.3031\ntensor([0.0398, 0.0252, 0.0140])\n"


def notebook(prose=PROSE):
    "A small synthetic notebook: one markdown cell, one code cell that prints what the prose quotes."
    return {"cells": [{"cell_type": "markdown", "metadata": {}, "source": prose},
                      {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": CODE,
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": OUTPUT}]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_passes_when_every_number_is_printed(cn):
    assert cn.check_notebook(notebook(), "99_toy") == []


def test_fails_on_a_planted_mismatch(cn, tmp_path):
    "Prose '3.6 %' where the output says 3.278: exactly that number is reported, and the CLI exits 1."
    bad = notebook(PROSE.replace("3.28 %", "3.6 %"))
    (f,) = cn.check_notebook(bad, "99_toy")
    assert (f.notebook, f.cell, f.number) == ("99_toy", 0, "3.6 %")
    assert str(f).startswith('99_toy: cell 0: "3.6 %" in "') and str(f).endswith("appears in no output or code")
    good_path, bad_path = tmp_path / "98_good.ipynb", tmp_path / "99_toy.ipynb"
    good_path.write_text(json.dumps(notebook())); bad_path.write_text(json.dumps(bad))
    assert cn.main([str(good_path)]) == 0
    assert cn.main([str(bad_path)]) == 1
    assert cn.main(["--report", str(bad_path)]) == 0


@pytest.mark.parametrize("prose, ok", [
    ("error 3.3 %", True), ("error 3.4 %", False),   # 3.278 rounds to 3.28 and to 3.3, not to 3.4
    ("steps 1500", True), ("steps 1\\,500", True), ("steps 1,499", False),
    ("to 1e-9", True), ("to $1.0\\cdot 10^{-9}$", True), ("below $2 \\cdot 10^{-9}$", False),
    ("at 4.1, 2.5 and 1.4 %", False),                 # the % covers the list: 4.1 % is not 0.0398
])
def test_rounding_and_forms(cn, prose, ok):
    "A prose value matches a printed one that rounds to it at the prose's precision; separators and exponents are read."
    found = cn.check_notebook(notebook(prose), "99_toy")
    assert (found == []) == ok, (prose, [str(f) for f in found])


def test_what_counts_as_a_number(cn):
    keys = lambda md: [n.key for n in cn.prose_numbers(md)]
    assert keys("in float64, mnist28, `x_0`, v1 and `inception-2015-12-05`, at 2^4 and x_{10}") == []
    assert keys("5 steps, 3 seeds and 9 layers") == []                       # integers below 10 are not checked
    assert keys("20 iterations, 0.5, 9.8k weights, 86-94% and 2026-11-29") == ["20", "0.5", "9.8", "86", "94", "2026-11-29"]
    assert keys("$10^{-12}$, $6\\cdot 10^{-7}$, 1e-10 and 10⁻⁹") == ["10^-12", "6\\cdot10^-7", "1e-10", "10^-9"]
    assert keys("see [06_metrics](06_metrics.ipynb) and https://example.invalid/2023") == []
    assert keys("it converges to 1e-10. Then `runs/moon-20261206-101500`") == ["1e-10"]


def test_sci_compares_mantissas(cn):
    "1e-10 matches 1.2e-10 and 1.0e-10 (printed or in code), not 3.6e-10."
    (n,) = cn.prose_numbers("exact to $10^{-10}$")
    vals = lambda text: cn.known_values("", text)
    assert cn.matches(n, vals("1.2e-10"), "") and cn.matches(n, vals("1.0e-10"), "")
    assert not cn.matches(n, vals("3.6e-10 and 1.2e-09"), "")


def test_allow_list(cn, tmp_path):
    "Entries need a reason; context rules and per-notebook numbers allow what they name and nothing else."
    allow_file = tmp_path / "allow.toml"
    allow_file.write_text("[[number]]\nnotebook = '99_toy'\nvalue = '0.9921875'\n")
    with pytest.raises(ValueError, match="reason"): cn.load_allow(allow_file)
    allow_file.write_text("[[number]]\nnotebook = '99_toy'\nvalue = '0.9921875'\nreason = 'a constant'\n"
                          "[[context]]\nbefore = '\\b[A-Z]\\w*'\nnumber = '(?:19|20)\\d\\d'\nreason = 'a citation year'\n")
    allow = cn.load_allow(allow_file)
    nb = notebook(PROSE + " The range is [-1, 0.9921875] (Sinkhorn 1964), not 0.99 or 1964 alone.")
    assert [f.number for f in cn.check_notebook(nb, "99_toy", allow)] == ["0.99", "1964"]
    assert [f.number for f in cn.check_notebook(nb, "98_other", allow)] == ["0.9921875", "0.99", "1964"]


def test_committed_allow_list_is_current(cn):
    "Every entry of .ci/numbers_allow.toml has a reason and still allows something in the tutorial notebooks."
    allow = cn.load_allow()
    assert all(e["reason"].strip() for kind in ("context", "number") for e in allow[kind])
    assert cn.stale_entries() == [], "remove these entries from .ci/numbers_allow.toml"
