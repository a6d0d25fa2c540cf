"""Preference losses on per-sequence log-probabilities: DPO (with conservative-DPO label smoothing) and
ORPO's odds-ratio term, plus the per-sequence log-probability of a batch from the fused vocab-parallel
cross-entropy (no `[tokens, V/tp]` logits are held).

Inputs of the two losses are tensors of shape `[pairs]`; they return the per-pair loss (the caller
averages). See docs/w2s.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair DPO loss (Rafailov et al. 2023, "Direct Preference Optimization", Eq. 7):

        h = beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]
        loss = -log sigmoid(h)

    with conservative-DPO label smoothing eps (Mitchell 2023, "A note on DPO with noisy preferences";
    the preference label is flipped with probability eps):

        loss = -(1 - eps) * log sigmoid(h) - eps * log sigmoid(-h)

    All four inputs are per-sequence summed log-probabilities `[pairs]`; `beta > 0`, `eps` in [0, 0.5).
    Returns `[pairs]` in the inputs' dtype."""
    beta, label_smoothing = float(beta), float(label_smoothing)
    if beta <= 0:
        raise ValueError(f"beta (preference.beta) must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing (preference.label_smoothing) must be in [0, 0.5), got {label_smoothing}")
    h = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    loss = -F.logsigmoid(h)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-h)
    return loss


def log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate over the whole range (Maechler 2012, "Accurately computing
    log(1 - exp(-|a|))"): log(-expm1(x)) near 0, log1p(-exp(x)) below -log 2."""
    near_zero = x > -0.6931471805599453
    return torch.where(near_zero, torch.log(-torch.expm1(torch.where(near_zero, x, -1.0))),
                       torch.log1p(-torch.exp(torch.where(near_zero, -1.0, x))))


def orpo_odds_ratio_loss(chosen_logps_mean: torch.Tensor, rejected_logps_mean: torch.Tensor) -> torch.Tensor:
    """Per-pair ORPO odds-ratio term (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without
    Reference Model", Eq. 4-7):

        odds(y|x) = P(y|x) / (1 - P(y|x)),  log P(y|x) = (1/m) sum_t log P(y_t | x, y_<t)
        L_OR = -log sigmoid(log odds(y_w|x) - log odds(y_l|x))

    on length-averaged log-probabilities `[pairs]` (each < 0), with log(1 - P) computed stably
    (`log1m_exp`). ORPO's objective adds lambda times this to the chosen sequence's SFT loss (Eq. 6).
    Returns `[pairs]` in the inputs' dtype."""
    log_odds_chosen = chosen_logps_mean - log1m_exp(chosen_logps_mean)
    log_odds_rejected = rejected_logps_mean - log1m_exp(rejected_logps_mean)
    return -F.logsigmoid(log_odds_chosen - log_odds_rejected)


def sequence_log_probs(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, tp_group=None, *,
                       vocab_size: int | None = None, chunk_size: int | None = None,
                       reduce_hidden_grad: bool = True) -> torch.Tensor:
    """Per-sequence summed log-probability `sum_t log softmax(h_t @ w^T)[label_t]` over the supervised
    tokens (labels != -100) of each sequence, from final hidden states `[s, b, h]` and this rank's
    output shard `[V/tp, h]`, by the fused vocab-parallel CE (`linear_cross_entropy`): returns `[b]`,
    differentiable (the hidden-state gradient is reduced over TP as in SFT, unless `reduce_hidden_grad=False`:
    see fused.py)."""
    from megatron_wmss.losses.fused import linear_cross_entropy

    ce = linear_cross_entropy(h, w, labels, tp_group, chunk_size=chunk_size, vocab_size=vocab_size,
                              reduce_hidden_grad=reduce_hidden_grad)
    return -ce.sum(dim=0)
