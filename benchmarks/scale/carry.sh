#!/usr/bin/env bash
# Copy what a device run of the scale benchmark needs into a git-ignored folder of a checkout (default
# .devcarry/scale of this one): the code (aftershock/, benchmarks/ann, benchmarks/scale), the compact seed and
# the pyseismic-lsr wheel. The seed and wheel are made once:
#   python -m benchmarks.scale.generate seed --docs ../shared/vectors/splade-tiny/lexicon.docs.npz \
#       --queries ../shared/vectors/splade-tiny/lexicon.queries.npz --out .devcarry/scale/seed.npz
#   pip download pyseismic-lsr==0.5.2 --python-version 3.12 --only-binary=:all: --no-deps -d .devcarry/scale/wheels
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
dst=${1:-$src/.devcarry/scale}
mkdir -p "$dst/code/benchmarks"
rm -rf "$dst/code/aftershock" "$dst/code/benchmarks/ann" "$dst/code/benchmarks/scale"
cp -r "$src/aftershock" "$dst/code/"
rm -rf "$dst/code/aftershock/models" "$dst/code/aftershock/data"  # the shipped model and demo data: not needed
cp -r "$src/benchmarks/ann" "$src/benchmarks/scale" "$dst/code/benchmarks/"
find "$dst/code" -name __pycache__ -type d -prune -exec rm -rf {} +
du -sh "$dst"
