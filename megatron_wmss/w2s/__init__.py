"""Weak-to-strong reasoning (Yang, Ma, Liu 2024, "Weak-to-Strong Reasoning"): Stage I keeps the questions
on which the weak model's and the in-context-prompted strong model's final answers agree (consistency.py);
Stage II builds contrastive pairs from the improved strong model's confident answers (contrast.py).
Answers are compared with each other by math-verify (answers.py), never against a gold answer; samples
are JSONL rows (samples.py) written by generate.py on the `wmss eval` backends; run.py is `wmss w2s run`,
the whole method with its baseline and evaluation; config.py its recipe section `w2s`. See docs/w2s.md."""
