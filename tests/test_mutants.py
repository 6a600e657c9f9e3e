"""Exact checks of the core modules that the engine tests do not reach (gaussian, imf, metrics, checkpoint): each compares
a function with an independent computation (hand formula, Gaussian conditioning, a finite-difference Fokker-Planck
equation, a second implementation in another module). Part of bench/mutation.py's fast subset: seconds in all."""
import math
import re

import pytest
import torch

from dsb.checkpoint import (BACKUP, CHECKPOINT, STAGE, UNREADABLE, NONFINITE, Checkpointer, load_checkpoint, save_checkpoint,
                            set_aside_stage)
from dsb.gaussian import (GaussianChain, dsb_gaussian_limit, dsb_ipf_gaussian, gaussian_problem, ipf_gaussian,
                          mean_matching_reversal, reference_chain, time_reversal)
from dsb.imf import (GaussianCoupling, LinearReference, bridge_sample, brownian_bridge_sample, imf_gaussian, linear_sde_moments,
                     markov_drift_gaussian, markov_projection_gaussian, ou_bridge_sample, probability_flow_gaussian,
                     reciprocal_moments)
from dsb import metrics as M
from dsb.reference import Schedule
from dsb.reversal import gaussian_backward_kernel
from dsb.static import gaussian_sb_cross_cov

f64 = torch.float64


