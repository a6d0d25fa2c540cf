"""ORPO (weak-to-strong Stage II without a reference model): one model trained on chosen/rejected pairs
with `L = L_SFT(chosen) + lambda * L_OR` (Hong et al. 2024, Eq. 6), per pair.

L_SFT is the chosen answer's negative log-likelihood averaged over its supervised tokens, and L_OR is
`losses.orpo_odds_ratio_loss` on the length-averaged log-probs of chosen and rejected; the loss is their
mean over pairs. Log-probs come from the fused vocab-parallel CE (no `[tokens, V/tp]` logits held).
"""

from __future__ import annotations

from megatron_wmss.distributed import batch_to_device
from megatron_wmss.training.preference import PairObjective, flatten_pairs, pair_log_probs, pair_reduced
from megatron_wmss.training.sft import SFT


class ORPO(PairObjective, SFT):
    """SFT's model building and export; the pair loss instead of the token CE."""

    def forward_step(self, data_iterator, model):
        """Logged next to the loss: the chosen NLL per token, the odds-ratio term, the log odds ratio
        (margin) and the share of pairs whose chosen answer has the larger odds (accuracy)."""
        from megatron.core.utils import unwrap_model

        from megatron_wmss.losses import orpo_odds_ratio_loss
        from megatron_wmss.losses.preference import log1m_exp

        batch = flatten_pairs(batch_to_device(next(data_iterator)))
        hidden = model(batch["tokens"], batch["position_ids"], attention_mask=None)

        def loss_func(h):
            logp_c, logp_r, n_c, n_r = pair_log_probs(h, unwrap_model(model), batch)
            mean_c, mean_r = logp_c / n_c, logp_r / n_r
            odds_ratio = orpo_odds_ratio_loss(mean_c, mean_r)
            nll = -mean_c
            log_odds = (mean_c - log1m_exp(mean_c)) - (mean_r - log1m_exp(mean_r))
            return pair_reduced(nll + self.config.orpo_lambda * odds_ratio, nll=nll, odds_ratio_loss=odds_ratio,
                                reward_margin=log_odds, reward_accuracy=(log_odds > 0).float())

        return hidden, loss_func
