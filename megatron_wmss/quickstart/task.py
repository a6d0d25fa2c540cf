"""The quickstart task: procedurally generated multi-step arithmetic word problems whose answers can be
checked, written as AM-schema chat rows (the format `wmss preprocess` reads, docs/data.md).

A problem starts with a quantity and applies 2-3 additions/subtractions told as a story:

  user:      Mia has 14 marbles. She buys 8 more marbles. After that she gives away 5 marbles.
             How many marbles does Mia have now?
  assistant: <think>Start: 14. Buys 8: 14 + 8 = 22. Gives away 5: 22 - 5 = 17.</think>
             <answer>\\boxed{17}</answer>

The difficulty is set by `TaskConfig` (named presets in `TASK_PRESETS`). "easy" (the defaults) keeps values
in [0, 30]. "plateau" (the bundled `wmss study` task) is "easy" plus, on half of the problems, a last "hard"
step: a one-digit by two-digit product, told as groups and worked in one line:

  user:      ... Then she buys 7 boxes of 46 marbles. ...
  assistant: <think>... Buys 7 boxes of 46: 7 * 46 = 322, 15 + 322 = 337.</think>

A ~1M-parameter model learns the easy part to the ceiling within a few epochs but the products only slowly:
SFT levels off near half the held-out problems, with the hard ones under-learned (docs/study.md).
"two_digit" (values up to 99, up to 4 steps, some single-digit "k boxes of m" group steps) is the preset of
the first, near-ceiling study.

Everything is a pure function of the seed (one `random.Random`), so two runs with the same seed write
byte-identical files. Train and test problems are disjoint (distinct user texts), the test split is
generated first so its content does not depend on the train size.

The pre-training text for M0 (`pretrain_corpus`) is drawn from a separate random stream and never holds
a held-out problem: plain text without the chat template, roles or system prompt of the SFT data (problem
statements, arithmetic chains, solutions in prose and in the tagged AM layout), the kind of math text a
real base model has seen. After a brief pre-training M0 is a weak but non-random base.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

SOURCE = "quickstart-arith"
# The system prompt of the quickstart data (`wmss preprocess --system-prompt`; evaluation reads it from the
# manifest). Shorter than the paper's DEFAULT_SYSTEM_PROMPT (~70 tokens) to keep CPU sequences short.
SYSTEM_PROMPT = ("Solve the problem step by step inside <think> </think>, then give the final answer "
                 "inside <answer> </answer>.")
NAMES = ["Mia", "Noah", "Liam", "Emma", "Ava", "Lucas", "Zoe", "Omar", "Lena", "Ivan", "Sara", "Kai",
         "Nina", "Theo", "Ruby", "Hugo", "Maya", "Leo", "Iris", "Finn"]
PRONOUN = {n: ("she" if n in {"Mia", "Emma", "Ava", "Zoe", "Lena", "Sara", "Nina", "Ruby", "Maya", "Iris"}
               else "he") for n in NAMES}
ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells", "stamps", "cookies",
         "balloons", "candies"]
# (story verb phrase with {n} and {item}, short label used in the worked step)
ADD = [("buys {n} more {item}", "buys {n}"), ("finds {n} {item}", "finds {n}"),
       ("gets {n} {item} from a friend", "gets {n}"), ("wins {n} {item}", "wins {n}")]
SUB = [("gives away {n} {item}", "gives away {n}"), ("loses {n} {item}", "loses {n}"),
       ("sells {n} {item}", "sells {n}"), ("uses {n} {item}", "uses {n}")]
CONNECT = ["Then", "After that", "Later", "Next"]
# group steps: k groups of m items, added or removed as k * m (story with {k}, {m}, {item}; worked label)
ADD_GROUPS = [("buys {k} boxes of {m} {item}", "buys {k} boxes of {m}"),
              ("gets {k} bags of {m} {item}", "gets {k} bags of {m}")]
SUB_GROUPS = [("gives away {k} boxes of {m} {item}", "gives away {k} boxes of {m}"),
              ("sells {k} bags of {m} {item}", "sells {k} bags of {m}")]


@dataclass(frozen=True)
class TaskConfig:
    """Size and difficulty. Defaults ("easy"): start in [2, max_start=20], amounts in [1, max_amount=9],
    every value in [0, max_value=30], 2-3 steps, no group steps, no hard step.

    group_prob: probability that a step adds or removes k groups of m items (k, m in [2, max_factor]),
    worked as "k * m = km, value + km = new" (falls back to a plain step when k * m cannot fit); 0 draws
    no extra random numbers, so the easy task is unchanged by the field's existence.
    hard_prob: probability that a problem ends with a hard step, k groups of m items added, k in
    [hard_factors[0], hard_factors[1]], m in [hard_factors[2], hard_factors[3]] (values may then exceed
    max_value); 0 draws nothing, as for group_prob."""

    num_train: int = 2000
    num_test: int = 200
    min_steps: int = 2
    max_steps: int = 3
    max_start: int = 20
    max_amount: int = 9
    max_value: int = 30
    seed: int = 1234
    group_prob: float = 0.0
    max_factor: int = 9
    hard_prob: float = 0.0
    hard_factors: tuple[int, int, int, int] = (11, 99, 11, 99)

    def __post_init__(self):
        checks = {"num_train": self.num_train >= 0, "num_test": self.num_test >= 0,
                  "min_steps": 1 <= self.min_steps <= self.max_steps,
                  "max_start": 2 <= self.max_start <= self.max_value,
                  "max_amount": 1 <= self.max_amount, "group_prob": 0.0 <= self.group_prob <= 1.0,
                  "max_factor": self.max_factor >= 2, "hard_prob": 0.0 <= self.hard_prob <= 1.0,
                  "hard_factors": (len(self.hard_factors) == 4 and 2 <= self.hard_factors[0] <= self.hard_factors[1]
                                   and 2 <= self.hard_factors[2] <= self.hard_factors[3])}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"TaskConfig: invalid {', '.join(bad)} ({self})")


# Named difficulty levels (sizes are the caller's: replace num_train / num_test / seed).
TASK_PRESETS = {
    "easy": TaskConfig(),
    "plateau": TaskConfig(hard_prob=0.5, hard_factors=(3, 9, 11, 99)),
    "two_digit": TaskConfig(min_steps=2, max_steps=4, max_start=60, max_amount=40, max_value=99, group_prob=0.3),
}


def _group(rng: random.Random, cfg: TaskConfig, room: int) -> tuple[int, int] | None:
    """(k, m) with k * m <= room, both in [2, max_factor], or None when room < 4."""
    if room < 4:
        return None
    k = rng.randint(2, min(cfg.max_factor, room // 2))
    return k, rng.randint(2, min(cfg.max_factor, room // k))


def make_problem(rng: random.Random, cfg: TaskConfig) -> dict:
    """One problem: {"problem", "think", "answer" (int), "equations" (the steps as "a + n = b")}."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    he = PRONOUN[name]
    value = rng.randint(2, cfg.max_start)
    story = [f"{name} has {value} {item}."]
    steps, equations = [f"Start: {value}."], []
    for i in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        can_add = value + 1 <= cfg.max_value
        add = can_add and (value < 1 or rng.random() < 0.5)
        if add:
            n = rng.randint(1, min(cfg.max_amount, cfg.max_value - value))
            verb, label = rng.choice(ADD)
            new, op = value + n, "+"
        else:
            n = rng.randint(1, min(cfg.max_amount, value))
            verb, label = rng.choice(SUB)
            new, op = value - n, "-"
        group = None
        if cfg.group_prob > 0 and rng.random() < cfg.group_prob:
            group = _group(rng, cfg, cfg.max_value - value if add else value)
        lead = he.capitalize() if i == 0 else f"{rng.choice(CONNECT)} {he}"
        if group is None:
            story.append(f"{lead} {verb.format(n=n, item=item)}.")
            equations.append(f"{value} {op} {n} = {new}")
            steps.append(f"{label.format(n=n).capitalize()}: {equations[-1]}.")
        else:
            (k, m), (verb, label) = group, rng.choice(ADD_GROUPS if add else SUB_GROUPS)
            new = value + k * m if add else value - k * m
            story.append(f"{lead} {verb.format(k=k, m=m, item=item)}.")
            equations += [f"{k} * {m} = {k * m}", f"{value} {op} {k * m} = {new}"]
            steps.append(f"{label.format(k=k, m=m).capitalize()}: {equations[-2]}, {equations[-1]}.")
        value = new
    if cfg.hard_prob > 0 and rng.random() < cfg.hard_prob:
        k, m = rng.randint(*cfg.hard_factors[:2]), rng.randint(*cfg.hard_factors[2:])
        verb, label = rng.choice(ADD_GROUPS)
        story.append(f"{rng.choice(CONNECT)} {he} {verb.format(k=k, m=m, item=item)}.")
        equations += [f"{k} * {m} = {k * m}", f"{value} + {k * m} = {value + k * m}"]
        steps.append(f"{label.format(k=k, m=m).capitalize()}: {equations[-2]}, {equations[-1]}.")
        value += k * m
    story.append(f"How many {item} does {name} have now?")
    return {"problem": " ".join(story), "think": " ".join(steps), "answer": value, "equations": equations}


