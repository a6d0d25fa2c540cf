"""WMSS losses (paper Eq. 5-7), vocab-parallel over the tensor-model-parallel group.

- `mixed_logit_cross_entropy`: mixed-logit CE on materialized logit shards (Eq. 5-6).
- `mixed_linear_cross_entropy`: the same loss fused with both output layers, vocab-blocked, never
  holding `[tokens, V/tp]` logits of both models (WD-JT training).
- `linear_cross_entropy`: the plain CE of one model with the same fused kernel (SFT training).
- `vocab_parallel_entropy` / `linear_vocab_parallel_entropy`: per-token predictive entropy (Eq. 7)
  from logit shards / from hidden states (WD-DS scoring).
- `dpo_loss`, `orpo_odds_ratio_loss`: per-pair preference losses on per-sequence log-probs;
  `sequence_log_probs`: those log-probs from hidden states with the fused kernel (weak-to-strong
  Stage II, docs/w2s.md).
- `gather_hidden`: the sequence-parallel final hidden states gathered for these losses.
See docs/losses.md.
"""

from megatron_wmss.losses._common import IGNORE_INDEX
from megatron_wmss.losses.fused import linear_cross_entropy, linear_vocab_parallel_entropy, mixed_linear_cross_entropy
from megatron_wmss.losses.logits import mixed_logit_cross_entropy, vocab_parallel_entropy
from megatron_wmss.losses.preference import dpo_loss, orpo_odds_ratio_loss, sequence_log_probs
from megatron_wmss.losses.sequence_parallel import gather_hidden

__all__ = ["IGNORE_INDEX", "linear_cross_entropy", "mixed_logit_cross_entropy", "mixed_linear_cross_entropy",
           "vocab_parallel_entropy", "linear_vocab_parallel_entropy", "dpo_loss", "orpo_odds_ratio_loss",
           "sequence_log_probs", "gather_hidden"]