def _rng(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda *s: torch.randn(*s, generator=g, dtype=f64)


def _chain(d=3, N=4, seed=0):
    r, eye = _rng(seed), torch.eye(d, dtype=f64)
    L, Mx = r(N, d, d) * 0.3, r(d, d)
    return GaussianChain(A=eye + 0.4 * r(N, d, d), b=r(N, d), Q=L @ L.mT + 0.1 * eye, mean0=r(d), cov0=Mx @ Mx.T / d + 0.2 * eye)


def _path_moments(c: GaussianChain):
    "Means and covariances of the whole path from its linear map x_k = L_k (x_0, eps_0, ..., eps_{N-1}) + c_k (an independent route)."
    N, d = c.num_steps, c.dim
    D = d * (N + 1)
    Sig = torch.zeros(D, D, dtype=f64)
    Sig[:d, :d] = c.cov0
    for k in range(N): Sig[d * (k + 1):d * (k + 2), d * (k + 1):d * (k + 2)] = c.Q[k]
    L, m = [torch.zeros(d, D, dtype=f64)], [c.mean0]
    L[0][:, :d] = torch.eye(d, dtype=f64)
    for k in range(N):
        E = torch.zeros(d, D, dtype=f64); E[:, d * (k + 1):d * (k + 2)] = torch.eye(d, dtype=f64)
        L.append(c.A[k] @ L[-1] + E); m.append(c.A[k] @ m[-1] + c.b[k])
    return torch.stack(m), [[Li @ Sig @ Lj.T for Lj in L] for Li in L]


def test_gaussian_chain_moments_match_the_path_map():
    c = _chain()
    m, C = _path_moments(c)
    means, covs = c.marginals()
    assert torch.allclose(means, m, atol=1e-12) and all(torch.allclose(covs[k], C[k][k], atol=1e-12) for k in range(c.num_steps + 1))
    assert all(torch.allclose(c.cross_covs()[k], C[0][k], atol=1e-12) for k in range(c.num_steps + 1))
    assert torch.allclose(c.coupling_cross_cov(), C[0][-1], atol=1e-12) and (c.num_steps, c.dim) == (4, 3)
    c2 = c.with_start(1.5, 2.)
    assert torch.equal(c2.mean0, torch.full((3,), 1.5, dtype=f64)) and torch.equal(c2.cov0, 2 * torch.eye(3, dtype=f64))
    assert torch.equal(c2.A, c.A)


def test_gaussian_chain_sample_has_its_moments():
    "Empirical means and covariances of 20000 paths within 5 standard errors of the exact ones."
    c, n = _chain(d=2, N=3, seed=1), 20000
    x = c.sample(n, torch.Generator().manual_seed(0))
    assert x.shape == (4, n, 2) and x.dtype == f64
    means, covs = c.marginals()
    for k in range(4):
        S = covs[k]
        assert ((x[k].mean(0) - means[k]).abs() < 5 * (S.diagonal() / n).sqrt()).all()
        se = ((S.diagonal()[:, None] * S.diagonal()[None] + S ** 2) / n).sqrt()
        assert ((torch.cov(x[k].T) - S).abs() < 5 * se).all()
    cross = (x[0] - x[0].mean(0)).T @ (x[-1] - x[-1].mean(0)) / (n - 1)
    S0, SN = covs[0].diagonal(), covs[-1].diagonal()
    assert ((cross - c.coupling_cross_cov()).abs() < 5 * ((S0[:, None] * SN[None] + c.coupling_cross_cov() ** 2) / n).sqrt()).all()


def test_time_reversal_is_gaussian_conditioning_and_an_involution():
    c = _chain()
    r = time_reversal(c)
    means, covs = c.marginals()
    rm, rc = r.marginals()
    assert torch.allclose(rm, means.flip(0), atol=1e-10) and torch.allclose(rc, covs.flip(0), atol=1e-10)
    assert torch.allclose(r.coupling_cross_cov(), c.coupling_cross_cov().T, atol=1e-10)
    for k in range(c.num_steps):   # step k of the reversed chain is p(x_{N-1-k} | x_{N-k}), reversal's own kernel
        j = c.num_steps - 1 - k
        A, b, Q = gaussian_backward_kernel(means[j], covs[j], c.A[j], c.b[j], c.Q[j])
        assert torch.allclose(r.A[k], A, atol=1e-10) and torch.allclose(r.b[k], b, atol=1e-10) and torch.allclose(r.Q[k], Q, atol=1e-10)
    rr = time_reversal(r)
    for name in ("A", "b", "Q", "mean0", "cov0"): assert torch.allclose(getattr(rr, name), getattr(c, name), atol=1e-9), name


def test_mean_matching_reversal_by_hand():
    "DSB's reversal: mean x_{k+1} + F(x_k) - F(x_{k+1}) regressed on x_{k+1}, i.e. (I - A + A Abar) x + A bbar; noise Q kept."
    c = _chain(seed=2)
    means, covs = c.marginals()
    r = mean_matching_reversal(c)
    eye = torch.eye(3, dtype=f64)
    for k in range(4):
        j = 3 - k
        Ab, bb, _ = gaussian_backward_kernel(means[j], covs[j], c.A[j], c.b[j], c.Q[j])
        assert torch.allclose(r.A[k], eye - c.A[j] + c.A[j] @ Ab, atol=1e-10) and torch.allclose(r.b[k], c.A[j] @ bb, atol=1e-10)
        assert torch.equal(r.Q[k], c.Q[j])
    assert torch.allclose(r.mean0, means[-1]) and torch.allclose(r.cov0, covs[-1])


def test_reference_chain_and_problem_by_hand():
    gam = torch.tensor([0.1, 0.2, 0.05], dtype=f64)
    c = reference_chain(Schedule(gam), torch.tensor([1., 2.]), torch.eye(2, dtype=f64), mean_final=torch.tensor([1., -1.]), var_final=2.)
    al = 1 - gam / 2
    assert torch.allclose(c.A, al[:, None, None] * torch.eye(2, dtype=f64)) and torch.allclose(c.Q, 2 * gam[:, None, None] * torch.eye(2, dtype=f64))
    assert torch.allclose(c.b, (gam / 2)[:, None] * torch.tensor([1., -1.], dtype=f64)) and torch.equal(c.mean0, torch.tensor([1., 2.], dtype=f64))
    g = torch.Generator().manual_seed(3)
    Mx = torch.randn(4, 4, generator=g, dtype=f64); m = torch.randn(4, generator=g, dtype=f64)
    m0, S0 = gaussian_problem(4, 3)
    assert torch.equal(m0, m) and torch.allclose(S0, Mx @ Mx.T / 4 + 0.1 * torch.eye(4, dtype=f64))


def _rel(A, B): return ((A - B).norm() / B.norm()).item()


def test_exact_ipf_and_dsb_agree_with_their_eigenbasis_recursions_and_reach_the_target():
    "ipf_gaussian / dsb_ipf_gaussian (full matrices) against dsb_gaussian_limit (scalar recursions in Sigma_0's eigenbasis)."
    m0, S0 = gaussian_problem(3, 1)
    sched, mu, var = Schedule(torch.full((8,), 0.1, dtype=f64)), torch.tensor([0.5, -0.2, 0.1], dtype=f64), 1.5
    a = (1 - 0.1 / var) ** 8
    ipf = ipf_gaussian(sched, m0, S0, mu, var, n_ipf=4)
    dsb = dsb_ipf_gaussian(sched, m0, S0, mu, var, n_ipf=4)
    for res, mean, noise in ((ipf, "exact", "exact"), (dsb, "matching", "fixed")):
        lim = dsb_gaussian_limit(sched, m0, S0, mu, var, mean=mean, noise=noise, max_iter=4, tol=0.)
        assert lim["n_iter"] == 4 and not lim["converged"]
        assert torch.allclose(lim["error"], res["error"], rtol=1e-8, atol=1e-12), (lim["error"], res["error"])
        assert torch.allclose(lim["cross_cov"], res["cross_cov"][-1], atol=1e-10)
        assert abs(lim["terminal_mean_error"] - res["terminal_mean_error"][-1]) < 1e-10
        assert abs(lim["terminal_cov_error"] - res["terminal_cov_error"][-1]) < 1e-10
        assert torch.allclose(res["target"], gaussian_sb_cross_cov(S0, var * torch.eye(3, dtype=f64), res["a"], res["v"]).to(f64))
    assert abs(ipf["a"] - a) < 1e-12
    # exact IPF: the forward and backward half-steps agree with their own couplings; the error falls
    assert (ipf["error"].diff() < 0).all() and ipf["error"][-1] < 0.05 * ipf["error"][0]
    fm, fc = ipf["forward"].marginals()
    assert torch.allclose(fm[0], m0) and torch.allclose(fc[0], S0)
    bm, bc = ipf["backward"].marginals()
    assert torch.allclose(bm[0], mu) and torch.allclose(bc[0], var * torch.eye(3, dtype=f64))
    assert torch.allclose(ipf["cross_cov_backward"][-1], ipf["backward"].coupling_cross_cov().T)
    # the exact fixed point: IPF's limit is the Schrodinger bridge's coupling, with exact terminal moments
    lim = dsb_gaussian_limit(sched, m0, S0, mu, var, mean="exact", noise="exact", tol=1e-9)
    assert lim["converged"] and lim["limit_error"] < 1e-7 and lim["terminal_cov_error"] < 1e-7 and lim["terminal_mean_error"] < 1e-5
    assert 0 < lim["rate"] < 1
    with pytest.raises(ValueError, match="mean must be"): dsb_gaussian_limit(sched, m0, S0, mean="exactly")
    with pytest.raises(ValueError, match="noise must be"): dsb_gaussian_limit(sched, m0, S0, noise="none")


# ---------------------------------------------------------------- imf

def test_linear_reference_transitions_by_hand():
    ou = LinearReference.ou(2., var_final=2., mean_final=0.5)
    assert ou.lam == 0.5 and abs(ou.sigma - math.sqrt(2)) < 1e-15 and float(ou.mean) == 0.5 and ou.T == 2.
    s = torch.tensor([0.3, 1.0], dtype=f64)
    a, v = ou.transition(s)
    assert torch.allclose(a, torch.exp(-0.5 * s)) and torch.allclose(v, 2 * (1 - torch.exp(-s)))
    aT, vT = ou.endpoint_transition()
    assert isinstance(aT, float) and abs(aT - math.exp(-1)) < 1e-14 and abs(vT - 2 * (1 - math.exp(-2))) < 1e-14
    br = LinearReference.brownian(3., 0.5)
    a, v = br.transition(s)
    assert torch.equal(a, torch.ones(2, dtype=f64)) and torch.allclose(v, 0.25 * s) and br.lam == 0
    assert torch.equal(br.times(1.5), torch.tensor([1.5], dtype=f64)) and torch.equal(br.times([0., 3.]), torch.tensor([0., 3.], dtype=f64))
    for bad in (-0.1, 3.1, float("nan"), []):
        with pytest.raises(ValueError, match="t must hold times in"): br.times(bad)
    with pytest.raises(ValueError, match="mean must be"): LinearReference(1., 1., 0., torch.ones(2, 2))
    with pytest.raises(ValueError, match="T must be a scalar"): LinearReference(torch.ones(2), 1.)


@pytest.mark.parametrize("ref", [LinearReference.ou(1.5, 2., 0.3), LinearReference.brownian(2., 0.7)])
def test_bridge_coefficients_are_gaussian_conditioning(ref):
    "x_t = a_t x_0 + noise v_t, x_T = a_s x_t + noise v_s (mu = 0 shifted): E[x_t | x_0, x_T] and Var by hand."
    t = torch.tensor([0.2, 0.9, 1.3], dtype=f64)
    lam, sig2 = ref.lam, ref.sigma ** 2
    tr = (lambda s: (torch.exp(-lam * s), sig2 * (1 - torch.exp(-2 * lam * s)) / (2 * lam))) if lam else (lambda s: (torch.ones_like(s), sig2 * s))
    (a_t, v_t), (a_s, v_s) = tr(t), tr(ref.T - t)
    vT = a_s ** 2 * v_t + v_s
    al, be, rho = ref.bridge(t)
    assert torch.allclose(be, v_t * a_s / vT) and torch.allclose(al, a_t - be * a_s * a_t) and torch.allclose(rho, v_t - v_t ** 2 * a_s ** 2 / vT)
    x0, xT = _rng(4)(3, 2), _rng(5)(3, 2)
    got = bridge_sample(ref, x0, xT, t, torch.Generator().manual_seed(7))
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(7), dtype=f64)
    mu = float(ref.mean)
    w = lambda c: c[:, None]
    assert torch.allclose(got, w(al) * x0 + w(be) * xT + w(1 - al - be) * mu + w(rho.sqrt()) * z)
    one = bridge_sample(ref, x0, xT, 0.9, torch.Generator().manual_seed(7))   # a scalar time: the same time for every row
    assert torch.allclose(one, al[1] * x0 + be[1] * xT + (1 - al[1] - be[1]) * mu + rho[1].sqrt() * z)
    assert torch.allclose(ref.bridge(0.)[0], torch.ones(1, dtype=f64)) and ref.bridge(ref.T)[2].abs().max() < 1e-15
    with pytest.raises(ValueError, match="same shape"): bridge_sample(ref, x0, xT[:2], 0.5)
    with pytest.raises(ValueError, match="one time per sample"): bridge_sample(ref, x0, xT, torch.ones(2))
    with pytest.raises(ValueError, match="batch dimension"): bridge_sample(ref, torch.tensor(1.), torch.tensor(1.), 0.5)


def test_bridge_wrappers():
    x0, xT = _rng(1)(4, 2), _rng(2)(4, 2)
    g = lambda: torch.Generator().manual_seed(3)
    assert torch.equal(brownian_bridge_sample(x0, xT, 0.4, 0.8, 2., g()), bridge_sample(LinearReference.brownian(2., 0.8), x0, xT, 0.4, g()))
    z = torch.randn(4, 2, generator=g(), dtype=f64)
    assert torch.allclose(brownian_bridge_sample(x0, xT, 0.5, 0.8, 2., g()), 0.75 * x0 + 0.25 * xT + (0.64 * 0.5 * 1.5 / 2) ** 0.5 * z)
    assert torch.equal(ou_bridge_sample(x0, xT, 0.4, 1., 2., 0.3, g()), bridge_sample(LinearReference.ou(1., 2., 0.3), x0, xT, 0.4, g()))


def _coupling(d=2, seed=0):
    r = _rng(seed)
    J = r(2 * d, 2 * d); J = J @ J.T / (2 * d) + 0.3 * torch.eye(2 * d, dtype=f64)
    return GaussianCoupling(r(d), J[:d, :d], r(d), J[d:, d:], J[:d, d:])


