"""Weak-to-strong reasoning (Yang, Ma, Liu 2024, "Weak-to-Strong Reasoning"): Stage I keeps the questions
on which the weak model's and the in-context-prompted strong model's final answers agree (consistency.py);
Stage II builds contrastive pairs from the improved strong model's confident answers (contrast.py).
Answers are compared with each other by math-verify (answers.py), never against a gold answer; samples
are JSONL rows (samples.py). See docs/w2s.md."""
