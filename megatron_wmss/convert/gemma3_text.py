"""The text decoder of a multimodal Gemma-3 checkpoint (model_type `gemma3`, e.g. google/gemma-3-4b-pt) as
a text-only HF directory (model_type `gemma3_text`, `Gemma3ForCausalLM`) that `wmss convert` accepts.

transformers reads the multimodal checkpoint (whatever its key layout) and its language model's weights
are copied unchanged into a Gemma3ForCausalLM; the vision tower and projector are left out. The
tokenizer files are copied along.

    python -m megatron_wmss.convert.gemma3_text SRC_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from megatron_wmss.convert.hf_io import atomic_output_dir, copy_tokenizer_files
from megatron_wmss.convert.mappings import ConversionError


def extract_text_model(src: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write `out`: the text decoder of the multimodal Gemma-3 HF directory `src`, in its stored dtype."""
    import torch
    from transformers import AutoModelForImageTextToText, Gemma3ForCausalLM

    src = Path(src)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"no config.json in {src}")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != "gemma3":
        raise ConversionError(f"{src} has model_type '{model_type}', not 'gemma3' (a multimodal Gemma-3)"
                              + ("; it is already a text model" if model_type == "gemma3_text" else ""))
    full = AutoModelForImageTextToText.from_pretrained(str(src), dtype="auto")
    text_config = full.config.text_config
    text = Gemma3ForCausalLM(text_config).to(full.dtype)
    with torch.no_grad():
        text.model.load_state_dict(full.model.language_model.state_dict(), strict=True)
        if not text_config.tie_word_embeddings:
            text.lm_head.weight.copy_(full.lm_head.weight)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        text.save_pretrained(tmp)
        copy_tokenizer_files(src, tmp)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megatron_wmss.convert.gemma3_text",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="multimodal Gemma-3 HF directory (model_type gemma3)")
    parser.add_argument("out", help="output directory for the text-only model (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = parser.parse_args(argv)
    try:
        extract_text_model(args.src, args.out, overwrite=args.overwrite)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
