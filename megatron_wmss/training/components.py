"""Build what a training run needs around a train module's model: megatron DDP, megatron's optimizer and
LR scheduler."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainingComponents:
    model: object  # megatron DistributedDataParallel around the train module's model
    optimizer: object
    scheduler: object


def lr_schedule_steps(training_cfg, total_steps: int) -> tuple[int, int]:
    """(warm-up steps, decay steps): `warmup_fraction` of the run, then decay over the whole run."""
    return int(round(training_cfg.warmup_fraction * total_steps)), max(total_steps, 1)


def build_components(cfg, train_module, hf_config: dict, init: dict, total_steps: int) -> TrainingComponents:
    """The train module's model (weights from `init`: branch -> model checkpoint dir) in megatron DDP,
    megatron's optimizer and LR scheduler."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from megatron_wmss.compat.cpu import mark_params_as_cuda
    from megatron_wmss.models.build import transformer_config_from_recipe

    m, p, t = cfg.model, cfg.parallel, cfg.training
    tcfg, arch = transformer_config_from_recipe(
        cfg, hf_config, fp8=m.fp8, fp8_recipe=m.fp8_recipe, fp8_margin=m.fp8_margin,
        fp8_amax_history_len=m.fp8_amax_history_len, fp8_amax_compute_algo=m.fp8_amax_compute_algo,
        recompute_granularity=m.recompute_granularity, calculate_per_token_loss=True)
    module, finalize = train_module.build_model(tcfg, arch, init)
    schedule_config = module.config  # what megatron's schedules read (hidden 2h for the pair)
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
    return TrainingComponents(model, optimizer, scheduler)
