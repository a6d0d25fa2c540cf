"""Build what a training run needs: the model (one GPTModel, or the weak/strong pair), megatron DDP,
megatron's optimizer and LR scheduler, with the initial weights loaded."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TrainingComponents:
    model: object  # megatron DistributedDataParallel around a GPTModel or a WeakStrongPair
    optimizer: object
    scheduler: object
    tcfg: object  # the branches' TransformerConfig
    arch: object  # models.build.ArchInfo
    schedule_config: object  # the config megatron's schedules read (hidden 2h for the pair)


def lr_schedule_steps(training_cfg, total_steps: int) -> tuple[int, int]:
    """(warm-up steps, decay steps): `warmup_fraction` of the run, then decay over the whole run."""
    return int(round(training_cfg.warmup_fraction * total_steps)), max(total_steps, 1)


def build_components(cfg, hf_config: dict, init: dict, total_steps: int) -> TrainingComponents:
    """`init` maps branch ('model' for sft; 'strong' and 'weak' for wmss) to a model checkpoint dir."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from megatron_wmss.checkpoint import load_model
    from megatron_wmss.compat.cpu import mark_params_as_cuda
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf
    from megatron_wmss.models.pair import WeakStrongPair, finalize_pair_grads

    m, p, t = cfg.model, cfg.parallel, cfg.training
    tcfg, arch = transformer_config_from_hf(
        hf_config, tp=p.tp, pp=p.pp, cp=p.cp, params_dtype=m.params_dtype, transformer_impl=m.transformer_impl,
        make_vocab_size_divisible_by=m.make_vocab_size_divisible_by, sequence_parallel=p.sequence_parallel,
        fp8=m.fp8, fp8_recipe=m.fp8_recipe, fp8_margin=m.fp8_margin, fp8_amax_history_len=m.fp8_amax_history_len,
        fp8_amax_compute_algo=m.fp8_amax_compute_algo, recompute_granularity=m.recompute_granularity,
        calculate_per_token_loss=True)
    if t.objective == "sft":
        module = build_gpt_model(tcfg, arch)
        module.return_hidden = True  # the loss owns the output projection (objectives.sft_forward_step)
        if init.get("model"):
            load_model(module, init["model"])
        finalize = finalize_model_grads
    else:
        if tcfg.sequence_parallel:
            raise NotImplementedError("parallel.sequence_parallel with training.objective=wmss is not supported yet")
        strong, weak = build_gpt_model(tcfg, arch), build_gpt_model(tcfg, arch)
        for name, branch in (("strong", strong), ("weak", weak)):
            if init.get(name):
                load_model(branch, init[name])
        module = WeakStrongPair(strong, weak, freeze_weak=cfg.wmss.freeze_weak)
        finalize = finalize_pair_grads
    schedule_config = module.config
    model = DistributedDataParallel(
        config=schedule_config, module=module,
        ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True,
                                                 use_distributed_optimizer=p.use_distributed_optimizer))
    schedule_config.finalize_model_grads_func = finalize
    schedule_config.no_sync_func = model.no_sync
    if p.use_distributed_optimizer or tcfg.bf16 or tcfg.fp16:  # the optimizers that check `.type()`
        mark_params_as_cuda(model)
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=t.lr, min_lr=t.min_lr, weight_decay=t.weight_decay,
                        adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, adam_eps=t.adam_eps,
                        clip_grad=t.clip_grad, bf16=tcfg.bf16, fp16=tcfg.fp16, params_dtype=tcfg.params_dtype,
                        use_distributed_optimizer=p.use_distributed_optimizer), [model])
    warmup, decay = lr_schedule_steps(t, total_steps)
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=t.lr, min_lr=t.min_lr, lr_warmup_steps=warmup, lr_decay_steps=decay,
        lr_decay_style=t.lr_decay, start_wd=t.weight_decay, end_wd=t.weight_decay, wd_incr_steps=decay,
        wd_incr_style="constant")
    return TrainingComponents(model, optimizer, scheduler, tcfg, arch, schedule_config)


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [param for param in model.parameters() if param.requires_grad]
