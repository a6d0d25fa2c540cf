"""`wmss run` frees its training state before the evaluation subprocess starts vLLM on the same GPU:
after a WD-JT phase returns, the models and optimizers live on only in reference cycles (megatron DDP
hooks, the schedule config's bound methods) until `release_accelerator_memory` collects them."""

from megatron_wmss.testing import run_ranks
from tests.training_helpers import TINY_QWEN3, ToySFTDataset, init_checkpoints_rank, make_config


def _train_then_release_rank(workdir):
    import gc

    import torch
    from megatron.core.models.gpt import GPTModel

    from megatron_wmss import distributed
    from megatron_wmss.pipeline import release_accelerator_memory
    from megatron_wmss.training.loop import train

    cfg = make_config(f"{workdir}/run", "wmss")
    distributed.initialize(seed=cfg.training.seed)
    train(cfg, dataset=ToySFTDataset(), hf_config=TINY_QWEN3, run_dir=f"{workdir}/run",
          init={"strong": f"{workdir}/strong", "weak": f"{workdir}/weak"})  # the result is dropped, as in the pipeline
    distributed.destroy()
    models_before = sum(isinstance(o, GPTModel) for o in gc.get_objects())
    release_accelerator_memory()
    alive = sum(isinstance(o, (GPTModel, torch.nn.Parameter)) for o in gc.get_objects())
    return models_before, alive


def test_training_state_is_freed_before_evaluation(tmp_path):
    run_ranks(init_checkpoints_rank, 1, str(tmp_path))
    models_before, alive = run_ranks(_train_then_release_rank, 1, str(tmp_path))[0]
    assert alive == 0, (f"{alive} models/parameters still alive after release_accelerator_memory "
                        f"({models_before} models were alive before it)")
