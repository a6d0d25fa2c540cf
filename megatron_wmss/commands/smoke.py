"""`wmss smoke`: build a model from a HF config and train it for a few steps on one fixed random batch.

Shows on any machine (CPU: gloo + the compat layer; GPU: nccl, TE when installed) that the model
builder, megatron's schedules, DDP and optimizer work end to end. Run under torchrun for TP/PP.
"""

from __future__ import annotations

import argparse
import time

import torch

TINY_QWEN3 = dict(model_type="qwen3", vocab_size=1000, hidden_size=128, intermediate_size=384,
                  num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  tie_word_embeddings=True, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1e6)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="wmss smoke", description=__doc__)
    parser.add_argument("--hf-config", help="HF config.json or model dir (default: a built-in tiny Qwen3)")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_wmss import distributed
    from megatron_wmss.compat.cpu import mark_params_as_cuda
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    start = time.time()
    layout = distributed.initialize(tp=args.tp, pp=args.pp)
    tcfg, arch = transformer_config_from_hf(args.hf_config or TINY_QWEN3, tp=args.tp, pp=args.pp)
    model = DistributedDataParallel(config=tcfg, ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True),
                                    module=build_gpt_model(tcfg, arch))
    tcfg.finalize_model_grads_func = finalize_model_grads
    mark_params_as_cuda(model)
    optimizer = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=args.lr, clip_grad=1.0,
                                                       bf16=tcfg.bf16, params_dtype=tcfg.params_dtype), [model])
    n_params = sum(p.numel() for p in model.parameters())
    distributed.print_rank0(f"{layout.backend} world={layout.world_size} tp={layout.tp} pp={layout.pp} "
                            f"dp={layout.dp} | {arch.model_type} impl={arch.transformer_impl} "
                            f"vocab {arch.vocab_size}->{arch.padded_vocab_size} | {n_params:,} params on rank 0")
    gen = torch.Generator().manual_seed(0)
    shape = (args.micro_batch_size, args.seq_length)
    device = distributed.compute_device()
    tokens = torch.randint(0, arch.vocab_size, shape, generator=gen).to(device)
    positions = torch.arange(args.seq_length, device=device).expand(shape)

    def forward_step(_, model):
        per_token = model(tokens[:, :-1], positions[:, :-1], attention_mask=None, labels=tokens[:, 1:])
        return per_token, lambda out: (out.float().mean(), {"loss": out.float().mean().detach()})

    for step in range(args.steps):
        model.zero_grad_buffer()
        optimizer.zero_grad()
        out = get_forward_backward_func()(forward_step_func=forward_step, data_iterator=None, model=model,
                                          num_microbatches=1, seq_length=args.seq_length - 1,
                                          micro_batch_size=args.micro_batch_size)
        _, grad_norm, _ = optimizer.step()
        if layout.is_last_stage and layout.tp_rank == 0 and layout.dp_rank == 0:
            print(f"step {step}: loss {out[0]['loss'].item():.4f} grad_norm {grad_norm:.3f}", flush=True)
    distributed.print_rank0(f"smoke OK in {time.time() - start:.1f}s")
    distributed.destroy()
    return 0
