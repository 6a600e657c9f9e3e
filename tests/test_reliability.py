"Runs that survive anything: typos, resume with changes, kills before and inside checkpoint writes, full disks, damaged or foreign checkpoints."
import json, os, re, subprocess
from pathlib import Path

import pytest
import torch
from dsb.trainer import describe_position
from conftest import killed_run

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_ipf=2, num_iter=200, cache_refresh=50, checkpoint_every=50, cache_npar=300, batch_size=64,
            eval_npar=400, progress=False, plots=False, data="moon", score_npar=0)


def _same_result(a: dict, b: dict):
    for k in ("sw2_data", "sw2_prior", "sw2_floor", "steps"): assert a[k] == b[k], k


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    "The uninterrupted run every interrupted one must end like."
    from dsb.run import run
    return run(**TINY, out_dir=str(tmp_path_factory.mktemp("full")), run_name="full")


def test_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, full):
    from dsb.run import run
    run_dir = killed_run(tmp_path, "early", TINY, lambda d: (d / "metrics.jsonl").exists())
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "checkpoint_prev.pt").exists()
    _same_result(run(resume=str(run_dir)), full)


def test_sigkill_inside_the_checkpoint_write(tmp_path, full):
    "Killed after the new checkpoint's bytes are written but before it replaces the old one: resume is exact."
    from dsb.run import run
    setup = ("import os, time, pathlib\nreal = os.fsync\ncount = [0]\n"
             "def slow_fsync(fd):\n    real(fd); count[0] += 1\n"
             "    if count[0] == 4: pathlib.Path(os.environ['MARK']).touch(); time.sleep(60)\n"
             "os.fsync = slow_fsync")
    mark = tmp_path / "in-write"
    run_dir = killed_run(tmp_path, "inwrite", TINY, lambda d: mark.exists(), setup, env={"MARK": str(mark)})
    assert list(run_dir.glob("checkpoint.pt.*.tmp"))          # the kill came inside the write (a temporary name of its own)
    resumed = run(resume=str(run_dir))
    _same_result(resumed, full)
    assert not list(run_dir.glob("*.tmp"))                   # the cut-short file was cleaned up


def test_unknown_parameter_stops_the_notebook(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match=r"unknown parameter\(s\): num_iters \(did you mean 'num_iter'"):
        pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters=dict(num_iters=200, out_dir=str(tmp_path / "runs")), kernel_name="python3",
                            cwd=str(tmp_path), progress_bar=False)
    assert not (tmp_path / "runs").exists()


def test_resume_applies_allowed_changes_and_refuses_others(tmp_path, full):
    from dsb.run import run
    first = run(**{**TINY, "n_ipf": 1}, out_dir=str(tmp_path), run_name="r")
    before = {p.name: p.read_bytes() for p in Path(first["run_dir"]).iterdir()}
    for bad, shown in ((dict(num_steps=30), "num_steps=30 differs from the run being resumed (num_steps=20"),
                       (dict(data="swiss"), "data='swiss' differs"), (dict(batch_size=32), "batch_size=32 differs")):
        with pytest.raises(ValueError, match=shown.replace("(", r"\(")): run(resume=first["run_dir"], **bad)
    assert {p.name: p.read_bytes() for p in Path(first["run_dir"]).iterdir()} == before     # refused before touching anything
    extended = run(resume=first["run_dir"], n_ipf=2)
    _same_result(extended, full)


def test_nan_from_a_huge_learning_rate_and_the_advice_works(tmp_path):
    "The issue's replay: lr=1e9 blows the weights up (the checkpoints already hold them); the advised resume finishes the run."
    from dsb.run import run
    kw = {**TINY, "cache_refresh": 1, "checkpoint_every": 1}
    with pytest.raises(FloatingPointError) as e: run(**kw, lr=1e9, grad_clip=0.0, out_dir=str(tmp_path), run_name="n")
    assert "a resume restarts from the beginning of the run" in str(e.value) and "-p lr 0.001 -p grad_clip 1.0" in str(e.value)
    assert (tmp_path / "n" / "checkpoint_nonfinite.pt").exists() and not (tmp_path / "n" / "checkpoint.pt").exists()
    done = run(resume=str(tmp_path / "n"), lr=1e-3, grad_clip=1.0, checkpoint_every=100)
    assert done["steps"] == 2 * 2 * 200 and done["sw2_data"] == done["sw2_data"]


