#!/usr/bin/env python
"""Execute the tutorial notebooks in place, so they read with their figures and tables, and check
that their outputs are not stale.

    python .ci/execute_notebooks.py                        # every nbs/NN_*.ipynb (not train.ipynb)
    python .ci/execute_notebooks.py nbs/03_gaussian.ipynb  # just these
    python .ci/execute_notebooks.py --check                # no execution: outputs current? (CI)

Executing runs every code cell with nbclient on the `python3` kernel, with cwd `nbs/`, PNG figures
at 72 dpi and a per-cell timeout, except the cells nbdev_test skips (first-line directives named in
settings.ini `tst_flags`, `#| eval: false`): they keep no outputs. One flag is the exception:
cells flagged `results` (minutes of training whose figures the reader should see) are skipped by
nbdev_test, so CI does not pay for them, and are run here. Widget state is dropped (a widget
output keeps its text fallback), tqdm writes plain text, and `nbdev_clean` then leaves the file
exactly as CI's `nbdev_export; nbdev_clean` would.

Staleness. Each executed notebook stores `metadata.dsb.source_hash`: the sha256 of its *code
sources*, meaning the source of every non-empty code cell, in order, with line endings made `\\n`,
trailing whitespace stripped from each line and blank lines stripped at both ends. Markdown and
raw cells, outputs, metadata and cell ids are not hashed, so editing prose never makes a notebook
stale, while any change to code (including a skipped cell, or adding, removing or reordering code
cells) does. What a notebook imports from *other* modules is not hashed: after changing a module
others build on, re-execute those notebooks too.
"""
import argparse, hashlib, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
TOOL = "execute_notebooks.py v1"  # bump when the hash or the execution settings change
MAX_BYTES = 1_000_000
CELL_TIMEOUT = 1200  # seconds per cell
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Run by the kernel at startup, so it is no cell of the notebook: small PNGs, text progress bars.
KERNEL_STARTUP = [
    "import matplotlib; matplotlib.rcParams.update({'figure.dpi': 72, 'savefig.dpi': 'figure'})",
    "import tqdm.auto, tqdm.std; tqdm.auto.tqdm = tqdm.std.tqdm",
]


def tutorial_notebooks(nbs_dir=NBS):
    "The tutorial notebooks `NN_*.ipynb`, in order (`train.ipynb` is a papermill entry point, not one)."
    return sorted(Path(nbs_dir).glob("[0-9][0-9]_*.ipynb"))


def _text(source): return "".join(source) if isinstance(source, list) else source