def subset(p: dict, cfg: TaskConfig) -> str:
    """"hard" when the problem has a hard step (its answer exceeds every value an easy step can reach),
    else "easy": the subsets `wmss study` reports accuracy on."""
    return "hard" if p["answer"] > cfg.max_value else "easy"


def to_am_row(p: dict, row_id: str) -> dict:
    """AM-DeepSeek-R1-Distilled schema (shared/design/WMSS.md, Data), with a stable row id."""
    answer_content = f"\\boxed{{{p['answer']}}}"
    ref = str(p["answer"])
    return {"id": row_id, "messages": [
        {"role": "user", "content": p["problem"],
         "info": {"source": SOURCE, "reference_answer": ref, "test_case": None, "think_content": None,
                  "answer_content": None}},
        {"role": "assistant", "content": f"<think>{p['think']}</think>\n<answer>{answer_content}</answer>",
         "info": {"source": SOURCE, "think_content": p["think"], "answer_content": answer_content,
                  "reference_answer": ref, "test_case": None}}]}


def generate_splits(cfg: TaskConfig) -> tuple[list[dict], list[dict]]:
    """(train, test) problems, disjoint by problem text; test first so it does not depend on num_train."""
    rng = random.Random(f"quickstart-task-{cfg.seed}")
    seen: set[str] = set()
    splits: list[list[dict]] = []
    for size in (cfg.num_test, cfg.num_train):
        out: list[dict] = []
        while len(out) < size:
            p = make_problem(rng, cfg)
            if p["problem"] not in seen:
                seen.add(p["problem"])
                out.append(p)
        splits.append(out)
    test, train = splits
    return train, test


