#!/usr/bin/env bash
# Pre-generate an augmented dataset as a Slurm job array: one task per shard group, any node.
#
#   sbatch --array=0-7 examples/cluster/slurm_generate.sh          # 8 tasks
#   sbatch --dependency=afterok:<array job id> --wrap "vaeaug verify $OUT"
#
# Every task writes its shards (index % 8 == task id) atomically; a task that is preempted or
# fails is simply resubmitted with the same id and resumes. Whichever task finishes last writes
# manifest.json; the set is byte-identical to one made by a single process. Set MODEL, DATA and
# OUT in the environment (sbatch --export=ALL,MODEL=...,DATA=...,OUT=...) or edit the defaults.
#SBATCH --job-name=vaeaug-generate
#SBATCH --cpus-per-task=2
#SBATCH --time=02:00:00
#SBATCH --output=vaeaug-generate-%A_%a.log
set -euo pipefail

MODEL="${MODEL:-model.onnx}"      # a .vae model or its ONNX export (numpy + onnxruntime, no GPU needed)
DATA="${DATA:-train.npz}"         # arrays x (and y), an image folder, or a built-in name
OUT="${OUT:-generated}"
VARIANTS="${VARIANTS:-4}"
SHARD_SIZE="${SHARD_SIZE:-8192}"  # samples per shard: the unit of resuming, and of splitting between tasks
TASKS="${SLURM_ARRAY_TASK_COUNT:?run this as a Slurm job array: sbatch --array=0-N}"
TASK="${SLURM_ARRAY_TASK_ID:?run this as a Slurm job array: sbatch --array=0-N}"
INDEX=$((TASK - ${SLURM_ARRAY_TASK_MIN:-0}))   # --array=1-8 works too: indices 0..7

vaeaug generate --model "$MODEL" --data "$DATA" --out "$OUT" --variants "$VARIANTS" \
    --shard-size "$SHARD_SIZE" --num-shards "$TASKS" --shard-index "$INDEX" \
    --workers "${SLURM_CPUS_PER_TASK:-1}" --no-progress
