"""The transformers backend and `wmss eval` end to end with a tiny random Qwen3 built in-test."""

import json

import pytest
import torch

from megatron_wmss.eval import backends
from megatron_wmss.eval.backends import Generation, SamplingConfig, TransformersBackend
from megatron_wmss.eval.benchmarks import load_benchmark
from megatron_wmss.commands.eval import main
from megatron_wmss.eval.grading import REASONS
from megatron_wmss.eval.metrics import pass_at_k
from megatron_wmss.eval.prompts import render, resolve_prompt_spec, stop_token_ids
from megatron_wmss.prompts import CHATML_TEMPLATE, DEFAULT_SYSTEM_PROMPT

@pytest.fixture(scope="module")
def backend(tiny_model):
    return TransformersBackend(tiny_model, batch_size=3)


def test_prompt_rendering_is_chatml_with_the_system_prompt(backend):
    tok = backend.tokenizer
    text, ids = render("What is 2+3?", resolve_prompt_spec(), tok)
    assert text == (f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 2
    # training renders [system, user, assistant] with the same template: the eval prompt is its prefix
    conv = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "<think>2+3=5</think>\n<answer>\\boxed{5}</answer>"}]
    train_ids = tok.apply_chat_template(conv, chat_template=CHATML_TEMPLATE, tokenize=True, return_dict=False)
    assert train_ids[:len(ids)] == ids and len(train_ids) > len(ids)
    # both end-of-text (tokenizer EOS) and end-of-turn stop generation
    assert set(stop_token_ids(tok)) == {tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}


def _prompts(backend, n):
    spec = resolve_prompt_spec()
    return [render(p.problem, spec, backend.tokenizer)[1] for p in load_benchmark("gsm8k", limit=n)]


def test_batched_greedy_equals_unbatched_and_manual_argmax(backend, tiny_model):
    prompts = _prompts(backend, 4)  # different lengths -> left padding inside a batch
    assert len({len(p) for p in prompts}) > 1
    cfg = SamplingConfig(max_new_tokens=12)
    batched = backend.generate(prompts, cfg, seeds=[0] * 4)
    single = TransformersBackend(tiny_model, batch_size=1).generate(prompts, cfg, seeds=[0] * 4)
    assert batched == single
    assert all(len(g) == 1 and g[0].finish_reason in ("stop", "length") and g[0].num_tokens <= 12 for g in batched)

    ids = torch.tensor([prompts[0]])  # reference: plain argmax loop with the stop tokens
    out = []
    with torch.no_grad():
        for _ in range(12):
            nxt = int(backend.model(ids).logits[0, -1].argmax())
            if nxt in backend.stop_ids:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert batched[0][0].text == backend.tokenizer.decode(out, skip_special_tokens=True)


def test_sampling_returns_n_seeded_samples(backend):
    prompts = _prompts(backend, 2)
    cfg = SamplingConfig(max_new_tokens=8, n=3, temperature=0.7, top_p=0.95)
    a = backend.generate(prompts, cfg, seeds=[5, 6])
    assert [len(g) for g in a] == [3, 3]
    assert a == backend.generate(prompts, cfg, seeds=[5, 6])  # same seeds, same samples
    assert len({g.text for g in a[0] + a[1]}) > 1


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_end_to_end_and_resume(tiny_model, tmp_path, monkeypatch):
    calls = []
    real_generate = TransformersBackend.generate

    def counting_generate(self, prompts, cfg, seeds):
        calls.append(len(prompts))
        return real_generate(self, prompts, cfg, seeds)

    monkeypatch.setattr(TransformersBackend, "generate", counting_generate)
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model), "--benchmarks", "gsm8k,aqua", "--limit", "3", "--max-new-tokens", "8",
            "--output-dir", str(out), "--no-progress", "--batch-size", "2", "--grade-workers"]
    assert main(argv + ["1"]) == 0  # a grading worker process here; in-process grading below (faster)
    argv.append("0")
    assert calls == [2, 1, 2, 1]  # 3 problems per benchmark in chunks of --batch-size
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "greedy" and set(summary["benchmarks"]) == {"gsm8k", "aqua"}
    assert all(b["problems"] == 3 and b["samples_per_problem"] == 1 for b in summary["benchmarks"].values())
    assert summary["math_avg"] == pytest.approx(sum(b["pass@1"] for b in summary["benchmarks"].values()) / 2)
    assert "| pass@1 (greedy) |" in (out / "summary.md").read_text()
    recs = _read(out / "samples" / "gsm8k.jsonl")
    assert [r["id"] for r in recs] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"] and recs[0]["reference"] == "18"
    for r in recs:
        assert r["prompt"].startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
        assert r["reason"] in REASONS and r["correct"] is (r["reason"] == "correct")
        assert r["finish_reason"] in ("stop", "length") and r["num_tokens"] <= 8 and isinstance(r["response"], str)

    # interrupted run: last line torn -> only that problem is generated again
    path = out / "samples" / "gsm8k.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:25])
    calls.clear()
    assert main(argv) == 0
    assert calls == [1]
    assert [r["id"] for r in _read(path)] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    assert _read(path)[:2] == recs[:2]

    calls.clear()  # a larger --limit generates only the new problems; same settings otherwise
    assert main(argv[:5] + ["4"] + argv[6:]) == 0
    assert calls == [1, 1]
    # different generation settings into the same directory are refused
    assert main(argv[:7] + ["9"] + argv[8:]) == 2


