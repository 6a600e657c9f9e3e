"""What blurs thin 2d structure (issue 23, deliverable 4): one run of a solver on a 2d set with its preset plus overrides,
and the run's own final scores (exact W2 / floor and kNN precision, 3 draws of 3,000 points, SDE and ODE) as one JSON line.

    python bench/levers2d.py dsbm spirals                          # the preset
    python bench/levers2d.py dsbm spirals predict=drift num_iter=2200   # any config field, as KEY=VALUE
    python bench/levers2d.py dsbm spirals dec=256,256              # the 2d MLP's decoder widths (also enc=, temb=)
    python bench/levers2d.py dsbm spirals --noise                  # predict='end' with the output scaled by the bridge's sqrt(v_t)

`--noise` and the network widths patch this process only (they are not options of the product: neither paid for its cost,
bench/results/2026-12-06_sharp_2d_levers.json). Time with OMP_NUM_THREADS=1; CPU seconds include the run's evaluations.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

import dsb
from dsb import dsbm, models
from dsb.core import append_dims

NETWORK = {"dec": "decoder_layers", "enc": "encoder_layers", "temb": "temb_dim"}


def widths_model(widths: dict):
    "The `mlp` model with the given MLP arguments (2d points only)."
    def make(cfg, shape, zero_init_last=False):
        return models.MLP(x_dim=shape[0], zero_init_last=zero_init_last, **widths)
    return make


def noise_forward(self, x, t):
    "`EndDrift.forward` with the far end predicted as x + sqrt(v) net(x, t), v the reference variance from the end it conditions on."
    T = self.ref.T
    s = (torch.as_tensor(t, dtype=torch.float64) * T).clamp(self.margin * T, (1 - self.margin) * T)
    v = self.ref.transition(s if self.direction == "backward" else T - s)[1]
    return dsbm.end_drift(self.ref, x, s, x + append_dims(v.sqrt(), x.ndim).to(x) * self.net(x, t), self.direction)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("solver"); p.add_argument("data")
    p.add_argument("params", nargs="*", metavar="KEY=VALUE", help="config fields, or dec= / enc= / temb= widths of the 2d MLP")
    p.add_argument("--noise", action="store_true", help="predict='end' with the network's output scaled by sqrt(v_t)")
    a = p.parse_intermixed_args(argv)
    params, widths = {}, {}
    for item in a.params:
        key, sep, value = item.partition("=")
        if not sep: p.error(f"expected KEY=VALUE, got {item!r}")
        if key in NETWORK:
            widths[NETWORK[key]] = int(value) if key == "temb" else tuple(int(w) for w in value.split(","))
            continue
        try: params[key] = json.loads(value)
        except json.JSONDecodeError: params[key] = value
    if widths: models.MODELS.entries["mlp"] = widths_model(widths)
    if a.noise:
        dsbm.EndDrift.forward = noise_forward
        params["predict"] = "end"
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as d:
        m = dsb.train(data=a.data, solver=a.solver, out_dir=d, plots=False, progress=False, **params).metrics
    scores = {k: v for k, v in m.items() if k.startswith(("w2", "precision", "recall", "sw2"))}
    print(json.dumps(dict(solver=a.solver, data=a.data, params=params, network=widths, noise=a.noise,
                          cpu_s=round(time.process_time() - t0, 1), **scores)))


if __name__ == "__main__":
    main()
