"Exact checks of core functions that the planted-bug tests do not reach: the mutation-testing subset's second file (seconds)."
import pytest
import torch

from dsb.core import DevicePolicy, derive_seed
from dsb.ipf import Cache, shard_sizes, sharded


def test_shard_sizes_split_evenly():
    assert shard_sizes(10, 3) == [4, 3, 3] and shard_sizes(6, 3) == [2, 2, 2] and shard_sizes(2, 4) == [1, 1, 0, 0]
    assert sum(shard_sizes(1001, 7)) == 1001


def test_sharded_replays_each_shards_seeded_streams():
    "Shard s starts from stream (seed, s, 0) and draws its noise from (seed, s, 1); outputs concatenated in shard order along `dim`."
    start = lambda n, g: torch.randn(n, 2, generator=g, dtype=torch.float64)
    simulate = lambda x0, g: (x0, x0 + torch.randn(x0.shape, generator=g, dtype=x0.dtype))
    policy = DevicePolicy(torch.device("cpu"))
    x0, x1 = sharded(simulate, start, 7, 5, 3, policy)
    expect0, expect1 = [], []
    for s, n in enumerate(shard_sizes(7, 3)):
        a = start(n, torch.Generator().manual_seed(derive_seed(5, s, 0)))
        expect0.append(a); expect1.append(a + torch.randn(a.shape, generator=torch.Generator().manual_seed(derive_seed(5, s, 1)), dtype=a.dtype))
    assert torch.equal(x0, torch.cat(expect0)) and torch.equal(x1, torch.cat(expect1))
    # one shard: the block seed starts the chains and the given generator draws the noise
    y0, y1 = sharded(simulate, start, 4, 5, 1, policy, torch.Generator().manual_seed(9))
    a = start(4, torch.Generator().manual_seed(5))
    assert torch.equal(y0, a) and torch.equal(y1, a + torch.randn(a.shape, generator=torch.Generator().manual_seed(9), dtype=a.dtype))
    # dim: chains along dim 1
    z = sharded(lambda x0, g: (x0[None].expand(2, -1, -1),), start, 5, 5, 2, policy, dim=1)[0]
    assert z.shape == (2, 5, 2)
    with pytest.raises(ValueError, match="cache_shards=3 must be a multiple"): list(sharded(simulate, start, 6, 5, 3, DevicePolicy(torch.device("cpu"), 0, 2)))


def test_cache_sample_with_step_weights():
    "With `step_probs`, the steps of a batch follow them (a step of weight 0 never appears); each row is a state of its step."
    N, npar = 3, 4
    x = torch.arange(N * npar, dtype=torch.float64)[:, None]
    c = Cache(x, -x, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), npar)
    xb, tb_target, tb = c.sample(2000, torch.Generator().manual_seed(0), step_probs=torch.tensor([0., 1., 3.]))
    step = (xb[:, 0] // npar).long()
    assert torch.equal(tb, c.t[step]) and torch.equal(tb_target, -xb)
    assert (step != 0).all() and abs((step == 2).double().mean().item() - 0.75) < 5 * (0.75 * 0.25 / 2000) ** 0.5
    xu, _, tu = c.sample(3000, torch.Generator().manual_seed(1))
    su = (xu[:, 0] // npar).long()
    assert torch.equal(tu, c.t[su]) and all(abs((su == k).double().mean().item() - 1 / 3) < 5 * (2 / 9 / 3000) ** 0.5 for k in range(3))
