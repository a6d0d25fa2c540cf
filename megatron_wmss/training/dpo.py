"""DPO (weak-to-strong Stage II): the policy trained on chosen/rejected pairs against a frozen
reference model (M_plus), with the per-pair loss `losses.dpo_loss`.

Policy and reference are the two branches of models.pair.WeakStrongPair with the second one frozen
(the WD-JT pair with freeze_weak): one pipeline, both run on the same micro-batch, the reference without
autograd and outside the optimizer. Sequence log-probs come from each branch's final hidden states by
the fused vocab-parallel CE, so neither model's `[tokens, V/tp]` logits are held.
"""

from __future__ import annotations

import torch

from megatron_wmss.distributed import batch_to_device
from megatron_wmss.training.preference import PairObjective, flatten_pairs, pair_log_probs, pair_reduced
from megatron_wmss.training.train_module import TrainModule, build_pair


class DPO(PairObjective, TrainModule):
    init_branches = ("model", "reference")

    def build_model(self, tcfg, arch, init: dict):
        return build_pair(tcfg, arch, init.get("model"), init.get("reference"), freeze_weak=True)

    def forward_step(self, data_iterator, model):
        """Policy and reference on the 2b sequences of b pairs; loss = mean over pairs of the DPO loss.
        Logged: the implicit rewards beta*(log pi - log ref) of chosen and rejected, their margin, and
        the share of pairs whose chosen reward is the larger (reward accuracy)."""
        from megatron.core.utils import unwrap_model

        from megatron_wmss.losses import dpo_loss

        batch = flatten_pairs(batch_to_device(next(data_iterator)))
        output = model(batch["tokens"], batch["position_ids"], attention_mask=None)
        beta = self.config.beta

        def loss_func(hidden):
            h_policy, h_reference = hidden
            pair = unwrap_model(model)
            policy_c, policy_r, _, _ = pair_log_probs(h_policy, pair.strong, batch)
            with torch.no_grad():
                ref_c, ref_r, _, _ = pair_log_probs(h_reference, pair.weak, batch)
            loss = dpo_loss(policy_c, policy_r, ref_c, ref_r, beta, label_smoothing=self.config.label_smoothing)
            reward_c, reward_r = beta * (policy_c - ref_c), beta * (policy_r - ref_r)
            return pair_reduced(loss, reward_chosen=reward_c, reward_rejected=reward_r,
                                reward_margin=reward_c - reward_r, reward_accuracy=(reward_c > reward_r).float())

        return output, loss_func

    def branches(self, module) -> dict:
        return {"model": module.strong}  # the reference is unchanged
