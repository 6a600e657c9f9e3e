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
    "The parameters cell is `parameters_cell()` of the composed config: same names, order, defaults and comments; papermill sees them."
    import papermill as pm
    from dsb.config import Config, parameters_cell
    src = _parameters_cell(ROOT / "nbs" / "train.ipynb")
    assert src.strip() == parameters_cell().strip(), "regenerate the parameters cell of nbs/train.ipynb from dsb.config.parameters_cell()"
    assigned = [(n.targets[0].id, ast.literal_eval(n.value)) for n in ast.parse(src).body]
    expected = [(f.name, f.default) for f in fields(Config)]
    assert assigned == expected
    assert list(pm.inspect_notebook(str(ROOT / "nbs" / "train.ipynb"))) == [f.name for f in fields(Config)]
    for line in src.splitlines(): assert "#" in line, f"parameter without a comment: {line}"

def test_settings_keep_cell_tags():
    assert re.search(r"allowed_cell_metadata_keys\s*=\s*tags", (ROOT / "settings.ini").read_text())

def _executor():
    "The module `.ci/execute_notebooks.py` (not a package: loaded from its file)."
    import importlib.util
    spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / ".ci" / "execute_notebooks.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def test_check_flags_code_changes_not_prose(tmp_path):
    "`--check` fails on a notebook whose code changed after its outputs were made; a markdown edit is no change."
    ex = _executor()
    nb = json.loads((ROOT / "nbs" / "18_core.ipynb").read_text())
    nb["metadata"].pop("dsb", None)
    path = tmp_path / "18_core.ipynb"
    def problems():
        path.write_text(json.dumps(nb))
        return ex.check([path])
    assert "never executed" in problems()[0]
    ex.stamp(nb)
    assert problems() == [] and ex.main(["--check", str(path)]) == 0
    md = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    md["source"] = ["Prose, rewritten.\n"]
    assert problems() == [], "a markdown edit must not make a notebook stale"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    code["source"] = "".join(code["source"]) + "  \n\n"
    assert problems() == [], "trailing whitespace is not a code change"
    code["source"] += "x = 1\n"
    (msg,) = problems()
    assert "stale" in msg and "python .ci/execute_notebooks.py nbs/18_core.ipynb" in msg
    assert ex.main(["--check", str(path)]) == 1

def test_check_flags_widget_state(tmp_path):
    ex = _executor()
    nb = json.loads((ROOT / "nbs" / "18_core.ipynb").read_text())
    ex.stamp(nb)
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    (path := tmp_path / "18_core.ipynb").write_text(json.dumps(nb))
    (msg,) = ex.check([path])
    assert "widget state" in msg

def test_nbdev_clean_keeps_outputs_and_stamp():
    "With settings.ini as committed, nbdev_clean keeps cell outputs and the notebook-level `dsb` stamp."
    import configparser
    from nbdev.clean import clean_nb
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini"); cfg = cfg["DEFAULT"]
    ex = _executor()
    nb = json.loads((ROOT / "nbs" / "18_core.ipynb").read_text())
    ex.stamp(nb)
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    clean_nb(nb, cfg.getboolean("clear_all"), cfg["allowed_metadata_keys"].split(),
             cfg["allowed_cell_metadata_keys"].split(), cfg.getboolean("clean_ids"))
    assert nb["metadata"]["dsb"]["source_hash"] == ex.source_hash(nb)
    assert code["outputs"][0]["text"] == ["hi\n"]

def test_results_cells_run_when_executed_not_in_nbdev_test():
    "Cells flagged `results` (minutes of training) are skipped by nbdev_test (CI) and run by `.ci/execute_notebooks.py`."
    import configparser
    from nbformat import NotebookNode
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    assert "results" in cfg["DEFAULT"]["tst_flags"].split(), "nbdev_test must skip `results` cells"
    ex = _executor()
    flags = ex._skip_flags()
    cell = lambda src: NotebookNode(cell_type="code", source=src)
    assert not ex._skipped(cell("#| results\nx = 1"), flags)
    assert ex._skipped(cell("#| slow\nx = 1"), flags) and not ex._skipped(cell("x = 1"), flags)
