#!/usr/bin/env bash
# The GPU figures BENCHMARKS.md is missing, in one run of about 10 minutes on one H100 / H200:
# the paper-size train step (ResNet-50, 256 px, batch 32, with depth) in float32 and bfloat16,
# and the paper-resolution input pipeline feeding that step (real LSP-Extended crops mixed 1:1
# with synthetic_humans/large, no download) with 0, 4, 8 and 16 worker processes.
#
#   bash tools/gpu_benchmarks.sh OUT_DIR
#
# OUT_DIR gets one .jsonl per measurement (the tools' JSON lines) and log.txt (each command, its
# stderr and exit code). Each command is cut off after $HPE_GPU_LIMIT_S seconds (default 240) so
# one hang cannot take the device time of the rest. $HPE_GPU_EXTRA adds config overrides to every
# command (e.g. a tiny model, to try the script on a CPU). Needs ../shared/realdata/lspet, or
# $HPE_REALDATA.
set -uo pipefail
out=${1:?usage: bash tools/gpu_benchmarks.sh OUT_DIR}
limit=${HPE_GPU_LIMIT_S:-240}
realdata=${HPE_REALDATA:-../shared/realdata}
read -r -a extra <<< "${HPE_GPU_EXTRA:-}"
if [ ! -d "$realdata/lspet" ]; then
  echo "no $realdata/lspet: the pipeline reads real LSP-Extended crops; set HPE_REALDATA to the" \
    "folder that holds lspet/ (../shared/realdata in this project)" >&2
  exit 2
fi
mkdir -p "$out"
data=$(mktemp -d)
log="$out/log.txt"

measure() {  # measure NAME COMMAND...: COMMAND's stdout into NAME.jsonl
  local name=$1
  shift
  echo "== $name: $*" >> "$log"
  timeout "$limit" "$@" > "$out/$name.jsonl" 2>> "$log"
  echo "== $name: exit code $?" >> "$log"
}

prepare() {  # prepare COMMAND...: all its output into the log
  echo "== $*" >> "$log"
  timeout "$limit" "$@" >> "$log" 2>&1
  echo "== exit code $?" >> "$log"
}

python -c 'import jax; print("jax", jax.__version__, jax.devices())' >> "$log" 2>&1
paper=(--config=configs/finetune.py:paper --config.init_from= --config.model.init=scratch)
measure step_fp32 python tools/benchmark.py "${paper[@]}" "${extra[@]}"
measure step_bf16 python tools/benchmark.py "${paper[@]}" --config.model.dtype=bfloat16 "${extra[@]}"

prepare python -m hpe_jax.commands.build_dataset lsp_extended --manual_dir="$realdata/lspet" \
  --data_dir="$data" --allow_missing
prepare python -m hpe_jax.commands.build_dataset synthetic_humans --config=large --data_dir="$data"
measure pipeline_bf16 python tools/benchmark_pipeline.py "${paper[@]}" \
  --config.model.dtype=bfloat16 --config.data.train_2d=lsp_extended \
  --config.data.train_3d=synthetic_humans/large --config.data.data_dir="$data" \
  --config.data.eval= --workers=0,4,8,16 --batches=50 --parts=1200 "${extra[@]}"
rm -rf "$data"
