"""Bundled benchmark loaders, prompt-spec resolution and the vLLM sampling mapping (no vLLM needed)."""

import json
import sys

import pytest

from megatron_wmss.compat.optional import MissingExtraError
from megatron_wmss.eval.backends import SamplingConfig, VLLMBackend, vllm_sampling_kwargs
from megatron_wmss.eval.benchmarks import BENCHMARKS, DATA_DIR, load_benchmark, resolve_names
from megatron_wmss.eval.prompts import resolve_prompt_spec
from megatron_wmss.prompts import CHATML_TEMPLATE, DEFAULT_SYSTEM_PROMPT

EXPECTED_ROWS = {"math500": 500, "gsm8k": 1319, "aime25": 30, "amc23": 40, "svamp": 1000, "mawps": 2065, "aqua": 254}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_every_bundled_set_loads_with_expected_rows(name):
    problems = load_benchmark(name)
    assert len(problems) == EXPECTED_ROWS[name] == BENCHMARKS[name].rows
    assert len({p.id for p in problems}) == len(problems)
    for p in problems:
        assert p.problem.strip() and p.reference.strip(), p
    notice = (DATA_DIR / name / "README.txt").read_text()
    assert "license" in notice.lower() and "sha256" in notice


def test_answer_types_and_references():
    gsm = load_benchmark("gsm8k", limit=3)
    assert [p.reference for p in gsm] == ["18", "3", "70000"]  # text after '####', commas removed
    assert all(p.answer_type == "numeric" for p in gsm)
    assert all(float(p.reference) == float(p.reference) for p in load_benchmark("gsm8k"))
    m = load_benchmark("math500", limit=1)[0]
    assert (m.answer_type, m.reference) == ("math", r"\left( 3, \frac{\pi}{2} \right)")
    assert load_benchmark("amc23", limit=1)[0].reference == "27"  # 27.0 in the file
    aime = load_benchmark("aime25")
    assert (aime[0].id, aime[0].reference, aime[15].id, aime[29].reference) == ("aime25-I-1", "70", "aime25-II-1", "240")
    mawps = {p.reference for p in load_benchmark("mawps")}
    assert "0.1666666667" in mawps and "43" in mawps
    sv = load_benchmark("svamp", limit=1)[0]
    assert sv.problem.startswith("There are 87 oranges") and sv.problem.endswith("groups. How big is each group of bananas?")
    q = load_benchmark("aqua", limit=1)[0]
    assert (q.answer_type, q.reference) == ("choice", "A")
    assert q.choices == {"A": "5(√3 + 1)", "B": "6(√3 + √2)", "C": "7(√3 – 1)", "D": "8(√3 – 2)", "E": "None of these"}
    assert q.problem.endswith("Answer Choices: (A) 5(√3 + 1) (B) 6(√3 + √2) (C) 7(√3 – 1) (D) 8(√3 – 2) (E) None of these")
    assert {p.reference for p in load_benchmark("aqua")} == set("ABCDE")


def test_generation_limits_and_names():
    assert {n: b.max_new_tokens for n, b in BENCHMARKS.items()} == {
        "aime25": 8192, "math500": 4096, "amc23": 8192, "aqua": 4096, "gsm8k": 4096, "mawps": 4096, "svamp": 4096}
    assert resolve_names("all") == ["aime25", "math500", "amc23", "aqua", "gsm8k", "mawps", "svamp"]
    assert resolve_names("AIME2025, math,gsm8k,math500") == ["aime25", "math500", "gsm8k"]
    with pytest.raises(ValueError, match="--benchmarks"):
        resolve_names("math500,humaneval")


def test_prompt_spec_resolution(tmp_path):
    spec = resolve_prompt_spec()
    assert (spec.chat_template, spec.system_prompt) == (None, DEFAULT_SYSTEM_PROMPT)
    assert "<think>" in DEFAULT_SYSTEM_PROMPT and "<answer>" in DEFAULT_SYSTEM_PROMPT

    manifest = tmp_path / "train.manifest.json"
    manifest.write_text(json.dumps({"rows": 10, "prompt": {"chat_template": "chatml", "system_prompt": "Be brief."}}))
    spec = resolve_prompt_spec(str(manifest))
    assert (spec.chat_template, spec.system_prompt) == (CHATML_TEMPLATE, "Be brief.")
    assert "manifest" in spec.source

    # the layout `wmss preprocess` writes: chat_template is an object, tokenizer info alongside
    manifest.write_text(json.dumps({"tokenizer": {"path": "/x", "vocab_size": 300},
                                    "chat_template": {"name": "chatml", "template": CHATML_TEMPLATE,
                                                      "eot_token": "<|im_end|>", "eot_token_id": 2},
                                    "system_prompt": "Think, then answer."}))
    spec = resolve_prompt_spec(str(manifest))
    assert (spec.chat_template, spec.system_prompt, spec.eot_token, spec.train_vocab_size) == (
        CHATML_TEMPLATE, "Think, then answer.", "<|im_end|>", 300)

    manifest.write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}", "system_prompt": None}))
    spec = resolve_prompt_spec(str(manifest))
    assert (spec.chat_template, spec.system_prompt) == ("{{ messages[0]['content'] }}", None)

    tpl = tmp_path / "t.jinja"
    tpl.write_text("{{ 'x' }}")
    spec = resolve_prompt_spec(str(manifest), chat_template=str(tpl), system_prompt="S")  # explicit options win
    assert (spec.chat_template, spec.system_prompt) == ("{{ 'x' }}", "S")
    assert resolve_prompt_spec(system_prompt="").system_prompt is None

    manifest.write_text(json.dumps({"rows": 3}))
    with pytest.raises(ValueError, match="neither 'chat_template' nor 'system_prompt'"):
        resolve_prompt_spec(str(manifest))
    with pytest.raises(FileNotFoundError, match="--manifest"):
        resolve_prompt_spec(str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="--chat-template"):
        resolve_prompt_spec(chat_template="no_such_template.jinja")


def test_vllm_sampling_params_mapping():
    greedy = vllm_sampling_kwargs(SamplingConfig(4096), seed=7, stop_ids=[2, 5])
    assert greedy == {"n": 1, "max_tokens": 4096, "stop_token_ids": [2, 5], "skip_special_tokens": True,
                      "temperature": 0.0, "top_p": 1.0}
    sampled = vllm_sampling_kwargs(SamplingConfig(8192, n=64, temperature=0.7, top_p=0.95, seed=1), seed=11, stop_ids=[2])
    assert sampled == {"n": 64, "max_tokens": 8192, "stop_token_ids": [2], "skip_special_tokens": True,
                       "temperature": 0.7, "top_p": 0.95, "seed": 11}
    with pytest.raises(ValueError, match="identical samples"):
        SamplingConfig(16, n=4)


def test_missing_vllm_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a CPU machine: `import vllm` fails
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingExtraError, match=r"megatron_wmss\[gpu\].*--backend transformers"):
        VLLMBackend(tmp_path)


def test_cli_without_vllm_fails_early_with_the_hint(tmp_path, monkeypatch, capsys):
    from megatron_wmss.commands.eval import main

    monkeypatch.setitem(sys.modules, "vllm", None)
    out = tmp_path / "out"
    assert main(["--model", str(tmp_path), "--backend", "vllm", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'megatron_wmss[gpu]'" in err and "--backend transformers" in err
    assert not out.exists()
