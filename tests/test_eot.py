"The Gaussian-mixture EOT benchmark as a data set: built for each solver's kernel, scored by cBW2-UVP in runs, papermill, bad parameters."
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(dataset="eot_mixture", data_dim=3, n_ipf=1, num_iter=40, cache_refresh=20, checkpoint_every=20,
            cache_npar=400, batch_size=64, eval_npar=400, score_npar=100, progress=False, plots=False)


def test_each_solver_gets_the_bridge_of_its_own_kernel():
    "The data end depends on the kernel: DSB's chain and the OU process of DSBM / LightSB give different output ends."
    from dsb.config import make_config
    from dsb.data import make_data
    from dsb.trainer import SOLVERS
    g = lambda: torch.Generator().manual_seed(0)
    ends = {}
    for solver in ("dsb", "dsbm", "lightsb"):
        cfg = make_config(**{**TINY, "solver": solver})
        data = make_data(cfg)
        assert data.shape == (3,) and data.kind == "points" and data.score_bridge is not None
        assert torch.equal(data.prior(50, g()), make_data(make_config(**{**TINY, "solver": "dsb"})).prior(50, g()))   # the input end
        ends[solver] = data.data(50, g())
    assert torch.equal(ends["dsbm"], ends["lightsb"]) and not torch.equal(ends["dsb"], ends["dsbm"])
    a, v = SOLVERS.info("dsb")["kernel"](make_config(**TINY))
    assert 0 < a < 1 and v > 0


def test_mixture_presets_keep_what_their_figures_were_measured_with():
    """The mixture's presets pin what the points family changed after they were measured (issue 23, deliverable 4): DSBM's
    networks predict the drift, DSB runs the paper's N = 20 steps of 0.01. The 2d sets get the new choices."""
    from dsb.config import make_config
    from dsb.reference import Schedule
    for d in (2, 16, 64):
        dsbm = make_config(dataset="eot_mixture", data_dim=d, solver="dsbm")
        dsb = make_config(dataset="eot_mixture", data_dim=d, solver="dsb")
        assert dsbm.predict == "drift" and (dsb.gamma_min, dsb.gamma_max) == (0.01, 0.01) and dsb.eval_every == 1, d
    two_d = make_config(dataset="2d", data="spirals", solver="dsb")
    gammas = Schedule.from_params(two_d.num_steps, two_d.gamma_min, two_d.gamma_max, two_d.gamma_space).gammas
    assert make_config(dataset="2d", solver="dsbm").predict == "end"
    assert gammas[0] == gammas[-1] == 0.002 and abs(gammas.sum().item() - 0.2) < 1e-12   # small end steps, the paper's horizon


@pytest.mark.parametrize("solver", ["lightsb", "dsbm", "dsb"])
def test_runs_log_cbw2_uvp(tmp_path, solver):
    from dsb.run import run
    extra = dict(n_components=5, lr=1e-2) if solver == "lightsb" else {}
    s = run(**TINY, solver=solver, **extra, out_dir=str(tmp_path))
    assert s["cbw2_uvp"] > 0 and s["cbw2_uvp_se"] > 0 and 0 < s["cbw2_uvp_floor"] < s["cbw2_uvp"] + 5 * s["cbw2_uvp_se"]
    assert ("cbw2_uvp_exact" in s) == (solver == "lightsb")
    if solver == "lightsb": assert s["cbw2_uvp_exact"] < 30          # far below the independent coupling (about 100 %)
    history = [json.loads(l) for l in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval"] for r in history if "cbw2_uvp" in r] == [1]


def test_score_refuses_a_solver_of_another_kernel():
    from dsb.config import make_config
    from dsb.data import make_data
    from dsb.run import build_trainer
    data = make_data(make_config(**TINY, solver="dsbm"))
    other = build_trainer(make_config(**TINY, solver="dsbm", gamma_min=0.02, gamma_max=0.02), data).solver
    with pytest.raises(ValueError, match="built for the kernel"): data.score_bridge(other, torch.Generator())


def test_papermill_dataset_eot_mixture(tmp_path):
    import papermill as pm
    params = dict(TINY, solver="dsbm", out_dir=str(tmp_path / "runs"), run_name="smoke")
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False)
    m = json.loads((tmp_path / "runs" / "smoke" / "metrics.json").read_text())
    assert m["cbw2_uvp"] > 0 and json.loads((tmp_path / "runs" / "smoke" / "config.json").read_text())["dataset"] == "eot_mixture"


def test_a_solver_without_a_kernel_is_refused(tmp_path):
    from dsb.trainer import SOLVERS
    from dsb.run import run
    SOLVERS.register("nokernel")(SOLVERS["dsbm"])          # a plugin solver that declares no reference kernel
    try:
        with pytest.raises(ValueError, match="solver='nokernel' registers none"):
            run(**TINY, solver="nokernel", out_dir=str(tmp_path / "runs"))
    finally:
        SOLVERS.entries.pop("nokernel"); SOLVERS.infos.pop("nokernel")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("params,match", [
    (dict(data_dim=0), "parameter data_dim must be an integer >= 1"),
    (dict(data="moon"), "parameter data='moon' applies to dataset='2d'"),
    (dict(dataset="eot_mixtures"), "parameter dataset='eot_mixtures' is not allowed (did you mean 'eot_mixture'?)"),
])
def test_bad_parameters_fail_before_any_output(tmp_path, params, match):
    from dsb.run import run
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        run(**{**TINY, **params}, out_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