def pretrain_corpus(cfg: TaskConfig, num_docs: int, exclude: set[str] = frozenset()) -> list[str]:
    """Plain text for pre-training M0, like the math text a real base model has seen. In turn: a problem
    statement alone; a chain of arithmetic sentences ("14 + 8 = 22. 22 - 5 = 17.", with group steps also
    products "4 * 7 = 28."); a problem followed by
    its arithmetic in prose; a problem followed by a tagged worked solution in the AM layout
    (`<think>...</think>` `<answer>\\boxed{N}</answer>`). Never the chat template, roles or system prompt
    of the SFT data, and no problem in `exclude` (the held-out split)."""
    rng = random.Random(f"quickstart-pretrain-{cfg.seed}")
    docs = []
    while len(docs) < num_docs:
        kind = len(docs) % 4
        if kind == 1:
            value, facts = rng.randint(0, cfg.max_value), []
            for _ in range(rng.randint(2, 5)):
                if cfg.group_prob > 0 and rng.random() < cfg.group_prob:
                    k, m = rng.randint(2, cfg.max_factor), rng.randint(2, cfg.max_factor)
                    facts.append(f"{k} * {m} = {k * m}.")
                elif value < cfg.max_value and (value == 0 or rng.random() < 0.5):
                    n = rng.randint(1, min(cfg.max_amount, cfg.max_value - value))
                    facts.append(f"{value} + {n} = {value + n}.")
                    value += n
                else:
                    n = rng.randint(1, min(cfg.max_amount, value))
                    facts.append(f"{value} - {n} = {value - n}.")
                    value -= n
            docs.append(" ".join(facts))
            continue
        p = make_problem(rng, cfg)
        if p["problem"] in exclude:
            continue
        if kind == 0:
            docs.append(p["problem"])
        elif kind == 2:
            name, item = p["problem"].split()[0], p["problem"].split()[3].rstrip(".")
            docs.append(f"{p['problem']} {'. '.join(p['equations'])}. {name} has {p['answer']} {item} now.")
        else:
            docs.append(f"{p['problem']}\n<think>{p['think']}</think>\n<answer>\\boxed{{{p['answer']}}}</answer>")
    return docs


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_task(out_dir: str | Path, cfg: TaskConfig, num_pretrain_docs: int) -> dict:
    """Write train.jsonl / test.jsonl (AM rows), test_benchmark.jsonl (id, problem, answer: a
    `wmss eval --benchmark-file`; with hard steps also "subset", see `subset`), pretrain.jsonl ({"text"} per document) and task.json (the config)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = generate_splits(cfg)
    write_jsonl(out / "train.jsonl", [to_am_row(p, f"arith-train-{i:05d}") for i, p in enumerate(train)])
    write_jsonl(out / "test.jsonl", [to_am_row(p, f"arith-test-{i:04d}") for i, p in enumerate(test)])
    write_jsonl(out / "test_benchmark.jsonl", [
        {"id": f"arith-test-{i:04d}", "problem": p["problem"], "answer": str(p["answer"]), "answer_type": "numeric",
         **({"subset": subset(p, cfg)} if cfg.hard_prob > 0 else {})}
        for i, p in enumerate(test)])
    docs = pretrain_corpus(cfg, num_pretrain_docs, exclude={p["problem"] for p in test})
    write_jsonl(out / "pretrain.jsonl", [{"text": d} for d in docs])
    meta = {"config": cfg.__dict__, "num_pretrain_docs": num_pretrain_docs, "source": SOURCE}
    (out / "task.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def read_pretrain_docs(task_dir: str | Path) -> list[str]:
    with (Path(task_dir) / "pretrain.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]
