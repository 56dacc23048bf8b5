"""`aftershock.train.losses`: each loss against values computed by hand on tiny tensors, the quadratic
warm-up schedule, and the IDF-aware (document-only) FLOPS configuration."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from aftershock.train.losses import (flops, infonce, kl_distill, l1, margin_mse, quadratic_warmup,  # noqa: E402
                                   regularizer)

W = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])


def test_flops_hand_computed():
    # column means [2, 0, 1] -> 2² + 0² + 1² = 5
    assert flops(W).item() == pytest.approx(5.0)
    assert flops(torch.zeros(4, 7)).item() == 0.0


def test_l1_hand_computed():
    # row sums 3 and 3 -> mean 3
    assert l1(W).item() == pytest.approx(3.0)
    assert l1(torch.tensor([[0.5, 0.25, 0.0]])).item() == pytest.approx(0.75)


def test_flops_punishes_shared_terms_more_than_l1():
    # same L1 mass; spread over rows on one column (a long posting list) vs on distinct columns
    shared = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    distinct = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert l1(shared).item() == l1(distinct).item() == 1.0
    assert flops(shared).item() == pytest.approx(1.0)     # 1²
    assert flops(distinct).item() == pytest.approx(0.5)   # 0.5² + 0.5²


@pytest.mark.parametrize("step,expected", [(0, 0.0), (1, 0.005), (5, 0.125), (10, 0.5), (11, 0.5), (1000, 0.5)])
def test_quadratic_warmup_values(step, expected):
    # 0.5 · min(1, (step/10)²)
    assert quadratic_warmup(step, 0.5, 10) == pytest.approx(expected)


def test_quadratic_warmup_zero_T_and_bad_input():
    assert quadratic_warmup(0, 0.3, 0) == pytest.approx(0.3)
    assert quadratic_warmup(7, 0.3, 0) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        quadratic_warmup(1, 0.3, -1)


def test_infonce_in_batch_negatives_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # rows 0, 1: positives; row 2: a shared negative
    # scores row 0 = [1, 0, 1] -> -log(e / (e + 1 + e)) = log(2e + 1) - 1; row 1 the same by symmetry
    expected = math.log(2 * math.e + 1) - 1
    assert infonce(q, d, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)
    # τ = 0.5 doubles the scores: log(2e² + 1) - 2
    assert infonce(q, d, [0, 1], temperature=0.5).item() == pytest.approx(math.log(2 * math.e ** 2 + 1) - 2, rel=1e-6)
    # the other query's positive counts as a negative: with only the own positive it would be log(e+1) - 1
    assert infonce(q, d, [0, 1]).item() > math.log(math.e + 1) - 1


def test_infonce_rejects_wrong_pos_index():
    with pytest.raises(ValueError, match="pos_index"):
        infonce(torch.ones(2, 3), torch.ones(4, 3), torch.tensor([0, 1, 2]))


def test_margin_mse_hand_computed():
    student = torch.tensor([[3.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    # row 0: student margins [2, 1], teacher [1, 2] -> errors 1, -1; row 1: [0, 0] vs [2, 2] -> -2, -2
    # mean of 1, 1, 4, 4 = 2.5
    assert margin_mse(student, teacher).item() == pytest.approx(2.5)
    # only margins matter: shifting a row of teacher scores changes nothing
    assert margin_mse(student, teacher + torch.tensor([[10.0], [-3.0]])).item() == pytest.approx(2.5)


def test_margin_mse_shape_errors():
    with pytest.raises(ValueError, match="teacher"):
        margin_mse(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=">= 2 candidates"):
        margin_mse(torch.zeros(2, 1), torch.zeros(2, 1))


def test_kl_distill_hand_computed():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    # p = [3/4, 1/4], q = [1/2, 1/2]: KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kl_distill(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    # τ = 2 with doubled teacher scores gives the same teacher distribution (student stays uniform)
    assert kl_distill(student, 2 * teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)
    # batch mean: a second query whose student matches its teacher adds 0
    both = kl_distill(torch.tensor([[0.0, 0.0], [1.0, 2.0]]), torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]]))
    assert both.item() == pytest.approx(expected / 2, rel=1e-6)


def test_regularizer_with_query_terms():
    q = torch.tensor([[1.0, 1.0, 0.0]])  # flops 2, l1 2
    total, parts = regularizer(W, q, step=5, warmup_steps=10, flops_doc=0.4, flops_query=0.8, l1_query=1.0)
    # warm-up factor (5/10)² = 0.25: 0.1·5 + 0.2·2 + 0.25·2
    assert total.item() == pytest.approx(1.4)
    assert parts == {"flops_doc": pytest.approx(5.0), "flops_query": pytest.approx(2.0), "lambda": pytest.approx(0.1)}


def test_idf_aware_flops_is_document_only():
    """Inference-free: q = IDF of the query tokens, no gradient; the penalty sees the documents only
    and, as scored, prunes the low-IDF token of a document first."""
    d = torch.tensor([[1.0, 1.0]], requires_grad=True)
    q = torch.tensor([[3.0, 0.5]])  # idf of a rare and of a frequent query token
    penalty, parts = regularizer(d, None, step=10, warmup_steps=10, flops_doc=1.0, flops_query=5.0, l1_query=5.0)
    assert penalty.item() == pytest.approx(flops(d).item()) and parts["flops_query"] is None
    loss = -(q @ d.T).sum() + penalty  # maximise the score, pay the FLOPS of the document weights
    loss.backward()
    # d loss / d w_t = -idf(t) + 2·w_t (B = 1): the frequent token is pushed down, the rare one up
    assert d.grad.tolist() == [[pytest.approx(-1.0), pytest.approx(1.5)]]


def test_kl_normalize_is_scale_free_and_hand_computed():
    from aftershock.train.losses import standardize

    teacher = torch.tensor([[3.0, 1.0, 2.0]])
    student = torch.tensor([[30.0, 5.0, 20.0]])
    base = kl_distill(student, teacher, normalize=True).item()
    # any positive scale or shift of the student (or the teacher) leaves the normalised KL unchanged
    for a, b in ((0.1, 0.0), (7.0, -3.0)):
        assert kl_distill(a * student + b, teacher, normalize=True).item() == pytest.approx(base, rel=1e-4)
        assert kl_distill(student, a * teacher + b, normalize=True).item() == pytest.approx(base, rel=1e-4)
    # while the raw KL falls as the student's scores shrink, without any reordering (the old failure)
    assert kl_distill(0.1 * student, teacher).item() < kl_distill(student, teacher).item() / 5
    # hand value: z(teacher) = [1.2247, -1.2247, 0], z(student) from mean 55/3 and population std
    z = standardize(student)[0]
    s = student[0] - student[0].mean()
    assert z.tolist() == pytest.approx((s / s.pow(2).mean().sqrt()).tolist(), rel=1e-5)
    zt = torch.tensor([1.5 ** 0.5, -(1.5 ** 0.5), 0.0])
    p, q = torch.softmax(zt, 0), torch.softmax(z, 0)
    assert base == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-4)
    # a constant row (a teacher with no preference) standardises to 0: uniform target
    assert standardize(torch.tensor([[2.0, 2.0]])).abs().max().item() < 1e-5
    # ... with a finite gradient (an all-zero student row at the start of training gave NaN through sqrt(0))
    flat = torch.zeros(2, 3, requires_grad=True)
    kl_distill(flat, torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0]]), normalize=True).backward()
    assert torch.isfinite(flat.grad).all()
