"The Python front door: `import dsb`, train a bridge in memory, sample it, load it back from its run directory."
import pytest
import torch


def test_five_lines_of_python(tmp_path):
    import dsb
    b = dsb.train(data="moon", solver="dsbm", n_ipf=1, num_iter=50, out_dir=str(tmp_path), progress=False, score_npar=300)
    x = b.sample(100)
    assert x.shape == (100, 2) and torch.isfinite(x).all()
    again = dsb.load(b.run_dir)
    y = again.sample(100, sampler="ode")
    assert y.shape == (100, 2) and torch.equal(y, b.sample(100, sampler="ode"))      # the same networks from disk
    from dataclasses import replace
    assert again.metrics["w2"] == b.metrics["w2"] and replace(again.config, device=b.config.device) == b.config
    assert b.config.lr == 1e-2 and b.config.grid_steps == 80                          # DSBM's 2d preset, as the notebook gets it
    assert b.to_prior(x).shape == (100, 2) and b.to_data(x, path=True).shape == (81, 100, 2)
    assert "solver='dsbm'" in repr(b)


def test_public_names_and_no_clash_with_modules():
    import dsb
    for name in ("train", "load", "Bridge", "make_config", "DATASETS", "MODELS", "SOLVERS", "SAMPLERS", "Solver", "Options", "preset", "sample"):
        assert getattr(dsb, name) is not None, name
    assert "mnist" in dsb.DATASETS and "dsbm" in dsb.SOLVERS and "ode" in dsb.SAMPLERS      # every built-in registered on first use
    import dsb.run
    assert callable(dsb.run.run) and dsb.train is dsb.run.train                         # `dsb.run` stays the module
    with pytest.raises(AttributeError, match="has no attribute 'trian'"): dsb.trian


def test_a_solver_loss_in_a_hand_written_loop():
    "`solver.batch` and `solver.loss(net, batch)` need no trainer: a few lines fit DSBM's backward drift on its first pairs, most of the way from the untrained loss to the loss of the exact drift (Gaussian data: `markov_drift_gaussian`)."
    from dsb.config import make_config
    from dsb.data import make_data
    from dsb.run import build_trainer
    from dsb.gaussian import gaussian_problem
    from dsb.imf import GaussianCoupling, markov_drift_gaussian
    cfg = make_config(dataset="gaussian", data_dim=2, solver="dsbm", gamma_min=0.025, gamma_max=0.025, progress=False, cache_npar=20_000)
    tr = build_trainer(cfg, make_data(cfg))
    solver, g = tr.solver, torch.Generator().manual_seed(0)
    tr.iteration, tr.stage, tr.step, tr.generator = 0, 0, 0, g
    solver.begin_stage(tr); solver.refresh(tr)                      # iteration 0: independent pairs of data and prior
    m0, S0 = gaussian_problem(2)
    indep = GaussianCoupling.independent(m0, S0, torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    T = solver.ref.T
    def exact(x, t):
        K, c = markov_drift_gaussian(solver.ref, indep, (t.double() * T).clamp(0, T), "backward")
        return (torch.einsum("bij,bj->bi", K, x.double()) + c).float()
    net = solver.backward.net
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    probe = solver.batch(20_000, torch.Generator().manual_seed(1))
    before, floor = solver.loss(net, probe).mean().item(), solver.loss(exact, probe).mean().item()
    for _ in range(400):
        loss = solver.loss(net, solver.batch(512, g)).mean(); opt.zero_grad(); loss.backward(); opt.step()
    after = solver.loss(net, probe).mean().item()
    assert floor <= after and after - floor < 0.2 * (before - floor), (before, after, floor)
