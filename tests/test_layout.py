"Project layout: every module imports, has its notebook, and the training notebook mirrors the config."
import ast, importlib, json, re
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (ROOT / "dsb").glob("*.py") if not p.stem.startswith("_"))

def test_modules_found():
    assert {"core", "static", "reference", "reversal", "gaussian", "models", "data", "trainer", "ipf", "imf", "checkpoint",
            "metrics", "plots", "config", "run"} <= set(MODULES)

@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(f"dsb.{name}")

@pytest.mark.parametrize("name", MODULES)
def test_module_has_its_notebook(name):
    "`nbs/NN_<name>.ipynb` exports `dsb/<name>.py`, and the module header names that notebook."
    nbs = sorted((ROOT / "nbs").glob(f"[0-9][0-9]_{name}.ipynb"))
    assert len(nbs) == 1, f"dsb/{name}.py needs exactly one notebook nbs/NN_{name}.ipynb, found {nbs}"
    src = (ROOT / "dsb" / f"{name}.py").read_text()
    assert f"File to edit: ../nbs/{nbs[0].name}" in src, f"dsb/{name}.py was not exported from {nbs[0].name}"
    cells = json.loads(nbs[0].read_text())["cells"]
    assert any(f"#| default_exp {name}" in "".join(c["source"]) for c in cells)

def test_notebooks_have_no_heavy_outputs():
    for nb in (ROOT / "nbs").glob("*.ipynb"):
        assert nb.stat().st_size < 1_000_000, f"{nb.name} is over 1 MB: clear its outputs"

def _parameters_cell(path):
    cells = json.loads(Path(path).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "train.ipynb needs exactly one cell tagged `parameters`"
    return "".join(tagged[0]["source"])

def test_train_parameters_mirror_config():
    "Same names, same order, same defaults as `Config`; papermill sees them."
    import papermill as pm
    from dsb.config import Config
    src = _parameters_cell(ROOT / "nbs" / "train.ipynb")
    assigned = [(n.targets[0].id, ast.literal_eval(n.value)) for n in ast.parse(src).body]
    expected = [(f.name, f.default) for f in fields(Config)]
    assert assigned == expected
    assert list(pm.inspect_notebook(str(ROOT / "nbs" / "train.ipynb"))) == [f.name for f in fields(Config)]
    for line in src.splitlines(): assert "#" in line, f"parameter without a comment: {line}"

def test_settings_keep_cell_tags():
    assert re.search(r"allowed_cell_metadata_keys\s*=\s*tags", (ROOT / "settings.ini").read_text())