def test_gaussian_coupling_joint_swap_sample():
    c, n = _coupling(), 20000
    m, J = c.joint()
    assert torch.equal(m, torch.cat([c.mean0, c.mean1])) and torch.equal(J[:2, 2:], c.cross) and torch.equal(J[2:, :2], c.cross.T)
    assert torch.equal(J[:2, :2], c.cov0) and torch.equal(J[2:, 2:], c.cov1) and c.dim == 2
    s = c.swap()
    assert torch.equal(s.mean0, c.mean1) and torch.equal(s.cov0, c.cov1) and torch.equal(s.cross, c.cross.T) and torch.equal(s.cov1, c.cov0)
    x0, x1 = c.sample(n, torch.Generator().manual_seed(0))
    x = torch.cat([x0, x1], 1)
    assert x0.shape == (n, 2) and ((x.mean(0) - m).abs() < 5 * (J.diagonal() / n).sqrt()).all()
    se = ((J.diagonal()[:, None] * J.diagonal()[None] + J ** 2) / n).sqrt()
    assert ((torch.cov(x.T) - J).abs() < 5 * se).all()
    ind = GaussianCoupling.independent(c.mean0, c.cov0, c.mean1, c.cov1)
    assert torch.equal(ind.cross, torch.zeros(2, 2, dtype=f64))
    with pytest.raises(ValueError, match="positive semi-definite"): GaussianCoupling(c.mean0, c.cov0, c.mean1, c.cov1, 10 * c.cross + 5)


def test_reciprocal_moments_by_hand():
    ref, c = LinearReference.ou(1., 1.5, 0.4), _coupling(seed=1)
    t = torch.tensor([0., 0.35, 1.], dtype=f64)
    m, R = reciprocal_moments(ref, c, t)
    assert torch.allclose(m[0], c.mean0) and torch.allclose(R[0], c.cov0) and torch.allclose(m[2], c.mean1) and torch.allclose(R[2], c.cov1)
    al, be, rho = (u[1] for u in ref.bridge(t))
    assert torch.allclose(m[1], al * c.mean0 + be * c.mean1 + (1 - al - be) * 0.4)
    assert torch.allclose(R[1], al ** 2 * c.cov0 + be ** 2 * c.cov1 + al * be * (c.cross + c.cross.T) + rho * torch.eye(2, dtype=f64))


def _fd(ref, c, t, h=1e-5):
    (mp, Rp), (mm, Rm) = reciprocal_moments(ref, c, t + h), reciprocal_moments(ref, c, t - h)
    m, R = reciprocal_moments(ref, c, t)
    return m, R, (mp - mm) / (2 * h), (Rp - Rm) / (2 * h)


@pytest.mark.parametrize("ref", [LinearReference.ou(1., 1.5, 0.4), LinearReference.brownian(1.3, 0.8)])
def test_markov_drifts_solve_the_reciprocal_marginals_fokker_planck(ref):
    "The projection keeps the reciprocal marginals: dm/dt = K m + c, dR/dt = K R + R K^T + sigma^2 I (forward); the backward drift in u = T - t; the flow without noise."
    c = _coupling(seed=2)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=f64) * ref.T
    m, R, dm, dR = _fd(ref, c, t)
    eye = ref.sigma ** 2 * torch.eye(2, dtype=f64)
    K, k = markov_drift_gaussian(ref, c, t, "forward")
    assert torch.allclose(dm, (K @ m[..., None])[..., 0] + k, atol=1e-6) and torch.allclose(dR, K @ R + R @ K.mT + eye, atol=1e-6)
    Kb, kb = markov_drift_gaussian(ref, c, t, "backward")
    assert torch.allclose(-dm, (Kb @ m[..., None])[..., 0] + kb, atol=1e-6) and torch.allclose(-dR, Kb @ R + R @ Kb.mT + eye, atol=1e-6)
    U, u = probability_flow_gaussian(ref, c, t)
    assert torch.allclose(dm, (U @ m[..., None])[..., 0] + u, atol=1e-6) and torch.allclose(dR, U @ R + R @ U.mT, atol=1e-6)
    with pytest.raises(ValueError, match="direction must be"): markov_drift_gaussian(ref, c, t, "sideways")


def test_linear_sde_moments_match_the_ou_closed_form():
    lam, mu, sig, T = 0.7, torch.tensor([0.3, -1.], dtype=f64), 1.2, 1.5
    m0, S0 = torch.tensor([1., 2.], dtype=f64), torch.tensor([[1., 0.3], [0.3, 0.5]], dtype=f64)
    eye = torch.eye(2, dtype=f64)
    drift = lambda t: (-lam * eye.expand(len(t), 2, 2), (lam * mu).expand(len(t), 2))
    m, S, C = linear_sde_moments(drift, T, m0, S0, sig, n_steps=7)
    a, v = math.exp(-lam * T), sig ** 2 * (1 - math.exp(-2 * lam * T)) / (2 * lam)
    assert torch.allclose(m, a * m0 + (1 - a) * mu, atol=1e-12) and torch.allclose(S, a * a * S0 + v * eye, atol=1e-12)
    assert torch.allclose(C, a * S0, atol=1e-12)
    # a time-dependent rotation: an ODE (sigma = 0) that keeps |x|: covariance rotated, mean rotated by the integrated angle
    rot = lambda t: (torch.stack([torch.stack([0 * t, -2 * t], -1), torch.stack([2 * t, 0 * t], -1)], -2), torch.zeros(len(t), 2, dtype=f64))
    m, S, C = linear_sde_moments(rot, 1., m0, S0, 0., n_steps=64)
    th = 1.   # angle = int_0^1 2t dt
    Rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=f64)
    assert torch.allclose(m, Rot @ m0, atol=1e-9) and torch.allclose(S, Rot @ S0 @ Rot.T, atol=1e-9) and torch.allclose(C, S0 @ Rot.T, atol=1e-9)


def test_markov_projection_keeps_marginals_and_imf_reaches_the_bridge():
    ref, c = LinearReference.ou(1., 1., 0.), _coupling(seed=3)
    f = markov_projection_gaussian(ref, c, "forward", n_steps=64)
    assert torch.allclose(f.mean1, c.mean1, atol=1e-8) and torch.allclose(f.cov1, c.cov1, atol=1e-8) and torch.equal(f.cov0, c.cov0)
    b = markov_projection_gaussian(ref, c, "backward", n_steps=64)
    assert torch.allclose(b.mean0, c.mean0, atol=1e-8) and torch.allclose(b.cov0, c.cov0, atol=1e-8) and torch.equal(b.cov1, c.cov1)
    s = markov_projection_gaussian(ref, c, "forward", start=(c.mean0 + 1, c.cov0), n_steps=64)
    assert torch.allclose(s.mean0, c.mean0 + 1) and not torch.allclose(s.mean1, c.mean1, atol=1e-3)
    with pytest.raises(ValueError, match="direction must be"): markov_projection_gaussian(ref, c, "up")
    out = imf_gaussian(ref, c.mean0, c.cov0, c.mean1, c.cov1, n_iter=4, n_steps=32)
    target = gaussian_sb_cross_cov(c.cov0, c.cov1, *ref.endpoint_transition()).to(f64)
    assert torch.allclose(out["target"], target) and out["a"] == ref.endpoint_transition()[0]
    assert (out["error"].diff() < 0).all() and out["error"][-1] < 0.1 * out["error"][0]
    assert out["error"][-1] < out["error_backward"][-1] < out["error_backward"][0]
    assert abs(out["error"][-1] - _rel(out["cross_cov"][-1], target)) < 1e-12 and torch.equal(out["coupling"].cross, out["cross_cov"][-1])
    assert out["cov1_error"].max() < 1e-6 and out["cov0_error"].max() < 1e-6 and out["mean0_error"].max() < 1e-6 and out["mean1_error"].max() < 1e-6


# ---------------------------------------------------------------- metrics

