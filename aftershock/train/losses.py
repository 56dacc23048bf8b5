"""Training losses for sparse encoders: pure torch functions over score and weight tensors.

Notation: a batch of ``B`` queries, vocabulary size ``V``; ``w`` is a (B, V) batch of non-negative
term weights (queries or documents); scores are plain dot products ``s(q, d) = q · d``.

Sparsity regularisers (Paria et al., "Minimizing FLOPs to Learn Efficient Sparse Representations",
ICLR 2020; SPLADE, Formal et al. 2021):

* FLOPS:  ``flops(w) = Σ_j ( (1/B) Σ_i w_ij )²`` -- the squared mean activation of each vocabulary
  term, summed over terms; a smooth proxy of the number of multiply-adds of an inverted-index search
  (it punishes terms that are active in many rows, i.e. long posting lists).
* L1:     ``l1(w) = (1/B) Σ_i Σ_j |w_ij|``.
* Both are scaled by ``quadratic_warmup(t, λ, T) = λ · min(1, (t/T)²)`` (``T = 0`` means ``λ`` from
  the start): sparsity is enforced only after the ranking loss has shaped the representation.

IDF-aware FLOPS for inference-free models (Geng et al., "Towards Competitive Search Relevance For
Inference-Free Learned Sparse Retrievers", 2024) is a configuration of the same formula, not a new
one: the query is ``q_t = idf(t)`` for each token ``t`` of the query (tokenizer + IDF table, no
parameters, no gradient), so the score is ``s(q, d) = Σ_{t ∈ q} idf(t) · w_d(t)``. The regulariser is
then applied to the DOCUMENT weights only (``flops(d)``, with no query term: the query side has
nothing to learn), using the document weights exactly as they are scored. Because the gradient of
the ranking loss with respect to ``w_d(t)`` is proportional to ``idf(t)``, a low-IDF token earns
little relevance per unit of weight while costing the same FLOPS penalty, so the penalty prunes
low-IDF (frequent, long-posting-list) tokens first and keeps the rare, discriminative ones.
`regularizer` computes this: pass ``q=None`` for an inference-free model.

Ranking losses (all return the batch mean, a 0-d tensor):

* `infonce`: ``-log softmax_k(q_i · d_k / τ)[pos_i]`` over ALL documents of the batch (the other
  queries' positives and negatives are in-batch negatives).
* `margin_mse` (Hofstätter et al. 2020): with the positive in column 0 of (B, n) candidate scores,
  ``mean_{i, j ≥ 1} ((s_i0 − s_ij) − (t_i0 − t_ij))²``.
* `kl_distill`: ``KL(softmax(t_i/τ) ‖ softmax(s_i/τ)) = Σ_j p_ij (log p_ij − log q_ij)`` per query
  over its candidates, mean over queries (no τ² factor). ``normalize=True`` standardises each query's
  row on both sides first, ``z(x) = (x − mean_j x) / (std_j x + ε)``: the loss then depends on the
  student's ordering and relative gaps only, never on its score scale. Without it a student whose scores
  span a different range than the teacher's (IDF-weighted dot products span ~50, the min-max ensemble
  ×10 spans 10) lowers the KL most cheaply by shrinking every score, which reorders nothing: on the
  training dev split the old default's KL at τ=1 falls from 4.2 to 0.48 by scaling its scores by 0.2
  (benchmarks/train/teacher_dev.py), the drop the old distillation run logged while dev MRR stood still.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flops(w: torch.Tensor) -> torch.Tensor:
    """FLOPS regulariser ``Σ_j (mean_i w_ij)²`` of a (B, V) weight batch."""
    _check_2d(w, "w")
    return (w.mean(dim=0) ** 2).sum()


def l1(w: torch.Tensor) -> torch.Tensor:
    """L1 regulariser ``mean_i Σ_j |w_ij|`` of a (B, V) weight batch."""
    _check_2d(w, "w")
    return w.abs().sum(dim=1).mean()


def quadratic_warmup(step: float, lam: float, T: float) -> float:
    """Regulariser weight at optimizer step ``step``: ``lam · min(1, (step/T)²)``; ``T = 0`` -> ``lam``."""
    if T < 0 or step < 0:
        raise ValueError(f"quadratic_warmup(step={step}, T={T}): step and T must be >= 0")
    if T == 0:
        return float(lam)
    return float(lam) * min(1.0, (step / T) ** 2)


def infonce(q: torch.Tensor, d: torch.Tensor, pos_index: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Contrastive loss with in-batch negatives.

    ``q`` (B, V) queries, ``d`` (N, V) every document of the batch, ``pos_index`` (B,) the row of ``d``
    holding query i's positive. ``scores = q @ dᵀ / τ`` (B, N); cross-entropy to column ``pos_index[i]``.
    """
    _check_2d(q, "q")
    _check_2d(d, "d")
    pos_index = torch.as_tensor(pos_index, dtype=torch.long, device=q.device)
    if pos_index.shape != (q.shape[0],):
        raise ValueError(f"pos_index has shape {tuple(pos_index.shape)}; need ({q.shape[0]},), one per query")
    return F.cross_entropy((q @ d.T) / temperature, pos_index)


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MarginMSE of (B, n) candidate scores, positive in column 0: MSE of ``s0 − sj`` vs ``t0 − tj``, j ≥ 1."""
    _check_pair(student, teacher)
    if student.shape[1] < 2:
        raise ValueError(f"margin_mse needs >= 2 candidates per query (a positive and a negative), got {student.shape[1]}")
    s = student[:, :1] - student[:, 1:]
    t = teacher[:, :1] - teacher[:, 1:]
    return F.mse_loss(s, t.to(s.dtype))


def standardize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each row of (B, n) scores to mean 0, standard deviation 1 (a constant row becomes 0)."""
    x = x - x.mean(dim=1, keepdim=True)
    return x / (x.pow(2).mean(dim=1, keepdim=True) + eps * eps).sqrt()  # eps inside: finite gradient at 0


