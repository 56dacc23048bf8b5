#!/bin/bash
# Assemble the folder device_w3.sh carries (DEST, git-ignored in the session's checkout): aftershock/*.py and
# benchmarks/train from this checkout, the training data and IDF table, the six evaluation sets (corpus, queries,
# test qrels), splade-tiny, and the wheels the device lacks (ir-measures, pytrec-eval-terrier).
# Usage: bash benchmarks/train/make_carry.sh DEST [TD_DIR]
set -euo pipefail
DEST=$1
TD=${2:-benchmarks/data/train/td}
SHARED=${SHARED:-../shared}
rm -rf "$DEST"; mkdir -p "$DEST/benchmarks/data/train" "$DEST/eval" "$DEST/wheels"
find aftershock -name '*.py' -not -path '*/__pycache__/*' | while read -r f; do
  mkdir -p "$DEST/$(dirname "$f")"; cp "$f" "$DEST/$f"; done
mkdir -p "$DEST/benchmarks/train"; cp benchmarks/train/*.py benchmarks/train/*.toml benchmarks/train/*.sh "$DEST/benchmarks/train/"
cp -r "$TD" "$DEST/benchmarks/data/train/td"
cp benchmarks/data/train/idf.json "$DEST/benchmarks/data/train/"
for d in ${EVAL_SETS:-scifact cranfield cisi medline adi vaswani-npl}; do
  mkdir -p "$DEST/eval/$d/qrels"
  cp "$SHARED/data/$d/corpus.jsonl.gz" "$SHARED/data/$d/queries.jsonl" "$DEST/eval/$d/"
  cp "$SHARED/data/$d/qrels/test.tsv" "$DEST/eval/$d/qrels/"
done
cp -r "$SHARED/models/splade-tiny" "$DEST/splade-tiny"
cp .devcarry/wheels/*.whl "$DEST/wheels/" 2>/dev/null || true
du -sh "$DEST"; du -sh "$DEST"/*
