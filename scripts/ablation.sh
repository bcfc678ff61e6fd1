#!/usr/bin/env bash
# Baselines and ablations of MMKD by config only: same corpus, student, teacher cache, steps and seed.
#
#   scripts/ablation.sh RUN_DIR STEPS [--key=value ...]      e.g. scripts/ablation.sh runs/main 2000
#
# RUN_DIR is a `mmkd pipeline` run (corpus/, student/, teacher_cache_{train,dev}/); override any of
# them with CORPUS, STUDENT, TEACHER_CACHE, DEV_TEACHER_CACHE, and the teacher with TEACHER (default
# the packaged one). RECIPE (default recipes/cpu_main.yaml), SEED (0), MAX_LENGTH (default: the
# recipe's; the teacher caches must have it), POOL (1000), OUT (default runs/ablation/<timestamp>), OOD
# (the out-of-domain source, default package:django; none to skip), SUBWORD_STUDENT (a student of the
# same vocabulary built with `mmkd init-student --embedding-init subwords`; adds a config). Extra
# --key=value go to every `mmkd train`; the evaluations encode at the max_length training resolves.
# Configs: sentence_only (SentA alone: the Reimers-Gurevych recipe), full (the recipe's weights),
# full without each objective the recipe trains (no_<term>: its weight set to 0; not the one whose
# removal leaves SentA alone, which is sentence_only) and with each one it
# leaves out (with_<term>: weight 1, TLM 0.1), full with each term the recipe weighs other than 1 at the
# method's weight 1 (<term>_weight_1), full with sentence StrucA in the form the recipe does
# not use (struca_sent_monolingual, without a bank, or struca_sent_cross_lingual), when the recipe has
# a bank of teacher embeddings full without it (no_struct_bank: struct_bank_size 0), and with
# SUBWORD_STUDENT full from the sub-token-mean embeddings (subword_embedding_init). Each is trained
# for STEPS steps into OUT/<config>/train, its export evaluated (`mmkd eval retrieval`) on the test
# split into OUT/<config>/eval and out of domain into OUT/<config>/eval_ood; OUT/ablation.md holds
# the means of each config and the per-language tables. Run again with the same OUT after a stop: a
# config already evaluated is kept, one already exported is only evaluated, and `mmkd train` resumes
# one stopped mid-run from its last checkpoint.
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,25p' "$0"; exit 2; }
RUN=$1 STEPS=$2
shift 2
cd "$(dirname "$0")/.."
PYTHON=${MMKD_PYTHON:-.venv/bin/python}
CORPUS=${CORPUS:-$RUN/corpus}
STUDENT=${STUDENT:-$RUN/student}
TEACHER_CACHE=${TEACHER_CACHE:-$RUN/teacher_cache_train}
DEV_TEACHER_CACHE=${DEV_TEACHER_CACHE:-$RUN/teacher_cache_dev}
RECIPE=${RECIPE:-recipes/cpu_main.yaml}
SEED=${SEED:-0} POOL=${POOL:-1000} OOD=${OOD:-package:django}
OUT=${OUT:-runs/ablation/$(date +%Y%m%d-%H%M%S)}
TEACHER_TRAIN=() TEACHER_EVAL=()
if [[ -n "${TEACHER:-}" ]]; then TEACHER_TRAIN=("--teacher=$TEACHER"); TEACHER_EVAL=(--teacher "$TEACHER"); fi
LENGTH_TRAIN=()
if [[ -n "${MAX_LENGTH:-}" ]]; then LENGTH_TRAIN=("--max_length=$MAX_LENGTH"); fi

COMMON_ARGS=(--corpus="$CORPUS" --student="$STUDENT" --teacher_cache="$TEACHER_CACHE"
             --dev_teacher_cache="$DEV_TEACHER_CACHE" --max_steps="$STEPS" --max_time_minutes=0
             --seed="$SEED" "${LENGTH_TRAIN[@]}" "${TEACHER_TRAIN[@]}" "$@")
# The max_length every config trains with and the terms the recipe leaves out (weight 0), resolved as
# `mmkd train` resolves them (recipe, then overrides).
RESOLVED=$("$PYTHON" - "$RECIPE" "${COMMON_ARGS[@]}" <<'EOF'
import sys

from mmkd.errors import MMKDError
from mmkd.train_config import load_train_config

try:
    cfg = load_train_config(sys.argv[1], sys.argv[2:])
except MMKDError as err:
    sys.exit(f"scripts/ablation.sh: error: {err}")
scaled = ",".join(term for term, weight in cfg.weights.items() if weight not in (0, 1))
print(cfg.max_length, cfg.struct_bank_size, cfg.struct_sent_mode, scaled or "-",
      *(term for term, weight in cfg.weights.items() if weight == 0))
EOF
)
read -r MAX_LENGTH BANK_SIZE SENT_MODE SCALED_TERMS ZERO_TERMS <<< "$RESOLVED"
if [[ -n "${SUBWORD_STUDENT:-}" && ! -f "$SUBWORD_STUDENT/mmkd_student.json" ]]; then
  echo "scripts/ablation.sh: error: SUBWORD_STUDENT=$SUBWORD_STUDENT is not a student directory (no" \
       "mmkd_student.json); build one with mmkd init-student --embedding-init subwords" >&2
  exit 2
