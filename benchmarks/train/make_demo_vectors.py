"""Re-encode the bundled demo collection (aftershock/data/cranfield) with a model, in the bundled id order:
documents are title + " " + text from the BEIR folder, queries from its queries.jsonl.

    python benchmarks/train/make_demo_vectors.py --model default --beir ../shared/data/cranfield
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--beir", required=True, help="the Cranfield BEIR folder")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "aftershock" / "data" / "cranfield"))
    args = p.parse_args(argv)

    from aftershock.eval.beir import doc_text, find_file, iter_jsonl
    from aftershock.lsr import load_encoder

    out = Path(args.out)
    enc = load_encoder(args.model)
    docs = {str(o["_id"]): doc_text(o) for o in iter_jsonl(find_file(Path(args.beir), "corpus"))}
    queries = {str(o["_id"]): o["text"] for o in iter_jsonl(Path(args.beir) / "queries.jsonl")}
    for side, texts in (("docs", docs), ("queries", queries)):
        ids = (out / f"cranfield.{side}.ids.txt").read_text().split()
        batch = (enc.encode_documents if side == "docs" else enc.encode_queries)([texts[i] for i in ids])
        np.savez_compressed(out / f"cranfield.{side}.npz", indptr=batch.indptr.astype(np.int64),
                            indices=batch.indices.astype(np.uint16), values=batch.values.astype(np.float16))
        print(f"{side}: {len(ids)} vectors, {batch.nnz / len(ids):.1f} non-zeros each -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
