"""Issue 22: a data set may name the solver a run gets when the user names none (`digits` names DSBM, measured better
on it); a solver the user names, even the field's default 'dsb' given through papermill, still wins."""
import pytest

from dataclasses import asdict

from dsb.config import config_class, make_config, notebook_params, preset_params, resume_config, solver_note
from dsb.data import DATASETS


def test_digits_gets_dsbm_and_its_preset_unless_a_solver_is_named():
    cfg = make_config(dataset="digits")
    assert cfg.solver == "dsbm"                                   # without the mechanism: 'dsb' (the field's default)
    for k, v in preset_params("digits", "dsbm").items(): assert getattr(cfg, k) == v, k
    dsb = make_config(dataset="digits", solver="dsb")
    assert dsb.solver == "dsb"
    for k, v in preset_params("digits", "dsb").items(): assert getattr(dsb, k) == v, k
    assert make_config().solver == "dsb" and make_config(dataset="gaussian").solver == "dsb"   # data sets naming none
    assert "the solver data set 'digits' names" in solver_note(cfg, {"dataset": "digits"})
    assert solver_note(dsb, {"dataset": "digits", "solver": "dsb"}) == "solver='dsb': given"


def test_papermill_solver_dsb_is_given_although_it_is_the_default():
    "`-p solver dsb` equals the field's default: it counts as given because papermill injected it, so digits runs DSB."
    before = set()
    def run(injected: str) -> str:
        ns = {**asdict(config_class()()), "_ih": ["import dsb", "# Parameters\n" + injected]}
        exec(injected, {}, ns)
        return make_config(**notebook_params(ns, before)).solver
    assert run("dataset = 'digits'\n") == "dsbm"
    assert run("dataset = 'digits'\nsolver = 'dsb'\n") == "dsb"


def test_a_plugin_data_set_names_its_solver():
    "The mechanism is the registry's, not a special case: any data set registered with `solver=` gets it."
    @DATASETS.register("_pref_dsbm", family="points", solver="dsbm")
    def _pref(cfg): raise AssertionError("not built here")
    try:
        assert make_config(dataset="_pref_dsbm").solver == "dsbm"
        assert make_config(dataset="_pref_dsbm", solver="dsb").solver == "dsb"
        with pytest.raises(ValueError, match="dataset='_pref_dsbmx' is not allowed"): make_config(dataset="_pref_dsbmx")
    finally:
        DATASETS.entries.pop("_pref_dsbm"); DATASETS.infos.pop("_pref_dsbm")


def test_a_resumed_digits_run_keeps_the_solver_it_was_trained_with():
    "A run saved with DSB on digits (from before the data set named DSBM, or given) resumes with DSB, not the data set's choice."
    saved = {k: v for k, v in asdict(make_config(dataset="digits", solver="dsb")).items()}
    cfg, changes = resume_config(saved, {"n_ipf": 6})
    assert cfg.solver == "dsb" and changes == {"n_ipf": (saved["n_ipf"], 6)}