def kl_distill(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
               normalize: bool = False) -> torch.Tensor:
    """``KL(softmax(teacher/τ) ‖ softmax(student/τ))`` per query over its (B, n) candidates, batch mean;
    ``normalize=True``: both sides standardised per query first (scale-free, see the module docstring)."""
    _check_pair(student, teacher)
    if normalize:
        student, teacher = standardize(student.float()), standardize(teacher.float())
    log_q = F.log_softmax(student / temperature, dim=1)
    log_p = F.log_softmax(teacher.to(student.dtype) / temperature, dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def regularizer(d: torch.Tensor, q: torch.Tensor | None = None, *, step: float, warmup_steps: float,
                flops_doc: float = 0.0, flops_query: float = 0.0, l1_query: float = 0.0):
    """The warmed-up sparsity penalty and its parts.

    ``warm(λ) = quadratic_warmup(step, λ, warmup_steps)``; penalty =
    ``warm(flops_doc)·flops(d) + warm(flops_query)·flops(q) + warm(l1_query)·l1(q)``.
    ``q=None`` (an inference-free model: the query is tokenizer + IDF and has no gradient) drops the
    query terms: IDF-aware FLOPS on the documents only, see the module docstring.
    Returns ``(penalty tensor, {"flops_doc": float, "flops_query": float|None, "lambda": float})``
    where the FLOPS values are unweighted.
    """
    lam_d = quadratic_warmup(step, flops_doc, warmup_steps)
    f_d = flops(d)
    total = lam_d * f_d
    parts = {"flops_doc": float(f_d.detach()), "flops_query": None, "lambda": lam_d}
    if q is not None:
        f_q = flops(q)
        total = total + quadratic_warmup(step, flops_query, warmup_steps) * f_q
        total = total + quadratic_warmup(step, l1_query, warmup_steps) * l1(q)
        parts["flops_query"] = float(f_q.detach())
    return total, parts


def _check_2d(x: torch.Tensor, name: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; need a 2-d (batch, vocab) tensor")


def _check_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    _check_2d(student, "student")
    if tuple(teacher.shape) != tuple(student.shape):
        raise ValueError(f"teacher scores have shape {tuple(teacher.shape)} but student scores "
                         f"{tuple(student.shape)}; need one teacher score per candidate")
