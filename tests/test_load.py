"`dsb.load` after a resume: the networks it returns are the checkpoint's, bitwise, and it samples like the trainer that wrote it."
import pytest
import torch

TINY = dict(n_ipf=2, num_iter=60, cache_refresh=20, checkpoint_every=20, cache_npar=200, batch_size=64, eval_npar=300,
            score_npar=300, progress=False, plots=False, data="moon")


class Interrupt(Exception): pass


@pytest.mark.parametrize("solver", ["dsb", "dsbm"])
def test_load_after_a_resume_has_the_checkpoint_weights(tmp_path, monkeypatch, solver):
    """Interrupt a run in its second iteration, resume it to the end, then `dsb.load` the folder: every network and EMA
    copy equals the final checkpoint's tensors bitwise (and the resumed trainer's), and `Bridge.sample` with a seed
    gives the resumed bridge's samples bitwise."""
    import dsb
    from dsb.checkpoint import load_checkpoint
    from dsb.trainer import LossLogger
    params = dict(TINY, solver=solver, out_dir=str(tmp_path), run_name="r")
    if solver == "dsbm": params.update(grid_steps=0, lr=1e-3)
    real = LossLogger.after_step
    def stop(self, tr):
        real(self, tr)
        if tr.iteration == 1 and tr.stage == 0 and tr.step == 30: raise Interrupt   # after the checkpoint at step 20
    monkeypatch.setattr(LossLogger, "after_step", stop)
    with pytest.raises(Interrupt): dsb.train(**params)
    run_dir = tmp_path / "r"
    assert load_checkpoint(run_dir)["position"] == [1, 0, 20]
    monkeypatch.setattr(LossLogger, "after_step", real)
    resumed = dsb.train(resume=str(run_dir), progress=False)
    assert resumed.trainer.position == (2, 0, 0)
    state = load_checkpoint(run_dir)
    assert state["position"] == [2, 0, 0]
    loaded = dsb.load(run_dir)
    saved, now, live = state["solver"], loaded.solver.state_dict(), resumed.solver.state_dict()
    assert saved.keys() == now.keys() == {"forward", "backward"}
    n = 0
    for direction in saved:
        for part in ("net", "ema"):
            assert saved[direction][part].keys() == now[direction][part].keys()
            for k, v in saved[direction][part].items():
                assert torch.equal(now[direction][part][k], v), (direction, part, k)
                assert torch.equal(live[direction][part][k], v), (direction, part, k)
                n += 1
    assert n >= 8
    # the EMA copies differ from the networks (the check compares two different things per direction)
    assert any(not torch.equal(saved["backward"]["net"][k], saved["backward"]["ema"][k]) for k in saved["backward"]["net"])
    for sampler in ("sde", "ode"):
        assert torch.equal(loaded.sample(50, sampler=sampler, seed=3), resumed.sample(50, sampler=sampler, seed=3)), sampler
