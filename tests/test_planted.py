"""Fast engine checks, each against an exact answer, that catch the bugs of issue 20's table (and are the
mutation-testing subset: `python bench/mutation.py`). Every test runs in about a second.

Each test names the planted bug it was written against; `PLANTED` in bench/mutation.py holds how each was planted,
and `python bench/mutation.py --plant NAME` replays it (the tests must fail). The answers are exact: hand-computed recursions, closed forms, or a replay of the same
random numbers, so the tolerances are float rounding (1e-12 in float64, 1e-6 in float32) or, for Monte-Carlo
moments, 5 standard errors."""
import copy
import math

import pytest
import torch
from torch import nn

from dsb.reference import Schedule, ReferenceMean, Chain, sample_chain, reference_transition, reference_moments, gamma_schedule
from dsb.reversal import mean_matching_target, score_matching_target, mean_matching_loss, gaussian_backward_kernel
from dsb.trainer import Solver, Trainer, Callback, CancelFit, sample
from dsb.ipf import DSB, Direction, build_cache, Cache
from dsb.imf import LinearReference, GaussianCoupling, markov_drift_gaussian, probability_flow_gaussian
from dsb.dsbm import DSBM, Drift, flow_chain, uniform_grid


def f64(*v): return torch.tensor(v, dtype=torch.float64)


# ---------------------------------------------------------------- 02 reference: sample_chain

def test_sample_chain_replays_its_noise_and_noise_last():
    "Planted bug `noise_last` (sample_chain ignores it): each step is mean + sqrt(sigma2 gamma_i) z_i with z replayed from the same seed."
    g = f64(0.1, 0.2, 0.3)
    t = f64(0., 0.25, 0.5, 1.)
    x0 = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean_fn = lambda x, s: 0.5 * x + s          # s: the time the step sees
    for noise_last in (True, False):
        for sigma2 in (2., 0.5):
            out = sample_chain(mean_fn, x0, t, g, generator=torch.Generator().manual_seed(7), noise_last=noise_last,
                               sigma2=sigma2, path=True)
            z = torch.Generator().manual_seed(7)
            y, expect = x0, [x0]
            for i in range(3):
                y = 0.5 * y + t[i]
                if noise_last or i < 2: y = y + math.sqrt(sigma2 * g[i].item()) * torch.randn(y.shape, generator=z, dtype=y.dtype)
                expect.append(y)
            torch.testing.assert_close(out, torch.stack(expect), rtol=0, atol=1e-12)
    # the drift form: x + gamma v(x, t); sigma2 = 0 is an ODE (no noise drawn)
    out = sample_chain(lambda x, s: -x + s, x0, t, g, drift=True, sigma2=0.)
    y = x0
    for i in range(3): y = y + g[i] * (-y + t[i])
    torch.testing.assert_close(out, y, rtol=0, atol=1e-12)


def test_sample_chain_chunks_and_callback():
    "Chunks simulate the same chains (deterministic chain: bitwise); the callback sees every step of every row."
    g, t = f64(0.1, 0.2), f64(0., 0.5, 1.)
    x0 = torch.arange(14, dtype=torch.float64).reshape(7, 2)
    seen = []
    full = sample_chain(lambda x, s: 0.9 * x + s, x0, t, g, sigma2=0., path=True)
    part = sample_chain(lambda x, s: 0.9 * x + s, x0, t, g, sigma2=0., path=True, chunk=3,
                        callback=lambda i, x, m, xn, rows: seen.append((i, rows.start, rows.stop, len(x))))
    assert torch.equal(full, part) and full.shape == (3, 7, 2)
    assert seen == [(0, 0, 3, 3), (1, 0, 3, 3), (0, 3, 6, 3), (1, 3, 6, 3), (0, 6, 7, 1), (1, 6, 7, 1)]
    assert torch.equal(sample_chain(lambda x, s: 0.9 * x + s, x0, t, g, sigma2=0., chunk=3), full[-1])
    with pytest.raises(ValueError, match="sigma2"): sample_chain(lambda x, s: x, x0, t, g, sigma2=-1.)
    with pytest.raises(ValueError, match="t has 1 entries"): sample_chain(lambda x, s: x, x0, t[:1], g)


