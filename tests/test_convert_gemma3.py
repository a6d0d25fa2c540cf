"""HF <-> megatron conversion of Gemma-3 text (tied and untied) and of a Llama with Llama-3.1 RoPE scaling.

- transformers' fp32 logits == our megatron model's logits (max abs diff <= 1e-4) at TP=1, TP=2, PP=2,
  on a sequence (12) three times the sliding window (4), with the global layers' RoPE linearly scaled;
  the Llama's `original_max_position_embeddings` (16) is short enough that llama3 scaling changes the
  logits. Each of these features is shown to matter: switching it off in transformers moves the logits
  by far more than the tolerance.
- HF -> megatron -> HF reproduces every tensor bit for bit (fp32 and bf16), also via checkpoints
  re-saved at TP=2 / PP=2.

Three gloo jobs (run_ranks): convert + TP=1 (1 rank), TP=2 then PP=2 (2 ranks), export (1 rank).
"""

import json
from pathlib import Path

import pytest
import torch

from megatron_wmss.models.build import UnsupportedModelError, padded_vocab_size, transformer_config_from_hf
from megatron_wmss.testing import run_ranks
from tests.test_convert import assert_bit_identical, megatron_logits

VOCAB, SEQ, BATCH, WINDOW = 300, 12, 2, 4
DIVISIBLE_BY = 128
TOLERANCE = 1e-4
GEMMA = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-6,
             query_pre_attn_scalar=24, sliding_window=WINDOW,
             layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
             rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
LLAMA3 = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False,
              rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
MODELS = {  # name: (transformers config class, model class, config, dtype)
    "gemma3_tied": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(GEMMA, tie_word_embeddings=True), torch.float32),
    "gemma3_untied": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(GEMMA, tie_word_embeddings=False),
                      torch.float32),
    "llama3_scaled": ("LlamaConfig", "LlamaForCausalLM", LLAMA3, torch.float32),
    "gemma3_bf16": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(GEMMA, tie_word_embeddings=True), torch.bfloat16),
}
FP32 = [n for n, m in MODELS.items() if m[3] == torch.float32]
# What switching a feature off does in transformers (must move the logits far beyond TOLERANCE).
FEATURES_OFF = {
    "gemma3_tied": {"sliding_window": 64},
    "llama3_scaled": {"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}},
}


def make_random_hf(name: str, out: Path, seed: int) -> None:
    """A random HF model (norm weights away from their neutral value) saved in its dtype."""
    import transformers

    config_cls, model_cls, cfg, dtype = MODELS[name]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**cfg))
    with torch.no_grad():
        for pname, param in model.named_parameters():
            param.normal_(1.0 if pname.endswith("norm.weight") and "llama" in name else 0.0,
                          0.2 if "norm" in pname else 0.1)
    model.to(dtype).save_pretrained(out)
    (out / "tokenizer_config.json").write_text(json.dumps({"marker": name}))


def hf_logits(hf_dir: Path, tokens: torch.Tensor, **config_changes) -> torch.Tensor:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(hf_dir, **config_changes)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, config=config, dtype=torch.float32,
                                                 attn_implementation="eager")
    with torch.no_grad():
        return model.eval()(tokens).logits


# ---------------------------------------------------------------- rank jobs (module level for spawn)

def convert_job(work: str, sources: dict, tokens: dict):
    """HF -> megatron for every model (stored dtype); TP=1 logits of the fp32 ones."""
    from megatron_wmss import distributed
    from megatron_wmss.convert import convert_hf_to_megatron

    for name, src in sources.items():
        convert_hf_to_megatron(src, f"{work}/mc/{name}", tp=2, pp=2, make_vocab_size_divisible_by=DIVISIBLE_BY)
    distributed.initialize(1, 1)
    return {name: megatron_logits(_hf_config(work, name), f"{work}/mc/{name}", tokens[name], 1, 1) for name in FP32}


def _hf_config(work: str, name: str) -> dict:
    return json.loads(Path(f"{work}/mc/{name}/hf_config.json").read_text())


def parallel_job(work: str, tokens: dict):
    """Logits at TP=2, then PP=2, from the TP=1 checkpoints; every model re-saved at both layouts."""
    from megatron_wmss import distributed

    out = {}
    for tp, pp in ((2, 1), (1, 2)):
        layout = distributed.initialize(tp, pp)
        logits = {}
        for name in MODELS:
            got = megatron_logits(_hf_config(work, name), f"{work}/mc/{name}", tokens[name], tp, pp,
                                  save_to=f"{work}/mc_tp{tp}pp{pp}/{name}")
            if name in FP32:
                logits[name] = got
        out[f"tp{tp}pp{pp}"] = dict(logits=logits, tp_rank=layout.tp_rank, last=layout.is_last_stage)
    return out


