"Bad inputs raise clear errors naming the argument, instead of producing NaNs later."

import pytest
import torch

from dsb.core import check_cov
from dsb.static import sinkhorn_log, gaussian_sb_cross_cov, gaussian_sb_joint
from dsb.reference import gamma_schedule, Schedule, ReferenceMean, reference_transition, reference_moments
from dsb.reversal import gaussian_backward_kernel

f64 = dict(dtype=torch.float64)
EYE2 = torch.eye(2, **f64)
NOT_PD = torch.tensor([[1., 2.], [2., 1.]], **f64)

@pytest.mark.parametrize("gmin,gmax,match", [(0., 0.1, "gamma_min"), (-0.1, 0.1, "gamma_min"),
                                              (0.1, -0.2, "gamma_max"), (float("nan"), 0.1, "gamma_min")])
def test_gamma_schedule_rejects_nonpositive(gmin, gmax, match):
    with pytest.raises(ValueError, match=match): gamma_schedule(10, gmin, gmax)

@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_gamma_schedule_rejects_bad_num_steps(n):
    with pytest.raises(ValueError, match="num_steps"): gamma_schedule(n, 0.01, 0.1)

def test_gamma_schedule_rejects_unknown_space():
    with pytest.raises(ValueError, match="space"): gamma_schedule(10, 0.01, 0.1, "logspace")

@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 21])
def test_gamma_schedule_any_n(n):
    g = gamma_schedule(n, 0.01, 0.1)
    assert g.shape == (n,) and torch.all(g > 0) and torch.equal(g, g.flip(0))

def test_schedule_rejects_zero_gamma():
    with pytest.raises(ValueError, match="gammas"): Schedule(torch.tensor([0.1, 0.0, 0.1], **f64))

def test_reference_rejects_steps_that_do_not_contract():
    s = Schedule(gamma_schedule(10, 0.1, 0.5))
    with pytest.raises(ValueError, match="var_final"): ReferenceMean(s, 0., 0.4)
    with pytest.raises(ValueError, match="var_final"): reference_transition(s, -1.)

def test_reference_moments_reject_non_pd_cov():
    s = Schedule(gamma_schedule(4, 0.01, 0.1))
    with pytest.raises(ValueError, match="cov0"): reference_moments(s, torch.zeros(2, **f64), NOT_PD)

def test_sinkhorn_rejects_mismatched_sizes():
    a, b = torch.full((3,), 1 / 3, **f64), torch.full((4,), 1 / 4, **f64)
    with pytest.raises(ValueError, match="cost"): sinkhorn_log(a, b, torch.rand(3, 5, **f64), 0.1)

def test_sinkhorn_rejects_negative_weights():
    a, b = torch.tensor([0.5, 0.7, -0.2], **f64), torch.full((3,), 1 / 3, **f64)
    with pytest.raises(ValueError, match="a"): sinkhorn_log(a, b, torch.rand(3, 3, **f64), 0.1)

def test_sinkhorn_rejects_unequal_mass():
    a, b = torch.full((3,), 1 / 3, **f64), torch.full((3,), 0.5, **f64)
    with pytest.raises(ValueError, match="mass"): sinkhorn_log(a, b, torch.rand(3, 3, **f64), 0.1)

@pytest.mark.parametrize("eps", [0., -1., float("nan")])
def test_sinkhorn_rejects_bad_eps(eps):
    a = torch.full((3,), 1 / 3, **f64)
    with pytest.raises(ValueError, match="eps"): sinkhorn_log(a, a, torch.rand(3, 3, **f64), eps)

def test_sinkhorn_never_returns_nan_for_tiny_eps():
    g = torch.Generator().manual_seed(0)
    a = torch.full((20,), 1 / 20, **f64)
    res = sinkhorn_log(a, a, 10 * torch.rand(20, 20, generator=g, **f64), 1e-4, n_iter=200)
    assert torch.isfinite(res.plan).all()

def test_gaussian_sb_rejects_non_pd_and_bad_reference():
    with pytest.raises(ValueError, match="positive definite"): gaussian_sb_cross_cov(NOT_PD, EYE2, 0.5, 1.)
    with pytest.raises(ValueError, match="a"): gaussian_sb_cross_cov(EYE2, EYE2, 0., 1.)
    with pytest.raises(ValueError, match="v"): gaussian_sb_cross_cov(EYE2, EYE2, 0.5, -1.)
    with pytest.raises(ValueError): gaussian_sb_cross_cov(EYE2, torch.eye(3, **f64), 0.5, 1.)
    with pytest.raises(ValueError): gaussian_sb_joint(torch.zeros(3, **f64), EYE2, torch.zeros(2, **f64), EYE2, 0.5, 1.)

def test_backward_kernel_rejects_non_pd():
    with pytest.raises(ValueError): gaussian_backward_kernel(torch.zeros(2, **f64), NOT_PD, EYE2, torch.zeros(2, **f64), EYE2)

def test_check_cov_names_argument():
    with pytest.raises(ValueError, match="my_cov must be positive definite"): check_cov("my_cov", NOT_PD)