def normalize(source):
    "A code cell's source as hashed: `\\n` line endings, no trailing whitespace, no blank lines at either end."
    lines = [l.rstrip() for l in _text(source).replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def source_hash(nb):
    "sha256 of the normalized sources of the notebook's non-empty code cells, in order."
    srcs = [normalize(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256(json.dumps([s for s in srcs if s]).encode()).hexdigest()


def stamp(nb):
    "Record in `nb.metadata.dsb` which code produced the outputs (deterministic: no timestamps)."
    nb["metadata"]["dsb"] = {"executed_by": TOOL, "source_hash": source_hash(nb)}


def _has_widgets(nb):
    return "widgets" in nb.get("metadata", {}) or any(
        WIDGET_VIEW in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def _fix(path): return f"python .ci/execute_notebooks.py nbs/{Path(path).name}"


def check(paths):
    "Problems with executed notebooks `paths` (empty list: all current): stale or missing hash, widget state, size."
    problems = []
    for p in map(Path, paths):
        nb = json.loads(p.read_text(encoding="utf-8"))
        stored = nb.get("metadata", {}).get("dsb", {}).get("source_hash")
        if stored is None:
            problems.append(f"{p.name}: never executed (no metadata.dsb.source_hash); run: {_fix(p)}")
        elif stored != source_hash(nb):
            problems.append(f"{p.name}: stale, its code changed since its outputs were made; run: {_fix(p)}")
        if _has_widgets(nb):
            problems.append(f"{p.name}: holds widget state; run: {_fix(p)}")
        if p.stat().st_size > MAX_BYTES:
            problems.append(f"{p.name}: {p.stat().st_size / 1e6:.2f} MB, over {MAX_BYTES / 1e6:.0f} MB: "
                            "make its figures smaller (fewer points, lower dpi) and re-execute it")
    return problems


# ---- execution (needs nbclient, nbformat and nbdev; `check` above needs only the standard library)

RUN_HERE = {"results"}  # flags nbdev_test skips that this script runs


def _skip_flags():
    "The flags nbdev_test skips (settings.ini `tst_flags`) that this script skips too: all but `RUN_HERE`."
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    return set(cfg["DEFAULT"].get("tst_flags", "").split()) - RUN_HERE


def _skipped(cell, flags):
    "Does nbdev_test skip this cell? (same rule as nbdev.test.test_nb)"
    from nbdev.process import extract_directives
    from nbformat import NotebookNode
    if cell.cell_type != "code": return False
    if "nbdev_export" + "(" in cell.source: return True
    direc = extract_directives(NotebookNode(source=cell.source), remove=False) or {}
    if direc.get("eval:", [""])[0].lower() == "false": return True
    return bool(flags & direc.keys())


def _tidy(nb):
    "Drop widget state and views (keeping their text fallback) and execution timing."
    nb.metadata.pop("widgets", None)
    for c in nb.cells:
        c.metadata.pop("execution", None)
        outs = []
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                if not data: continue
            outs.append(o)
        if c.cell_type == "code": c.outputs = outs


def execute(path):
    "Execute notebook `path` in place (cells nbdev_test skips stay without outputs), stamp and tidy it."
    import nbformat
    from nbclient import NotebookClient
    flags = _skip_flags()

    class Client(NotebookClient):
        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            if _skipped(cell, flags):
                cell.outputs, cell.execution_count = [], None
                return cell
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    nb = nbformat.read(path, as_version=4)
    startup = [f"--IPKernelApp.exec_lines={line}" for line in KERNEL_STARTUP]
    client = Client(nb, kernel_name="python3", timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(NBS)}},
                    store_widget_state=False, record_timing=False, coalesce_streams=True,
                    extra_arguments=startup + ["--InlineBackend.figure_formats=png", "--IPKernelApp.log_level=ERROR"])
    client.execute()
    _tidy(nb)
    stamp(nb)
    nbformat.write(nb, path)


def nbdev_clean(path):
    "Run the `nbdev_clean` CLI on `path`, exactly as CI does."
    exe = Path(sys.executable).parent / "nbdev_clean"
    subprocess.run([str(exe) if exe.exists() else "nbdev_clean", "--fname", str(path)], cwd=ROOT, check=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="notebooks to execute or check (default: every nbs/NN_*.ipynb)")
    ap.add_argument("--check", action="store_true", help="execute nothing; exit 1 if a notebook is stale, unexecuted, holds widget state or is over 1 MB")
    ap.add_argument("--strict", action="store_true", help="exit 1 when an executed notebook is over 1 MB")
    args = ap.parse_args(argv)
    paths = [Path(p).resolve() for p in args.notebooks] or tutorial_notebooks()
    if missing := [str(p) for p in paths if not p.exists()]: sys.exit(f"no such notebook: {', '.join(missing)}")

    if args.check:
        problems = check(paths)
        for msg in problems: print("FAIL:", msg)
        if problems:
            print("Re-execute the notebooks named above (or all: python .ci/execute_notebooks.py) and commit them.")
            return 1
        print(f"ok: {len(paths)} notebooks executed from their current code, no widget state, each under 1 MB")
        return 0

    # Inline PNG figures even where MPLBACKEND=Agg is set for nbdev_test; OMP_NUM_THREADS stays as it is.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    failed, big = [], []
    for p in paths:
        t0 = time.time()
        print(f"executing {p.name} ...", flush=True)
        try: execute(p)
        except Exception as e:  # nbclient's CellExecutionError names the cell and shows the traceback
            print(f"FAIL: {p.name} did not run through, left unchanged:\n{e}", flush=True)
            failed.append(p.name); continue
        nbdev_clean(p)
        size = p.stat().st_size
        print(f"  {p.name}: {time.time() - t0:.0f} s, {size / 1e3:.0f} kB", flush=True)
        if size > MAX_BYTES:
            print(f"WARNING: {p.name} is over {MAX_BYTES / 1e6:.0f} MB: make its figures smaller", flush=True)
            big.append(p.name)
    if failed: print("failed:", *failed)
    return 1 if failed or (args.strict and big) else 0


if __name__ == "__main__":
    sys.exit(main())