fi
TERMS=(tlm xwcl senta struca_sent struca_tok)
declare -A WITH_WEIGHT=([tlm]=0.1)  # TLM starts at a cross-entropy ~10 over a fresh MLM head (docs/results.md)
declare -A CONFIGS=([sentence_only]="" [full]="")  # weights on top of the recipe's
ORDER=(sentence_only full)
declare -A LEFT_OUT=()  # the terms the recipe leaves out
for term in ${ZERO_TERMS:-}; do LEFT_OUT[$term]=1; done
TRAINED=$(( ${#TERMS[@]} - ${#LEFT_OUT[@]} ))
for term in "${TERMS[@]}"; do
  [[ $term == senta ]] || CONFIGS[sentence_only]+=" --weights.$term=0"
  if [[ -n "${LEFT_OUT[$term]:-}" ]]; then
    CONFIGS[with_$term]="--weights.$term=${WITH_WEIGHT[$term]:-1.0}"; ORDER+=("with_$term")
  elif [[ ! ( $TRAINED == 2 && -z "${LEFT_OUT[senta]:-}" && $term != senta ) ]]; then
    CONFIGS[no_$term]="--weights.$term=0"; ORDER+=("no_$term")  # unless that leaves SentA alone: sentence_only
  fi
done
if [[ $SCALED_TERMS != - ]]; then
  for term in ${SCALED_TERMS//,/ }; do CONFIGS[${term}_weight_1]="--weights.$term=1.0"; ORDER+=("${term}_weight_1"); done
fi
if [[ $SENT_MODE == cross_lingual ]]; then
  CONFIGS[struca_sent_monolingual]="--struct_sent_mode=monolingual --struct_bank_size=0"; ORDER+=(struca_sent_monolingual)
else
  CONFIGS[struca_sent_cross_lingual]="--struct_sent_mode=cross_lingual"; ORDER+=(struca_sent_cross_lingual)
fi
if [[ $BANK_SIZE != 0 ]]; then CONFIGS[no_struct_bank]="--struct_bank_size=0"; ORDER+=(no_struct_bank); fi
if [[ -n "${SUBWORD_STUDENT:-}" ]]; then
  CONFIGS[subword_embedding_init]="--student=$SUBWORD_STUDENT"; ORDER+=(subword_embedding_init)
fi

mkdir -p "$OUT"
echo "ablation: $STEPS steps per config, seed $SEED, max_length $MAX_LENGTH, into $OUT"
for name in "${ORDER[@]}"; do
  read -r -a config_args <<< "${CONFIGS[$name]}"
  if [[ -f "$OUT/$name/eval/retrieval.json" && ( $OOD == none || -f "$OUT/$name/eval_ood/retrieval.json" ) ]]; then
    echo "== $name: trained and evaluated in $OUT/$name already, kept"; continue
  fi
  echo "== $name: ${config_args[*]}"
  mkdir -p "$OUT/$name"
  if [[ ! -f "$OUT/$name/train/export/hf/mmkd_student.json" ]]; then
    again=()  # a stopped run: resume from its checkpoints, or start over when it wrote none
    if [[ -n "$(ls -A "$OUT/$name/train/checkpoints" 2>/dev/null)" ]]; then again=(--resume)
    elif [[ -n "$(ls -A "$OUT/$name/train" 2>/dev/null)" ]]; then again=(--overwrite); fi
    "$PYTHON" -m mmkd train "$RECIPE" "${COMMON_ARGS[@]}" "${config_args[@]}" --output_dir="$OUT/$name/train" \
      "${again[@]}" 2>&1 | tee -a "$OUT/$name/train.log" | grep -E "^mmkd train|error" || true
  fi
  [[ -f "$OUT/$name/train/export/hf/mmkd_student.json" ]] || { echo "$name: training failed, see $OUT/$name/train.log"; exit 1; }
  "$PYTHON" -m mmkd eval retrieval --corpus "$CORPUS" --models "$name=$OUT/$name/train/export/hf" \
    --out "$OUT/$name/eval" --pool "$POOL" --seed "$SEED" --max-length "$MAX_LENGTH" "${TEACHER_EVAL[@]}" \
    > "$OUT/$name/eval.log" 2>&1 || { echo "$name: evaluation failed, see $OUT/$name/eval.log"; exit 1; }
  if [[ $OOD != none ]]; then
    "$PYTHON" -m mmkd eval retrieval --corpus "$CORPUS" --models "$name=$OUT/$name/train/export/hf" \
      --out "$OUT/$name/eval_ood" --out-of-domain "$OOD" --pool "$POOL" --seed "$SEED" --max-length "$MAX_LENGTH" \
      "${TEACHER_EVAL[@]}" > "$OUT/$name/eval_ood.log" 2>&1 \
      || { echo "$name: out-of-domain evaluation failed, see $OUT/$name/eval_ood.log"; exit 1; }
  fi
done
{
  echo "Means, x→y / y→x:"; "$PYTHON" scripts/ablation_table.py --summary "${ORDER[@]/#/$OUT/}"
  echo; echo "Test split:"; "$PYTHON" scripts/ablation_table.py "${ORDER[@]/#/$OUT/}"
  if [[ $OOD != none ]]; then echo; echo "Out of domain ($OOD):"; "$PYTHON" scripts/ablation_table.py --eval eval_ood "${ORDER[@]/#/$OUT/}"; fi
} | tee "$OUT/ablation.md"