def export_job(work: str):
    """megatron -> HF from the TP=1 checkpoints and from the ones re-saved at TP=2 and PP=2."""
    from megatron_wmss import checkpoint
    from megatron_wmss.convert import convert_megatron_to_hf

    for name in MODELS:
        convert_megatron_to_hf(f"{work}/mc/{name}", f"{work}/hf_rt/{name}")
        meta = checkpoint.read_model_metadata(f"{work}/mc/{name}")
        for layout in ("tp2pp1", "tp1pp2"):
            checkpoint.write_model_metadata(f"{work}/mc_{layout}/{name}", meta["hf_config"], meta["tokenizer_dir"])
            # re-saved by an fp32 model: export in the source dtype
            convert_megatron_to_hf(f"{work}/mc_{layout}/{name}", f"{work}/hf_{layout}/{name}",
                                   dtype="bf16" if MODELS[name][3] == torch.bfloat16 else "auto")


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Source HF dirs, tokens, transformers' fp32 logits, and the logits with a feature switched off."""
    root = tmp_path_factory.mktemp("convert_gemma3")
    gen = torch.Generator().manual_seed(0)
    sources, tokens, ref, off = {}, {}, {}, {}
    for seed, name in enumerate(MODELS):
        sources[name] = root / "hf" / name
        make_random_hf(name, sources[name], seed)
        tokens[name] = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
        if name in FP32:
            ref[name] = hf_logits(sources[name], tokens[name])
        if name in FEATURES_OFF:
            off[name] = hf_logits(sources[name], tokens[name], **FEATURES_OFF[name])
    return dict(root=root, sources={k: str(v) for k, v in sources.items()}, tokens=tokens, ref=ref, off=off)


@pytest.fixture(scope="module")
def tp1(work):
    (logits,) = run_ranks(convert_job, 1, str(work["root"]), work["sources"], work["tokens"])
    return logits


@pytest.fixture(scope="module")
def parallel(work, tp1):
    return run_ranks(parallel_job, 2, str(work["root"]), work["tokens"])


@pytest.fixture(scope="module")
def tp2(parallel):
    shards = sorted((r["tp2pp1"] for r in parallel), key=lambda r: r["tp_rank"])
    return {name: torch.cat([r["logits"][name] for r in shards], dim=-1) for name in FP32}


@pytest.fixture(scope="module")
def pp2(parallel):
    first, last = (r["tp1pp2"] for r in parallel)
    assert (first["last"], last["last"]) == (False, True)
    assert all(v is None for v in first["logits"].values())
    return last["logits"]


@pytest.fixture(scope="module")
def exported(work, parallel):
    run_ranks(export_job, 1, str(work["root"]))


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("layout", ["tp1", "tp2", "pp2"])
@pytest.mark.parametrize("name", FP32)
def test_megatron_logits_match_transformers(work, request, layout, name):
    logits = request.getfixturevalue(layout)[name]
    ref = work["ref"][name]
    tp = 2 if layout == "tp2" else 1
    assert logits.shape == (BATCH, SEQ, padded_vocab_size(VOCAB, DIVISIBLE_BY, tp))
    assert ref.abs().max() > 0.5
    diff = (logits[..., :VOCAB] - ref).abs().max().item()
    assert diff <= TOLERANCE, f"{name} at {layout}: max |logit difference| {diff:.2e}"


@pytest.mark.parametrize("name", FEATURES_OFF)
def test_the_tested_feature_matters(work, name):
    """Sliding window (Gemma-3) / llama3 scaling (Llama): without it transformers' logits differ."""
    assert (work["off"][name] - work["ref"][name]).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("name", MODELS)
def test_roundtrip_bit_exact(work, exported, name):
    root = work["root"]
    assert_bit_identical(root / "hf_rt" / name, work["sources"][name])
    for layout in ("tp2pp1", "tp1pp2"):
        assert_bit_identical(root / f"hf_{layout}" / name, work["sources"][name])


def test_tied_gemma_exports_without_lm_head_and_loads(work, exported):
    from megatron_wmss.convert.hf_io import SafetensorsReader

    out = work["root"] / "hf_rt" / "gemma3_tied"
    assert "lm_head.weight" not in SafetensorsReader(out).names()
    assert "lm_head.weight" in SafetensorsReader(work["root"] / "hf_rt" / "gemma3_untied").names()
    assert json.loads((out / "config.json").read_text())["model_type"] == "gemma3_text"
    assert torch.equal(hf_logits(out, work["tokens"]["gemma3_tied"]), work["ref"]["gemma3_tied"])
    bf16 = json.loads((work["root"] / "hf_rt" / "gemma3_bf16" / "config.json").read_text())
    assert bf16.get("dtype", bf16.get("torch_dtype")) == "bfloat16"


# ---------------------------------------------------------------- config checks (no processes)

def _gemma(**change):
    return {**GEMMA, "model_type": "gemma3_text", "tie_word_embeddings": True, **change}