def test_reference_chain_moments_against_monte_carlo():
    "x_N of the reference chain from x_0 = 0: mean 0 and variance v of `reference_transition`, within 5 standard errors."
    sched = Schedule.from_params(6, 0.05, 0.2)
    ref = ReferenceMean(sched, mean_final=0.5, var_final=1.)
    n = 40_000
    x0 = torch.zeros(n, 1, dtype=torch.float64)
    xN = sample_chain(ref, x0, *sched.forward_grid(), generator=torch.Generator().manual_seed(0))
    a, v = reference_transition(sched, 1.)
    means, covs = reference_moments(sched, f64(0.), torch.eye(1, dtype=torch.float64) * 1e-12, 0.5, 1.)
    assert abs(covs[-1, 0, 0] - v) < 1e-9 and abs(means[-1, 0] - (1 - a) * 0.5) < 1e-12
    se_m, se_v = math.sqrt(v / n), v * math.sqrt(2 / n)
    assert abs(xN.mean() - (1 - a) * 0.5) < 5 * se_m, (xN.mean(), (1 - a) * 0.5)
    assert abs(xN.var() - v) < 5 * se_v, (xN.var(), v)
    # without noise on the last step the variance is v - 2 gamma_N: 5 SE apart from v, so the check above can fail
    xN = sample_chain(ref, x0, *sched.forward_grid(), generator=torch.Generator().manual_seed(0), noise_last=False)
    last = 2 * sched.gammas[-1].item()
    assert abs(xN.var() - (v - last)) < 5 * se_v and last > 10 * se_v


def test_schedule_and_reference_mean_by_hand():
    "gamma_schedule's symmetric halves, the times, the grids in travel order, and ReferenceMean's step x - gamma_k (x - mu) / sigma^2."
    torch.testing.assert_close(gamma_schedule(5, 0.1, 0.3), f64(0.1, 0.2, 0.3, 0.2, 0.1), rtol=0, atol=1e-15)
    torch.testing.assert_close(gamma_schedule(4, 0.1, 0.3), f64(0.1, 0.3, 0.3, 0.1), rtol=0, atol=1e-15)
    torch.testing.assert_close(gamma_schedule(3, 0.01, 1., "geomspace"), f64(0.01, 1., 0.01), rtol=1e-12, atol=0)
    s = Schedule(f64(0.1, 0.3, 0.2))
    torch.testing.assert_close(s.times, f64(0., 0.1, 0.4, 0.6))
    assert s.T == pytest.approx(0.6) and s.num_steps == 3
    torch.testing.assert_close(s.forward_grid()[0], f64(0., 1 / 6, 4 / 6, 1.))
    torch.testing.assert_close(s.backward_grid()[0], f64(1., 4 / 6, 1 / 6, 0.))
    torch.testing.assert_close(s.backward_grid()[1], f64(0.2, 0.3, 0.1))
    ref = ReferenceMean(s, mean_final=1., var_final=2.)
    x = f64(3., -1.)[:, None]
    for k, tk in enumerate(s.t[:-1]):
        torch.testing.assert_close(ref(x, tk), x - s.gammas[k] * (x - 1.) / 2., rtol=0, atol=1e-15)
    torch.testing.assert_close(ref(x, s.t[:2]), x - s.gammas[:2, None] * (x - 1.) / 2., rtol=0, atol=1e-15)
    a, v = reference_transition(s, 2.)
    al = 1 - s.gammas / 2
    assert abs(a - al.prod()) < 1e-15
    assert abs(v - (2 * 0.1 * al[1]**2 * al[2]**2 + 2 * 0.3 * al[2]**2 + 2 * 0.2)) < 1e-15
    with pytest.raises(ValueError, match="var_final"): ReferenceMean(s, var_final=0.3)


# ---------------------------------------------------------------- 03 reversal

