#!/usr/bin/env bash
# Run the GPU-marked tests and the kernel / end-to-end benchmark suites on a CUDA machine.
# Usage: bash benchmarks/gpu_suite.sh RESULTS_DIR [suite ...]   (suites: tests kernels e2e gate matrix fusion aot; default all)
#   kernels: window_attention times Swin-T's, SwinV2-T's and two non-square stages (6x7 and 8x8/(0,4) windows),
#            and issue 24's encoders: SAM-B windows (WindowAttentionRelPos), MobileSAM/TinyViT (padded), MaxViT-T
#            block + grid, Hiera-T mask units (query pooling), Twins-SVT-S (those alone: window_attention.py
#            --stages sam_b,mobile_sam,maxvit_t,hiera_t,twins_s; targets >= 8x eager, >= 2x SDPA);
#            msda the Deformable DETR shapes, then (--suite v2) RT-DETR v2 / D-FINE's per-level points and discrete sampling.
#   matrix: benchmarks/matrix_gpu.toml (torch/ort GPU suites) through a one-node Ray cluster (needs ray).
#   fusion: needs TensorRT (trtexec); without it the JSON says so.
#   aot: TensorRT's AOT plugin launch reproduced with the CUDA driver (benchmarks/aot_launch.py).
# Results (JSON) go to RESULTS_DIR; commit them under benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}; shift || true
suites=${*:-tests kernels e2e gate matrix fusion aot}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw --format=csv || true
$py -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
status=0
for s in $suites; do
  case $s in
    tests)
      $py -m pytest -q -p no:cacheprovider -m gpu tests --junitxml="$out/gpu_tests.xml" 2>&1 | tail -25 || status=1 ;;
    kernels)
      for k in window_attention gpsa msda halo_attention; do
        [ -f benchmarks/kernels/$k.py ] || { echo "skip kernel bench $k: not present"; continue; }
        echo "== kernel benchmark: $k"
        $py benchmarks/kernels/$k.py --out "$out/kernel_$k.json" || status=1
      done
      # RT-DETR v2 / D-FINE: per-level point counts and discrete sampling vs transformers' v2 core (target >= 10x)
      echo "== kernel benchmark: msda --suite v2"
      $py benchmarks/kernels/msda.py --suite v2 --out "$out/kernel_msda_v2.json" || status=1 ;;
    fusion)  # needs TensorRT (trtexec): did each plain attention block become an mha/fmha kernel?
      for spec in "swin_t --plugins off" "convit_t --plugins off" "vit_t"; do
        set -- $spec; d="$out/fusion_$1"
        $py -m vitdeploy build --model "$@" --fp16 --no-engine -o "$d" >/dev/null || status=1
      done
      $py benchmarks/attention_fusion.py "$out"/fusion_* --out "$out/attention_fusion.json" || status=1 ;;
    e2e)
      [ -f benchmarks/e2e/swin_t_torch.py ] && { echo "== e2e swin_t"; $py benchmarks/e2e/swin_t_torch.py --out "$out/e2e_swin_t.json" || status=1; } ;;
    gate)
      # compare's false alarms / misses on a GPU: vit_t FP16 timed 8x with the same code (about 1 min)
      echo "== gate noise (vit_t fp16, CUDA)"
      $py benchmarks/gate_noise.py --device cuda --precision fp16 --batch 8 --runs 8 --duration-s 3 \
          --out "$out/gate_noise_gpu.json" || status=1 ;;
    matrix)
      echo "== vitdeploy matrix on a one-node Ray cluster (torch-gpu, ort-gpu)"
      $py benchmarks/matrix_cluster.py --mode gpu --out "$out/matrix_gpu" || status=1 ;;
    aot)
      # TensorRT's AOT plugin launch through the CUDA driver, every plugin node at full size, vs reference and JIT
      echo "== AOT launch (CUDA driver)"; $py benchmarks/aot_launch.py --out "$out/aot_launch.json" || status=1 ;;
  esac
done
exit $status
