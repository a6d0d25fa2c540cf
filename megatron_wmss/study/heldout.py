"""Held-out loss of a HF model: the token-averaged cross-entropy over the supervised (assistant) tokens of
a preprocessed held-out set, the quantity SFT minimises, measured on problems it never trains on.

  python -m megatron_wmss.study.heldout --model HF_DIR --data PREFIX --seq-length S --out FILE.json

Run once per evaluated model of a study (the plateau curve: is Phase 1 done learning?). A plain
`transformers` forward pass: the model is the exported HF checkpoint `wmss eval` also reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


@torch.no_grad()
def heldout_loss(model_dir: str | Path, data_prefix: str, seq_length: int, batch_size: int = 32) -> dict:
    """{"loss": mean CE per supervised token (nats), "tokens": count, "samples": count}."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from megatron_wmss.data import SFTDataset, read_manifest

    pad = read_manifest(data_prefix)["tokenizer"].get("pad_token_id") or 0
    dataset = SFTDataset(data_prefix, seq_length, pad_token_id=int(pad))
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    total, tokens = 0.0, 0.0
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: torch.stack([r[k] for r in rows]) for k in ("tokens", "labels", "loss_mask")}
        logits = model(input_ids=batch["tokens"]).logits.float()  # right padding: causal, no mask needed
        ce = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), reduction="none")
        total += float((ce * batch["loss_mask"].flatten()).sum())
        tokens += float(batch["loss_mask"].sum())
    return {"loss": total / max(tokens, 1.0), "tokens": tokens, "samples": len(dataset)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megatron_wmss.study.heldout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="HF model directory")
    parser.add_argument("--data", required=True, help="prefix of a preprocessed held-out set")
    parser.add_argument("--seq-length", type=int, required=True)
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    result = heldout_loss(args.model, args.data, args.seq_length)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result) + "\n")
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
