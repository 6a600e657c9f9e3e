import os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")
# what a test's Python subprocess sees: this checkout's dsb, one thread (results comparable with the tests' own runs)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

@pytest.fixture
def root() -> Path:
    return ROOT


def start_python(tmp_path: Path, code: str, name: str, env: dict = None) -> subprocess.Popen:
    "A Python subprocess running `code` in `tmp_path` (environment `ENV` and `env`), its stdout and stderr in `tmp_path/<name>.out` and `.err`."
    out, err = open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")
    return subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err, env={**ENV, **(env or {})}, cwd=tmp_path)


def wait_for(cond, proc: subprocess.Popen = None, timeout: float = 300, what: str = "the condition"):
    "Poll `cond()` every 10 ms; fail if `proc` ends first, or after `timeout` seconds."
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond(): return
        if proc is not None and proc.poll() is not None: raise AssertionError(f"the process ended before {what}")
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def position(checkpoint: Path):
    "The `(iteration, stage, step)` a checkpoint file holds (counted from 0), or None while it is missing or being replaced."
    try: return tuple(torch.load(checkpoint, weights_only=True)["position"])
    except Exception: return None


def killed_run(tmp_path: Path, name: str, params: dict, ready, setup: str = "", env: dict = None) -> Path:
    "Start `run(**params)` in a subprocess and SIGKILL it as soon as `ready(run_dir)`; return the run directory (no metrics.json: it died mid-run)."
    code = f"{setup}\nfrom dsb.run import run\nrun(**{params!r}, out_dir={str(tmp_path)!r}, run_name={name!r})"
    proc, run_dir = start_python(tmp_path, code, name, env), tmp_path / name
    try: wait_for(lambda: run_dir.exists() and ready(run_dir), proc, what=f"{name} was ready to kill")
    except AssertionError as e: raise AssertionError(f"{e}; its stderr ends: {(tmp_path / f'{name}.err').read_text()[-800:]}") from None
    finally:
        if proc.poll() is None: os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run_dir / "metrics.json").exists()
    return run_dir
