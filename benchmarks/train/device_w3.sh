#!/bin/bash
# Wave 3 (issue 14): one H200 call, run from the repository root of the session's checkout. Carried: the folder
# $C (a copy of aftershock/*.py and benchmarks/train, benchmarks/data/train/{td,idf.json}, eval/<six BEIR sets>,
# splade-tiny/, wheels/); the fp16 MiniLM backbone is in $BB (copied there by the call just before: both together
# exceed the 64 MiB carry limit). Steps: teacher scores (MiniLM dense + splade-tiny; BM25 comes from prepare),
# the dev-chosen ensemble (select_teachers.py), then every variant trained in parallel on the one GPU within
# TRAIN_SECONDS each (run.max_seconds), each evaluated on the six sets, baselines (BM25, splade-tiny, the old
# default) alongside; the variant with the best dev MRR@10 comes back as an fp16 model in 15 MiB pieces.
# Usage: bash benchmarks/train/device_w3.sh VARIANTS TRAIN_SECONDS
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
C=${C:-.devcarry/w3train}
BB=${BB:-/tmp/bb}
DEV=${DEV:-cuda}
VARIANTS=${1:-infonce,kl-norm}
BUDGET=${2:-240}
OUT=${OUT:-$PWD/runs/out}
mkdir -p "$OUT"
[ -f "$BB/model.safetensors" ] || { echo "no backbone in $BB (carry it in the call before)"; exit 3; }
if ls "$C"/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$C"/wheels/*.whl || exit 4
fi
[ -d "$C/aftershock/models" ] || cp -r aftershock/models "$C/aftershock/"   # shipped files, from the checkout
[ -d "$C/aftershock/data" ] || cp -r aftershock/data "$C/aftershock/"
cd "$C" || exit 5
export PYTHONPATH=$PWD:/tmp/site
ln -sfn "$BB" benchmarks/data/train/minilm-mlm
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
TD=benchmarks/data/train/td
QUIET="Loading weights\|LOAD REPORT\|UNEXPECTED\|MISSING\|^Notes\|^- \|^Key \|^---\|Writing model"
if ! python3 -c "import gzip,json,sys; sys.exit('minilm' not in json.loads(gzip.open('$TD/dev.jsonl.gz').readline())['scores'])"; then
  python3 -m aftershock train-data score --input $TD --output $TD --no-corpus --device "$DEV" --batch-size 256 \
      ${SCORE_ARGS:-} --teacher minilm=dense:"$BB" --teacher splade-tiny=sparse:splade-tiny 2>&1 | grep -v "$QUIET" \
      | tee "$OUT/score.log"
fi
python3 benchmarks/train/select_teachers.py --data $TD --json "$OUT/teachers.json" || exit 6
DS=${DS:-"eval/scifact eval/cranfield eval/cisi eval/medline eval/adi eval/vaswani-npl"}
mkdir -p "${RUNS:-/tmp/w3runs}" && ln -sfn "${RUNS:-/tmp/w3runs}" runs   # outside the carried folder: kept for a next call
timeout $((BUDGET + ${EVAL_SECONDS:-200})) python3 benchmarks/train/ablation.py --config benchmarks/train/default.toml \
    --device "$DEV" --variants "" \
    --baselines "${BASELINES-bm25,splade-tiny,default}" --batch-size 128 --datasets $DS --out runs/base \
    2>&1 | grep -v "$QUIET" > runs/base.log &
for v in ${VARIANTS//,/ }; do
  timeout $((BUDGET + ${EVAL_SECONDS:-200})) python3 benchmarks/train/ablation.py --config benchmarks/train/default.toml \
      --device "$DEV" --variants "$v" \
      --set run.max_seconds="$BUDGET" ${EXTRA:-} --batch-size 128 --datasets $DS --out runs/$v \
      2>&1 | grep -v "$QUIET" > runs/$v.log &
done
wait
tail -n 4 runs/*.log
cat runs/base/results.tsv > "$OUT/results.tsv"
for v in ${VARIANTS//,/ }; do tail -n +2 runs/$v/results.tsv >> "$OUT/results.tsv" 2>/dev/null; done
cat "$OUT/results.tsv"
BEST=$(python3 - "$VARIANTS" <<'PY'
import json, sys
best = None
for v in sys.argv[1].split(","):
    try:
        m = json.load(open(f"runs/{v}/{v}/summary.json"))["best_dev_mrr10"]
    except (OSError, KeyError):
        continue
    print(f"{v}: best dev MRR@10 {m}", file=sys.stderr)
    if m is not None and (best is None or m > best[1]):
        best = (v, m)
print(best[0] if best else "")
PY
)
echo "best variant on dev: $BEST"
tar czf "$OUT/logs.tgz" runs/*.log runs/*/*/log.jsonl runs/*/*/summary.json runs/*/*/variant.json 2>/dev/null
if [ -n "$BEST" ]; then
  python3 -c "
from aftershock.lsr.model import SparseModel
SparseModel.load('runs/$BEST/$BEST/model').save('runs/best-fp16', dtype='fp16')" 2>&1 | grep -v "$QUIET"
  echo "$BEST" > runs/best-fp16/VARIANT
  tar cf - -C runs best-fp16 | split -b 15m -d - "$OUT/model.tar."
fi
if [ -n "$BEST" ] && [ "${SPEED_SECONDS:-40}" -gt 0 ]; then   # document encoding speed, same texts, one run
  timeout "${SPEED_SECONDS:-40}" python3 benchmarks/train/encode_speed.py --corpus eval/scifact/corpus.jsonl.gz \
      --n "${SPEED_N:-2000}" --batch-size 128 --device "$DEV" --systems runs/best-fp16,splade-tiny,default,st:"$BB" \
      --json "$OUT/speed.json" 2>&1 | grep -v "$QUIET"
fi
ls -la "$OUT"
