"""Packed rows train and score exactly like one sample per row: the same samples give the same SFT and
WD-JT loss sums, token counts and gradients, and the same WD-DS per-sample scores (paper Eq. 7), within
fp32 rounding, at TP=1 and TP=2 (megatron's local attention with the block-diagonal causal mask,
models/packed_attention.py). The WD-JT check packs an active set whose ids repeat. Without the mask (a
packed row as one causal sequence) the losses differ: the check can fail. A resumed packed scoring pass
gives the uninterrupted scores bit for bit. Also data.pad_to=longest
(micro-batches cut after their longest row) gives the full-length loss and gradients."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_wmss.testing import run_ranks
from tests.training_helpers import TINY_QWEN3

SEQ_LENGTH = 16
ACTIVE = ["v-1", "v-3", "v-3", "v-6", "v-0", "v-6"]  # a WD-DS multiset: ids repeat


class VarLenSamples(torch.utils.data.Dataset):
    """Samples of 3..10 label positions (a short unsupervised prompt, then the completion) right-padded
    to SEQ_LENGTH: the SFTDataset item convention and what packing reads."""

    seq_length, pad_token_id = SEQ_LENGTH, 0

    def __init__(self, n: int = 8, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.sample_lengths = np.array([3 + (5 * i) % 8 for i in range(n)])
        self.sample_ids = [f"v-{i}" for i in range(n)]
        self.items = []
        for i, n_pos in enumerate(self.sample_lengths.tolist()):
            ids = torch.randint(1, TINY_QWEN3["vocab_size"], (n_pos + 1,), generator=gen)
            item = {"tokens": torch.zeros(SEQ_LENGTH, dtype=torch.int64), "labels": torch.zeros(SEQ_LENGTH, dtype=torch.int64),
                    "loss_mask": torch.zeros(SEQ_LENGTH), "position_ids": torch.arange(SEQ_LENGTH),
                    "segment_ids": torch.zeros(SEQ_LENGTH, dtype=torch.int64), "sample_id": self.sample_ids[i]}
            item["tokens"][:n_pos], item["labels"][:n_pos], item["segment_ids"][:n_pos] = ids[:-1], ids[1:], 1
            item["loss_mask"][1 + i % 2:n_pos] = 1.0
            self.items.append(item)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def index_of(self, sample_id):
        return self.sample_ids.index(sample_id)


def _loss_and_grads(module, model, batch):
    """(loss sum, supervised tokens, {parameter: gradient}) of one forward step on `batch`."""
    output, loss_func = module.forward_step(iter([batch]), model)
    loss, tokens, _ = loss_func(output)
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), int(tokens), grads


def _difference(module, model, want, got) -> dict:
    """Relative differences of loss and gradients of batch `got` from batch `want`."""
    (loss_w, tokens_w, grads_w), (loss_g, tokens_g, grads_g) = (
        _loss_and_grads(module, model, b) for b in (want, got))
    grad_diff = max((grads_g[n] - g).abs().max().item() / g.abs().max().clamp_min(1e-12).item()
                    for n, g in grads_w.items())
    return {"loss": abs(loss_g - loss_w) / abs(loss_w), "tokens": (tokens_w, tokens_g),
            "grads": grad_diff, "same_params": sorted(grads_w) == sorted(grads_g)}


def _compare(module, model, unpacked, packed) -> dict:
    """Packed vs unpacked; also the packed rows without their segments (one causal sequence per row:
    samples see the ones before them), which must differ."""
    leaky = dict(packed)
    del leaky["segment_ids"]
    out = _difference(module, model, unpacked, packed)
    out["leaky_loss"] = _difference(module, model, unpacked, leaky)["loss"]
    return out


def equivalence_rank(workdir, tp):
    """SFT, WD-JT (packed active set) and WD-DS scores, unpacked vs packed, at tensor parallelism `tp`."""
    from megatron_wmss import distributed
    from megatron_wmss.data.packing import PackedDataset
    from megatron_wmss.models.build import transformer_config_from_hf
    from megatron_wmss.selection.scoring import score_dataset
    from megatron_wmss.training.batches import ActiveSubset, stack_items, trim_to_longest
    from megatron_wmss.training.sft import SFT
    from megatron_wmss.training.wdjt import WDJT, WDJTConfig

    distributed.initialize(tp=tp, seed=1)
    # A wider initialisation than the default 0.02 makes the attention far from uniform, so that a leak
    # across samples shows in the loss.
    tcfg, arch = transformer_config_from_hf(TINY_QWEN3, tp=tp, make_vocab_size_divisible_by=8,
                                            calculate_per_token_loss=True, init_method_std=0.3)
    samples = VarLenSamples()
    out = {}

    def batches(dataset):
        packed = PackedDataset(dataset, seed=5)
        rows = [packed[r] for r in range(len(packed))]
        out.setdefault("row_sizes", []).append([len(r["member_ids"]) for r in rows])
        return stack_items([dataset[i] for i in range(len(dataset))]), stack_items(rows)

    torch.manual_seed(3)
    sft = SFT()
    model, _ = sft.build_model(tcfg, arch, {})
    unpacked, packed = batches(samples)
    out["sft"] = _compare(sft, model, unpacked, packed)
    out["pad_to_longest"] = {name: _difference(sft, model, batch, trim_to_longest(batch))
                             | {"width": trim_to_longest(batch)["tokens"].shape[1]}
                             for name, batch in (("unpacked", unpacked), ("packed", packed))}
    wdjt = WDJT(WDJTConfig(lam=0.5))
    pair, _ = wdjt.build_model(tcfg, arch, {})
    out["wdjt"] = _compare(wdjt, pair, *batches(ActiveSubset(samples, ACTIVE)))
    def score(name, pack):
        return score_dataset(pair, samples, Path(workdir) / f"tp{tp}_{name}", micro_batch_size=2,
                             seq_length=SEQ_LENGTH, pack=pack, seed=5, progress=False)

    out["scores"] = {"unpacked": score("unpacked", False), "packed": score("packed", True)}
    # An interrupted packed pass: half the samples already scored; the rest are scored in their rows.
    if torch.distributed.get_rank() == 0:
        (Path(workdir) / f"tp{tp}_resumed" / "scores").mkdir(parents=True)
        (Path(workdir) / f"tp{tp}_resumed" / "scores" / "rank0.jsonl").write_text("".join(
            json.dumps(out["scores"]["packed"][sid]) + "\n" for sid in samples.sample_ids[::2]))
    torch.distributed.barrier()
    out["scores"]["resumed"] = score("resumed", True)
    distributed.destroy()
    return out


@pytest.fixture(scope="module", params=[1, 2], ids=["tp1", "tp2"])
def results(request, tmp_path_factory):
    """Rank 0's comparisons (one process launch per TP size)."""
    return run_ranks(equivalence_rank, request.param, str(tmp_path_factory.mktemp("packing")), request.param,
                     timeout_s=600)[0]