def test_mean_matching_target_regresses_to_the_exact_backward_mean():
    """Planted bug `mm_sign` (target with a flipped sign). For one reference step x' = a x + N(0, 2 gamma) from x ~ N(0, s),
    the regression of the target x' + F(x) - F(x') on x' is x' + a (E[x|x'] - x'): slope 1 + a (A_rev - 1) with A_rev the
    exact backward kernel's (`gaussian_backward_kernel`). Least squares on n pairs: within 5 standard errors."""
    gam, s, n = 0.2, 0.1, 100_000      # data far from the stationary law: the backward mean differs from the forward
    a = 1 - gam
    F = lambda x, t: a * x
    g = torch.Generator().manual_seed(0)
    x = math.sqrt(s) * torch.randn(n, 1, generator=g, dtype=torch.float64)
    xn = a * x + math.sqrt(2 * gam) * torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = mean_matching_target(F, x, xn, torch.tensor(0.))
    A_rev, b_rev, cov_rev = gaussian_backward_kernel(f64(0.), torch.eye(1, dtype=torch.float64) * s, a, 0., 2 * gam)
    slope = ((xn * y).sum() / (xn * xn).sum()).item()
    resid = y - slope * xn
    se = math.sqrt(resid.var().item() / (xn * xn).sum().item())
    expect = 1 + a * (A_rev.item() - 1)
    assert abs(slope - expect) < 5 * se, (slope, expect, se)
    assert abs(expect - 1) > 50 * se                        # a wrong sign (slope 1 - a (A_rev - 1)) is far outside
    # the exact backward kernel itself: Bayes' rule in closed form
    v1 = a * a * s + 2 * gam
    assert abs(A_rev.item() - a * s / v1) < 1e-12 and abs(cov_rev.item() - (s - a * a * s * s / v1)) < 1e-12
    # the other targets and the loss
    torch.testing.assert_close(score_matching_target(F, x[:4], xn[:4], 0., gam), (a * x[:4] - xn[:4]) / (2 * gam))
    loss = mean_matching_loss(lambda z, t: z + 1, torch.zeros(3, 2), 0., torch.zeros(3, 2))
    torch.testing.assert_close(loss, torch.ones(3))


# ---------------------------------------------------------------- 09 trainer: EMA against its formula

class Quadratic(Solver):
    "One linear network fitted to y = 2 x; its EMA copy kept by the trainer."
    def __init__(self):
        torch.manual_seed(0)
        self.net = nn.Linear(2, 2)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
    def trained(self, iteration, stage): return self.net, self.ema
    def batch(self, n, generator): return (torch.randn(n, 2, generator=generator),)
    def loss(self, net, batch): return ((net(batch[0]) - 2 * batch[0]) ** 2).mean(1)


class Record(Callback):
    order = 0     # before the EMA (order 10): sees the weights right after the optimiser step
    def __init__(self): self.weights = []
    def after_step(self, tr): self.weights.append([p.detach().clone() for p in tr.solver.net.parameters()])


@pytest.mark.parametrize("rate", [0.9, 0.5])
def test_ema_against_its_formula(rate):
    """Planted bug `ema_rate` (rate where 1 - rate belongs). Hand-computed: after update u (counted over the run),
    ema <- r_u ema + (1 - r_u) w_u with r_u = min(rate, (1 + u) / (10 + u)) and w_u the weights after that step."""
    solver, rec = Quadratic(), Record()
    ema = [p.detach().clone() for p in solver.ema.parameters()]
    Trainer(solver, iterations=2, steps=6, batch_size=8, block=3, lr=0.05, ema_rate=rate, callbacks=[rec]).fit()
    assert len(rec.weights) == 12
    for u, w in enumerate(rec.weights):
        r = min(rate, (1 + u) / (10 + u))
        ema = [r * e + (1 - r) * p for e, p in zip(ema, w)]
    for e, p in zip(ema, solver.ema.parameters()): torch.testing.assert_close(p, e, rtol=0, atol=1e-6)
    # the moving average is not the network itself (the check above could not pass with ema = net)
    assert max((e - w).abs().max() for e, w in zip(ema, rec.weights[-1])) > 1e-3


def test_ema_rate_zero_copies_the_network():
    solver = Quadratic()
    Trainer(solver, iterations=1, steps=4, batch_size=8, block=2, lr=0.05, ema_rate=0.).fit()
    for e, p in zip(solver.ema.parameters(), solver.net.parameters()): assert torch.equal(e, p)


def test_trainer_learning_rate_and_position():
    "Cosine decay from lr to lr * lr_decay; the position after fit; the per-block loss log."
    tr = Trainer(Quadratic(), iterations=1, steps=10, batch_size=4, block=5, lr=0.1, lr_decay=0.2)
    assert tr.lr_at(0) == pytest.approx(0.1) and tr.lr_at(10) == pytest.approx(0.02) and tr.lr_at(5) == pytest.approx(0.06)
    tr.fit()
    assert tr.position == (1, 0, 0)


# ---------------------------------------------------------------- 10 ipf: cache times and DSB's probability flow

class TimeProbe(nn.Module):
    "A mean function that adds `scale * t` to x: the time it was given shows in its output."
    def __init__(self, scale): super().__init__(); self.scale = scale; self.w = nn.Parameter(torch.zeros(()))
    def forward(self, x, t): return x + self.scale * torch.as_tensor(t).to(x) + self.w


