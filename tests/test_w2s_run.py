"""`wmss w2s run` end to end on CPU in a reduced configuration: every stage writes its outputs, and a
rerun skips every finished step.

The models are tiny Qwen3 models whose attention and MLP outputs are zero, so each is a bigram model
(the next token depends only on the current one) that answers every question with `\\boxed{7}`; the
weak one, at the `{`, continues with 7 or 8 (probabilities 0.6 / 0.4) when sampled. So the weak and ICL
answers agree on some questions (Stage I keeps them) and weak solutions with the answer 8 contrast
with M_plus's confident 7 (Stage II pairs), whatever the seed."""

import json
import math
import subprocess
import sys

import pytest

from tests.pipeline_fixtures import SPECIALS, arithmetic_rows, make_tokenizer

HIDDEN = 128  # >= the vocabulary: token t is embedded as the unit vector e_t
ANSWER = "\\boxed{7}"

RECIPE = """
run_dir: {run_dir}
model: {{hf_path: {strong}, make_vocab_size_divisible_by: 8}}
data: {{seq_length: 64}}
training: {{global_batch_size: 2, micro_batch_size: 1, lr: 1.0e-3, tensorboard: false, log_interval: 100}}
eval: {{enabled: true, benchmarks: [gsm8k], limit: 1, max_new_tokens: 12, batch_size: 1}}
w2s:
  weak_model: {weak}
  questions: {questions}
  weak_samples: 3
  icl_shots: 2
  mplus_samples: 2
  temperature: 1.0
  top_p: 1.0
  max_new_tokens: 12
  system_prompt: null
  min_confidence: 0.5
  stage1_steps: 1
  stage2_steps: 1
  baseline_steps: 1
"""


def make_bigram_model(out_dir, tokenizer_dir, weak: bool) -> None:
    """A Qwen3 model answering `\\boxed{7}` after the generation prompt's final newline (see the module
    docstring); its logits are sqrt(HIDDEN) * lm_head[:, current token]."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = len(tok)
    assert vocab <= HIDDEN
    config = Qwen3Config(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                         tie_word_embeddings=False, eos_token_id=SPECIALS.index("<|im_end|>"), pad_token_id=0)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    chain = ids("\n" + ANSWER) + [SPECIALS.index("<|im_end|>")]
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, HIDDEN))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = model.lm_head.weight
        head.zero_()
        for current, following in zip(chain, chain[1:]):
            head[following, current] = 3.0  # logit 34: certain
        if weak:  # at "{": 7 or 8 with odds 0.6 : 0.4, then "}"
            brace, seven, eight = ids("{")[0], ids("7")[0], ids("8")[0]
            head[seven, brace] = 1.5
            head[eight, brace] = 1.5 - math.log(1.5) / math.sqrt(HIDDEN)
            head[ids("}")[0], eight] = 3.0
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2s")
    make_tokenizer(root / "tokenizer")
    for name in ("weak", "strong"):
        make_bigram_model(root / name, root / "tokenizer", weak=name == "weak")
    questions = root / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_rows(10)))
    path = root / "recipe.yaml"
    path.write_text(RECIPE.format(run_dir=root / "run", strong=root / "strong", weak=root / "weak",
                                  questions=questions))
    return path


def _run(recipe):
    out = subprocess.run([sys.executable, "-m", "megatron_wmss.cli", "w2s", "run", "--config", str(recipe)],
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_w2s_run_end_to_end_then_resumes(recipe):
    run_dir = recipe.parent / "run"
    _run(recipe)
    weak, icl = _lines(run_dir / "stage1" / "weak.jsonl"), _lines(run_dir / "stage1" / "icl.jsonl")
    assert len(weak) == len(icl) == 10 and all(len(r["samples"]) == 3 for r in weak)
    assert {s for r in weak for s in r["samples"]} == {ANSWER, "\\boxed{8}"}
    assert all(r["samples"] == [ANSWER] and len(r["demonstrations"]) == 2 for r in icl)
    assert all(r["id"] not in r["demonstrations"] for r in icl)
    kept = json.loads((run_dir / "stage1" / "sft.json").read_text())
    assert 0 < kept["questions"]["consistent"] < 10 and kept["rows"] == 2 * kept["questions"]["consistent"]
    mplus = _lines(run_dir / "stage2" / "mplus.jsonl")
    assert all(r["samples"] == [ANSWER, ANSWER] for r in mplus)  # SFT of one step keeps the bigram answers
    pairs = _lines(run_dir / "stage2" / "pairs.jsonl")
    assert pairs and all((p["chosen"], p["rejected"]) == (ANSWER, "\\boxed{8}") for p in pairs)
    assert len(_lines(run_dir / "baseline" / "sft.jsonl")) == 30  # every weak solution
    for stage in ("stage1", "stage2", "baseline"):
        assert (run_dir / stage / "train" / "export" / "model").is_dir(), stage
        assert (run_dir / stage / "hf" / "model.safetensors").is_file(), stage
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["models"]) == {"mplus", "mpro", "baseline"}
    assert all(m["gsm8k"]["problems"] == 1 for m in summary["models"].values())
    again = _run(recipe)
    assert "running" not in again and again.count("done earlier, skipped") == 16

