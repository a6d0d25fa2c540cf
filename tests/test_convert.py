"""HF <-> megatron conversion: tiny random Qwen2 (tied, QKV bias), Qwen3 (tied and untied, q/k norm,
head_dim != hidden/heads, rope theta 1e6), Llama (GQA) and the real trained tiny Llama.

- transformers' fp32 logits == our megatron model's logits (max abs diff <= 1e-4) at TP=1, TP=2, PP=2,
  each loading the TP=1 checkpoint the converter wrote (vocab padded 384 at TP=1, 512 at TP=2);
- HF -> megatron -> HF reproduces every tensor bit for bit, also via checkpoints re-saved at TP=2 / PP=2;
- pair checkpoints export either branch; a failed conversion leaves no output directory.

Three gloo jobs (run_ranks): convert + TP=1 (1 rank), TP=2 then PP=2 (2 ranks), export + pair (1 rank).
"""

import json
import os
from pathlib import Path

import pytest
import torch

from megatron_wmss.models.build import padded_vocab_size
from megatron_wmss.testing import run_ranks

VOCAB, SEQ, BATCH = 300, 10, 2
DIVISIBLE_BY = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              max_position_embeddings=64, rms_norm_eps=1e-6)
RANDOM_MODELS = {
    "qwen2_tied": ("Qwen2", dict(COMMON, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3_tied": ("Qwen3", dict(COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                 rope_theta=1e6, tie_word_embeddings=True)),
    "qwen3_untied": ("Qwen3", dict(COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                   tie_word_embeddings=False)),
    "llama_gqa": ("Llama", dict(COMMON, num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False,
                                rope_theta=5e5)),
}
REAL = "tiny_llama_real"
NAMES = [*RANDOM_MODELS, REAL]
SHARDED = "qwen3_untied"  # exported with a tiny shard size
TOLERANCE = 1e-4


def shared_dir() -> Path:
    return Path(os.environ.get("WMSS_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


def real_llama_dir() -> Path:
    return shared_dir() / "data/tiny_llama_verl_arith"


def make_random_hf(kind: str, cfg: dict, out: Path, seed: int) -> None:
    """A random fp32 HF model with non-trivial norms and biases, saved with a tokenizer file."""
    import transformers

    torch.manual_seed(seed)
    config = getattr(transformers, f"{kind}Config")(**cfg)
    model = getattr(transformers, f"{kind}ForCausalLM")(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.2 * torch.randn_like(param))
            else:
                param.normal_(0, 0.1)
    model.save_pretrained(out)
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64, "marker": kind}))


def hf_logits(hf_dir: Path, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(tokens).logits


# ---------------------------------------------------------------- rank jobs (module level for spawn)

def megatron_logits(hf_cfg: dict, ckpt: str, tokens: torch.Tensor, tp: int, pp: int, save_to: str | None = None):
    """This rank's logits (vocab shard on the last stage, None elsewhere) of the checkpoint at TP/PP."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_wmss.checkpoint import load_model, save_model
    from megatron_wmss.models.build import build_gpt_model, transformer_config_from_hf

    tcfg, arch = transformer_config_from_hf(hf_cfg, tp=tp, pp=pp, params_dtype="fp32", transformer_impl="local",
                                            make_vocab_size_divisible_by=DIVISIBLE_BY)
    model = build_gpt_model(tcfg, arch)
    load_model(model, ckpt)
    if save_to is not None:
        save_model(model, save_to)
    positions = torch.arange(tokens.shape[1]).expand_as(tokens)

    def step(data_iterator, mdl):
        output = mdl(next(data_iterator), positions, attention_mask=None)
        return output, lambda out: (out.float().sum() * 0, {"logits": out.detach().clone()})

    with torch.no_grad():
        out = get_forward_backward_func()(
            forward_step_func=step, data_iterator=iter([tokens]), model=[model], num_microbatches=1,
            seq_length=tokens.shape[1], micro_batch_size=tokens.shape[0], forward_only=True)
    return out[0]["logits"] if out else None


def convert_job(work: str, sources: dict, tokens: dict):
    """HF -> megatron for every model (fp32, and bf16 as stored for the real Llama); TP=1 logits."""
    from megatron_wmss import distributed
    from megatron_wmss.convert import convert_hf_to_megatron

    logits = {}
    for name, src in sources.items():
        convert_hf_to_megatron(src, f"{work}/mc/{name}", dtype="fp32", tp=2, pp=2,
                               make_vocab_size_divisible_by=DIVISIBLE_BY)
    convert_hf_to_megatron(sources[REAL], f"{work}/mc_bf16/{REAL}", make_vocab_size_divisible_by=DIVISIBLE_BY)
    distributed.initialize(1, 1)
    for name in sources:
        hf_cfg = json.loads(Path(f"{work}/mc/{name}/hf_config.json").read_text())
        logits[name] = megatron_logits(hf_cfg, f"{work}/mc/{name}", tokens[name], 1, 1)
    return logits


def parallel_job(work: str, names: list, tokens: dict):
    """Logits at TP=2, then PP=2 (same two ranks), from the TP=1 checkpoints; each model is re-saved at
    both layouts."""
    from megatron_wmss import distributed

    out = {}
    for tp, pp in ((2, 1), (1, 2)):
        layout = distributed.initialize(tp, pp)
        logits = {}
        for name in names:
            hf_cfg = json.loads(Path(f"{work}/mc/{name}/hf_config.json").read_text())
            logits[name] = megatron_logits(hf_cfg, f"{work}/mc/{name}", tokens[name], tp, pp,
                                           save_to=f"{work}/mc_tp{tp}pp{pp}/{name}")
        out[f"tp{tp}pp{pp}"] = dict(logits=logits, tp_rank=layout.tp_rank, last=layout.is_last_stage)
    return out


def export_job(work: str, names: list, sources: dict):
    """megatron -> HF from the TP=1, TP=2 and PP=2 checkpoints; a pair checkpoint; a failing save."""
    from megatron.core import dist_checkpointing

    from megatron_wmss import checkpoint
    from megatron_wmss.convert import ConversionError, convert_megatron_to_hf
    from megatron_wmss.convert.runtime import build_model

    for name in names:
        shard = 64 * 1024 if name == SHARDED else 5 * 1024**3
        convert_megatron_to_hf(f"{work}/mc/{name}", f"{work}/hf_rt/{name}", max_shard_bytes=shard,
                               dtype="bf16" if name == REAL else "auto")
        for layout in ("tp2pp1", "tp1pp2"):
            # copy metadata next to the re-saved checkpoints, as training checkpoints carry it
            meta = checkpoint.read_model_metadata(f"{work}/mc/{name}")
            checkpoint.write_model_metadata(f"{work}/mc_{layout}/{name}", meta["hf_config"], meta["tokenizer_dir"])
            convert_megatron_to_hf(f"{work}/mc_{layout}/{name}", f"{work}/hf_{layout}/{name}",
                                   dtype="bf16" if name == REAL else "auto")
    convert_megatron_to_hf(f"{work}/mc_bf16/{REAL}", f"{work}/hf_rt_bf16/{REAL}")

    # A pair checkpoint: strong = qwen3_tied, weak = the same weights halved (exact in fp32).
    meta = checkpoint.read_model_metadata(f"{work}/mc/qwen3_tied")
    strong, _ = build_model(meta["hf_config"], "fp32", DIVISIBLE_BY)
    weak, _ = build_model(meta["hf_config"], "fp32", DIVISIBLE_BY)
    checkpoint.load_model(strong, f"{work}/mc/qwen3_tied")
    checkpoint.load_model(weak, f"{work}/mc/qwen3_tied")
    with torch.no_grad():
        for param in weak.parameters():
            param.mul_(0.5)
    pair = {**strong.sharded_state_dict(prefix="strong."), **weak.sharded_state_dict(prefix="weak.")}
    Path(f"{work}/pair").mkdir()
    dist_checkpointing.save(pair, f"{work}/pair")
    checkpoint.write_model_metadata(f"{work}/pair", meta["hf_config"], meta["tokenizer_dir"])
    for branch in ("strong", "weak"):
        convert_megatron_to_hf(f"{work}/pair", f"{work}/hf_pair_{branch}", branch=branch)
    errors = {}
    try:
        convert_megatron_to_hf(f"{work}/pair", f"{work}/hf_pair_none")
    except ConversionError as err:
        errors["no_branch"] = str(err)

    # A save that fails half-way must leave neither the output nor its temporary directory.
    def failing_save(model, directory):
        (Path(directory) / "__0_0.distcp").write_bytes(b"partial")
        raise OSError("disk full (simulated)")

    real_save, checkpoint.save_model = checkpoint.save_model, failing_save
    try:
        from megatron_wmss.convert import convert_hf_to_megatron

        convert_hf_to_megatron(sources["llama_gqa"], f"{work}/failed/out")
    except OSError as err:
        errors["failed_save"] = str(err)
    finally:
        checkpoint.save_model = real_save
    errors["failed_listing"] = sorted(p.name for p in Path(f"{work}/failed").iterdir())
    return errors


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Source HF dirs, input tokens and transformers' fp32 logits for every model."""
    root = tmp_path_factory.mktemp("convert")
    sources, tokens, ref = {}, {}, {}
    gen = torch.Generator().manual_seed(0)
    for seed, (name, (kind, cfg)) in enumerate(RANDOM_MODELS.items()):
        sources[name] = root / "hf" / name
        make_random_hf(kind, cfg, sources[name], seed)
    sources[REAL] = real_llama_dir()
    assert (sources[REAL] / "model.safetensors").is_file(), f"real tiny Llama missing at {sources[REAL]}"
    for name, src in sources.items():
        vocab = json.loads((src / "config.json").read_text())["vocab_size"]
        tokens[name] = torch.randint(0, vocab, (BATCH, SEQ), generator=gen)
        ref[name] = hf_logits(src, tokens[name])
    return dict(root=root, sources={k: str(v) for k, v in sources.items()}, tokens=tokens, ref=ref)


@pytest.fixture(scope="module")
def tp1(work):
    (logits,) = run_ranks(convert_job, 1, str(work["root"]), work["sources"], work["tokens"])
    return logits


@pytest.fixture(scope="module")
def parallel(work, tp1):
    return run_ranks(parallel_job, 2, str(work["root"]), NAMES, work["tokens"])


@pytest.fixture(scope="module")
def tp2(parallel):
    shards = sorted((r["tp2pp1"] for r in parallel), key=lambda r: r["tp_rank"])
    return {name: torch.cat([r["logits"][name] for r in shards], dim=-1) for name in NAMES}


@pytest.fixture(scope="module")
def pp2(parallel):
    first, last = (r["tp1pp2"] for r in parallel)
    assert (first["last"], last["last"]) == (False, True)
    assert all(v is None for v in first["logits"].values())
    return last["logits"]


@pytest.fixture(scope="module")
def exported(work, parallel):
    (errors,) = run_ranks(export_job, 1, str(work["root"]), NAMES, work["sources"])
    return errors


def load_all(hf_dir) -> dict:
    from megatron_wmss.convert.hf_io import SafetensorsReader

    reader = SafetensorsReader(hf_dir)
    return {name: reader.get(name) for name in reader.names()}


def assert_bit_identical(got_dir, want_dir):
    got, want = load_all(got_dir), load_all(want_dir)
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), f"{name} differs"


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("layout", ["tp1", "tp2", "pp2"])
@pytest.mark.parametrize("name", NAMES)
def test_megatron_logits_match_transformers(work, request, layout, name):
    logits = request.getfixturevalue(layout)[name]
    ref = work["ref"][name]
    tp = 2 if layout == "tp2" else 1  # vocab 300 pads to 384 at TP=1, 512 at TP=2; 16 to 128 / 256
    assert logits.shape == (BATCH, SEQ, padded_vocab_size(ref.shape[-1], DIVISIBLE_BY, tp))
    assert ref.abs().max() > 0.5  # logits are not trivially small
    diff = (logits[..., :ref.shape[-1]] - ref).abs().max().item()
    assert diff <= TOLERANCE, f"{name} at {layout}: max |logit difference| {diff:.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_roundtrip_bit_exact(work, exported, name):
    root = work["root"]
    assert_bit_identical(root / "hf_rt" / name, work["sources"][name])
    for layout in ("tp2pp1", "tp1pp2"):  # checkpoints re-saved at TP=2 (vocab 512) and PP=2
        assert_bit_identical(root / f"hf_{layout}" / name, work["sources"][name])


def test_real_llama_bf16_roundtrip_keeps_dtype(work, exported):
    out = work["root"] / "hf_rt_bf16" / REAL
    assert_bit_identical(out, work["sources"][REAL])
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"]


def test_exported_directory_loads_in_transformers(work, exported):
    """The sharded export of the untied Qwen3 loads with transformers and reproduces its logits."""
    out = work["root"] / "hf_rt" / SHARDED
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "tokenizer_config.json").read_text())["marker"] == "Qwen3"
    logits = hf_logits(out, work["tokens"][SHARDED])
    assert torch.equal(logits, work["ref"][SHARDED])


def test_tied_export_has_no_lm_head(work, exported):
    names = load_all(work["root"] / "hf_rt" / "qwen3_tied")
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    assert "lm_head.weight" in load_all(work["root"] / "hf_rt" / "qwen3_untied")


def test_pair_checkpoint_exports_either_branch(work, exported):
    source = load_all(work["sources"]["qwen3_tied"])
    assert_bit_identical(work["root"] / "hf_pair_strong", work["sources"]["qwen3_tied"])
    weak = load_all(work["root"] / "hf_pair_weak")
    assert sorted(weak) == sorted(source)
    for name, tensor in source.items():
        assert torch.equal(weak[name], tensor * 0.5), name
    assert "pass --branch strong or --branch weak" in exported["no_branch"]
    assert "'strong.'" in exported["no_branch"] and "'weak.'" in exported["no_branch"]
    assert not (work["root"] / "hf_pair_none").exists()


def test_failed_conversion_leaves_no_directory(exported):
    assert "disk full" in exported["failed_save"]
    assert exported["failed_listing"] == []