class ScriptedBackend:
    """Answers the problem at position `pos` correctly in its first `pos % 5` of 4 samples (boxed);
    position 5 answers correctly in every sample but without a box."""

    name = "scripted"

    def __init__(self, problems, base_seed):
        self.problems, self.base_seed = problems, base_seed
        self.calls = 0

    def generate(self, prompts, cfg, seeds):
        self.calls += 1
        out = []
        for s in seeds:
            pos = s - self.base_seed
            ref = self.problems[pos].reference
            if pos == 5:
                out.append([Generation(f"<think>...</think>\n<answer>It is {ref}.</answer>", 9, "stop")] * cfg.n)
                continue
            out.append([Generation(f"<think>...</think>\n<answer>\\boxed{{{ref if i < pos % 5 else '-12345'}}}</answer>",
                                   20, "stop") for i in range(cfg.n)])
        return out


def test_cli_pass_at_k_accounting(tiny_model, tmp_path, monkeypatch):
    problems = load_benchmark("gsm8k", limit=6)
    scripted = ScriptedBackend(problems, 3)
    monkeypatch.setattr(backends, "make_backend", lambda *a, **k: scripted)
    out = tmp_path / "pk"
    argv = ["--model", str(tiny_model), "--benchmarks", "gsm8k", "--limit", "6", "--n", "4", "--temperature", "0.7",
            "--top-p", "0.95", "--seed", "3", "--k", "1,2,4,8", "--output-dir", str(out), "--grade-workers", "0",
            "--no-progress"]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    b = s["benchmarks"]["gsm8k"]
    counts = [min(pos % 5, 4) for pos in range(6)]  # 0,1,2,3,4,0 correct of 4
    assert s["mode"] == "sampled" and b["samples_per_problem"] == 4
    assert b["reasons"] == {"correct": sum(counts), "no_answer": 4, "wrong": 20 - sum(counts)}
    for k in (1, 2, 4):
        want = 100 * sum(pass_at_k(4, c, k) for c in counts) / 6
        assert b["pass@k"][str(k)] == pytest.approx(want)
    assert b["pass@1"] == pytest.approx(100 * sum(counts) / 24) and "8" not in b["pass@k"]
    recs = _read(out / "samples" / "gsm8k.jsonl")
    assert [r["sample"] for r in recs[:4]] == [0, 1, 2, 3]
    assert recs[4]["extracted"] == problems[1].reference and recs[4]["correct"]

    # re-grade the stored responses leniently: the unboxed answers of position 5 now count; no generation
    assert main(argv + ["--regrade", "--lenient-extraction"]) == 0
    assert scripted.calls == 1
    b = json.loads((out / "summary.json").read_text())["benchmarks"]["gsm8k"]
    assert b["reasons"] == {"correct": sum(counts) + 4, "wrong": 20 - sum(counts)}
    assert b["pass@k"]["4"] == pytest.approx(100 * 5 / 6)


def test_paper_pass_k_preset_and_defaults():
    from megatron_wmss.commands.eval import build_parser
    from megatron_wmss.eval.run import _settings

    parse = build_parser().parse_args
    assert _settings(parse(["--model", "m", "--paper-pass-k"])) == dict(
        n=64, temperature=0.7, top_p=0.95, ks=[1, 4, 8, 16, 32, 64], benchmarks=["aime25", "amc23", "math500"])
    st = _settings(parse(["--model", "m", "--paper-pass-k", "--n", "16", "--benchmarks", "gsm8k"]))
    assert (st["n"], st["temperature"], st["benchmarks"]) == (16, 0.7, ["gsm8k"])
    assert _settings(parse(["--model", "m"])) == dict(
        n=1, temperature=0.0, top_p=1.0, ks=[1],
        benchmarks=["aime25", "math500", "amc23", "aqua", "gsm8k", "mawps", "svamp"])


def test_eval_prompt_is_the_training_prompt_prefix(tiny_model, tmp_path):
    """With --manifest from `wmss preprocess`, each eval prompt's token ids are exactly the tokens before
    the first supervised token of the same problem in the training data (same template and system prompt)."""
    from megatron_wmss.cli import main as wmss
    from megatron_wmss.data.indexed import open_dataset
    from megatron_wmss.eval.backends import load_tokenizer

    rows = tmp_path / "gsm8k.jsonl"
    rows.write_text("".join(json.dumps({"question": p.problem, "answer": f"work\n#### {p.reference}"}) + "\n"
                            for p in load_benchmark("gsm8k", limit=3)))
    prefix = str(tmp_path / "train")
    assert wmss(["preprocess", "--input", str(rows), "--input-format", "gsm8k", "--output-prefix", prefix,
                 "--tokenizer", str(tiny_model), "--system-prompt", "Think in <think>, answer in <answer>.",
                 "--workers", "1"]) == 0
    _, tokens, mask, _ = open_dataset(prefix)
    spec = resolve_prompt_spec(prefix + ".manifest.json")
    assert spec.system_prompt == "Think in <think>, answer in <answer>." and spec.eot_token == "<|im_end|>"
    tok = load_tokenizer(tiny_model)
    for i, p in enumerate(load_benchmark("gsm8k", limit=3)):
        _, ids = render(p.problem, spec, tok)
        first_supervised = list(mask[i]).index(1)
        assert list(tokens[i][:first_supervised]) == ids
