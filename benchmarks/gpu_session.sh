#!/usr/bin/env bash
# What fastspec measures on a lent GPU, in stages that each fit one device call (10 minutes):
#   bash benchmarks/gpu_session.sh OUTDIR [STAGE ...]     # from the repository root there
# STAGE (default: all of them, in this order):
#   tests    build with the CUDA kernels for sm_90 against the machine's torch (skipped when
#            a CUDA build is installed already), then `pytest -m cuda`: every kernel against
#            its torch twin;
#   ops      the native-op benchmarks on cuda (pytest-benchmark);
#   mlp      issue #6 on the GPU: the float64 digits MLP, top 100 at tol 1e-6, against
#            curvlinops + scipy eigsh, hessian-eigenthings and PyHessian in one process;
#   resnet   the same for the ResNet-style CNN (benchmarks/digits_resnet.py).
# The peers are not in the GPU image: carry their wheels in .whl (benchmarks/gpu_wheels.txt
# says how); they are installed first. Logs and result tables go to OUTDIR.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_session.sh OUTDIR [tests|ops|mlp|resnet ...]}
shift
stages=${*:-tests ops mlp resnet}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
# Python runs outside the clone (or with -P), where ./fastspec would shadow the installed build
built() { (cd /tmp && python3 -c "import fastspec, sys; sys.exit(not fastspec.build_info()['cuda_compiled'])") 2>/dev/null; }
if ! built; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  FASTSPEC_CUDA=ON FASTSPEC_CUDA_ARCHS=90 python3 -m pip install -q --no-build-isolation --no-deps . \
    >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
  (cd /tmp && python3 -c "import fastspec; print(fastspec.build_info())") | tee "$out/info.txt"
fi
for stage in $stages; do
  case $stage in
    tests) python3 -P -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tee "$out/cuda_tests.log" | tail -5 ;;
    ops) python3 -P -m pytest -q benchmarks -k "cuda and not side_by_side" -p no:cacheprovider \
           --benchmark-columns=min,median,mean,rounds --benchmark-sort=name 2>&1 \
           | tee "$out/ops_cuda.log" | tail -30 ;;
    mlp|resnet) (cd benchmarks && timeout 560 python3 side_by_side_hessian.py --device cuda \
                   --model "$stage" --skip rebuilt 2>&1 | tee "$out/hessian_${stage}_cuda.log" | tail -25
                 cp "results/hessian_vs_peers_${stage}_cuda.md" "$out/" 2>/dev/null) ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
