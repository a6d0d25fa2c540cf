"""Megatron pads the vocabulary to a multiple of make_vocab_size_divisible_by x TP. With `vocab_size`
the fused loss and entropy leave the padding rows out of the softmax (as the unpadded HF model would)
and give them zero gradient — also at TP=4, where some ranks hold only padding."""

import torch

from megatron_wmss.testing import run_ranks
from tests.test_losses import rel_err, with_grads

S, B, H, V_REAL, V_PADDED = 4, 3, 8, 20, 48  # TP=4: ranks 2 and 3 hold only padding rows


def make_data():
    gen = torch.Generator().manual_seed(3)
    ws, ww = torch.randn(V_PADDED, H, generator=gen), torch.randn(V_PADDED, H, generator=gen)
    return dict(hs=torch.randn(S, B, H, generator=gen), hw=torch.randn(S, B, H, generator=gen), ws=ws, ww=ww,
                labels=torch.randint(0, V_REAL, (S, B), generator=gen), weights=torch.rand(S, B, generator=gen))


def compute(d, rows, vocab_size, group=None):
    from megatron_wmss.losses import linear_vocab_parallel_entropy, mixed_linear_cross_entropy

    ws, ww = d["ws"][rows], d["ww"][rows]
    loss = with_grads(lambda *x: mixed_linear_cross_entropy(*x, d["labels"], 0.42, group, chunk_size=5,
                                                            vocab_size=vocab_size),
                      [d["hs"], ws, d["hw"], ww], d["weights"])
    return loss, linear_vocab_parallel_entropy(d["hs"], ws, group, chunk_size=5, vocab_size=vocab_size)


def tp4_rank(d):
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, per = dist.get_rank(), V_PADDED // 4
    out = compute(d, slice(rank * per, (rank + 1) * per), V_REAL, dist.group.WORLD)
    dist.destroy_process_group()
    return out


def test_padding_rows_are_left_out():
    d = make_data()
    (ref_loss, ref_grads), ref_entropy = compute(d, slice(0, V_REAL), None)  # the unpadded model
    (loss, grads), entropy = compute(d, slice(None), V_REAL)
    assert rel_err(loss, ref_loss) <= 1e-6 and rel_err(entropy, ref_entropy) <= 1e-6
    for i in (0, 2):
        assert rel_err(grads[i], ref_grads[i]) <= 1e-6
    for i in (1, 3):
        assert rel_err(grads[i][:V_REAL], ref_grads[i]) <= 1e-6
        assert (grads[i][V_REAL:] == 0).all()
    (unmasked, _), _ = compute(d, slice(None), None)
    assert rel_err(unmasked, ref_loss) > 1e-3  # without vocab_size the padding rows would count

    per = V_PADDED // 4
    for rank, ((loss, grads), entropy) in enumerate(run_ranks(tp4_rank, 4, d)):
        assert rel_err(loss, ref_loss) <= 1e-6 and rel_err(entropy, ref_entropy) <= 1e-6, rank
        for i in (0, 2):
            assert rel_err(grads[i], ref_grads[i]) <= 1e-6, rank
        rows = torch.arange(rank * per, (rank + 1) * per)
        for i in (1, 3):
            real = rows < V_REAL
            assert (grads[i][~real] == 0).all(), rank
            if real.any():
                assert rel_err(grads[i][real], ref_grads[i][rows[real]]) <= 1e-6, rank
