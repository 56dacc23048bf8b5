"""Numba CPU kernels: plain loops over flat typed arrays, the reference for every other backend.

- `memory`: the index's arrays as one `SeismicArrays`, float16 bits (encode/decode), prefetch, `numba_threads`;
- `topk`: the result heap, the best-first block heap (`heap_pop`), kNN-graph refinement (shared with kv);
- `exact`: exact search over an inverted index;
- `search`: Seismic search (summary scores, block visiting, rescoring);
- `build`: pruning, clustering posting lists into blocks, doc_cut approximations;
- `summaries`: the summary format's one encoder and one decoder.

Entry points are compiled with ``cache=True``; Numba checks only the entry point's own file for changes, so
after editing `memory` or `topk` (inlined into the others) clear ``kernels/__pycache__`` or touch the files
that use them.
"""

from aftershock.seismic.kernels.build import block_lists, doc_cut_arrays, prune_count, prune_fill
from aftershock.seismic.kernels.exact import exact_search_batch
from aftershock.seismic.kernels.memory import (F16_LUT, F16_MAX, SeismicArrays, decode_values, f16_bits, f16_lossless,
                                               f16_view, numba_threads, offsets, prefetch, value_at)
from aftershock.seismic.kernels.search import (query_lists, seismic_search_batch, seismic_search_one,
                                               seismic_search_serial)
from aftershock.seismic.kernels.summaries import DecodedSummaries, decode_summaries, summarize, transpose_summaries
from aftershock.seismic.kernels.topk import heap_pop, heap_push, heap_sorted_into, heapify_blocks, knn_refine

__all__ = [
    "F16_LUT", "F16_MAX", "DecodedSummaries", "SeismicArrays", "block_lists", "decode_summaries", "decode_values",
    "doc_cut_arrays", "exact_search_batch", "f16_bits", "f16_lossless", "f16_view", "heap_pop", "heap_push",
    "heap_sorted_into", "heapify_blocks", "knn_refine", "numba_threads", "offsets", "prefetch", "prune_count",
    "prune_fill", "query_lists", "seismic_search_batch", "seismic_search_one", "seismic_search_serial", "summarize",
    "transpose_summaries", "value_at",
]
