"Issue 19, replayed: a lock on the run directory, atomic GIFs, memory bounds, probed data sets, a read-only `load`, named config errors."
import json, os, re, shlex, socket, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import torch
from conftest import ENV, killed_run, position, start_python, wait_for

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_ipf=2, num_iter=200, cache_refresh=50, checkpoint_every=50, cache_npar=300, batch_size=64,
            eval_npar=400, progress=False, plots=False, data="moon", score_npar=0)
PLUGIN_TINY = {k: v for k, v in TINY.items() if k != "data"}     # `data` belongs to dataset='2d'


def _files(d):
    return {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    "The uninterrupted run a resumed one must end like, and its log."
    from dsb.run import run
    d = tmp_path_factory.mktemp("full")
    s = run(**TINY, out_dir=str(d), run_name="full")
    return s, (d / "full" / "metrics.jsonl").read_text()


# ---- 1. two resumes of one run directory: the second is refused at once, the first ends like an uninterrupted run

def test_second_resume_is_refused_at_once_and_the_first_finishes(tmp_path, full):
    run_dir = killed_run(tmp_path, "r", TINY, lambda d: (position(d / "checkpoint.pt") or (0,)) >= (0, 1, 0))
    resume = f"from dsb.run import run\nrun(resume={str(run_dir)!r})"
    first = start_python(tmp_path, resume, "first")
    try:
        def holder():
            try: return json.loads((run_dir / "run.lock").read_text())["pid"]
            except (OSError, ValueError, KeyError): return None
        wait_for(lambda: holder() == first.pid, first, 120, "the first resume to lock the run")   # (the killed run's lock is stale)
        t0 = time.time()
        second = subprocess.run([sys.executable, "-c", resume], capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
        assert second.returncode != 0
        assert f"is in use by process {first.pid} on host {socket.gethostname()}" in second.stderr, second.stderr[-2000:]
        assert time.time() - t0 < 60               # at once: no training, no waiting (the time is Python and torch starting)
        assert first.wait(timeout=300) == 0, (tmp_path / "first.err").read_text()[-2000:]
    finally:
        if first.poll() is None: first.kill(); first.wait()
    summary, log = full
    assert (run_dir / "metrics.jsonl").read_text() == log            # every record, once, as the uninterrupted run wrote them
    assert json.loads((run_dir / "metrics.json").read_text())["sw2_data"] == summary["sw2_data"]
    assert not (run_dir / "run.lock").exists() and not list(run_dir.glob("*.tmp"))


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, full, capsys):
    "A run killed with SIGKILL leaves run.lock naming a process that is gone: the resume takes it over and says so."
    from dsb.run import run
    run_dir = killed_run(tmp_path, "k", TINY, lambda d: (d / "checkpoint.pt").exists())
    stale = json.loads((run_dir / "run.lock").read_text())
    assert stale["host"] == socket.gethostname() and not os.path.exists(f"/proc/{stale['pid']}")
    assert run(resume=str(run_dir))["sw2_data"] == full[0]["sw2_data"]
    assert f"took over the lock of {run_dir}, left by process {stale['pid']}" in capsys.readouterr().out
    assert not (run_dir / "run.lock").exists()


def test_a_lock_removed_by_hand_stops_the_first_writer(tmp_path, full):
    "run.lock deleted while a run trains and another writer takes the folder: the first stops at its next checkpoint; a resume ends right."
    from dsb.core import RunLock
    from dsb.run import run
    code = f"from dsb.run import run\nrun(**{dict(TINY, checkpoint_every=50)!r}, out_dir={str(tmp_path)!r}, run_name='r')"
    first, run_dir = start_python(tmp_path, code, "first"), tmp_path / "r"
    try:
        wait_for(lambda: (run_dir / "checkpoint.pt").exists(), first, what="the first checkpoint")
        (run_dir / "run.lock").unlink()
        with RunLock(run_dir):                               # a second writer takes the folder meanwhile
            assert first.wait(timeout=300) != 0               # the first stops at its next checkpoint
        resumed = run(resume=str(run_dir))
    finally:
        if first.poll() is None: first.kill(); first.wait()
    assert "was removed while process" in (tmp_path / "first.err").read_text()
    assert resumed["sw2_data"] == full[0]["sw2_data"] and (run_dir / "metrics.jsonl").read_text() == full[1]


def test_load_needs_no_lock(tmp_path):
    "Reading a run while another process holds its lock works and changes nothing."
    from dsb.core import RunLock
    from dsb.run import run, load
    s = run(**{**TINY, "n_ipf": 1, "num_iter": 50}, out_dir=str(tmp_path), run_name="r")
    with RunLock(s["run_dir"]):
        before = _files(s["run_dir"])
        assert load(s["run_dir"]).trainer.position == (1, 0, 0)
        assert _files(s["run_dir"]) == before


def test_concurrent_atomic_writes_never_collide(tmp_path):
    "Two processes replacing one file 300 times each: every write lands whole, none fails on the other's temporary file."
    code = textwrap.dedent(f"""
        import sys
        from dsb.core import atomic_write
        for i in range(300): atomic_write({str(tmp_path / 'shared.json')!r}, sys.argv[1] * 1000)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, c], stderr=subprocess.PIPE, text=True, env=ENV) for c in "ab"]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert (tmp_path / "shared.json").read_text() in ("a" * 1000, "b" * 1000) and not list(tmp_path.glob("*.tmp"))


# ---- 2. the GIF is written atomically

GIF_KILL = ("import os, time, pathlib\nfrom PIL import GifImagePlugin\nreal = GifImagePlugin._write_frame_data\ncount = [0]\n"
            "def slow(*a, **k):\n    real(*a, **k); count[0] += 1\n"
            "    if count[0] == 9: pathlib.Path(os.environ['MARK']).touch(); time.sleep(60)\n"
            "GifImagePlugin._write_frame_data = slow")


def test_kill_during_the_gif_leaves_no_cut_short_gif_and_the_resume_writes_it(tmp_path, monkeypatch):
    from PIL import Image
    from dsb.run import run
    mark = tmp_path / "in-gif"
    kw = {**TINY, "n_ipf": 1, "plots": True}
    run_dir = killed_run(tmp_path, "g", kw, lambda d: mark.exists(), GIF_KILL, env={"MARK": str(mark)})
    assert not (run_dir / "bridge.gif").exists()                    # the kill came after 9 of 21 frames: no partial GIF
    run(resume=str(run_dir))
    with Image.open(run_dir / "bridge.gif") as im: assert im.n_frames == 21
    assert (run_dir / "metrics.json").exists() and not list(run_dir.glob("*.tmp"))


def test_ctrl_c_during_an_image_gif_leaves_no_file(tmp_path, monkeypatch):
    "The image runs' GIF (a grid per chain step) is written atomically too."
    from PIL import GifImagePlugin
    from dsb.run import gif_images
    real, calls = GifImagePlugin._write_frame_data, []
    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(GifImagePlugin, "_write_frame_data", interrupted)
    from types import SimpleNamespace
    ev = SimpleNamespace(pictures=lambda x: x)                      # an evaluation of pictures that need no decoding
    with pytest.raises(KeyboardInterrupt): gif_images(torch.rand(11, 64, 1, 8, 8), tmp_path, ev)
    assert list(tmp_path.iterdir()) == []


# ---- 4. every size parameter has an upper bound that follows from memory, checked before anything is written

@pytest.mark.parametrize("params,shown", [
    (dict(solver="dsbm", ode_steps=10**12, sampler="ode"), "parameter ode_steps=1000000000000: a chain of 1000000000000 steps"),
    (dict(solver="dsbm", ode_steps=10**12), "parameter ode_steps=1000000000000"),
    (dict(num_steps=10**12), "parameter num_steps=1000000000000"),
    (dict(solver="dsbm", grid_steps=10**12), "parameter grid_steps=1000000000000"),
    (dict(solver="dsbm", cache_npar=10**12), "parameter cache_npar=1000000000000"),
    (dict(batch_size=2**40), "parameter batch_size=1099511627776: a training step"),
    (dict(eval_npar=10**12), "parameter eval_npar=1000000000000"),
    (dict(score_npar=10**8), "parameter score_npar=100000000: the exact W2 score's cost matrices"),
    (dict(dataset="folder", data_dir="nowhere", image_size=2**20, unet_mult="1,2,2,2"), "parameter image_size=1048576: a training batch"),
])
def test_sizes_beyond_memory_stop_before_anything_is_written(tmp_path, params, shown):
    from dsb.run import run
    kw = {k: v for k, v in {**TINY, **params}.items() if not ("dataset" in params and k == "data")}
    with pytest.raises(ValueError, match=re.escape(shown)) as e: run(**kw, out_dir=str(tmp_path / "runs"))
    assert " or less fits" in str(e.value) or "no value of" in str(e.value)
    assert not (tmp_path / "runs").exists()


# ---- 5. a data set's samplers are probed before the run directory exists

BAD_DATA = textwrap.dedent('''
    import torch
    from dsb.data import DATASETS, DataSpec
    gauss = lambda n, g=None: torch.randn(n, 2, generator=g)
    BAD = {"nan": lambda n, g=None: torch.full((n, 2), float("nan")),
           "float64": lambda n, g=None: torch.randn(n, 2, generator=g, dtype=torch.float64),
           "int64": lambda n, g=None: torch.randint(3, (n, 2), generator=g),
           "shape": lambda n, g=None: torch.randn(n, 3, generator=g),
           "half": lambda n, g=None: torch.randn(n // 2, 2, generator=g)}
    for name, bad in BAD.items():
        DATASETS.register(f"bad_{name}", family="points")(lambda cfg, bad=bad: DataSpec(bad, gauss, (2,), "bad"))
    DATASETS.register("nan_prior", family="points")(lambda cfg: DataSpec(gauss, lambda n, g=None: torch.full((n, 2), float("nan")), (2,), "p"))
''')


@pytest.fixture
def bad_data(tmp_path, monkeypatch):
    from dsb.data import DATASETS
    (tmp_path / "bad_data.py").write_text(BAD_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [n for n in DATASETS if n.startswith("bad_") or n == "nan_prior"]:
        DATASETS.entries.pop(name); DATASETS.infos.pop(name)
    sys.modules.pop("bad_data", None)


@pytest.mark.parametrize("name,shown", [
    ("bad_nan", "its data sampler, asked for 7 rows, returned 14 non-finite value(s)"),
    ("bad_float64", "returned a tensor of dtype torch.float64"),
    ("bad_int64", "returned a tensor of dtype torch.int64"),
    ("bad_shape", "returned rows of shape (3,), but its DataSpec.shape is (2,)"),
    ("bad_half", "asked for 7 rows, returned 3 rows"),
    ("nan_prior", "its prior sampler, asked for 7 rows, returned 14 non-finite value(s)"),
])
def test_bad_samplers_of_a_plugin_stop_before_anything_is_written(tmp_path, bad_data, name, shown):
    from dsb.run import run
    with pytest.raises(ValueError) as e: run(**PLUGIN_TINY, plugins="bad_data", dataset=name, out_dir=str(tmp_path / "runs"))
    assert shown in str(e.value) and f"data set {name!r} (registered by module bad_data)" in str(e.value)
    assert "learning rate" not in str(e.value) and not (tmp_path / "runs").exists()


# ---- 6. load is strictly read-only

def _tmpfs(path, size="8m"):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    return path


def test_load_of_a_damaged_run_changes_nothing(tmp_path, capsys):
    from dsb.run import run, load
    s = run(**{**TINY, "n_ipf": 1, "num_iter": 100}, out_dir=str(tmp_path), run_name="r")
    d = Path(s["run_dir"])
    (d / "checkpoint.pt").write_bytes(b"cut short")
    before = _files(d)
    prev = position(d / "checkpoint_prev.pt")
    assert load(d).trainer.position == prev
    out = capsys.readouterr().out
    assert "checkpoint.pt is unreadable" in out and "no file was changed" in out and "resuming" not in out
    assert _files(d) == before


def test_load_from_a_read_only_filesystem(tmp_path):
    from dsb.run import run, load
    disk = _tmpfs(tmp_path / "ro")
    try:
        s = run(**{**TINY, "n_ipf": 1, "num_iter": 100}, out_dir=str(disk), run_name="r")
        d = Path(s["run_dir"])
        (d / "checkpoint.pt").write_bytes(b"cut short")
        prev = position(d / "checkpoint_prev.pt")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert load(d).trainer.position == prev                      # the backup, read where it is
        with pytest.raises(OSError, match="cannot lock the run directory .* for writing"): run(resume=str(d))
    finally: subprocess.run(["umount", str(disk)])


# ---- 9. n_ipf cannot go below what is done

def test_n_ipf_below_the_iterations_done_is_refused(tmp_path):
    from dsb.run import run
    s = run(**{**TINY, "num_iter": 50}, out_dir=str(tmp_path), run_name="r")
    before = _files(s["run_dir"])
    with pytest.raises(ValueError, match=r"parameter n_ipf=1: the run in .* has done 2 IPF iteration\(s\).*give n_ipf=2 or more"):
        run(resume=s["run_dir"], n_ipf=1)
    assert _files(s["run_dir"]) == before


# ---- 10. config.json: damaged, foreign, unknown keys, deleted

@pytest.mark.parametrize("text,shown", [
    ('{"n_ipf": 2, "lr": ', "config.json is damaged: it is not valid JSON"),
    ('{"name": "my-package", "version": "1.0.0"}', "config.json is not the config of a dsb run: it holds keys 'name', 'version'"),
    ('[1, 2, 3]', "config.json is not the config of a dsb run: it holds a JSON list"),
    (None, "config.json has keys that are not parameters of this dsb: 'learning_rate'"),
])
def test_a_bad_config_json_is_named_with_what_to_do(tmp_path, text, shown):
    from dsb.run import run, load
    s = run(**{**TINY, "n_ipf": 1, "num_iter": 50}, out_dir=str(tmp_path), run_name="r")
    path = Path(s["run_dir"]) / "config.json"
    path.write_text(text if text is not None else json.dumps({**json.loads(path.read_text()), "learning_rate": 0.1}))
    before = _files(s["run_dir"])
    for attempt in (lambda: run(resume=s["run_dir"], n_ipf=2), lambda: load(s["run_dir"])):
        with pytest.raises(ValueError) as e: attempt()
        assert shown in str(e.value) and str(path) in str(e.value)
        assert "restore" in str(e.value).lower()
    assert _files(s["run_dir"]) == before


def test_a_deleted_config_json_is_recovered_from_the_checkpoint(tmp_path, capsys, full):
    from dsb.run import run, load
    s = run(**{**TINY, "n_ipf": 1}, out_dir=str(tmp_path), run_name="r")
    d = Path(s["run_dir"])
    saved = (d / "config.json").read_text()
    (d / "config.json").unlink()
    assert load(d).config.data == "moon" and not (d / "config.json").exists()   # load reads, writes nothing
    assert "config.json is missing; the run's config was recovered from its newest checkpoint" in capsys.readouterr().out
    assert run(resume=str(d), n_ipf=2)["sw2_data"] == full[0]["sw2_data"]
    assert json.loads((d / "config.json").read_text()) == {**json.loads(saved), "n_ipf": 2}


# ---- 11 and 17. the NaN message's resume command is quoted, and pasting it works

def test_nan_advice_quotes_a_path_with_spaces(tmp_path):
    from dsb.run import run
    out = tmp_path / "my runs" / "it's here"
    with pytest.raises(FloatingPointError) as e:
        run(**{**TINY, "cache_refresh": 1, "checkpoint_every": 1}, lr=1e9, grad_clip=0.0, out_dir=str(out), run_name="n a n")
    line = next(l for l in str(e.value).splitlines() if l.strip().startswith("papermill "))
    argv = shlex.split(line)
    assert argv[argv.index("resume") - 1] == "-r" and argv[argv.index("resume") + 1] == str(out / "n a n")
    py = re.search(r"dsb\.train\((.*)\)\)", str(e.value)).group(1)
    assert eval(f"dict({py})")["resume"] == str(out / "n a n")


@pytest.mark.parametrize("folder", ["runs", "my runs"])
def test_the_printed_resume_command_works_when_pasted(tmp_path, folder):
    "papermill with lr 1e9 and no clipping: the NaN message's command, pasted into a shell, resumes and finishes the run."
    import papermill as pm
    (tmp_path / "nbs").symlink_to(ROOT / "nbs")
    runs = tmp_path / folder
    params = {**TINY, "cache_refresh": 1, "checkpoint_every": 1, "lr": 1e9, "grad_clip": 0.0, "out_dir": str(runs), "run_name": "n"}
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "first.ipynb"), parameters=params,
                            kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e.value))
    line = next(l.strip() for l in text.splitlines() if l.strip().startswith("papermill nbs/train.ipynb"))
    assert "-p lr 0.001 -p grad_clip 1.0" in line
    env = {**ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((runs / "n" / "metrics.json").read_text())
    assert m["steps"] == 2 * 2 * 200 and m["sw2_data"] < 1
    changes = [json.loads(l)["changes"] for l in (runs / "n" / "metrics.jsonl").read_text().splitlines() if '"resume"' in l]
    assert changes == [{"lr": [1e9, 1e-3], "grad_clip": [0.0, 1.0]}]


# ---- 12. run_name stays inside out_dir

@pytest.mark.parametrize("name", ["../escaped", "ABSOLUTE", "sub/dir", ".."])
def test_run_name_cannot_leave_out_dir(tmp_path, name):
    from dsb.run import run
    out, elsewhere = tmp_path / "a" / "b", tmp_path / "elsewhere"
    name = str(elsewhere) if name == "ABSOLUTE" else name            # an absolute path: it used to be written there
    with pytest.raises(ValueError, match="parameter run_name=.* must be one folder name inside out_dir"):
        run(**TINY, out_dir=str(out), run_name=name)
    assert not (tmp_path / "a").exists() and not elsewhere.exists()


# ---- 13. a resume with nothing to do keeps the timing

def test_resume_with_nothing_to_do_keeps_the_timing(tmp_path):
    from dsb.run import run
    s = run(**{**TINY, "num_iter": 50}, out_dir=str(tmp_path), run_name="r")
    again = run(resume=s["run_dir"])
    m = json.loads((Path(s["run_dir"]) / "metrics.json").read_text())
    assert (m["wall_s"], m["iterations_per_s"]) == (s["wall_s"], s["iterations_per_s"]) == (again["wall_s"], again["iterations_per_s"])
    assert m["sw2_data"] == s["sw2_data"] and m["steps"] == s["steps"]


# ---- 14. a moved run resumes with the command line that started it

@pytest.mark.parametrize("out_dir", ["disk1", "disk2"])
def test_a_moved_run_resumes_where_it_is(tmp_path, full, out_dir):
    "A run folder moved to another disk resumes there, given the first command line's out_dir or the new one (a resume uses neither)."
    from dsb.run import run
    kw = dict(TINY, run_name="r")
    first = run(**{**kw, "n_ipf": 1}, out_dir=str(tmp_path / "disk1"))
    moved = tmp_path / "disk2" / "r"
    moved.parent.mkdir(); Path(first["run_dir"]).rename(moved)
    resumed = run(**kw, out_dir=str(tmp_path / out_dir), resume=str(moved))
    assert resumed["sw2_data"] == full[0]["sw2_data"] and resumed["run_dir"] == str(moved)
    assert not (tmp_path / "disk1" / "r").exists()


# ---- 16. a data set registered by `import my_data` (not plugins=) reloads

MY_DATA = textwrap.dedent('''
    import torch
    from dsb.data import DATASETS, DataSpec
    @DATASETS.register("spirals", family="points")
    def spirals(cfg):
        def data(n, g=None):
            t = 3 * torch.rand(n, generator=g)
            return torch.stack([t * torch.cos(3 * t), t * torch.sin(3 * t)], 1) / 2 + 0.05 * torch.randn(n, 2, generator=g)
        return DataSpec(data, lambda n, g=None: torch.randn(n, 2, generator=g), (2,), "spirals")
''')


def test_a_dataset_registered_by_import_reloads_in_a_new_session(tmp_path, monkeypatch):
    from dsb.data import DATASETS
    from dsb.run import run
    (tmp_path / "my_data.py").write_text(MY_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import my_data  # noqa: F401 (registers 'spirals')
        s = run(**{**PLUGIN_TINY, "n_ipf": 1, "num_iter": 50}, dataset="spirals", out_dir=str(tmp_path), run_name="s")
        assert json.loads((Path(s["run_dir"]) / "config.json").read_text())["registered_by"] == {"dataset": "my_data"}
    finally:
        DATASETS.entries.pop("spirals", None); DATASETS.infos.pop("spirals", None); sys.modules.pop("my_data", None)
    code = (f"import dsb\nb = dsb.load({s['run_dir']!r})\nassert b.config.dataset == 'spirals' and b.sample(10).shape == (10, 2)\n"
            f"from dsb.run import run\nprint(run(resume={s['run_dir']!r}, n_ipf=2)['steps'])")
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ENV['PYTHONPATH']}"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("200"), p.stderr[-2000:]


def test_a_dataset_registered_in_main_says_what_to_do(tmp_path):
    "Registered by a script (module __main__): another session cannot import it, and the message says so."
    script = tmp_path / "train_spirals.py"
    script.write_text(MY_DATA + f"\nfrom dsb.run import run\nrun(**{dict(PLUGIN_TINY, n_ipf=1, num_iter=50)!r}, dataset='spirals', "
                                f"out_dir={str(tmp_path)!r}, run_name='s')\n")
    assert subprocess.run([sys.executable, str(script)], env=ENV, cwd=tmp_path, capture_output=True, timeout=300).returncode == 0
    from dsb.run import load
    with pytest.raises(ValueError, match="registered by the script or notebook that trained it \\(module __main__\\)"):
        load(tmp_path / "s")


# ---- 19. the thread count: chosen from the free CPUs and the model's size, written to the log, `threads` overrides it

def test_threads_are_in_the_log_and_the_parameter_overrides_them(tmp_path):
    from dsb.run import run
    before = torch.get_num_threads()
    s = run(**{**TINY, "n_ipf": 1, "num_iter": 20, "threads": 2}, out_dir=str(tmp_path), run_name="t")
    assert s["threads"] == 2 and torch.get_num_threads() == before           # the run's own count, given back after it
    log = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in log if r.get("event") == "threads"] == [{"iteration": 1, "stage": 1, "event": "threads", "threads": 2,
                                                               "why": "threads=2 as given"}]
    auto = run(**{**TINY, "n_ipf": 1, "num_iter": 20}, out_dir=str(tmp_path), run_name="a")
    assert auto["threads"] == 1                          # TINY's model is too small to split (and OMP_NUM_THREADS=1 here)
