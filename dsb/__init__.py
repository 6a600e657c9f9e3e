__version__ = "0.1.0"
"""dsb: Diffusion Schrödinger Bridge (De Bortoli et al., 2021), derived and checked in notebooks, with DSBM on one engine.

    import dsb
    bridge = dsb.train(data="moon", solver="dsbm")   # the parameters and checks of nbs/train.ipynb
    x = bridge.sample(1000)                          # sampler="ode", steps=..., path=True
    bridge = dsb.load(bridge.run_dir)                # the same bridge, from its run directory

This file is the package's front door, written by hand: nbdev exports every other module from its
notebook and only keeps the version line here up to date. The names below are imported on first use
(with every built-in data set, model, solver and sampler registered), so `import dsb` is cheap and
`python -m dsb.images` stays quiet.
"""
import importlib

_PUBLIC = {  # name -> the module of dsb that defines it
    "train": "run", "load": "run", "Bridge": "run",
    "make_config": "config", "config_class": "config", "parameters_cell": "config",
    "Options": "core", "Registry": "core",
    "DATASETS": "data", "DataSpec": "data", "MODELS": "models",
    "SOLVERS": "trainer", "SAMPLERS": "trainer", "Solver": "trainer", "Trainer": "trainer", "Callback": "trainer",
    "sample": "trainer", "preset": "core",
}
__all__ = list(_PUBLIC)

def __getattr__(name):
    if name not in _PUBLIC: raise AttributeError(f"module 'dsb' has no attribute {name!r}")
    importlib.import_module(f"{__name__}.config")               # every built-in registration
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)

def __dir__(): return sorted([*globals(), *__all__])
