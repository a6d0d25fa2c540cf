"""Pair rows through `wmss preprocess --input-format pairs`: each pair is stored as its chosen then its
rejected sequence, both rendered with the same prompt and an assistant-only mask over the answer; the
SFTDataset + PairDataset read them back as pairs; malformed pair rows are dropped by reason."""

import json

import pytest
import torch

from megatron_wmss.commands.preprocess import main
from megatron_wmss.data import SFTDataset, read_ids, read_manifest
from megatron_wmss.data.pairs import PairDataset
from tests.test_data_preprocess import QWEN, dropped

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]
ROWS = [
    {"id": "q1", "prompt": PROMPT, "chosen": "2 + 3 = 5. \\boxed{5}", "rejected": "2 + 3 = 6. \\boxed{6}"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "7 * 6?"}],
     "chosen": "\\boxed{42}", "rejected": "\\boxed{48}", "info": {"source": "w2s"}},
    {"id": "bad1", "prompt": PROMPT, "chosen": "same", "rejected": "same"},
    {"id": "bad2", "prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"},
    {"id": "bad3", "prompt": PROMPT, "chosen": "", "rejected": "b"},
]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs")
    src = path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = path / "pairs"
    assert main(["--input", str(src), "--input-format", "pairs", "--tokenizer", str(QWEN), "--chat-template",
                 "chatml", "--output-prefix", str(out), "--no-system-prompt"]) == 0
    return out


def test_pairs_are_stored_chosen_then_rejected(prefix):
    ids = [r["id"] for r in read_ids(str(prefix))]
    assert ids[:2] == ["q1/chosen", "q1/rejected"]
    assert ids[2].endswith("/chosen") and ids[3] == ids[2].replace("/chosen", "/rejected") and len(ids) == 4
    assert dropped(prefix) == {"bad_pair_row": 3}
    assert read_manifest(str(prefix))["input_format"] == "pairs"


def test_pair_dataset_reads_pairs_with_answer_masks(prefix):
    from megatron_wmss.data.chat import load_tokenizer

    tok = load_tokenizer(str(QWEN))
    seqs = SFTDataset(str(prefix), 64, pad_token_id=0)
    pairs = PairDataset(seqs)
    assert pairs.sample_ids[0] == "q1" and len(pairs) == 2
    item = pairs[0]
    for row, text in ((0, ROWS[0]["chosen"]), (1, ROWS[0]["rejected"])):
        supervised = item["labels"][row][item["loss_mask"][row] > 0].tolist()
        assert tok.decode(supervised) == text + "<|im_end|>"
    prompt_len = int(torch.nonzero(item["loss_mask"][0])[0])
    assert prompt_len == int(torch.nonzero(item["loss_mask"][1])[0])  # same prompt, answer starts at the same place
    assert item["tokens"][0, :prompt_len].equal(item["tokens"][1, :prompt_len])
