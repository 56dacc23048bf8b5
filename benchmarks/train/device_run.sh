#!/bin/bash
# One H200 call (run from the repo root through the `device` tool, carrying benchmarks/data/train):
# splade-tiny teacher scores (skipped when already in the data), then the ablation driver, then each
# trained variant's model as an fp16 tarball in $OUT. Usage: bash benchmarks/train/device_run.sh VARIANTS DEADLINE_S
set -uo pipefail
export PYTHONUNBUFFERED=1
VARIANTS=${1:-full}
DEADLINE=${2:-420}
D=benchmarks/data/train
OUT=${OUT:-runs/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $D/wheels/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site
mkdir -p ../shared/models && cp -r $D/splade-tiny ../shared/models/ || exit 1   # default.toml's backbone path
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if ! python3 -c "import gzip,json,sys; sys.exit('splade-tiny' not in json.loads(gzip.open('$D/td/dev.jsonl.gz').readline())['scores'])"; then
  python3 -m aftershock train-data score --input $D/td --output $D/td --no-corpus --device cuda --batch-size 256 \
      --teacher splade-tiny=sparse:$D/splade-tiny 2>&1 | grep -v "Loading weights" | tee "$OUT/score.log"
  cp $D/td/train.jsonl.gz $D/td/dev.jsonl.gz "$OUT/"
fi
E=$D/eval
timeout $((DEADLINE + 150)) python3 benchmarks/train/ablation.py --config benchmarks/train/default.toml --device cuda \
    --variants "$VARIANTS" --baselines "${BASELINES-bm25,$D/splade-tiny}" --batch-size 128 --deadline "$DEADLINE" \
    --datasets $E/scifact $E/cranfield $E/cisi $E/medline $E/adi $E/vaswani-npl --out runs/ablation 2>&1 \
    | grep -v "Loading weights\|Writing model" | tee "$OUT/ablation.log"
cp runs/ablation/results.tsv "$OUT/"
for v in ${VARIANTS//,/ }; do
  [ -f runs/ablation/$v/summary.json ] || continue
  python3 - "$v" <<'PY'
import sys
from aftershock.lsr.model import SparseModel
v = sys.argv[1]
SparseModel.load(f"runs/ablation/{v}/model").save(f"runs/ablation/{v}/model-fp16", dtype="fp16")
PY
  tar czf "$OUT/$v.tgz" -C runs/ablation/$v model-fp16 summary.json log.jsonl variant.json
done
ls -la "$OUT"