def test_build_cache_stores_states_targets_and_times_of_the_states():
    """Planted bug `cache_t_build`. Each cache entry i is (x_{i+1}, target, t_{i+1}): the state after step i with the
    time of that state. Replayed with the same generator: x_{i+1} = F(x_i, t_i) + sqrt(2 gamma_i) z."""
    t, g = f64(0., 0.2, 0.6, 1.), f64(0.1, 0.2, 0.1)
    F = lambda x, s: 0.8 * x + s
    x0 = torch.ones(4, 1, dtype=torch.float64)
    c = build_cache(F, x0, t, g, generator=torch.Generator().manual_seed(3))
    z, y, xs, tg = torch.Generator().manual_seed(3), x0, [], []
    for i in range(3):
        y_next = F(y, t[i]) + math.sqrt(2 * g[i].item()) * torch.randn(y.shape, generator=z, dtype=y.dtype)
        xs.append(y_next); tg.append(y_next + F(y, t[i]) - F(y_next, t[i])); y = y_next
    torch.testing.assert_close(c.x, torch.cat(xs), rtol=0, atol=1e-12)
    torch.testing.assert_close(c.target, torch.cat(tg), rtol=0, atol=1e-12)
    torch.testing.assert_close(c.t, t[1:], rtol=0, atol=0)
    assert c.npar == 4 and c.num_steps == 3
    xb, tb_target, tb = c.sample(50, torch.Generator().manual_seed(0))
    step = torch.searchsorted(t[1:], tb)
    assert torch.equal(t[1:][step], tb)
    for i in range(3):   # a batch row of step k holds a state of step k
        rows = step == i
        assert all((xs[i] == r).all(1).any() for r in xb[rows])


def _dsb(F, B, sched):
    return DSB(Direction("forward", nn.Identity(), lambda n, g: torch.zeros(n, 1, dtype=torch.float64), sched.forward_grid(), ema=F),
               Direction("backward", nn.Identity(), lambda n, g: torch.zeros(n, 1, dtype=torch.float64), sched.backward_grid(), ema=B),
               ReferenceMean(sched), cache_npar=4)


class Keep(Callback):
    "Stop after the first refresh of each stage and keep the cache the solver built."
    def __init__(self): self.caches = []
    def after_step(self, tr): self.caches.append((tr.stage, tr.solver.cache))


def test_dsb_training_cache_has_the_times_of_its_states():
    """Planted bug `cache_t_refresh` (DSB.refresh's cache times shifted by one): stage 0 trains the backward network
    on forward states x_{k+1} at t_{k+1}; stage 1 the forward network on backward states at the backward grid's times."""
    sched = Schedule(f64(0.1, 0.2, 0.3))
    solver = DSB(Direction("forward", TimeProbe(0.), lambda n, g: torch.zeros(n, 1), sched.forward_grid()),
                 Direction("backward", TimeProbe(0.), lambda n, g: torch.zeros(n, 1), sched.backward_grid()),
                 ReferenceMean(sched), cache_npar=4)
    keep = Keep()
    Trainer(solver, iterations=1, steps=1, batch_size=4, block=1, ema_rate=0., callbacks=[keep]).fit()
    (s0, c0), (s1, c1) = keep.caches
    torch.testing.assert_close(c0.t.double(), sched.forward_grid()[0][1:], rtol=0, atol=1e-7)
    torch.testing.assert_close(c1.t.double(), sched.backward_grid()[0][1:], rtol=0, atol=1e-7)
    assert c0.x.shape == (12, 1) and c0.npar == 4


