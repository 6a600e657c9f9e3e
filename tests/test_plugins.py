"A data set and a solver added by one registration each, in a user's module, run through train.ipynb."
import json, textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent('''
    "A toy data set and a toy solver, registered the way a user would."
    import torch
    from dsb.data import DATASETS, DataSpec
    from dsb.trainer import SOLVERS, Solver

    @DATASETS.register("toy_shifted")
    def toy_shifted(cfg):
        "N((3, -2), I), bridged to N(0, I): a shift carries one to the other."
        centre = torch.tensor([3., -2.])
        return DataSpec(lambda n, g=None: centre + torch.randn(n, 2, generator=g),
                        lambda n, g=None: torch.randn(n, 2, generator=g), (2,), "toy_shifted")

    class Shift(Solver):
        "Learns one vector m so that x + m carries the prior's mean to the data's: a one-stage solver."
        def __init__(self, data, device):
            self.m = torch.nn.Linear(1, 2, bias=False).to(device); torch.nn.init.zeros_(self.m.weight)
            self.data = data
        def trained(self, iteration, stage): return self.m, None
        def refresh(self, tr):
            g = torch.Generator().manual_seed(tr.block_seed(0))
            self.x0, self.x1 = self.data.data(1000, g).to(tr.device), self.data.prior(1000, g).to(tr.device)
        def loss(self, tr):
            i = torch.randint(1000, (tr.batch_size,), generator=tr.generator, device=tr.device)
            return ((self.x1[i] + self.m.weight[:, 0] - self.x0[i]) ** 2).sum(1)
        def to_data(self, x, generator=None, path=False):
            y = x + self.m.weight[:, 0].detach()
            return torch.stack([x, y]) if path else y
        def to_prior(self, x, generator=None, path=False):
            y = x - self.m.weight[:, 0].detach()
            return torch.stack([x, y]) if path else y
        def state_dict(self): return {"m": self.m.state_dict()}
        def load_state_dict(self, s): self.m.load_state_dict(s["m"])

    @SOLVERS.register("shift")
    def shift(cfg, data, device): return Shift(data, device)
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{':' + __import__('os').environ['PYTHONPATH'] if 'PYTHONPATH' in __import__('os').environ else ''}")
    return tmp_path


def test_registered_dataset_and_solver_run_through_train_notebook(plugin_dir):
    import papermill as pm
    params = dict(plugins="toy_plugin", dataset="toy_shifted", solver="shift", n_ipf=2, num_iter=150, cache_refresh=50,
                  batch_size=64, lr=0.05, ema_rate=0.0, eval_npar=500, out_dir=str(plugin_dir / "runs"), run_name="toy", progress=False)
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(plugin_dir / "out.ipynb"), parameters=params,
                        kernel_name="python3", cwd=str(plugin_dir), progress_bar=False)
    run_dir = plugin_dir / "runs" / "toy"
    evals = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert len(evals) == 2 and evals[-1]["sw2_data"] < 3 * evals[-1]["sw2_floor"]     # the shift is learned: at the noise floor
    assert json.loads((run_dir / "metrics.json").read_text())["solver"] == "shift"
    assert (run_dir / "samples_ipf02.png").exists() and (run_dir / "checkpoint.pt").exists()
    # the registered names are only valid with the plugin imported
    from dsb.config import make_config
    with pytest.raises(ValueError, match="dataset='toy_shifted' is not allowed"):
        make_config(dataset="toy_shifted")


def test_registered_solver_resumes_and_reloads(plugin_dir):
    from dsb.run import run, load_run
    kw = dict(plugins="toy_plugin", dataset="toy_shifted", solver="shift", num_iter=100, cache_refresh=50, batch_size=64,
              lr=0.05, eval_npar=300, progress=False, plots=False, out_dir=str(plugin_dir / "runs"))
    one = run(**kw, n_ipf=1, run_name="a")
    two = run(resume=one["run_dir"], n_ipf=2)
    full = run(**kw, n_ipf=2, run_name="b")
    assert two["sw2_data"] == full["sw2_data"] and two["steps"] == full["steps"] == 200
    trainer = load_run(full["run_dir"])
    assert trainer.config.solver == "shift" and trainer.solver.m.weight.abs().sum() > 1
