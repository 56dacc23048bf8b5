"""The IDF table of the inference-free query side: BM25 idf of each tokenizer token over the documents
of the given BEIR corpora (documents only, never queries or qrels), English stopwords set to 0.

    python benchmarks/train/make_idf.py --tokenizer ../shared/models/splade-tiny --out idf.json \
        --corpora ../shared/data/{lexicon,scifact,cranfield,cisi,medline,adi,vaswani-npl}
"""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpora", nargs="+", required=True, help="BEIR folders (corpus.jsonl[.gz] in each)")
    p.add_argument("--out", required=True)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--no-stopwords", action="store_true", help="keep the stopwords' idf")
    args = p.parse_args(argv)

    from aftershock.eval.beir import doc_text, find_file, iter_jsonl
    from aftershock.lsr.bm25 import _stopwords
    from aftershock.lsr.static import StaticEncoder
    from pathlib import Path

    texts = [doc_text(o) for c in args.corpora for o in iter_jsonl(find_file(Path(c), "corpus"))]
    enc = StaticEncoder(args.tokenizer, doc_max_length=args.max_length).fit_idf(texts)
    if not args.no_stopwords:
        for w in _stopwords("en"):
            i = enc.vocab.token_to_id.get(w)
            if i is not None:
                enc.weights[i] = 0.0
    enc.save_idf_json(args.out)
    print(f"idf over {len(texts)} documents from {len(args.corpora)} corpora -> {args.out} "
          f"({int((enc.weights > 0).sum())} tokens with weight > 0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