def test_w2_1d_and_sliced_wasserstein_by_hand():
    u, v = torch.tensor([[0.], [1.]], dtype=f64), torch.tensor([[0.], [0.5], [1.]], dtype=f64)
    assert torch.allclose(M.w2_1d_squared(u, v), torch.tensor([1 / 12], dtype=f64)) and torch.allclose(M.w2_1d_squared(v, u), torch.tensor([1 / 12], dtype=f64))
    a, b = torch.tensor([[3., 0.], [1., 2.]], dtype=f64), torch.tensor([[0., 1.], [2., 5.]], dtype=f64)
    assert torch.allclose(M.w2_1d_squared(a, b), torch.tensor([(1 + 1) / 2, (1 + 9) / 2], dtype=f64))
    assert abs(M.sliced_wasserstein(a, b, projections=torch.eye(2)) - math.sqrt((1 + 5) / 2)) < 1e-12
    p = M.random_directions(3, 5, torch.Generator().manual_seed(0))
    th = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=f64)
    assert p.shape == (3, 5) and torch.allclose(p, th / th.norm(dim=0))
    x, y = _rng(0)(50, 3), _rng(1)(40, 3) + 1
    sw = M.sliced_wasserstein(x, y, n_proj=5, generator=torch.Generator().manual_seed(0))
    assert abs(sw - M.w2_1d_squared(x @ p, y @ p).mean().sqrt().item()) < 1e-12
    f = torch.tensor([[2., 1.], [0., 3.]], dtype=torch.float32)
    assert torch.equal(M.sort_columns(f), torch.tensor([[0., 1.], [2., 3.]])) and torch.equal(M.sort_columns(f.requires_grad_()).detach(), f.detach().sort(0).values)
    with pytest.raises(ValueError, match="projections must have shape"): M.sliced_wasserstein(a, b, projections=torch.eye(3))
    with pytest.raises(ValueError, match="same dimension"): M.sliced_wasserstein(a, b[:, :1])
    g = torch.Generator().manual_seed(1)   # noise_floor: two draws of the sampler, then the directions, all from one generator
    x, y = torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g)
    expect = M.sliced_wasserstein(x, y, n_proj=4, generator=g)
    assert M.noise_floor(lambda n, g: torch.randn(n, 2, generator=g), 30, n_proj=4, generator=torch.Generator().manual_seed(1)) == expect


def test_as_points():
    assert M.as_points("x", torch.arange(3)).shape == (3, 1) and M.as_points("x", torch.zeros(2, 3, 4)).shape == (2, 12)
    assert M.as_points("x", [1, 2]).dtype == f64
    with pytest.raises(ValueError, match="x must have a batch dimension"): M.as_points("x", 1.)
    with pytest.raises(ValueError, match="x needs at least 3 samples, got 2"): M.as_points("x", torch.zeros(2), 3)
    with pytest.raises(ValueError, match="x has non-finite"): M.as_points("x", torch.tensor([1., float("inf")]))


def _mmd(x, y, h, unbiased):
    k = lambda a, b: math.exp(-(a - b) ** 2 / (2 * h * h))
    n, m = len(x), len(y)
    if unbiased:
        kxx = sum(k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j) / (n * (n - 1))
        kyy = sum(k(a, b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j) / (m * (m - 1))
    else:
        kxx, kyy = sum(k(a, b) for a in x for b in x) / n ** 2, sum(k(a, b) for a in y for b in y) / m ** 2
    return kxx + kyy - 2 * sum(k(a, b) for a in x for b in y) / (n * m)


def test_energy_distance_mmd_and_bandwidth_by_hand():
    t = lambda *v: torch.tensor(v, dtype=f64)
    assert abs(M.energy_distance(t(0.), t(1.)) - 2) < 1e-12 and abs(M.energy_distance(t(0., 2.), t(1.)) - 1) < 1e-12
    assert M.energy_distance(t(0., 1.), t(1., 0.)) == 0
    x, y = [0., 1., 2.5], [0.5, 3.]
    for h in (0.7, 2.):
        for ub in (True, False):
            assert abs(M.mmd_rbf(t(*x), t(*y), h, ub) - _mmd(x, y, h, ub)) < 1e-12
    two = M.mmd_rbf(t(*x), t(*y), [0.7, 2.], True)   # several widths: the mean of their kernels
    k = lambda a, b: (math.exp(-(a - b) ** 2 / 0.98) + math.exp(-(a - b) ** 2 / 8)) / 2
    exp = sum(k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j) / 6 + k(*y) * 2 / 2 - 2 * sum(k(a, b) for a in x for b in y) / 6
    assert abs(two - exp) < 1e-12
    assert M.median_bandwidth(t(0., 1.), t(3.)) == 2 and M.median_bandwidth(t(1., 1.), t(1.)) == 1.
    assert abs(M.mmd_rbf(t(*x), t(*y)) - _mmd(x, y, M.median_bandwidth(t(*x), t(*y)), True)) < 1e-12
    big = torch.arange(3001, dtype=f64)   # 3002 pooled points, at most 1000 kept: every 4th
    assert M.median_bandwidth(big, big[:1]) == torch.pdist(torch.cat([big, big[:1]])[::4][:, None]).median().item()
    # chunked pair sums: the same value whatever the chunk
    a, b = _rng(0)(7, 2), _rng(1)(5, 2)
    fn = lambda d2: d2.sqrt()
    assert torch.allclose(M._mean_pairwise(a, b, fn, max_entries=5), torch.cdist(a, b).mean()) and torch.allclose(M._mean_pairwise(a, b, fn, 3), torch.cdist(a, b).mean())


def test_gaussian_distances_by_hand():
    m1, m2 = torch.tensor([1., 0.], dtype=f64), torch.tensor([0., 2.], dtype=f64)
    S1, S2 = torch.diag(torch.tensor([4., 1.], dtype=f64)), torch.diag(torch.tensor([1., 9.], dtype=f64))
    w2sq = 1 + 4 + (2 - 1) ** 2 + (1 - 3) ** 2
    assert abs(M.gaussian_w2(m1, S1, m2, S2) - math.sqrt(w2sq)) < 1e-12
    assert abs(M.bw2_uvp(m1, S1, m2, S2) - 100 * w2sq / 10) < 1e-10
    R = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=f64)   # commuting case rotated: the same distance
    assert abs(M.gaussian_w2(R @ m1, R @ S1 @ R.T, R @ m2, R @ S2 @ R.T) - math.sqrt(w2sq)) < 1e-10
    bw = M.bures_wasserstein2(torch.stack([m1, m2]), torch.stack([S1, S2]), torch.stack([m2, m2]), torch.stack([S2, S2]))
    assert torch.allclose(bw, torch.tensor([w2sq, 0.], dtype=f64), atol=1e-10)
    assert M.bures_wasserstein2(m1.float(), S1.float(), m2.float(), S2.float()).dtype == f64   # float64 whatever the inputs
    per, se = M.cbw2_uvp(torch.stack([m1, m2]), torch.stack([S1, S2]), torch.stack([m2, m2]), torch.stack([S2, S2]), total_var=5.)
    assert abs(per - 100 * w2sq / 5 / 2) < 1e-8 and abs(se - 100 * w2sq / 5 / 2 ** 0.5 / 2 ** 0.5) < 1e-8
    assert M.cbw2_uvp(m1[None], S1[None], m2[None], S2[None], 1.)[1] == 0.
    with pytest.raises(ValueError, match="must both have shape"): M.cbw2_uvp(m1, S1, m2, S2, 1.)
    with pytest.raises(ValueError, match="positive trace"): M.bw2_uvp(m1, S1, m2, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="dimensions differ"): M.gaussian_w2(m1, S1, m2[:1], S2[:1, :1])


