"""`wmss` dispatches to subcommands, rejects unknown ones, and runs the CPU smoke end to end."""

import subprocess
import sys


def _wmss(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "megatron_wmss.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_every_subcommand():
    out = _wmss("--help")
    assert out.returncode == 0
    for name in ("preprocess", "convert", "train", "select", "run", "eval", "quickstart"):
        assert f"  {name}" in out.stdout


def test_unknown_subcommand_fails():
    out = _wmss("frobnicate")
    assert out.returncode == 2 and "unknown subcommand 'frobnicate'" in out.stderr


def test_smoke_trains_on_cpu():
    out = _wmss("smoke", "--steps", "4")
    assert out.returncode == 0, out.stderr[-3000:]
    losses = [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith("step ")]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert "smoke OK" in out.stdout
