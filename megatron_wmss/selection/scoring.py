"""WD-DS scoring pass: per-sample token-averaged predictive entropy of the weak (M_{t-1}) and strong
(M_t) models over the supervised target positions (paper Eq. 7).

Forward-only (no autograd, no optimizer state): both models run as a WeakStrongPair through megatron's
schedules under TP/PP/DP; the last stage computes the vocab-parallel fp32 entropy from the final hidden
states (never the full logits). The dataset gives labels already shifted (labels[t] = token t+1, and
loss_mask[t] = 1 iff labels[t] is supervised), so the distribution at position t, the one that predicts
the supervised token, is the one averaged. With data.pack the samples are scored packed into rows
(attention kept per sample, models/packed_attention.py) and each row's entropies are averaged per
segment, i.e. per sample: the scores of one sample per row up to float rounding. Results are appended to
`<out>/scores/rank<dp>.jsonl`, keyed by the stable sample id, so an interrupted pass resumes where it
stopped (also at another data-parallel size).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megatron_wmss.data.packing import pack_bins, pack_members, segment_ids
from megatron_wmss.distributed import batch_to_device, compute_device
from megatron_wmss.models.packed_attention import attention_inputs


def read_scores(out_dir: str | Path) -> dict[str, dict]:
    """Every completed sample's record {id, h_strong, h_weak, tokens}, from all rank files."""
    records = {}
    for path in sorted((Path(out_dir) / "scores").glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill: that sample is scored again
                continue
            records[record["id"]] = record
    return records


def token_averaged_entropy(token_entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 7: each sample's predictive entropy averaged over its supervised tokens, `[b]` float64
    from per-token entropies and the supervised mask, both `[s, b]` (0 for a sample with no such token)."""
    tokens = mask.double().sum(dim=0)
    return (token_entropy.double() * mask).sum(dim=0) / tokens.clamp_min(1.0)


def _entropy_forward_step(data_iterator, model):
    from megatron_wmss.losses import gather_hidden, linear_vocab_parallel_entropy

    batch = batch_to_device(next(data_iterator))
    output = model(batch["tokens"], batch["position_ids"], **attention_inputs(batch, model))

    def per_sample_entropy(hidden):
        h_strong, h_weak = hidden
        mask = batch["loss_mask"].transpose(0, 1) > 0  # [s, b]
        # Column (j, k) of [s, b * K] covers the k-th sample of row j (K samples at most per row).
        segments = segment_ids(batch).transpose(0, 1)
        members = torch.arange(1, int(segments.max()) + 1, device=segments.device)
        in_sample = (mask.unsqueeze(-1) & (segments.unsqueeze(-1) == members)).flatten(1)  # [s, b * K]
        shape = (mask.shape[1], len(members))
        scores = {"tokens": in_sample.double().sum(dim=0).view(shape)}
        for name, h, branch in (("h_strong", h_strong, model.strong), ("h_weak", h_weak, model.weak)):
            h, _ = gather_hidden(h, branch.config)
            # Only the supervised positions: the prompt's entropies would be multiplied by 0 anyway.
            entropy = torch.zeros(mask.shape, dtype=torch.float64, device=h.device)
            entropy[mask] = linear_vocab_parallel_entropy(h[mask], branch.output_weight(),
                                                          vocab_size=branch.unpadded_vocab_size).double()
            per_column = entropy.repeat_interleave(len(members), dim=1)
            scores[name] = token_averaged_entropy(per_column, in_sample).view(shape)
        return torch.zeros(()), scores

    return output, per_sample_entropy


def _rows(dataset, done, seq_length: int, pack: bool, seed: int) -> list[list[int]]:
    """The rows still to score, each a list of dataset indices: one sample per row, or all samples packed
    by `pack_bins` with `seed` (a sample without label positions gets a row of its own) and the rows with
    a sample not yet `done` kept, so that a resumed pass scores each sample in the row it would have had."""
    todo = [i for i, sid in enumerate(dataset.sample_ids) if sid not in done]
    if not pack:
        return [[i] for i in todo]
    lengths = np.asarray(dataset.sample_lengths)
    rows = pack_bins(lengths, seq_length, seed) + [[i] for i in np.flatnonzero(lengths <= 0).tolist()]
    todo = set(todo)
    return [row for row in rows if todo.intersection(row)]


def score_dataset(pair, dataset, out_dir: str | Path, *, micro_batch_size: int, seq_length: int,
                  pack: bool = False, seed: int = 0, progress: bool = True) -> dict[str, dict]:
    """Score every sample of `dataset` not yet in `out_dir`; return all records (on every rank). With
    `pack` the samples are scored packed into rows (data/packing.py, order from `seed`), attention and
    Eq. 7 averages kept per sample; `dataset` then needs `sample_lengths` and `pad_token_id`."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_wmss.data import dp_shard
    from megatron_wmss.distributed import current_layout
    from megatron_wmss.training.batches import stack_items

    layout = current_layout()
    out_dir = Path(out_dir)
    done = read_scores(out_dir)
    rows = _rows(dataset, done, seq_length, pack, seed)
    mine = dp_shard(len(rows), layout.dp_rank, layout.dp, drop_last=False).tolist() if rows else []
    steps = torch.tensor([len(mine)], device=compute_device())
    dist.all_reduce(steps, op=dist.ReduceOp.MAX)  # every rank runs the same number of micro-batches
    writer = layout.is_last_stage and layout.tp_rank == 0
    path = out_dir / "scores" / f"rank{layout.dp_rank}.jsonl"
    if writer:
        path.parent.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress and writer and layout.dp_rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=sum(map(len, rows)), desc="WD-DS scoring", unit="sample", disable=None)
    forward_backward = get_forward_backward_func()
    pair.eval()
    for start in range(0, int(steps.item()), micro_batch_size):
        indices = mine[start:start + micro_batch_size] or mine[-1:] or [0]
        indices = indices + indices[-1:] * (micro_batch_size - len(indices))  # pad the last micro-batch
        batch = stack_items([(pack_members(dataset, rows[r]) if pack else dataset[rows[r][0]]) if rows else dataset[0]
                             for r in indices])
        with torch.no_grad():
            results = forward_backward(forward_step_func=_entropy_forward_step, data_iterator=iter([batch]),
                                       model=pair, num_microbatches=1, seq_length=seq_length,
                                       micro_batch_size=micro_batch_size, forward_only=True)
        if not writer:
            continue
        scores, lines, seen = results[0], [], set()
        valid = mine[start:start + micro_batch_size]
        for j, members in enumerate(batch["member_ids"][:len(valid)]):
            for k, sid in enumerate(members):
                if sid in seen or sid in done:  # a resumed row may hold samples scored before
                    continue
                seen.add(sid)
                lines.append(json.dumps({"id": sid, "tokens": int(scores["tokens"][j, k].item()),
                                         "h_strong": scores["h_strong"][j, k].item(),
                                         "h_weak": scores["h_weak"][j, k].item()}))
        with path.open("a") as fh:
            fh.write("".join(line + "\n" for line in lines))
        if bar is not None:
            bar.update(sum(len(rows[r]) for r in valid) * layout.dp)
    if bar is not None:
        bar.close()
    dist.barrier()
    return read_scores(out_dir)
