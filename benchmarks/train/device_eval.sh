#!/bin/bash
# One H200 call (through the `device` tool, carrying .devcarry/evalrun made by the block below): the six-set
# `aftershock eval` of BM25, the shipped model and both hybrids with the documents encoded on the GPU in fp32
# (their vectors come back in $OUT as vec_default.tgz.part-* for the CPU acceptance run), then the hybrid weight
# sweep on the title dev split (held out of training). Prepare the carry here first:
#   D=.devcarry/evalrun; mkdir -p $D/wheels; pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d $D/wheels ir_measures==0.4.3 \
#     pytrec_eval_terrier==0.5.11 PyStemmer==3.1.0 bm25s==0.3.16
#   for d in scifact cranfield cisi medline adi vaswani-npl; do mkdir -p $D/data/$d/qrels; \
#     cp ../shared/data/$d/{corpus.jsonl.gz,queries.jsonl} $D/data/$d/; cp ../shared/data/$d/qrels/test.tsv $D/data/$d/qrels/; done
set -uo pipefail
export PYTHONUNBUFFERED=1
D=.devcarry/evalrun
OUT=${OUT:-runs/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $D/wheels/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site
E=$D/data
python3 -m aftershock eval --dataset $E/scifact,$E/cranfield,$E/cisi,$E/medline,$E/adi,$E/vaswani-npl \
    --systems bm25,default,bm25+default,bm25+default:rrf --device cuda --dtype fp32 --batch-size 128 \
    --vectors-dir /tmp/vec --json "$OUT/eval_gpu.json" --no-progress 2>&1 | grep -v "Loading weights" | tee "$OUT/eval_gpu.log"
(cd /tmp/vec && tar czf - default | split -b 15m - "$OUT/vec_default.tgz.part-")
timeout 150 python3 benchmarks/hybrid_weight.py --data $E --model default --sets title-dev --device cuda --dtype fp32 \
    --vectors-dir /tmp/vec-title --json "$OUT/hybrid_weight_default.json" 2>&1 | grep -v "Loading weights" \
    | tee "$OUT/hybrid_weight_default.log"
ls -la "$OUT"
