"""`wmss w2s generate`'s pieces without a model (questions, demonstrations, prompts, resume settings) and
the recipe section `w2s` (errors name the option). The generation itself runs in tests/test_w2s_run.py."""

import json

import pytest

from megatron_wmss.config import load_config
from megatron_wmss.errors import ConfigError
from megatron_wmss.w2s.config import W2SConfig
from megatron_wmss.w2s.generate import (Demonstration, _check_settings, demonstration_pool, load_questions,
                                        pick_demonstrations, prompt_messages)


def test_questions_from_problem_and_chat_rows(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"question": "2+2?"},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "3+3?"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert load_questions(path) == [{"id": "a", "problem": "1+1?"}, {"id": "q1", "problem": "2+2?"},
                                    {"id": "q2", "problem": "3+3?"}]
    assert len(load_questions(path, limit=2)) == 2
    path.write_text(json.dumps({"id": "a", "text": "?"}) + "\n")
    with pytest.raises(ConfigError, match="--questions: .*:1: no 'problem'"):
        load_questions(path)
    path.write_text((json.dumps({"id": "a", "problem": "x"}) + "\n") * 2)
    with pytest.raises(ConfigError, match="'a' appears twice"):
        load_questions(path)


def _row(qid, *samples):
    return {"id": qid, "prompt": [{"role": "user", "content": f"question {qid}"}], "samples": list(samples)}


def test_demonstrations_have_answers_exclude_the_question_and_are_seeded():
    weak = {q: _row(q, "no answer", f"\\boxed{{{i}}}") for i, q in enumerate("abcdef")}
    weak["g"] = _row("g", "nothing boxed")
    pool = demonstration_pool(weak)
    assert [d.id for d in pool] == list("abcdef")  # g has no solution with an answer
    assert pool[1] == Demonstration("b", "question b", "\\boxed{1}")  # its first solution with an answer
    picks = pick_demonstrations(pool, "c", 3, seed=5)
    assert len({d.id for d in picks}) == 3 and "c" not in {d.id for d in picks}
    assert picks == pick_demonstrations(pool, "c", 3, seed=5)  # the same in every run
    assert any(pick_demonstrations(pool, "c", 3, seed=s) != picks for s in range(6, 12))
    with pytest.raises(ConfigError, match="--shots 6: only 5"):
        pick_demonstrations(pool, "c", 6, seed=5)


def test_prompt_messages_put_demonstrations_before_the_question():
    demos = [Demonstration("a", "qa", "sa"), Demonstration("b", "qb", "sb")]
    assert [m["content"] for m in prompt_messages("q", "sys", demos)] == ["sys", "qa", "sa", "qb", "sb", "q"]
    assert prompt_messages("q", None) == [{"role": "user", "content": "q"}]


def test_a_rerun_with_other_settings_stops(tmp_path):
    path = tmp_path / "out.jsonl.settings.json"
    _check_settings(path, {"n": 4, "seed": 0})
    _check_settings(path, {"n": 4, "seed": 0})  # same settings: resume
    with pytest.raises(ConfigError, match=r"--output: out.jsonl was generated with other settings \(seed\)"):
        _check_settings(path, {"n": 4, "seed": 1})


@pytest.mark.parametrize("override, option", [
    ("w2s.variant=both", "w2s.variant"), ("w2s.mplus_samples=1", "w2s.mplus_samples"),
    ("w2s.min_confidence=1.5", "w2s.min_confidence"), ("w2s.objective=ppo", "w2s.objective"),
    ("w2s.backend=tgi", "w2s.backend"), ("w2s.stage2_steps=0", "w2s.stage2_steps"),
    ("w2s.temperature=0", "w2s.temperature"), ("w2s.unknown=1", "w2s.unknown"),
    ("w2s.stage1_rounds=0", "w2s.stage1_rounds"), ("w2s.benchmark_file=arith", "w2s.benchmark_file")])
def test_recipe_errors_name_the_option(override, option):
    with pytest.raises(ConfigError, match=option):
        load_config(None, [override])


def test_a_run_needs_its_inputs(tmp_path):
    (tmp_path / "weak").mkdir()
    (tmp_path / "weak" / "config.json").write_text("{}")
    (tmp_path / "q.jsonl").write_text("")
    with pytest.raises(ConfigError, match="w2s.weak_model"):
        W2SConfig(questions=str(tmp_path / "q.jsonl"), min_confidence=0.5).check_ready()
    with pytest.raises(ConfigError, match="w2s.questions"):
        W2SConfig(weak_model=str(tmp_path / "weak"), min_confidence=0.5).check_ready()
    with pytest.raises(ConfigError, match="w2s.min_confidence: required"):
        W2SConfig(weak_model=str(tmp_path / "weak"), questions=str(tmp_path / "q.jsonl")).check_ready()


def test_stage1_rounds_regenerate_icl_data_with_the_previous_m_plus(tmp_path):
    """Round r > 1 prompts round r-1's M_plus, trains M0 afresh into stage1/round<r>/, and Stage II starts
    from the last round's M_plus; only the last round is evaluated as `mplus`."""
    from megatron_wmss.w2s.run import W2SRun

    cfg = load_config(None, [f"run_dir={tmp_path}", "model.hf_path=STRONG", "w2s.stage1_rounds=3",
                             "w2s.min_confidence=0.5"])
    run = W2SRun(cfg)
    calls = []
    run._wmss = lambda *args, ranks=1: calls.append([str(a) for a in args])
    run._export_and_eval = lambda checkpoint, hf, name: calls.append(["export", str(checkpoint), str(hf), name])
    steps = {step.name: step for step in run.steps()}
    assert [n for n in steps if n.startswith(("icl_data", "train_mplus"))] == [
        "icl_data", "train_mplus", "icl_data_r2", "train_mplus_r2", "icl_data_r3", "train_mplus_r3"]
    for name in ("icl_data", "icl_data_r2", "icl_data_r3", "train_mplus_r3", "export_mplus_r2", "export_mplus_r3",
                 "mplus_samples", "train_mpro"):
        steps[name].action()
    models = [c[c.index("--model") + 1] for c in calls if "--model" in c]
    s1 = tmp_path.resolve() / "stage1"
    assert models == ["STRONG", str(s1 / "hf"), str(s1 / "round2" / "hf"), str(s1 / "round3" / "hf")]
    train_r3 = next(c for c in calls if c[0] == "train" and f"run_dir={s1 / 'round3' / 'train'}" in c)
    assert train_r3[train_r3.index("--init-model") + 1] == str(tmp_path.resolve() / "M0")
    assert [c[-1] for c in calls if c[0] == "export"] == ["mplus_round2", "mplus"]
    train_mpro = calls[-1]
    assert train_mpro[train_mpro.index("--init-model") + 1] == str(s1 / "round3" / "train" / "export" / "model")