def test_moment_helpers_by_hand():
    x = torch.tensor([[0., 1.], [2., 1.], [4., 4.]], dtype=f64)
    m, S = M.gaussian_fit(x)
    assert torch.allclose(m, torch.tensor([2., 2.], dtype=f64)) and torch.allclose(S, torch.tensor([[4., 3.], [3., 3.]], dtype=f64))
    m2, S2 = M.sample_moments(torch.stack([x, 2 * x]))
    assert torch.allclose(m2[1], 2 * m) and torch.allclose(S2[0], S) and torch.allclose(S2[1], 4 * S)
    y = torch.tensor([[1.], [0.], [2.]], dtype=f64)
    assert torch.allclose(M.coupling_moments(x, y), torch.tensor([[0.5 * ((-2) * 0 + 0 * -1 + 2 * 1)], [0.5 * ((-1) * 0 + (-1) * (-1) + 2 * 1)]], dtype=f64))
    with pytest.raises(ValueError, match="n >= 2 draws"): M.sample_moments(torch.zeros(1, 2))
    assert torch.equal(M.sample_moments(torch.tensor([[0., 1.], [2., 3.]]))[1], torch.full((2, 2), 2., dtype=f64))   # n = 2 is enough
    with pytest.raises(ValueError, match="x needs at least 2 samples, got 1"): M.gaussian_fit(torch.zeros(1, 2))
    c = M.coupling_moments(x, torch.cat([y, 2 * y], 1))
    assert c.shape == (2, 2) and torch.allclose(c[:, 1], 2 * c[:, 0]) and torch.allclose(c[:, :1], M.coupling_moments(x, y))
    with pytest.raises(ValueError, match="same chains"): M.coupling_moments(x, y[:2])


def test_knn_and_ratio_by_hand():
    real = torch.tensor([[0.], [1.], [3.], [10.]], dtype=f64)
    assert torch.equal(M.knn_radii(real, 1), torch.tensor([1., 1., 2., 7.], dtype=f64))
    assert torch.equal(M.knn_radii(real, 2), torch.tensor([3., 2., 3., 9.], dtype=f64))
    assert torch.equal(M._kth_neighbour(real, 1, max_entries=4), torch.tensor([1., 1., 2., 7.], dtype=f64))
    fake = torch.tensor([[0.5], [5.], [20.], [2.]], dtype=f64)
    # k = 1: real balls [0±1], [1±1], [3±2], [10±7]: fake 0.5, 5, 2 in, 20 out; fake radii 1.5, 3, 15, 1.5: real 0, 1, 3, 10 all in
    assert M.knn_precision_recall(real, fake, 1) == (0.75, 1.0)
    assert torch.equal(M._in_balls(fake, real, M.knn_radii(real, 1), max_entries=4), torch.tensor([True, True, False, True]))
    with pytest.raises(ValueError, match="same dimension"): M.knn_precision_recall(real, torch.zeros(4, 2), 1)
    r, se = M.ratio_se((2., 0.3), (4., 0.2))
    assert r == 0.5 and abs(se - math.sqrt(0.3 ** 2 + (0.5 * 0.2) ** 2) / 4) < 1e-15
    assert M.ratio_se((-2., 0.), (-4., 0.1))[1] == pytest.approx(0.5 * 0.1 / 4)
    with pytest.raises(ValueError, match="finite and non-zero"): M.ratio_se((1., 0.), (0., 0.))
    with pytest.raises(ValueError, match="must be >= 0"): M.ratio_se((1., -1.), (1., 0.))
    assert M._mean_se([1., 3.]) == (2., math.sqrt(2) / math.sqrt(2)) and M._mean_se([5.]) == (5., 0.)


def test_w2_exact_and_point_score_by_hand():
    pytest.importorskip("ot")
    t = lambda *v: torch.tensor(v, dtype=f64)[:, None]
    assert abs(M.w2_exact(t(0., 1.), t(1.2, 0.1)) - math.sqrt((0.01 + 0.04) / 2)) < 1e-12
    assert abs(M.w2_exact(t(0.), t(1., 3.)) - math.sqrt(5)) < 1e-12
    from dsb.core import derive_seed
    sampler = lambda n, g: torch.randn(n, 2, generator=g, dtype=f64)
    ps = M.PointScore(sampler, n=12, draws=2, k=2, seed=4)
    draw = lambda part, j: sampler(12, torch.Generator().manual_seed(derive_seed(4, part, j)))
    assert all(torch.equal(ps.held[j], draw(0, j)) for j in range(2))
    w2f = [M.w2_exact(draw(1, j), draw(0, j)) for j in range(2)]
    gen = [draw(2, j) for j in range(2)]
    w2 = [M.w2_exact(gen[j], draw(0, j)) for j in range(2)]
    out = ps(gen)
    assert out["w2"] == pytest.approx(sum(w2) / 2) and out["w2_floor"] == pytest.approx(sum(w2f) / 2)
    assert out["w2_se"] == pytest.approx(abs(w2[0] - w2[1]) / 2) and out["w2_ratio"] == pytest.approx(sum(w2) / sum(w2f))
    pr = [M.knn_precision_recall(draw(0, j), gen[j], 2) for j in range(2)]
    assert out["precision"] == pytest.approx((pr[0][0] + pr[1][0]) / 2) and out["recall"] == pytest.approx((pr[0][1] + pr[1][1]) / 2)
    with pytest.raises(ValueError, match="list of draws=2"): ps(gen[0])
    with pytest.raises(ValueError, match=r"generated\[1\] must have shape"): ps([gen[0], gen[1][:5]])
    with pytest.raises(ValueError, match="n must be >= k \\+ 2"): M.PointScore(sampler, n=3, k=2)
    with pytest.raises(ValueError, match="must return n=5 rows"): M.PointScore(lambda n, g: torch.zeros(4, 2), n=5, k=2)


# ---------------------------------------------------------------- checkpoint

def test_checkpoint_files_fallbacks_and_set_aside(tmp_path):
    notes = []
    assert load_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, {"position": [0, 0, 1], "w": torch.ones(2)})
    assert not (tmp_path / BACKUP).exists() and not (tmp_path / STAGE).exists()
    save_checkpoint(tmp_path, {"position": [0, 0, 2]}, stage_start=True)
    assert torch.load(tmp_path / BACKUP)["position"] == [0, 0, 1] and torch.load(tmp_path / STAGE)["position"] == [0, 0, 2]
    assert load_checkpoint(tmp_path)["position"] == [0, 0, 2]
    save_checkpoint(tmp_path, {"position": [0, 0, 3]})
    (tmp_path / CHECKPOINT).write_bytes(b"garbage")
    st = load_checkpoint(tmp_path, say=notes.append, set_aside=False)
    assert st["position"] == [0, 0, 2] and (tmp_path / CHECKPOINT).exists() and "no file was changed" in notes[-1]
    assert "checkpoint.pt is unreadable" in notes[-1] and "loaded checkpoint_prev.pt (iteration 1, stage 1, after 2 steps)" in notes[-1]
    st = load_checkpoint(tmp_path, say=notes.append)
    assert st["position"] == [0, 0, 2] and not (tmp_path / CHECKPOINT).exists() and (tmp_path / UNREADABLE).read_bytes() == b"garbage"
    assert f"kept as {UNREADABLE}" in notes[-1] and "resuming from checkpoint_prev.pt (iteration 1, stage 1, after 2 steps)" in notes[-1]
    (tmp_path / BACKUP).write_bytes(b""); (tmp_path / STAGE).write_bytes(b"x")
    with pytest.raises(RuntimeError, match="no readable checkpoint") as e: load_checkpoint(tmp_path, set_aside=False)
    assert "checkpoint_prev.pt: " in str(e.value) and "checkpoint_stage.pt: " in str(e.value) and "Start a fresh run" in str(e.value)
    # set_aside_stage: checkpoints since the stage began moved aside; the message names the stage's start
    d = tmp_path / "run"; d.mkdir()
    save_checkpoint(d, {"position": [1, 0, 0]}, stage_start=True); save_checkpoint(d, {"position": [1, 0, 5]})
    assert set_aside_stage(d) == "the start of iteration 2, stage 1"
    assert not (d / CHECKPOINT).exists() and not (d / BACKUP).exists() and torch.load(d / NONFINITE)["position"] == [1, 0, 5]
    assert torch.load(d / "checkpoint_prev_nonfinite.pt")["position"] == [1, 0, 0]
    e2 = tmp_path / "empty"; e2.mkdir()
    assert set_aside_stage(e2) == "the beginning of the run"


