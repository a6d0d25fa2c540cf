"""Sample files from a model on the `wmss eval` generation backends: weak data (the weak model's solutions),
ICL data (the strong model prompted with k weak demonstrations as earlier chat turns) and M_plus samples.

Questions are JSONL rows `{"id"?, "problem" (or "question")}` or chat rows (`{"id"?, "messages"}`: the
first user turn); any answer in them is ignored. The prompt is rendered as `wmss eval` and `wmss
preprocess` render it (chat template, system message) so generation sees what training will. Question i
(0-based, in file order) is sampled with seed `seed + i`; its demonstrations are drawn with a generator
seeded by `(seed, id)`. Rows are appended to `<output>.partial` chunk by chunk, so an interrupted run
resumes at the first missing question; the settings are kept in `<output>.settings.json` and a rerun with
other settings stops instead of mixing them. The complete file is renamed to `<output>`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from megatron_wmss.errors import ConfigError
from megatron_wmss.w2s.answers import final_answer
from megatron_wmss.w2s.samples import jsonl_rows


@dataclass(frozen=True)
class Demonstration:
    id: str
    problem: str
    solution: str


def load_questions(path: str | Path, limit: int | None = None) -> list[dict]:
    """[{"id", "problem"}] of a question file (ids default to `q<row>` and must be unique)."""
    questions: list[dict] = []
    for n, row in jsonl_rows(path, "--questions"):
        problem = _problem_text(row)
        if problem is None:
            raise ConfigError(f"--questions: {path}:{n}: no 'problem' (or 'question', or a user turn in 'messages')")
        questions.append({"id": str(row.get("id", f"q{len(questions)}")), "problem": problem})
        if limit and len(questions) == limit:
            break
    ids = [q["id"] for q in questions]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--questions: {path}: id {next(i for i in ids if ids.count(i) > 1)!r} appears twice")
    if not questions:
        raise ConfigError(f"--questions: {path}: no rows")
    return questions


def _problem_text(row) -> str | None:
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("messages"), list):
        user = next((m for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"), {})
        text = user.get("content")
    else:
        text = row.get("problem", row.get("question"))
    return text if isinstance(text, str) and text.strip() else None


def demonstration_pool(weak_rows: dict[str, dict]) -> list[Demonstration]:
    """One demonstration per weak row that has a solution with a final answer (its first such solution;
    a solution without an answer would demonstrate no answer), in file order."""
    pool = []
    for qid, row in weak_rows.items():
        solution = next((s for s in row["samples"] if final_answer(s) is not None), None)
        user = next((m for m in row["prompt"] if m.get("role") == "user"), None)
        if solution is not None and user is not None:
            pool.append(Demonstration(qid, user["content"], solution))
    return pool


def pick_demonstrations(pool: list[Demonstration], question_id: str, shots: int, seed: int) -> list[Demonstration]:
    """`shots` demonstrations of other questions, drawn without replacement by a generator seeded with
    (seed, question_id): the same for every run and independent of the other questions."""
    others = [d for d in pool if d.id != question_id]
    if len(others) < shots:
        raise ConfigError(f"--shots {shots}: only {len(others)} weak demonstrations with a final answer for "
                          f"question {question_id!r}")
    return random.Random(f"{seed}/{question_id}").sample(others, shots)


def prompt_messages(problem: str, system_prompt: str | None, demos=()) -> list[dict]:
    """The chat messages of one question: [system], (user, assistant) per demonstration, user."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for d in demos:
        messages += [{"role": "user", "content": d.problem}, {"role": "assistant", "content": d.solution}]
    return messages + [{"role": "user", "content": problem}]


def render_messages(messages: list[dict], spec, tokenizer) -> list[int]:
    """Prompt token ids of `messages` ending with the assistant generation prompt (as eval.prompts.render)."""
    from megatron_wmss.eval.prompts import effective_template

    text = tokenizer.apply_chat_template(messages, chat_template=effective_template(spec, tokenizer),
                                         tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_settings(path: Path, settings: dict) -> None:
    if path.is_file():
        before = json.loads(path.read_text())
        if before != settings:
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            raise ConfigError(f"--output: {path.name[:-len('.settings.json')]} was generated with other settings "
                              f"({', '.join(changed)}); use another --output, or delete it and its "
                              ".partial / .settings.json files")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1) + "\n")


@dataclass(frozen=True)
class GenerateJob:
    """What one `wmss w2s generate` writes: settings recorded next to the output (a rerun must match)."""

    model: str
    questions: str
    output: str
    sampling: dict  # SamplingConfig fields
    system_prompt: str | None
    chat_template: str
    limit: int | None = None
    demonstrations: str | None = None  # weak sample file (ICL data)
    shots: int = 0


def generate(job: GenerateJob, backend_factory, *, chunk_size: int, show_progress: bool = True) -> int:
    """Write the sample file of `job` (resuming a partial one); returns the number of questions.
    `backend_factory(eot_token)` builds the generation backend, only when something is left to do."""
    from tqdm import tqdm

    from megatron_wmss.eval.backends import SamplingConfig, load_tokenizer
    from megatron_wmss.eval.prompts import resolve_prompt_spec
    from megatron_wmss.w2s.samples import read_samples

    output = Path(job.output)
    partial, settings = output.with_name(output.name + ".partial"), output.with_name(output.name + ".settings.json")
    _check_settings(settings, asdict(job))
    questions = load_questions(job.questions, job.limit)
    if output.is_file():
        return len(questions)
    try:
        sampling = SamplingConfig(**job.sampling)
    except ValueError as err:
        raise ConfigError(f"--n/--temperature/--top-p/--max-new-tokens: {err}") from None
    pool = demonstration_pool(read_samples(job.demonstrations, "--demonstrations")) if job.demonstrations else []
    spec = resolve_prompt_spec(None, job.chat_template, job.system_prompt)
    tokenizer = load_tokenizer(job.model)
    done = read_samples(partial, "--output (partial)") if partial.is_file() else {}
    todo = [(i, q) for i, q in enumerate(questions) if q["id"] not in done]
    backend = backend_factory(spec.eot_token) if todo else None
    bar = tqdm(total=len(questions), initial=len(questions) - len(todo), desc=output.name, unit="question",
               disable=not show_progress, dynamic_ncols=True)
    for start in range(0, len(todo), chunk_size):
        part = todo[start:start + chunk_size]
        demos = [pick_demonstrations(pool, q["id"], job.shots, sampling.seed) if job.shots else [] for _, q in part]
        prompts = [render_messages(prompt_messages(q["problem"], spec.system_prompt, d), spec, tokenizer)
                   for (_, q), d in zip(part, demos)]
        gens = backend.generate(prompts, sampling, [sampling.seed + i for i, _ in part])
        with partial.open("a", encoding="utf-8") as fh:
            for (_, q), d, gs in zip(part, demos, gens):
                row = {"id": q["id"], "prompt": prompt_messages(q["problem"], spec.system_prompt),
                       "samples": [g.text for g in gs], "finish_reasons": [g.finish_reason for g in gs]}
                if d:
                    row["demonstrations"] = [x.id for x in d]
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        bar.update(len(part))
    bar.close()
    partial.touch()
    partial.replace(output)
    return len(questions)


def resolve_backend(name: str) -> str:
    """"auto" -> vllm on a GPU machine with vLLM installed, else transformers (as `wmss run`'s eval)."""
    if name != "auto":
        return name
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None else "transformers"
