"""`wmss eval`: math benchmarks (benchmarks), prompt rendering (prompts), generation backends
(backends: transformers / vLLM), math-verify grading under a timeout (extraction, grading, worker),
pass@k (metrics), outputs and --compare (results), command line (cli.main).

Kept import-light on purpose: grading workers import this package without torch."""
