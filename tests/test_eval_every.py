"`eval_every`: a long run evaluates (and draws) after every k-th iteration and after the last, and nothing else changes."
import json
from pathlib import Path

import dsb

TINY = dict(data="moon", n_ipf=5, num_iter=20, cache_refresh=10, cache_npar=200, batch_size=64, eval_npar=300, score_npar=0,
            progress=False, seed=3)


def _run(tmp_path, name, **kw):
    b = dsb.train(**TINY, **kw, out_dir=str(tmp_path), run_name=name)
    d = b.run_dir
    evals = [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "eval" in r]
    return b.metrics, evals, sorted(p.name for p in d.glob("samples_ipf*.png"))


def test_eval_every(tmp_path):
    s1, e1, png1 = _run(tmp_path, "every1", eval_every=1)
    s2, e2, png2 = _run(tmp_path, "every2", eval_every=2)
    s3, e3, png3 = _run(tmp_path, "preset")               # DSB's 2d preset: every third iteration (an evaluation costs ~10 s)
    assert [r["eval"] for r in e1] == [1, 2, 3, 4, 5] and len(png1) == 5
    assert [r["eval"] for r in e2] == [2, 4, 5], "every second iteration and the last"
    assert png2 == ["samples_ipf02.png", "samples_ipf04.png", "samples_ipf05.png"]
    assert [r["eval"] for r in e3] == [3, 5] and png3 == ["samples_ipf03.png", "samples_ipf05.png"]
    # skipping evaluations draws no random numbers the training uses: the same bridge, the same final scores
    for key in ("sw2_data", "sw2_prior"): assert e2[-1][key] == e1[-1][key] == s2[key] == e3[-1][key], key


def test_eval_every_refused_below_one():
    import pytest
    with pytest.raises(ValueError, match="eval_every"): dsb.make_config(eval_every=0)