class _Tr:
    def __init__(self): self.position, self.step, self.block = (0, 0, 0), 0, 2
    def state_dict(self): return {"position": list(self.position), "step": self.step}


def test_checkpointer_saves_every_at_block_boundaries_and_after_stages(tmp_path):
    calls = []
    cb, tr = Checkpointer(tmp_path, every=4, extra={"cfg": 1}, guard=lambda: calls.append(1)), _Tr()
    cb.before_fit(tr); assert cb.last is None
    saved = []
    for step in range(0, 12, 2):
        tr.step, tr.position = step, (0, 0, step)
        cb.before_block(tr)
        if (tmp_path / CHECKPOINT).exists(): saved.append(torch.load(tmp_path / CHECKPOINT)["step"])
    assert sorted(set(saved)) == [4, 8] and len(calls) == 2 and torch.load(tmp_path / CHECKPOINT)["cfg"] == 1
    cb.after_stage(tr); assert torch.load(tmp_path / STAGE)["step"] == 10 and cb.last == (0, 0, 10)
    cb.after_stage(tr); assert len(calls) == 3   # same position: not saved twice
    cb2 = Checkpointer(tmp_path); tr.position = (1, 0, 3); cb2.before_fit(tr); assert cb2.last == (1, 0, 3) and cb2.every == 1000


# ---------------------------------------------------------------- trainer: progress lines, loss log, duration

import copy as _copy
import io
from torch import nn
from dsb import trainer as T


def test_duration_by_hand():
    assert T.duration(float("nan")) == "?" and T.duration(42.4) == "42 s" and T.duration(119.4) == "119 s"
    assert T.duration(120) == "2.0 min" and T.duration(7199) == "120.0 min" and T.duration(7200) == "2.0 h" and T.duration(9000) == "2.5 h"


class _Lin(T.Solver):
    "y = 2 x with a linear net; each refresh of the training data takes 2 s and each step 0.5 s on the fake clock."
    def __init__(self, clock):
        torch.manual_seed(0)
        self.net, self.clock = nn.Linear(2, 2), clock
        self.ema = _copy.deepcopy(self.net).requires_grad_(False)
    def trained(self, iteration, stage): return self.net, self.ema
    def refresh(self, tr): self.clock[0] += 2.0
    def batch(self, n, generator): return (torch.randn(n, 2, generator=generator),)
    def loss(self, net, batch): return ((net(batch[0]) - 2 * batch[0]) ** 2).mean(1)


class _Tick(T.Callback):
    order = 0   # before Progress (30): a step's time has passed when Progress looks at the clock
    def __init__(self, clock): self.clock = clock
    def after_step(self, tr): self.clock[0] += 0.5


def test_progress_lines_and_estimates_on_a_fake_clock(monkeypatch):
    """Times by hand: 2 iterations x 12 steps, block 6, probe 4, a line every 5 s. Step 0.5 s, refresh 2 s: the first
    estimate after steps 1-5 (0.5 s a step, refresh 2 s, 20 steps left: 20 x (0.5 + 2/6) = 16.7 s); iteration 1 takes
    12 x 0.5 + 2 x 2 = 10 s; from iteration 2 on the pace of the fit so far (10 s / 12 steps)."""
    clock = [0.]
    monkeypatch.setattr(T.time, "perf_counter", lambda: clock[0])
    out = io.StringIO()
    prog = T.Progress(every=3, bar=False, interval=5., probe=4, file=out)
    tr = T.Trainer(_Lin(clock), iterations=2, steps=12, batch_size=8, block=6, lr=0.01, callbacks=[_Tick(clock), prog, T.LossLogger()])
    tr.fit()
    lines = out.getvalue().splitlines()
    n = torch.get_num_threads()
    assert lines[0] == f"training: 2 iterations x 1 stage x 12 steps of batch 8 on cpu ({n} thread{'s' * (n > 1)}): 24 optimiser steps to go"
    assert lines[1] == ("estimate: 19 more optimiser steps at 0.5 s each and a refresh of the training data every 6 steps at 2 s "
                        "(timed now, on this machine): 17 s, plus the evaluations (the estimate is updated after "
                        "each iteration, evaluation included)")
    import re
    step = lambda line: re.fullmatch(r"(\d)/2 stage 1: step (\d+)/12, loss [0-9.e+-]+; (.+) elapsed, about (.+) left", line).groups()
    # iteration 1: the probe's pace, 19 and 13 steps left; iteration 2: the fit's pace 15 s / 17 steps x 7 and 20 s / 23 x 1
    assert step(lines[2]) == ("1", "6", "5 s", "16 s") and step(lines[3]) == ("1", "12", "10 s", "11 s")
    assert lines[4] == "1/2 stage 1: done in 10 s" and lines[5] == "iteration 1/2 took 10 s with its evaluation; about 10 s left"
    assert step(lines[6]) == ("2", "6", "15 s", "6 s") and step(lines[7]) == ("2", "12", "20 s", "1 s")
    assert lines[8:] == ["2/2 stage 1: done in 10 s", "training stopped after 20 s, 24 optimiser steps"]
    # LossLogger: one record per block, iteration and stage counted from 1, the block's mean loss
    recs = [r for r in tr.history if "loss" in r]
    assert [(r["iteration"], r["stage"], r["step"], r["name"]) for r in recs] == [(1, 1, 6, "stage 1"), (1, 1, 12, "stage 1"), (2, 1, 6, "stage 1"), (2, 1, 12, "stage 1")]
    assert recs[0]["loss"] > recs[-1]["loss"] > 0


def test_progress_resumed_and_plain_default_file(monkeypatch, capsys):
    clock = [0.]
    monkeypatch.setattr(T.time, "perf_counter", lambda: clock[0])
    prog = T.Progress(bar=False, probe=100)
    assert (prog.every, prog.leave, prog.interval, prog.probe, prog.file) == (50, False, 30., 100, None)
    tr = T.Trainer(_Lin(clock), iterations=1, steps=6, batch_size=4, block=3, lr=0.01, callbacks=[_Tick(clock), prog])
    tr.position = (0, 0, 3)
    prog.before_fit(tr)
    out = capsys.readouterr().out
    assert out.startswith("training: 1 iteration x 1 stage x 6 steps of batch 4") and out.endswith("3 optimiser steps to go (resuming after 3)\n")
    assert prog.start == 3 and prog.total == 6 and prog.step_s is None


def test_solver_defaults():
    s = T.Solver()
    assert s.stage_name(0, 1) == "stage 2" and s.reference_transition() is None and s.state_dict() == {} and s.n_stages == 1 and s.T == 1.
    for f in (lambda: s.trained(0, 0), lambda: s.batch(1, None), lambda: s.loss(None, ())):
        with pytest.raises(NotImplementedError): f()
    with pytest.raises(NotImplementedError, match="Solver has no learned process to sample"): s.chain(True)
    with pytest.raises(NotImplementedError, match="Solver has no probability-flow ODE"): s.flow(True)


# ---------------------------------------------------------------- dsbm: end-point drifts, samplers, the OU kernel of a config

from types import SimpleNamespace
from dsb import dsbm as D