def test_rows_hold_several_samples(results):
    sizes = results["row_sizes"]
    assert sum(sizes[0]) == len(VarLenSamples()) and sum(sizes[1]) == len(ACTIVE)
    assert all(max(s) >= 2 for s in sizes)


@pytest.mark.parametrize("objective", ["sft", "wdjt"])
def test_packed_loss_and_gradients_equal_unpacked(results, objective):
    got = results[objective]
    assert got["tokens"][0] == got["tokens"][1] > 0
    assert got["same_params"]
    assert got["loss"] < 1e-5 and got["grads"] < 1e-4, got
    assert got["leaky_loss"] > 1e-3, "the packed rows' attention is not isolated: the mask has no effect"


def test_pad_to_longest_gives_the_full_length_loss_and_gradients(results):
    """data.pad_to=longest: micro-batches cut after their longest row train like full-length ones."""
    assert results["pad_to_longest"]["unpacked"]["width"] == max(VarLenSamples().sample_lengths) < SEQ_LENGTH
    for name, got in results["pad_to_longest"].items():
        assert got["tokens"][0] == got["tokens"][1], name
        assert got["loss"] < 1e-5 and got["grads"] < 1e-4, (name, got)


def test_packed_wdds_scores_equal_unpacked(results):
    unpacked, packed = results["scores"]["unpacked"], results["scores"]["packed"]
    assert set(packed) == set(unpacked) == set(VarLenSamples().sample_ids)
    for sid, want in unpacked.items():
        assert packed[sid]["tokens"] == want["tokens"]
        for key in ("h_strong", "h_weak"):
            assert packed[sid][key] == pytest.approx(want[key], rel=1e-5), (sid, key)
    assert results["scores"]["resumed"] == packed  # a resumed packed pass: the same rows, the same bits
