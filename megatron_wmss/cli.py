"""`wmss <subcommand>`: one entry point; each subcommand lives in its own module and parses its own args."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with `main(argv) -> int`, one-line help). Modules import lazily so that
# `wmss --help` stays fast and a broken optional dependency only affects its own subcommand.
SUBCOMMANDS = {
    "preprocess": ("megatron_wmss.data.preprocess", "chat JSONL / parquet -> indexed .bin/.idx with loss masks"),
    "convert": ("megatron_wmss.convert.cli", "HF <-> Megatron checkpoints (any TP/PP)"),
    "train": ("megatron_wmss.train", "SFT or WD-JT training (launch with torchrun)"),
    "select": ("megatron_wmss.selection_cli", "WD-DS scoring pass and active-set selection"),
    "run": ("megatron_wmss.pipeline", "the whole of Algorithm 1 from a recipe"),
    "eval": ("megatron_wmss.eval.cli", "math benchmarks: greedy pass@1 and pass@k"),
    "study": ("megatron_wmss.study.cli", "WMSS vs SFT and controls at equal steps, several seeds, CIs"),
    "quickstart": ("megatron_wmss.quickstart", "the whole pipeline on a small bundled task, on CPU"),
    "smoke": ("megatron_wmss.smoke", "build a tiny model from a HF config and run one step on this machine"),
}


def _usage() -> str:
    lines = ["usage: wmss <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
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
    module_name, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            print(f"wmss {name}: not implemented yet in this version (module {module_name} is missing)",
                  file=sys.stderr)
            return 3
        raise
    from megatron_wmss.config import ConfigError

    try:
        return int(module.main(rest) or 0)
    except ConfigError as err:  # a rejected setting: its message names the option; no traceback
        print(f"wmss {name}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