def test_dsb_probability_flow_uses_forward_at_t_k_and_backward_at_t_k_plus_1():
    """Planted bug `dsbflow_index`. DSB's flow step k: x + (F(x, t_k) - B(x, t_{k+1})) / 2 toward the prior, and the
    reverse order of steps toward the data. With F = x + t and B = x + 10 t the path is a hand-computed sum."""
    sched = Schedule(f64(0.1, 0.3, 0.2))       # t = 0, 1/6, 2/3, 1
    solver = _dsb(TimeProbe(1.), TimeProbe(10.), sched)
    t = sched.t
    half = [(t[k] - 10 * t[k + 1]).item() / 2 for k in range(3)]
    zero = torch.zeros(1, 1, dtype=torch.float64)
    up = sample(solver, zero, to_data=False, sampler="ode", path=True).flatten()
    torch.testing.assert_close(up, f64(0., half[0], half[0] + half[1], sum(half)), rtol=0, atol=1e-12)
    down = sample(solver, zero, to_data=True, sampler="ode", path=True).flatten()
    torch.testing.assert_close(down, f64(0., -half[2], -half[2] - half[1], -sum(half)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="ode_steps=7"): solver.flow(True, steps=7)
    # the SDE sampler: the backward EMA on the backward grid, no noise on the last step
    ch = solver.chain(True)
    assert ch.noise_last is False and ch.fn is solver.backward.ema and torch.equal(ch.t, sched.backward_grid()[0])
    ch = solver.chain(False)
    assert ch.noise_last is True and ch.fn is solver.forward.ema and torch.equal(ch.gammas, sched.forward_grid()[1])


# ---------------------------------------------------------------- 16 dsbm: loss weight and ODE sampler

def _gauss(d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(d, generator=g, dtype=torch.float64), M @ M.T / d + 0.3 * torch.eye(d, dtype=torch.float64)


class LinearDrift(nn.Module):
    "The exact Markovian-projection drift K(t) x + c(t) of `markov_drift_gaussian`, as a network of normalised time."
    def __init__(self, ref, coupling, direction):
        super().__init__(); self.ref, self.coupling, self.direction = ref, coupling, direction
    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1) * self.ref.T
        K, c = markov_drift_gaussian(self.ref, self.coupling, t, self.direction)
        if K.shape[0] == 1: return x @ K[0].T + c[0]
        return torch.einsum("bij,bj->bi", K, x) + c


def _dsbm(ref, coupling, steps):
    d = coupling.dim
    fw = Direction("forward", nn.Identity(), None, uniform_grid(steps, ref.T, "forward"), ema=LinearDrift(ref, coupling, "forward"))
    bw = Direction("backward", nn.Identity(), None, uniform_grid(steps, ref.T, "backward"), ema=LinearDrift(ref, coupling, "backward"))
    return DSBM(fw, bw, ref, ode_steps=steps)


def _affine_map(chain_sample, d):
    "The affine map x -> M x + m of a deterministic linear sampler, read off at 0 and the unit vectors."
    pts = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
    out = chain_sample(pts)
    return (out[1:] - out[0]).T, out[0]


def test_dsbm_ode_sampler_is_euler_on_probability_flow_gaussian():
    """Planted bug `dsbm_ode_swap` (forward and backward nets swapped). With the exact drifts of 10_imf as networks,
    DSBM's ODE sampler must be Euler's method on `probability_flow_gaussian`'s velocity (f - b)/2 on the same grid:
    equal to float64 rounding. The reference Euler map is built here from U(t), u(t) directly."""
    m0, S0 = _gauss(2, 0)
    m1, S1 = _gauss(2, 1)
    ref = LinearReference.ou(0.5)
    cp = GaussianCoupling.independent(m0, S0, m1, S1)
    steps = 8
    solver = _dsbm(ref, cp, steps)
    for to_data in (False, True):
        M, m = _affine_map(lambda x: sample(solver, x, to_data=to_data, sampler="ode"), 2)
        t, gam = uniform_grid(steps, ref.T, "backward" if to_data else "forward")
        U, u = probability_flow_gaussian(ref, cp, t[:-1] * ref.T)
        sign = -1. if to_data else 1.
        Me, me = torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
        for i in range(steps):
            step = torch.eye(2, dtype=torch.float64) + sign * gam[i] * U[i]
            Me, me = step @ Me, step @ me + sign * gam[i] * u[i]
        torch.testing.assert_close(M, Me, rtol=0, atol=1e-12)
        torch.testing.assert_close(m, me, rtol=0, atol=1e-12)
    # and the velocity is not symmetric in the two drifts (a swap would flip it): U is far from zero
    assert U.abs().max() > 0.1


def test_dsbm_sde_sampler_and_chains():
    m0, S0 = _gauss(2, 0)
    ref = LinearReference.ou(0.5)
    solver = _dsbm(ref, GaussianCoupling.independent(m0, S0, m0, S0), 4)
    ch = solver.chain(True)
    assert ch.fn is solver.backward.ema and ch.noise_last is False and ch.drift and ch.sigma2 == pytest.approx(2.)
    ch = solver.chain(False)
    assert ch.fn is solver.forward.ema and ch.noise_last is True
    assert solver.flow(True, steps=3).num_steps == 3 and solver.flow(False).num_steps == 4


@pytest.mark.parametrize("forward_stage", [True, False])
def test_dsbm_batch_targets_and_loss_weight(forward_stage):
    """Planted bug `dsbm_weight` (t and T - t swapped). The forward target's noise is sigma^2 a_s / v_s (x_T - E[x_T | x_t]),
    s = T - t, of variance ~ sigma^2 / s near t = T; the weight v_{T-t} / sigma^2 (forward) or v_t / sigma^2 (backward)
    keeps the weighted loss of the exact drift bounded at both ends. Checked: the weight's formula, the bridge sample's
    law (5 SE), and that the weighted loss of the exact drift is at least 3x below the unweighted one near the far end."""
    m0, S0 = _gauss(1, 0)
    ref = LinearReference.ou(1.0)
    solver = DSBM(Direction("forward", nn.Identity(), None, uniform_grid(4, 1.0, "forward")),
                  Direction("backward", nn.Identity(), None, uniform_grid(4, 1.0, "backward")), ref, t_margin=1e-3)
    n = 20_000
    g = torch.Generator().manual_seed(0)
    x0 = m0 + S0.sqrt() * torch.randn(n, 1, generator=g, dtype=torch.float64)
    xT = torch.randn(n, 1, generator=g, dtype=torch.float64)
    solver.pairs, solver.forward_stage = (x0, xT), forward_stage
    xt, tn, target, w = solver.batch(n, torch.Generator().manual_seed(1))
    t = tn.double() * ref.T
    far = ref.T - t if forward_stage else t           # time left to the end the target points to
    torch.testing.assert_close(w.double(), ref.transition(far)[1] / ref.sigma ** 2, rtol=1e-12, atol=0)
    assert (tn > 0).all() and (tn < 1).all() and tn.min() < 0.01 and tn.max() > 0.99
    # the loss is the weighted squared error
    net = lambda x, s: torch.zeros_like(x)
    torch.testing.assert_close(solver.loss(net, (xt, tn, target, w)), w * target.pow(2).mean(1))
    # near the far end (its last 2 %), the exact drift's weighted loss is bounded; unweighted it blows up
    cp = GaussianCoupling.independent(m0, S0, torch.zeros(1, dtype=torch.float64), torch.eye(1, dtype=torch.float64))
    exact = LinearDrift(ref, cp, "forward" if forward_stage else "backward")
    near = far < 0.02 * ref.T
    resid = (exact(xt[near], tn[near]) - target[near]).pow(2).mean(1)
    assert (w[near] * resid).mean() * 3 < resid.mean() and (w[near] * resid).mean() < 3 * ref.sigma ** 2


# ---------------------------------------------------------------- 08 trainer: the optimiser state travels with the checkpoint

class Saved(Quadratic):
    "Quadratic with its weights in its state (what a real solver's state_dict holds)."
    def state_dict(self): return {"net": self.net.state_dict(), "ema": self.ema.state_dict()}
    def load_state_dict(self, s): self.net.load_state_dict(s["net"]); self.ema.load_state_dict(s["ema"])


class StopAt(Callback):
    "Keep the trainer's state at the block boundary of step `at` and stop there (a kill right after a checkpoint)."
    def __init__(self, at): self.at, self.state = at, None
    def before_block(self, tr):
        if tr.step == self.at and self.state is None:
            self.state = copy.deepcopy(tr.state_dict()); raise CancelFit()


def test_resume_from_state_dict_continues_adam_exactly():
    """Planted bug `optimizer_state` (the checkpoint without the optimiser's state). Adam's moment estimates are part
    of the position: a trainer restored from the state of step 4 ends with the uninterrupted run's weights (seeds come
    from the position, so bitwise up to float rounding); with Adam restarted, the first steps after the resume differ."""
    kw = dict(iterations=1, steps=8, batch_size=8, block=2, lr=0.05, lr_decay=1.)
    full = Saved(); Trainer(full, **kw).fit()
    stop = StopAt(4); Trainer(Saved(), callbacks=[stop], **kw).fit()
    assert stop.state is not None and stop.state["position"] == [0, 0, 4]
    resumed = Saved(); tr = Trainer(resumed, **kw); tr.load_state_dict(stop.state); tr.fit()
    for a, b in zip(full.net.parameters(), resumed.net.parameters()): torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    # the check can fail: the same resume with Adam restarted ends elsewhere
    fresh = Saved(); tr = Trainer(fresh, **kw); tr.load_state_dict({**stop.state, "optimizer": None}); tr.fit()
    assert max((a - b).abs().max() for a, b in zip(full.net.parameters(), fresh.net.parameters())) > 1e-4