def test_full_disk_during_a_checkpoint(tmp_path, monkeypatch):
    "ENOSPC in the middle of a checkpoint write: one clear error, no partial file, the last good checkpoint loads."
    import errno
    from dsb.run import run
    from dsb.checkpoint import load_checkpoint
    real, calls = os.fsync, []
    def fsync(fd):
        calls.append(fd)
        if len(calls) >= 4: raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="no space left to write .*checkpoint.pt.*the last good checkpoint is") as e:
        run(**TINY, out_dir=str(tmp_path), run_name="full")
    assert "inline_container" not in str(e.value)
    run_dir = tmp_path / "full"
    assert not list(run_dir.glob("*.tmp"))
    assert load_checkpoint(run_dir)["position"] == [0, 0, 50]     # the checkpoint before the failed one


def _tmpfs(path, size):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-ENOSPC test covers the same path")
    return path


def test_full_disk_on_a_real_small_filesystem(tmp_path, full):
    "A real 2.2 MB tmpfs holds a checkpoint or two (about 0.5 MB each), not more: the run stops with one clear line, and resumes once there is room."
    from dsb.run import run
    from dsb.checkpoint import load_checkpoint
    disk = _tmpfs(tmp_path / "disk", "2200k")
    try:
        with pytest.raises(OSError, match="no space left to write .*checkpoint.pt") as e:
            run(**TINY, out_dir=str(disk), run_name="small")
        last_good = re.search(r"the last good checkpoint is \S+checkpoint.pt at (iteration \d+, stage \d+(?:, after [\d,]+ steps)?)", str(e.value))
        run_dir = disk / "small"
        assert last_good and not list(run_dir.glob("*.tmp"))
        assert describe_position(load_checkpoint(run_dir)["position"]) == last_good.group(1)
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)       # the user frees space
        _same_result(run(resume=str(run_dir)), full)
    finally: subprocess.run(["umount", str(disk)])


def test_corrupt_checkpoint_never_replaces_the_good_backup(tmp_path, capsys):
    from dsb.run import run
    s = run(**{**TINY, "n_ipf": 1}, out_dir=str(tmp_path), run_name="c")
    run_dir = Path(s["run_dir"])
    good_prev = torch.load(run_dir / "checkpoint_prev.pt", weights_only=True)["position"]
    (run_dir / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes()[:200])
    run(resume=str(run_dir), n_ipf=2)
    out = capsys.readouterr().out
    assert "checkpoint.pt is unreadable" in out and f"resuming from checkpoint_prev.pt ({describe_position(good_prev)})" in out
    assert (run_dir / "checkpoint_unreadable.pt").exists()
    for name in ("checkpoint.pt", "checkpoint_prev.pt"): torch.load(run_dir / name, weights_only=True)   # both loadable


def test_checkpoint_that_does_not_match_the_config(tmp_path):
    from dsb.run import run
    s = run(dataset="gaussian", data_dim=2, num_steps=10, gamma_min=0.05, gamma_max=0.05, n_ipf=1, num_iter=50,
            cache_refresh=25, cache_npar=200, eval_npar=300, progress=False, plots=False, out_dir=str(tmp_path), run_name="g")
    cfg_path = Path(s["run_dir"]) / "config.json"
    saved = json.loads(cfg_path.read_text())
    for k, v in (("data_dim", 3), ("num_steps", 12)):
        cfg_path.write_text(json.dumps({**saved, k: v}))
        with pytest.raises(ValueError, match=f"written by a run with {k}="):
            run(resume=s["run_dir"], n_ipf=2)


@pytest.mark.parametrize("device", ["meta", "mps", "cuda:7", "tpu"])
def test_devices_are_checked_before_anything_is_written(tmp_path, device):
    from dsb.run import run
    if device == "mps" and torch.backends.mps.is_available(): pytest.skip("this machine has MPS")
    if device == "cuda:7" and torch.cuda.device_count() > 7: pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ValueError, match="device"): run(**TINY, device=device, out_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
