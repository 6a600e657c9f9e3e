"A data set, a solver with a hyperparameter of its own and a sampler, each added by one registration in a user's module, run through train.ipynb and the Python API."
import json, textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent('''
    "A toy data set, a toy solver with its own option and a toy sampler, registered the way a user would."
    from dataclasses import dataclass
    import torch
    from dsb.core import Options
    from dsb.data import DATASETS, DataSpec
    from dsb.reference import Chain
    from dsb.trainer import SOLVERS, SAMPLERS, Solver

    @DATASETS.register("toy_shifted", family="points")
    def toy_shifted(cfg):
        "N((3, -2), I), bridged to N(0, I): a shift carries one to the other."
        centre = torch.tensor([3., -2.])
        return DataSpec(lambda n, g=None: centre + torch.randn(n, 2, generator=g),
                        lambda n, g=None: torch.randn(n, 2, generator=g), (2,), "toy_shifted")

    class Shift(Solver):
        "Learns one vector m so that x + scale * m carries the prior's mean to the data's: a one-stage solver."
        def __init__(self, data, device, scale):
            self.m = torch.nn.Linear(1, 2, bias=False).to(device); torch.nn.init.zeros_(self.m.weight)
            self.data, self.scale = data, scale
        def trained(self, iteration, stage): return self.m, None
        def refresh(self, tr):
            g = torch.Generator().manual_seed(tr.block_seed(0))
            self.x0, self.x1 = self.data.data(1000, g).to(tr.device), self.data.prior(1000, g).to(tr.device)
        def batch(self, n, generator):
            i = torch.randint(1000, (n,), generator=generator, device=self.x0.device)
            return self.x0[i], self.x1[i]
        def loss(self, net, batch):
            x0, x1 = batch
            return ((x1 + self.scale * net.weight[:, 0] - x0) ** 2).sum(1)
        def chain(self, to_data):
            shift = (1. if to_data else -1.) * self.scale * self.m.weight[:, 0].detach()
            return Chain(lambda x, t: x + shift, torch.tensor([0., 1.]), torch.tensor([1.]), sigma2=0.)
        def state_dict(self): return {"m": self.m.state_dict()}
        def load_state_dict(self, s): self.m.load_state_dict(s["m"])

    @dataclass
    class ShiftOptions(Options):
        shift_scale: float = 1.0       # the solver learns m and moves points by shift_scale * m
        @classmethod
        def check(cls, cfg):
            if not cfg.shift_scale > 0: raise ValueError(f"parameter shift_scale={cfg.shift_scale} must be > 0")

    @SOLVERS.register("shift", options=ShiftOptions)
    def shift(cfg, data, device): return Shift(data, device, cfg.shift_scale)

    @SAMPLERS.register("twice", needs="chain")
    def twice(solver, x, to_data, *, steps=None, generator=None, path=False, chunk=None):
        "The learned chain run twice in a row: a toy sampler (on the shift, it overshoots by the whole shift)."
        first = solver.chain(to_data).sample(x, generator=generator, path=path)
        second = solver.chain(to_data).sample(first[-1] if path else first, generator=generator, path=path)
        return torch.cat([first, second[1:]]) if path else second
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    import sys
    from dsb.data import DATASETS
    from dsb.trainer import SOLVERS, SAMPLERS
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{':' + __import__('os').environ['PYTHONPATH'] if 'PYTHONPATH' in __import__('os').environ else ''}")
    yield tmp_path
    for registry, name in ((DATASETS, "toy_shifted"), (SOLVERS, "shift"), (SAMPLERS, "twice")):   # leave the registries as they were
        registry.entries.pop(name, None); registry.infos.pop(name, None)
    sys.modules.pop("toy_plugin", None)


def test_registered_dataset_solver_option_and_sampler_run_through_train_notebook(plugin_dir):
    "-p sets the plugin solver's own option; the plugin's sampler is what Evaluate scores first and what the GIF animates."
    import papermill as pm
    from PIL import Image
    params = dict(plugins="toy_plugin", dataset="toy_shifted", solver="shift", shift_scale=0.5, sampler="twice", n_ipf=2,
                  num_iter=150, cache_refresh=50, batch_size=64, lr=0.05, ema_rate=0.0, eval_npar=500, score_npar=300,
                  out_dir=str(plugin_dir / "runs"), run_name="toy", progress=False)
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(plugin_dir / "out.ipynb"), parameters=params,
                        kernel_name="python3", cwd=str(plugin_dir), progress_bar=False)
    run_dir = plugin_dir / "runs" / "toy"
    assert json.loads((run_dir / "config.json").read_text())["shift_scale"] == 0.5
    evals = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    last = evals[-1]
    assert len(evals) == 2 and last["sw2_data_sde"] < 3 * last["sw2_floor"]   # the shift is learned: the SDE sampler is at the noise floor
    assert last["sw2_data"] > 10 * last["sw2_floor"]                          # 'twice' overshoots by the whole shift, |(3, -2)| = 3.6
    final = json.loads((run_dir / "metrics.json").read_text())               # the other samplers' W2 scores: once, in metrics.json
    assert last["w2"] > 10 * last["w2_floor"] and final["w2_sde"] < 3 * final["w2_floor"]
    assert Image.open(run_dir / "bridge.gif").n_frames == 3                   # the GIF is the 'twice' path: x, x + m, x + 2m
    assert final["solver"] == "shift"
    # the registered names are only valid with the plugin imported
    from dsb.config import make_config
    with pytest.raises(ValueError, match="dataset='toy_shifted' is not allowed"):
        make_config(dataset="toy_shifted")


def test_registered_option_is_validated_and_owned(plugin_dir):
    from dsb.config import make_config
    assert make_config(plugins="toy_plugin", dataset="toy_shifted", solver="shift").shift_scale == 1.0
    with pytest.raises(ValueError, match="shift_scale=-1.0 must be > 0"):
        make_config(plugins="toy_plugin", dataset="toy_shifted", solver="shift", shift_scale=-1)
    with pytest.raises(ValueError, match="shift_scale=2.0 applies to solver='shift'"):
        make_config(plugins="toy_plugin", shift_scale=2.0)
    from dsb.config import parameters_cell
    assert "shift_scale = 1.0" in parameters_cell() and "moves points by shift_scale" in parameters_cell()


def test_registered_solver_resumes_and_reloads(plugin_dir):
    import dsb
    from dsb.run import run
    kw = dict(plugins="toy_plugin", dataset="toy_shifted", solver="shift", num_iter=100, cache_refresh=50, batch_size=64,
              lr=0.05, eval_npar=300, score_npar=300, progress=False, plots=False, out_dir=str(plugin_dir / "runs"))
    one = run(**kw, n_ipf=1, run_name="a")
    two = run(resume=one["run_dir"], n_ipf=2)
    full = run(**kw, n_ipf=2, run_name="b")
    assert two["sw2_data"] == full["sw2_data"] and two["steps"] == full["steps"] == 200
    bridge = dsb.load(full["run_dir"])
    assert bridge.config.solver == "shift" and bridge.solver.m.weight.abs().sum() > 1
    assert (bridge.sample(2000).mean(0) - bridge.data.data(2000).mean(0)).abs().max() < 0.2