class _Shift(nn.Module):
    "net(x, t) = c (a constant displacement), so the predicted far end is x + c."
    def __init__(self, c): super().__init__(); self.c = c
    def forward(self, x, t): return torch.zeros_like(x) + self.c


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_end_drift_network_by_hand(direction):
    "Forward: -lam (x - mu) + sig^2 a_s (xT - a_s x - (1 - a_s) mu) / v_s with s = T - t; backward: lam (x - mu) - sig^2 (x - a_t x0 - (1 - a_t) mu) / v_t; t clamped to [T m, T (1 - m)]."
    ref = LinearReference.ou(2., var_final=1.5, mean_final=0.3)
    lam, s2, mu = 1 / 1.5, 2., 0.3
    x = _rng(0)(3, 2)
    net = D.EndDrift(_Shift(torch.tensor([0.5, -1.], dtype=f64)), ref, direction, margin=0.1)
    for t_norm, s in ((0.25, 0.5), (0.0, 0.2), (1.0, 1.8)):   # normalised time -> clamped time in [0.2, 1.8]
        end = x + torch.tensor([0.5, -1.], dtype=f64)
        if direction == "forward":
            u = 2. - s
            a, v = math.exp(-lam * u), s2 * (1 - math.exp(-2 * lam * u)) / (2 * lam)
            want = -lam * (x - mu) + s2 * a * (end - a * x - (1 - a) * mu) / v
        else:
            a, v = math.exp(-lam * s), s2 * (1 - math.exp(-2 * lam * s)) / (2 * lam)
            want = lam * (x - mu) - s2 * (x - a * end - (1 - a) * mu) / v
        assert torch.allclose(net(x, torch.tensor(t_norm)), want, atol=1e-12), (t_norm, s)
    assert net.margin == 0.1 and D.EndDrift(_Shift(0.), ref, direction).margin == 1e-3
    with pytest.raises(ValueError, match="direction must be 'forward' or 'backward'"): D.EndDrift(_Shift(0.), ref, "up")
    assert torch.allclose(D.Drift(_Shift(torch.tensor(3.)), 1.5)(x, 0.2), torch.full_like(x, 2.))


def test_sde_and_flow_samplers_by_hand():
    "Euler-Maruyama x + g v(x, t) + sig sqrt(g) z with the generator's z (noise_last on / off); Euler on (f - b)/2 with the travel direction's sign."
    f = lambda x, t: -x + t
    b = lambda x, t: 2 * x
    x0 = torch.tensor([[1., -2.]], dtype=f64)
    t, g = torch.tensor([0., 0.3, 1.], dtype=f64), torch.tensor([0.1, 0.2], dtype=f64)
    z = torch.randn(2, 1, 2, generator=torch.Generator().manual_seed(5), dtype=f64)
    x1 = x0 + 0.1 * f(x0, 0.) + 0.7 * 0.1 ** 0.5 * z[0]
    x2 = x1 + 0.2 * f(x1, 0.3) + 0.7 * 0.2 ** 0.5 * z[1]
    got = D.sde_sample(f, x0, t, g, 0.7, generator=torch.Generator().manual_seed(5), path=True)
    assert got.shape == (3, 1, 2) and torch.allclose(got[1], x1) and torch.allclose(got[2], x2)
    last = D.sde_sample(f, x0, t, g, 0.7, generator=torch.Generator().manual_seed(5), noise_last=False)
    assert torch.allclose(last, x1 + 0.2 * f(x1, 0.3))
    u = lambda x, s: (f(x, s) - b(x, s)) / 2
    y1 = x0 + 0.1 * u(x0, 0.); y2 = y1 + 0.2 * u(y1, 0.3)
    fw = D.flow_sample(f, b, x0, t, g, path=True)
    assert torch.allclose(fw[1], y1) and torch.allclose(fw[2], y2) and torch.equal(D.flow_sample(f, b, x0, t, g), fw[-1])
    tb = t.flip(0)
    w1 = x0 - 0.1 * u(x0, 1.)
    assert torch.allclose(D.flow_sample(f, b, x0, tb, g, path=True)[1], w1)
    assert torch.equal(D.flow_velocity(f, b, x0, 0.5), u(x0, 0.5))
    tt, gg = D.uniform_grid(4, 2., "backward")
    assert torch.equal(tt, torch.tensor([1., 0.75, 0.5, 0.25, 0.], dtype=f64)) and torch.equal(gg, torch.full((4,), 0.5, dtype=f64))


def test_ou_kernel_and_options_check():
    cfg = SimpleNamespace(num_steps=4, gamma_min=0.05, gamma_max=0.05, gamma_space="linspace", var_final=2., mean_final=0.)
    a, v = D.ou_kernel(cfg)   # T = 0.2, lam = 1/2, sigma^2 = 2
    assert abs(a - math.exp(-0.1)) < 1e-14 and abs(v - 2 * (1 - math.exp(-0.2))) < 1e-14
    ok = SimpleNamespace(coupling="independent", predict="drift", grid_steps=0, precision="fp32")
    D.DSBMOptions.check(ok)
    for bad, msg in ((dict(coupling="nope"), "parameter coupling='nope' is not allowed"), (dict(predict="x"), "parameter predict='x' is not allowed"),
                     (dict(grid_steps=-1), "grid_steps"), (dict(precision="bf16"), "precision='bf16' applies to solver='dsb' only")):
        with pytest.raises(ValueError, match=msg): D.DSBMOptions.check(SimpleNamespace(**{**vars(ok), **bad}))


# ---------------------------------------------------------------- ipf: memory check, chain kernel, options

from dsb import ipf as I


