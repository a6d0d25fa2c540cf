"""`wmss <subcommand>`: one entry point; each subcommand lives in its own module and parses its own args."""

from __future__ import annotations

import importlib
import sys

# subcommand -> one-line help; `wmss NAME` runs megatron_wmss.commands.NAME.main(argv) -> int. Modules import
# lazily so that `wmss --help` stays fast and a broken optional dependency only affects its own subcommand.
SUBCOMMANDS = {
    "preprocess": "chat JSONL / parquet -> indexed .bin/.idx with loss masks",
    "convert": "HF <-> Megatron checkpoints (any TP/PP)",
    "train": "SFT, WD-JT, DPO or ORPO training (launch with torchrun)",
    "select": "WD-DS scoring pass and active-set selection",
    "run": "the whole of Algorithm 1 from a recipe",
    "diagnose": "logit statistics of models (Tables 6-7, entropy separation, lambda_cross)",
    "eval": "math benchmarks: greedy pass@1 and pass@k",
    "w2s": "weak-to-strong reasoning: generate, filter, pairs; run end to end",
    "study": "WMSS vs SFT and controls at equal steps, several seeds, CIs",
    "quickstart": "the whole pipeline on a small bundled task, on CPU",
    "smoke": "build a tiny model from a HF config and run one step on this machine",
}


def _usage() -> str:
    lines = ["usage: wmss <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<11} {help_}" for name, help_ in SUBCOMMANDS.items()]
    lines += ["", "`wmss <subcommand> --help` for its options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"wmss: unknown subcommand '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = f"megatron_wmss.commands.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            print(f"wmss {name}: not implemented yet in this version (module {module_name} is missing)",
                  file=sys.stderr)
            return 3
        raise
    from megatron_wmss.errors import ConfigError

    try:
        return int(module.main(rest) or 0)
    except ConfigError as err:  # a rejected setting: its message names the option; no traceback
        print(f"wmss {name}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
