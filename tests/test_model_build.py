"""Model builder: HF config fields -> TransformerConfig, padding, and clear errors for what we do not support."""

import pytest
import torch

from megatron_wmss.models.build import (ArchInfo, UnsupportedModelError, padded_vocab_size,
                                        transformer_config_from_hf)
from megatron_wmss.models.rope import RopeSpec

QWEN2 = dict(model_type="qwen2", vocab_size=151936, hidden_size=2048, intermediate_size=11008,
             num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, rms_norm_eps=1e-6,
             rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=32768)
QWEN3 = dict(model_type="qwen3", vocab_size=151936, hidden_size=2560, intermediate_size=9728,
             num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
             rms_norm_eps=1e-6, rope_theta=1000000, tie_word_embeddings=True, max_position_embeddings=32768)


def test_padding_rule():
    assert padded_vocab_size(151936, 128, 1) == 151936
    assert padded_vocab_size(151936, 128, 8) == 152576
    assert padded_vocab_size(250, 8, 2) == 256


def test_qwen3_4b_fields():
    tcfg, arch = transformer_config_from_hf(QWEN3, tp=8, transformer_impl="local")
    assert arch == ArchInfo(model_type="qwen3", vocab_size=151936, padded_vocab_size=152576,
                            max_position_embeddings=32768, rotary_base=1000000, tie_word_embeddings=True,
                            qk_layernorm=True, add_qkv_bias=False, transformer_impl="local",
                            rope=RopeSpec(theta=1e6))
    assert (tcfg.num_layers, tcfg.hidden_size, tcfg.num_attention_heads) == (36, 2560, 32)
    assert (tcfg.num_query_groups, tcfg.kv_channels, tcfg.ffn_hidden_size) == (8, 128, 9728)
    assert tcfg.qk_layernorm and not tcfg.add_qkv_bias and tcfg.gated_linear_unit
    assert tcfg.normalization == "RMSNorm" and tcfg.params_dtype == torch.float32  # CPU default
    assert arch.tie_word_embeddings and arch.rotary_base == 1e6 and arch.padded_vocab_size == 152576


def test_qwen2_has_qkv_bias_and_no_qk_norm():
    tcfg, arch = transformer_config_from_hf(QWEN2, transformer_impl="local", params_dtype="bf16")
    assert tcfg.add_qkv_bias and not tcfg.qk_layernorm and tcfg.kv_channels == 128
    assert tcfg.params_dtype == torch.bfloat16 and tcfg.bf16


@pytest.mark.parametrize("change,message", [
    (dict(model_type="gemma3"), "model_type 'gemma3'"),
    (dict(num_key_value_heads=2), "num_key_value_heads"),
    (dict(num_attention_heads=6, num_key_value_heads=6), "num_attention_heads=6"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope scaling type 'yarn'"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
])
def test_unsupported_configs_name_the_value(change, message):
    with pytest.raises(UnsupportedModelError, match=message):
        transformer_config_from_hf({**QWEN3, **change}, tp=4, transformer_impl="local")


def test_fp8_needs_transformer_engine():
    with pytest.raises(UnsupportedModelError, match="fp8"):
        transformer_config_from_hf(QWEN3, transformer_impl="local", fp8="hybrid")


def test_sequence_parallel_with_torch_norms_on_a_gpu_is_refused(monkeypatch):
    """On CPU compat/cpu.py lets megatron's torch norms run sequence-parallel; on a GPU (where it is not
    applied) the local spec would stop at megatron's assert: refused by name instead."""
    from megatron_wmss.errors import ConfigError

    tcfg, _ = transformer_config_from_hf(QWEN3, tp=2, transformer_impl="local", sequence_parallel=True)
    assert tcfg.sequence_parallel
    tcfg, _ = transformer_config_from_hf(QWEN3, tp=1, transformer_impl="local", sequence_parallel=True)
    assert not tcfg.sequence_parallel  # a no-op at TP=1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match=r"parallel\.sequence_parallel: .*transformer_impl=transformer_engine"):
        transformer_config_from_hf(QWEN3, tp=2, transformer_impl="local", sequence_parallel=True)


@pytest.mark.gpu
def test_fp8_settings_reach_the_te_config():
    """On a GPU with TE the FP8 recipe fields are carried into TransformerConfig."""
    tcfg, arch = transformer_config_from_hf(QWEN3, fp8="hybrid", fp8_recipe="delayed", fp8_margin=1,
                                            fp8_amax_history_len=16)
    assert arch.transformer_impl == "transformer_engine"
    assert (tcfg.fp8, tcfg.fp8_margin, tcfg.fp8_amax_history_len) == ("hybrid", 1, 16)
