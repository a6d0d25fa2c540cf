"""Rejected settings end the command with exit status 2 and a message naming the option (no traceback);
non-finite numbers are refused; the ranks wait for M0's conversion without a collective."""

import subprocess
import sys
from pathlib import Path

import pytest

from megatron_wmss import cli
from megatron_wmss.testing import run_ranks
from tests.training_helpers import TINY_QWEN3


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\ndata:\n  path: {tmp_path / 'data'}\n")
    return path


COMMANDS = {"run": [], "train": [], "select": ["--weak", "w", "--strong", "s", "--out", "o"]}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("override, option, rule", [
    ("training.lr=.inf", "training.lr", "finite"),
    ("training.lr=nan", "training.lr", "finite"),
    ("wmss.lam=-.inf", "wmss.lam", "finite"),
    ("training.keep_last=-1", "training.keep_last", ">= 0"),
    ("parallel.tp=0", "parallel.tp", ">= 1"),
    ("training.no_such_option=1", "training.no_such_option", "unknown option"),
])
def test_a_rejected_setting_exits_2_naming_the_option(recipe, capsys, command, override, option, rule):
    assert cli.main([command, *COMMANDS[command], "--config", str(recipe), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wmss {command}: ") and option in err and rule in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_run_names_a_missing_hf_path_before_any_subprocess(recipe, tmp_path, capsys):
    assert cli.main(["run", "--config", str(recipe), f"model.hf_path={tmp_path / 'absent'}"]) == 2
    err = capsys.readouterr().err
    assert "model.hf_path" in err and str(tmp_path / "absent") in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_installed_entry_point_exits_2_without_a_traceback(recipe):
    done = subprocess.run([sys.executable, "-m", "megatron_wmss.cli", "train", "--config", str(recipe),
                           "training.lr=.inf"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "training.lr" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("pp", [3, 8])
def test_pp_that_does_not_split_the_layers_is_refused_naming_parallel_pp(pp):
    from megatron_wmss.config import ConfigError
    from megatron_wmss.models.build import transformer_config_from_hf

    with pytest.raises(ConfigError, match=rf"parallel.pp={pp}: .*4 layers"):
        transformer_config_from_hf(TINY_QWEN3, pp=pp)


def slow_conversion_rank(workdir, conversion_s):
    """`_prepare_m0` with a conversion that outlasts the timeout (4 s) of every barrier."""
    import datetime
    import time

    import torch.distributed as dist

    from megatron_wmss import distributed, pipeline
    from megatron_wmss.config import load_config

    def convert(*args):
        time.sleep(conversion_s)
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "hf_config.json").write_text("{}")

    pipeline._wmss_subprocess = convert
    distributed.initialize()
    short = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=4))
    barrier = dist.barrier
    dist.barrier = lambda *a, **k: barrier(group=short)
    cfg = load_config(overrides=[f"run_dir={workdir}", "model.hf_path=hf"])
    m0 = pipeline._prepare_m0(cfg, Path(workdir))
    distributed.destroy()
    return (m0 / "hf_config.json").is_file()


def test_other_ranks_wait_for_the_m0_conversion_without_a_collective(tmp_path):
    assert run_ranks(slow_conversion_rank, 2, str(tmp_path), 8) == [True, True]