def test_check_cache_memory_by_hand():
    "need = copies x npar x (2 N prod(shape) 4 bytes) + 5 x 4 bytes per network parameter; refused above 3/4 of what is free."
    net = nn.Linear(3, 2)                                   # 8 parameters: 160 bytes
    need = 2 * 10 * (2 * 5 * 6 * 4) + 160                   # 4960
    assert I.check_cache_memory(10, 5, (2, 3), "cpu", nets=(net,), available=4960 / 0.75) == need
    assert I.check_cache_memory(10, 5, (2, 3), "cpu", available=10_000, copies=1) == 10 * 240
    with pytest.raises(ValueError, match=r"parameter cache_npar=10: caches of 10 chains x 5 steps of shape \(2, 3\)") as e:
        I.check_cache_memory(10, 5, (2, 3), "cpu", nets=(net,), available=4000)
    assert "Lower cache_npar to 5 or less" in str(e.value)    # (3000 - 160) // 480 = 5
    with pytest.raises(ValueError, match="Lower cache_npar to 0 or less"): I.check_cache_memory(10, 5, (2, 3), "cpu", nets=(net,), available=100)
    assert I.check_cache_memory(1, 1, (1,), "cpu") == 2 * 8                  # default: the memory free on the device
    budget = 0.75 * 2 ** 31                                                  # 2 GiB free: 3355443 chains of 480 bytes fit
    with pytest.raises(ValueError) as e: I.check_cache_memory(3355444, 5, (2, 3), "cpu", available=2 ** 31)
    assert "need about 1.5 GiB, more than 3/4 of the 2.0 GiB free on cpu. Lower cache_npar to 3355443 or less" in str(e.value)
    assert int(budget // 480) == 3355443
    free = I.available_memory("cpu")
    meminfo = [l for l in open("/proc/meminfo") if l.startswith("MemAvailable:")]
    if meminfo: assert abs(free - int(meminfo[0].split()[1]) * 1024) < 2 ** 30    # moves while we read it
    assert free > 2 ** 20


def test_chain_kernel_and_dsb_options():
    cfg = SimpleNamespace(num_steps=3, gamma_min=0.1, gamma_max=0.1, gamma_space="linspace", var_final=2.)
    a, v = I.chain_kernel(cfg)   # alpha = 1 - 0.1/2 per step; v = sum_k 2 gamma alpha^(2 (N-1-k))
    assert abs(a - 0.95 ** 3) < 1e-14 and abs(v - 0.2 * (1 + 0.95 ** 2 + 0.95 ** 4)) < 1e-14
    ok = SimpleNamespace(time_sampling="uniform", precision="fp32", mean_match=True, ode_steps=0, num_steps=20)
    I.DSBOptions.check(ok); I.DSBOptions.check(SimpleNamespace(**{**vars(ok), "ode_steps": 20}))
    I.DSBOptions.check(SimpleNamespace(**{**vars(ok), "precision": "bf16", "mean_match": False}))
    for bad, msg in ((dict(time_sampling="x"), "parameter time_sampling='x' is not allowed"),
                     (dict(precision="bf16"), "precision='bf16' needs mean_match=False"),
                     (dict(ode_steps=7), "parameter ode_steps=7: solver='dsb' runs its probability flow on the chain's grid of num_steps=20 steps; give 0 or 20")):
        with pytest.raises(ValueError, match=re.escape(msg) if "(" in msg else msg): I.DSBOptions.check(SimpleNamespace(**{**vars(ok), **bad}))


# ---------------------------------------------------------------- checkpoint: messages, weights-only loading, a full disk

from dsb import checkpoint as CK
from dsb.core import NoSpaceError


class _NotWeights:
    "An object torch.load(weights_only=True) refuses to unpickle."


def test_short_error_lines_by_hand():
    assert CK._short(ValueError("first part. second part\nnext line")) == "ValueError: first part"
    assert CK._short(RuntimeError("")) == "RuntimeError: " and CK._short(OSError("  \n")) == "OSError: "
    assert CK._short(KeyError("x" * 200)) == "KeyError: '" + "x" * 159
    assert CK._short(RuntimeError("Weights only load failed. Re-running with weights_only=False ...")) == "RuntimeError: not a valid weights-only checkpoint"
    assert CK._short(RuntimeError("use weights_only or not")) == "RuntimeError: not a valid weights-only checkpoint"


def test_checkpoints_load_weights_only_to_the_cpu(tmp_path):
    save_checkpoint(tmp_path, {"position": [0, 0, 1], "w": torch.ones(2)}); save_checkpoint(tmp_path, {"position": [0, 0, 2], "w": torch.ones(2)})
    st = load_checkpoint(tmp_path)
    assert st["w"].device.type == "cpu" and torch.equal(st["w"], torch.ones(2)) and st["position"] == [0, 0, 2]
    torch.save({"position": [0, 0, 3], "obj": _NotWeights()}, tmp_path / CHECKPOINT)   # not weights-only: refused, not unpickled
    notes = []
    st = load_checkpoint(tmp_path, say=notes.append, set_aside=False)
    assert st["position"] == [0, 0, 1]
    assert notes and "checkpoint.pt is unreadable (UnpicklingError: not a valid weights-only checkpoint)" in notes[0]
    d = tmp_path / "stage"; d.mkdir()
    torch.save({"position": [1, 0, 0], "obj": _NotWeights()}, d / STAGE)
    with pytest.raises(Exception, match="(?i)weights"): set_aside_stage(d)
    (d / BACKUP).write_bytes(b"junk"); (d / CHECKPOINT).write_bytes(b"")
    with pytest.raises(RuntimeError) as e: load_checkpoint(d, set_aside=False)
    lines = str(e.value).splitlines()
    assert lines[0] == f"no readable checkpoint in {d} (corrupt or truncated):" and lines[1].startswith("  checkpoint.pt: ")
    assert lines[2].startswith("  checkpoint_prev.pt: ") and lines[3].startswith("  checkpoint_stage.pt: UnpicklingError")
    assert lines[4] == "Start a fresh run (without resume), or restore a copy of the run folder."


def test_checkpointer_block_saves_are_not_stage_starts_and_a_full_disk_names_the_last_good_one(tmp_path, monkeypatch):
    cb, tr = Checkpointer(tmp_path, every=1), _Tr()
    tr.block = 1
    for step in range(3):
        tr.step, tr.position = step, (0, 0, step)
        cb.before_block(tr)
    assert torch.load(tmp_path / CHECKPOINT)["step"] == 2 and torch.load(tmp_path / BACKUP)["step"] == 1 and not (tmp_path / STAGE).exists()
    def full(*a, **k): raise NoSpaceError(28, "No space left on device")
    monkeypatch.setattr(CK, "save_checkpoint", full)
    tr.step, tr.position = 3, (0, 0, 3)
    with pytest.raises(NoSpaceError) as e: cb.before_block(tr)
    assert e.value.errno == 28 and e.value.strerror == f"No space left on device; the last good checkpoint is {tmp_path / CHECKPOINT} at iteration 1, stage 1, after 2 steps"
    with pytest.raises(NoSpaceError) as e: Checkpointer(tmp_path / "new").save(tr)
    assert e.value.strerror == "No space left on device; no checkpoint was written yet"


# ---------------------------------------------------------------- ipf: which network simulates, step weights, cold starts, shards

from dsb.reference import ReferenceMean


class _Lin1(nn.Linear):
    "A mean function m(x, t) = x + 0.1 (w x + b)."
    def __init__(self): super().__init__(1, 1)
    def forward(self, x, t): return x + 0.1 * super().forward(x)


def _dsb_small(**kw):
    sched = Schedule(torch.tensor([0.1, 0.2, 0.4], dtype=f64))
    torch.manual_seed(0)
    fw = I.Direction("forward", _Lin1(), lambda n, g: torch.randn(n, 1, generator=g), sched.forward_grid())
    bw = I.Direction("backward", _Lin1(), lambda n, g: torch.randn(n, 1, generator=g), sched.backward_grid())
    return I.DSB(fw, bw, ReferenceMean(sched, 0., 1.), cache_npar=4, **kw)


def test_dsb_simulates_with_the_reference_then_the_other_directions_ema():
    s = _dsb_small()
    assert s.sample_fn(0, 0) is s.reference and s.sample_fn(0, 1) is s.backward.ema and s.sample_fn(1, 0) is s.forward.ema
    assert s.stage_name(0, 0) == "training the backward network" and s.trained(0, 1) == (s.forward.net, s.forward.ema)


def test_dsb_step_weights_follow_the_sampled_directions_gammas():
    s = _dsb_small(step_weights=I.STEP_WEIGHTS["inverse_gamma"])
    s.begin_stage(SimpleNamespace(step=0, stage=0, device="cpu"))     # stage 0 samples forward chains: gammas 0.1, 0.2, 0.4
    assert torch.allclose(s.probs, torch.tensor([10., 5., 2.5]))
    s.begin_stage(SimpleNamespace(step=0, stage=1, device="cpu"))     # stage 1 samples backward chains, in their travel order
    assert torch.allclose(s.probs, torch.tensor([2.5, 5., 10.]))
    u = _dsb_small(); u.begin_stage(SimpleNamespace(step=0, stage=0, device="cpu")); assert u.probs is None


def test_cold_start_resets_only_the_trained_direction_at_the_stage_start():
    s = _dsb_small(warm_start=False)
    for d in (s.forward, s.backward):
        with torch.no_grad(): d.net.weight.fill_(5.)
    s.begin_stage(SimpleNamespace(step=3, stage=0, device="cpu"))     # resumed mid-stage: nothing reset
    assert s.backward.net.weight.item() == 5.
    s.begin_stage(SimpleNamespace(step=0, stage=0, device="cpu"))     # stage 0 trains backward: it starts again from its initial weights
    assert s.backward.net.weight.item() != 5. and s.forward.net.weight.item() == 5.


def test_local_shards_of_the_second_process():
    from dsb.core import DevicePolicy, derive_seed
    start = lambda n, g: torch.randn(n, 1, generator=g)
    got = list(I.local_shards(start, 10, 5, 4, DevicePolicy(torch.device("cpu"), 1, 2)))   # sizes 3 3 2 2: this rank holds shards 2, 3
    assert len(got) == 2
    for (x0, g), s in zip(got, (2, 3)):
        assert torch.equal(x0, start(2, torch.Generator().manual_seed(derive_seed(5, s, 0))))
        assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=torch.Generator().manual_seed(derive_seed(5, s, 1))))


class _Stop(T.Callback):
    "Keep the trainer's state at the block boundary of step `at` and stop there."
    def __init__(self, at): self.at, self.state = at, None
    def before_block(self, tr):
        if tr.step == self.at and self.state is None: self.state = _copy.deepcopy(tr.state_dict()); raise T.CancelFit()


def test_dsb_resume_replays_the_uninterrupted_run():
    "Every random number of a block comes from streams seeded by the position: a run stopped at step 2 and resumed ends like the uninterrupted one."
    kw = dict(iterations=1, steps=4, batch_size=4, block=2, lr=0.01)
    full = _dsb_small(); T.Trainer(full, **kw).fit()
    stop = _Stop(2); T.Trainer(_dsb_small(), callbacks=[stop], **kw).fit()
    resumed = _dsb_small(); tr = T.Trainer(resumed, **kw); tr.load_state_dict(stop.state); tr.fit()
    for d, e in ((full.forward, resumed.forward), (full.backward, resumed.backward)):
        for a, b in zip(d.net.parameters(), e.net.parameters()): assert torch.equal(a, b)