def test_gemma3_config_fields():
    tcfg, arch = transformer_config_from_hf(_gemma(), transformer_impl="local")
    assert tcfg.qk_layernorm and tcfg.gated_linear_unit and tcfg.softmax_scale == 24 ** -0.5
    assert tcfg.window_size == (WINDOW - 1, 0) and tcfg.window_attn_skip_freq == [1, 0, 1, 0]
    assert arch.tie_word_embeddings and arch.rope.kind == "linear" and arch.rope.factor == 4.0
    assert arch.local_rope.theta == 1e4 and arch.rope.theta == 1e6


def test_gemma3_legacy_rope_fields_and_default_pattern():
    """Configs as on the Hub before transformers 5: rope_theta / rope_local_base_freq / rope_scaling and
    sliding_window_pattern instead of layer_types."""
    legacy = {k: v for k, v in _gemma(num_hidden_layers=6).items() if k not in ("rope_parameters", "layer_types")}
    legacy.update(rope_theta=1e6, rope_local_base_freq=1e4, rope_scaling={"rope_type": "linear", "factor": 8.0})
    tcfg, arch = transformer_config_from_hf(legacy, transformer_impl="local")
    assert tcfg.window_attn_skip_freq == [1, 1, 1, 1, 1, 0]
    assert (arch.rope.kind, arch.rope.factor, arch.rope.theta, arch.local_rope.theta) == ("linear", 8.0, 1e6, 1e4)


@pytest.mark.parametrize("change,message", [
    (dict(final_logit_softcapping=30.0), "final_logit_softcapping=30.0"),
    (dict(hidden_activation="gelu"), "hidden_activation 'gelu'"),
    (dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
    (dict(layer_types=["sliding_attention"]), "layer_types must list 4"),
    (dict(rope_parameters={"full_attention": {"rope_type": "yarn", "factor": 2.0},
                           "sliding_attention": {"rope_type": "default"}}),
     r"rope scaling type 'yarn' \(rope_parameters.full_attention\)"),
    (dict(rope_parameters={"full_attention": {"rope_type": "default"},
                           "sliding_attention": {"rope_type": "linear", "factor": 2.0}}),
     "rope_parameters.sliding_attention"),
    (dict(model_type="gemma3"), "convert its text decoder"),
])
def test_unsupported_gemma3_configs_name_the_field(change, message):
    with pytest.raises(UnsupportedModelError, match=message):
        transformer_config_from_hf(_gemma(**change), transformer_impl="local")


def test_llama3_rope_needs_its_fields():
    bad = dict(LLAMA3, model_type="llama", rope_parameters={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(UnsupportedModelError, match="low_freq_factor, high_freq_factor, original_max"):
        transformer_config_from_hf(bad, transformer_impl="local")


def test_quickstart_gemma3_m0_is_a_supported_gemma3():
    """`wmss quickstart --arch gemma3`'s M0 config: windowed layers with one global, accepted by the builder."""
    from megatron_wmss.quickstart.base_model import BaseModelConfig, gemma3_config

    class Tokenizer:
        def __len__(self):
            return 1000

        def convert_tokens_to_ids(self, token):
            return {"<|im_end|>": 3, "<|endoftext|>": 0}[token]

    cfg = BaseModelConfig()
    hf = gemma3_config(Tokenizer(), cfg).to_dict()
    assert hf["model_type"] == "gemma3_text" and hf["sliding_window"] < cfg.seq_length
    tcfg, arch = transformer_config_from_hf(hf, transformer_impl="local")
    assert tcfg.window_attn_skip_freq == [1] * (cfg.num_layers - 1) + [0] and arch.tie_word_embeddings


def test_text_decoder_of_a_multimodal_gemma3(tmp_path):
    """A (tiny) multimodal Gemma-3 checkpoint -> its text decoder: same text logits, and `wmss convert`
    accepts it; a text model given as the source is refused by name."""
    from transformers import AutoModelForCausalLM, Gemma3Config, Gemma3ForConditionalGeneration

    from megatron_wmss.convert import ConversionError
    from megatron_wmss.convert.gemma3_text import extract_text_model
    from megatron_wmss.convert.hf_to_megatron import validate_hf_checkpoint

    text = {k: v for k, v in GEMMA.items() if k != "rope_parameters"}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    torch.manual_seed(0)
    full = Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4))
    full.save_pretrained(tmp_path / "mm")
    (tmp_path / "mm" / "tokenizer_config.json").write_text("{}")
    extract_text_model(tmp_path / "mm", tmp_path / "text")
    tokens = torch.randint(0, VOCAB, (1, SEQ))
    with torch.no_grad():
        want = full.eval()(input_ids=tokens).logits
        got = AutoModelForCausalLM.from_pretrained(tmp_path / "text").eval()(tokens).logits
    assert torch.equal(got, want)
    hf, _ = validate_hf_checkpoint(tmp_path / "text", tp=2, pp=2)
    assert hf["model_type"] == "gemma3_text" and (tmp_path / "text" / "tokenizer_config.json").is_file()
    with pytest.raises(ConversionError, match="already a text model"):
        extract_text_model(tmp_path / "text", tmp_path / "again")
