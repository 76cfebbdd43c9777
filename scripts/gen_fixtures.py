#!/usr/bin/env python3
# Builds tiny random Qwen3-Next checkpoints and their fp32 reference logits with Hugging Face
# transformers (>= 5, eager attention and experts, torch fallback kernels), for hmoe's tests.
# Fixtures: tiny-bf16 (single file, hub config spelling), tiny-sharded (f32, 5.x spelling, fused
# experts, tied embeddings), tiny-nf4 (bitsandbytes NF4 + double quant written by our own quantizer).
# Runs where torch + transformers + safetensors are (the GPU machine); see tests/data/README.md.
#   python3 scripts/gen_fixtures.py --out /tmp/fx [--only tiny-bf16,...]
import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import importlib.util  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import safetensors  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
import transformers  # noqa: E402
from transformers import Qwen3NextConfig, Qwen3NextForCausalLM  # noqa: E402

try:
    from transformers import DynamicCache
except ImportError:  # pragma: no cover
    from transformers.cache_utils import DynamicCache

torch.set_grad_enabled(False)

# --------------------------------------------------------------------------------------------
# Fixture specifications. Shapes differ between fixtures on purpose (MODEL.md / issue 2).
# --------------------------------------------------------------------------------------------
SPECS = {
    "tiny-bf16": dict(
        seed=1234,
        save="bf16-single",           # bf16 weights, one model.safetensors, per-expert names
        config_style="hub",           # top-level rope_theta/partial_rotary_factor, no layer_types
        full_attention_interval=2,
        cfg=dict(
            vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            linear_num_key_heads=2, linear_num_value_heads=4,
            linear_key_head_dim=16, linear_value_head_dim=24, linear_conv_kernel_dim=4,
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
            shared_expert_intermediate_size=48, norm_topk_prob=True,
            rms_norm_eps=1e-6, tie_word_embeddings=False,
            max_position_embeddings=4096,
        ),
        rope_theta=1000000.0, partial_rotary_factor=0.5,
        layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
        prefill=80, n_decode=8,
    ),
    "tiny-sharded": dict(
        seed=4321,
        save="f32-sharded-fused",     # f32, >= 3 shards + index, fused experts, tied embeddings
        config_style="v5",
        cfg=dict(
            vocab_size=300, hidden_size=96, intermediate_size=128, num_hidden_layers=5,
            num_attention_heads=6, num_key_value_heads=2, head_dim=24,
            linear_num_key_heads=2, linear_num_value_heads=6,
            linear_key_head_dim=24, linear_value_head_dim=16, linear_conv_kernel_dim=4,
            num_experts=6, num_experts_per_tok=3, moe_intermediate_size=16,
            shared_expert_intermediate_size=40, norm_topk_prob=False,
            rms_norm_eps=1e-5, tie_word_embeddings=True,
            max_position_embeddings=4096,
        ),
        rope_theta=10000.0, partial_rotary_factor=0.5,
        layer_types=["full_attention", "linear_attention", "linear_attention", "full_attention",
                     "linear_attention"],
        prefill=37, n_decode=6,
    ),
    "tiny-nf4": dict(
        seed=777,
        save="nf4",                   # bnb NF4 + double quant, per-expert names, bf16 rest
        config_style="v5",
        cfg=dict(
            vocab_size=320, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=1, head_dim=64,
            linear_num_key_heads=2, linear_num_value_heads=4,
            linear_key_head_dim=32, linear_value_head_dim=40, linear_conv_kernel_dim=4,
            num_experts=16, num_experts_per_tok=4, moe_intermediate_size=32,
            shared_expert_intermediate_size=64, norm_topk_prob=True,
            rms_norm_eps=1e-6, tie_word_embeddings=False,
            max_position_embeddings=4096,
        ),
        rope_theta=10000000.0, partial_rotary_factor=0.25,
        layer_types=["linear_attention", "linear_attention", "full_attention"],
        prefill=129, n_decode=4,
        unquantized_expert=(0, 3),    # layer 0 expert 3 stays bf16
    ),
}

ROUTER_MIN_GAP = 3e-4   # min logit gap between the k-th and (k+1)-th expert we accept
CACHE_REL_TOL = 1e-4    # prefill+decode vs full forward, max|diff|/max|ref|

LOG_LINES = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG_LINES.append(s)


# --------------------------------------------------------------------------------------------
# Environment checks: the torch fallback kernels must be the ones that run.
# --------------------------------------------------------------------------------------------
def check_environment():
    found = {m: importlib.util.find_spec(m) is not None for m in ("fla", "causal_conv1d", "kernels",
                                                                   "bitsandbytes")}
    log(f"[env] torch {torch.__version__} transformers {transformers.__version__} "
        f"safetensors {safetensors.__version__} numpy {np.__version__} python {sys.version.split()[0]}")
    log(f"[env] importable: {found}")
    if found["fla"] or found["causal_conv1d"]:
        raise SystemExit("flash-linear-attention / causal-conv1d importable: the reference would not "
                         "use the torch kernels; run in an environment without them")
    try:
        from transformers.utils import import_utils as iu
        for fn in ("is_flash_linear_attention_available", "is_causal_conv1d_available"):
            if hasattr(iu, fn):
                v = getattr(iu, fn)()
                log(f"[env] transformers {fn}() = {v}")
                if v:
                    raise SystemExit(f"{fn}() is True")
    except ImportError:
        pass


def check_torch_fallback(model):
    """Assert that the GatedDeltaNet layers use transformers' torch functions, not fla/causal_conv1d."""
    seen = set()
    for i, layer in enumerate(model.model.layers):
        la = getattr(layer, "linear_attn", None)
        if la is None:
            continue
        for attr in ("causal_conv1d_fn", "causal_conv1d_update", "chunk_gated_delta_rule",
                     "recurrent_gated_delta_rule"):
            if not hasattr(la, attr):
                continue
            f = getattr(la, attr)
            if f is None:
                desc = "None"
            else:
                mod = getattr(f, "__module__", "") or ""
                desc = f"{mod}.{getattr(f, '__name__', type(f).__name__)}"
                if mod.startswith("fla") or mod.startswith("causal_conv1d") or "kernels" in mod.split(".")[0]:
                    raise AssertionError(f"layer {i} {attr} uses a fast kernel: {desc}")
            seen.add(f"{attr}={desc}")
        nc = type(la.norm).__name__
        if "Fused" in nc:
            raise AssertionError(f"layer {i} uses {nc}")
        seen.add(f"norm={nc}")
    for s in sorted(seen):
        log(f"[fallback] {s}")
    attn = getattr(model.config, "_attn_implementation", None)
    exp = getattr(model.config, "_experts_implementation", None)
    log(f"[impl] attn={attn} experts={exp}")
    if attn != "eager":
        raise AssertionError(f"attention implementation is {attn}, expected eager")
    if exp is not None and exp != "eager":
        raise AssertionError(f"experts implementation is {exp}, expected eager")


# --------------------------------------------------------------------------------------------
# Model construction and random weights
# --------------------------------------------------------------------------------------------
def make_config(spec):
    c = dict(spec["cfg"])
    V = c["vocab_size"]
    c.update(
        rope_parameters={"rope_type": "default", "rope_theta": spec["rope_theta"],
                         "partial_rotary_factor": spec["partial_rotary_factor"]},
        partial_rotary_factor=spec["partial_rotary_factor"],
        layer_types=list(spec["layer_types"]),
        bos_token_id=V - 2, eos_token_id=V - 1, pad_token_id=None,
        mlp_only_layers=[], decoder_sparse_step=1,
        attention_bias=False, hidden_act="silu",
    )
    cfg = Qwen3NextConfig(**c)
    return cfg


def randomize(model, spec, gen):
    """Fill every parameter so that each term of the forward pass matters (issue 2)."""
    H = spec["cfg"]["hidden_size"]
    tied = spec["cfg"]["tie_word_embeddings"]
    names = []
    for name, p in model.named_parameters():
        names.append(name)
        shape = tuple(p.shape)

        def normal(mean, std):
            return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean

        if name.endswith("embed_tokens.weight"):
            v = normal(0.0, 0.35 if tied else 1.0)
        elif name == "lm_head.weight":
            v = normal(0.0, 2.0 / math.sqrt(H))
        elif name.endswith("linear_attn.norm.weight"):
            v = normal(1.0, 0.3)                      # gated RMSNorm: applied as w
        elif name.endswith("norm.weight"):
            v = normal(0.0, 0.3)                      # (1+w) RMSNorms incl. q_norm/k_norm
        elif name.endswith("A_log"):
            u = torch.rand(shape, generator=gen, dtype=torch.float32)
            v = math.log(0.5) + u * (math.log(16.0) - math.log(0.5))
        elif name.endswith("dt_bias"):
            v = normal(0.0, 1.0)
        elif name.endswith("conv1d.weight"):
            v = normal(0.0, 0.5)
        elif name.endswith("mlp.gate.weight"):
            v = normal(0.0, 2.0 / math.sqrt(H))      # router: decisive but not degenerate
        elif len(shape) >= 2:
            v = normal(0.0, 1.0 / math.sqrt(shape[-1]))  # [.., out, in]: fan-in scaling
        else:
            raise RuntimeError(f"no init rule for parameter {name} {shape}")
        with torch.no_grad():
            p.copy_(v.to(p.dtype))
    return names


def build_model(spec):
    cfg = make_config(spec)
    torch.manual_seed(spec["seed"])
    try:
        model = Qwen3NextForCausalLM._from_config(cfg, attn_implementation="eager",
                                                  experts_implementation="eager", dtype=torch.float32)
    except (TypeError, ValueError) as e:
        log(f"[model] _from_config with eager kwargs failed ({e}); constructing directly")
        model = Qwen3NextForCausalLM(cfg)
    model = model.to(torch.float32).eval()
    gen = torch.Generator().manual_seed(spec["seed"])
    names = randomize(model, spec, gen)
    log(f"[model] {len(names)} parameters; in-memory names (first layer): "
        + ", ".join(f"{n}{list(dict(model.named_parameters())[n].shape)}" for n in names
                    if ".layers.0." in n or ".layers." not in n))
    if spec["cfg"]["tie_word_embeddings"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), \
            "tie_word_embeddings=True but lm_head is not tied"
    return model


def round_params_bf16(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def load_reference_model(path):
    try:
        model = Qwen3NextForCausalLM.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager")
    except (TypeError, ValueError) as e:
        log(f"[load] from_pretrained(experts_implementation=eager) failed ({e}); retrying without it")
        model = Qwen3NextForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
        if hasattr(model, "set_experts_implementation"):
            model.set_experts_implementation("eager")
    return model.to("cpu").eval()


ARCH_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "max_position_embeddings",
    "tie_word_embeddings", "attention_bias", "attention_dropout", "linear_conv_kernel_dim",
    "linear_key_head_dim", "linear_value_head_dim", "linear_num_key_heads", "linear_num_value_heads",
    "decoder_sparse_step", "moe_intermediate_size", "shared_expert_intermediate_size",
    "num_experts_per_tok", "num_experts", "norm_topk_prob", "mlp_only_layers", "bos_token_id",
    "eos_token_id", "use_cache", "initializer_range", "output_router_logits", "router_aux_loss_coef",
    "layer_types", "rope_parameters",
)


def complete_config(path, model_cfg, spec):
    """save_pretrained drops values equal to the class defaults; write every architecture key."""
    p = os.path.join(path, "config.json")
    with open(p) as f:
        d = json.load(f)
    full = model_cfg.to_dict()
    added = []
    for k in ARCH_KEYS:
        if k not in d and k in full:
            d[k] = full[k]
            added.append(k)
    d.setdefault("architectures", ["Qwen3NextForCausalLM"])
    d.setdefault("model_type", "qwen3_next")
    d["bos_token_id"] = spec["cfg"]["vocab_size"] - 2
    d["eos_token_id"] = spec["cfg"]["vocab_size"] - 1
    for k in ("rms_norm_eps", "head_dim", "norm_topk_prob", "tie_word_embeddings", "linear_conv_kernel_dim"):
        assert d[k] == spec["cfg"][k], (k, d[k], spec["cfg"][k])
    log(f"[config] {os.path.basename(path)}: keys added back (dropped as class defaults by save): {added}")
    write_json(p, dict(sorted(d.items())))


def to_per_expert(tensors, I):
    """Fused gate_up_proj [E,2I,H] / down_proj [E,H,I] -> per-expert hub names (only used if save fused)."""
    out = {}
    for k, v in tensors.items():
        if k.endswith("mlp.experts.gate_up_proj"):
            base = k[: -len("gate_up_proj")]
            for e in range(v.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = v[e, :I].contiguous()
                out[f"{base}{e}.up_proj.weight"] = v[e, I:].contiguous()
        elif k.endswith("mlp.experts.down_proj"):
            base = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = v[e].contiguous()
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# Reference logits
# --------------------------------------------------------------------------------------------
def ref_logits_prefill_decode(model, tokens, prefill):
    ids = torch.tensor([tokens], dtype=torch.long)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids[:, :prefill], past_key_values=cache, use_cache=True)
    chunks = [out.logits[0].float()]
    cache = out.past_key_values
    for t in range(prefill, len(tokens)):
        out = model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True)
        chunks.append(out.logits[0].float())
        cache = out.past_key_values
    return torch.cat(chunks, 0)


def ref_logits_full(model, tokens):
    ids = torch.tensor([tokens], dtype=torch.long)
    out = model(input_ids=ids, use_cache=False)
    return out.logits[0].float()


def rel_diff(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def nll_of(logits, tokens):
    lg = logits.double()
    lp = torch.log_softmax(lg[:-1], dim=-1)
    tgt = torch.tensor(tokens[1:], dtype=torch.long)
    return float(-lp.gather(1, tgt[:, None]).mean())


# --------------------------------------------------------------------------------------------
# Checkpoint file helpers
# --------------------------------------------------------------------------------------------
def read_checkpoint(path):
    """All tensors of a checkpoint folder (single file or shards + index), stored dtypes."""
    idx = os.path.join(path, "model.safetensors.index.json")
    out = {}
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        for shard in sorted(set(wm.values())):
            out.update(load_file(os.path.join(path, shard)))
        missing = set(wm) - set(out)
        assert not missing, f"index names tensors not in shards: {sorted(missing)[:5]}"
    else:
        out.update(load_file(os.path.join(path, "model.safetensors")))
    return out


def list_files(path):
    for fn in sorted(os.listdir(path)):
        log(f"[files] {os.path.basename(path)}/{fn} {os.path.getsize(os.path.join(path, fn))} bytes")


def log_keys(path, tensors):
    log(f"[keys] {os.path.basename(path)}: {len(tensors)} tensors")
    for k in sorted(tensors):
        t = tensors[k]
        if ".mlp.experts." in k and not any(f".experts.{e}." in k for e in (0, 3)) \
                and "gate_up_proj" not in k and "experts.down_proj" not in k:
            continue  # keep the listing short: experts 0 and 3 are representative
        log(f"[keys]   {k} {str(t.dtype).replace('torch.', '')} {list(t.shape)}")


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_generation_config(path, cfg_dict):
    assert cfg_dict.get("bos_token_id") is not None and cfg_dict.get("eos_token_id") is not None
    write_json(path, {
        "bos_token_id": cfg_dict["bos_token_id"],
        "do_sample": True,
        "eos_token_id": [cfg_dict["eos_token_id"], cfg_dict["bos_token_id"]],
        "pad_token_id": cfg_dict["bos_token_id"],
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
        "transformers_version": transformers.__version__,
    })


def hubify_config(path, spec):
    """Rewrite config.json in the hub / transformers-4.x spelling (MODEL.md §0)."""
    p = os.path.join(path, "config.json")
    with open(p) as f:
        d = json.load(f)
    rp = d.pop("rope_parameters", None) or {}
    d.pop("rope_scaling", None)
    d.pop("layer_types", None)
    d.pop("partial_rotary_factor", None)
    d.pop("rope_theta", None)
    d.pop("dtype", None)
    d["rope_theta"] = rp.get("rope_theta", spec["rope_theta"])
    d["partial_rotary_factor"] = rp.get("partial_rotary_factor", spec["partial_rotary_factor"])
    d["rope_scaling"] = None
    d["full_attention_interval"] = spec["full_attention_interval"]
    d["torch_dtype"] = "bfloat16"
    assert d["rope_theta"] == spec["rope_theta"], (d["rope_theta"], spec["rope_theta"])
    assert d["partial_rotary_factor"] == spec["partial_rotary_factor"]
    write_json(p, dict(sorted(d.items())))
    log(f"[config] {os.path.basename(path)}/config.json: {json.dumps(d, sort_keys=True)}")


def finalize_v5_config(path, spec, dtype_name):
    p = os.path.join(path, "config.json")
    with open(p) as f:
        d = json.load(f)
    d["dtype"] = dtype_name
    d.pop("torch_dtype", None)
    rp = d.get("rope_parameters") or {}
    if rp.get("rope_theta") != spec["rope_theta"]:
        log(f"[config] WARNING: rope_parameters.rope_theta is {rp.get('rope_theta')}, intended {spec['rope_theta']}")
    if rp.get("partial_rotary_factor", d.get("partial_rotary_factor")) != spec["partial_rotary_factor"]:
        log(f"[config] WARNING: partial_rotary_factor in config.json is not {spec['partial_rotary_factor']}: {rp}")
    if d.get("layer_types") != spec["layer_types"]:
        log(f"[config] WARNING: layer_types in config.json {d.get('layer_types')} != {spec['layer_types']}")
    write_json(p, d)
    log(f"[config] {os.path.basename(path)}/config.json: {json.dumps(d, sort_keys=True)}")


def verify_loaded_config(model, spec):
    c = model.config
    assert list(c.layer_types) == spec["layer_types"], (c.layer_types, spec["layer_types"])
    D = spec["cfg"]["head_dim"]
    drot = int(D * spec["partial_rotary_factor"])
    invs = [m.inv_freq for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]
    assert invs, "no rotary embedding module with inv_freq found"
    inv = invs[0].double()
    exp = 1.0 / (spec["rope_theta"] ** (torch.arange(0, drot, 2, dtype=torch.float64) / drot))
    assert inv.numel() == drot // 2, f"inv_freq has {inv.numel()} entries, expected {drot // 2}"
    assert float((inv - exp).abs().max() / exp.abs().max()) < 1e-6, "inv_freq does not match rope_theta"
    for k in ("rms_norm_eps", "norm_topk_prob", "tie_word_embeddings", "num_experts_per_tok", "head_dim"):
        assert getattr(c, k) == spec["cfg"][k], (k, getattr(c, k), spec["cfg"][k])
    log(f"[config] loaded: layer_types={list(c.layer_types)} rope={getattr(c, 'rope_parameters', None)} "
        f"Drot={drot} eps={c.rms_norm_eps} norm_topk_prob={c.norm_topk_prob} tied={c.tie_word_embeddings}")


# --------------------------------------------------------------------------------------------
# bitsandbytes NF4 + double quantization (our own implementation of MODEL.md §6)
# --------------------------------------------------------------------------------------------
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=torch.float32)


def create_dynamic_map_signed():
    """Like bitsandbytes.functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)."""
    data = []
    max_exponent_bits, non_sign_bits = 7, 7
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 256
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


DYN_CODE = create_dynamic_map_signed()


def nearest_code(x, code):
    """Index of the nearest code value for every element of x (fp32)."""
    # code is sorted ascending: searchsorted then compare both neighbours
    idx = torch.searchsorted(code, x.contiguous()).clamp(1, code.numel() - 1)
    lo, hi = code[idx - 1], code[idx]
    return torch.where((x - lo).abs() <= (hi - x).abs(), idx - 1, idx)


def quantize_blockwise(a, code, blocksize):
    """8-bit blockwise quantization of fp32 vector a: returns (q uint8, absmax fp32[nblocks])."""
    n = a.numel()
    nb = (n + blocksize - 1) // blocksize
    pad = nb * blocksize - n
    ap = F.pad(a, (0, pad)).view(nb, blocksize)
    absmax = ap.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    q = nearest_code((ap / scale[:, None]).reshape(-1), code)[:n]
    return q.to(torch.uint8), absmax.to(torch.float32)


def quantize_nf4_double(w_bf16):
    """W [out, in] bf16 -> dict of serialized tensors (MODEL.md §6.4) plus the bnb dequantization."""
    shape = list(w_bf16.shape)
    a = w_bf16.to(torch.float32).reshape(-1)
    n = a.numel()
    bs = 64
    nb = (n + bs - 1) // bs
    ap = F.pad(a, (0, nb * bs - n)).view(nb, bs)
    absmax = ap.abs().amax(dim=1).to(torch.float32)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    codes = nearest_code((ap / scale[:, None]).reshape(-1), NF4_CODE)[:n].to(torch.uint8)
    if n % 2:
        codes = torch.cat([codes, torch.zeros(1, dtype=torch.uint8)])
    packed = (codes[0::2] << 4) | codes[1::2]          # high nibble = even element
    # double quantization of absmax
    offset = absmax.mean()
    qabs, nested_absmax = quantize_blockwise(absmax - offset, DYN_CODE, 256)
    qs = {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": shape,
          "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": float(offset.item())}
    blob = json.dumps(qs).encode("utf-8")
    out = {
        "weight": packed.reshape(-1, 1).contiguous(),
        "weight.absmax": qabs.contiguous(),
        "weight.quant_map": NF4_CODE.clone(),
        "weight.nested_absmax": nested_absmax.contiguous(),
        "weight.nested_quant_map": DYN_CODE.clone(),
        "weight.quant_state.bitsandbytes__nf4": torch.tensor(list(blob), dtype=torch.uint8),
    }
    # bnb dequantization (torch path): absmax = code2[q] * nested_absmax + offset (fp32);
    # W = code[nib] * absmax (fp32) -> bf16
    absmax_dq = DYN_CODE[qabs.long()] * nested_absmax.repeat_interleave(256)[:nb] + offset
    nib = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[:n].long()
    deq = (NF4_CODE[nib] * absmax_dq.repeat_interleave(64)[:n]).to(torch.bfloat16).view(shape)
    return out, deq, dict(n=n, nblocks=nb, ngroups=nested_absmax.numel(), last_group=nb - 256 * (nested_absmax.numel() - 1))


def dequant_from_file_numpy(tensors, prefix):
    """Independent dequantization (numpy) of a stored bnb-4bit tensor, to cross-check the writer."""
    qs = json.loads(bytes(tensors[prefix + ".weight.quant_state.bitsandbytes__nf4"].numpy().tolist()).decode())
    shape = qs["shape"]
    n = int(np.prod(shape))
    w = tensors[prefix + ".weight"].numpy().reshape(-1)
    qabs = tensors[prefix + ".weight.absmax"].numpy()
    code = tensors[prefix + ".weight.quant_map"].numpy().astype(np.float32)
    nabs = tensors[prefix + ".weight.nested_absmax"].numpy().astype(np.float32)
    ncode = tensors[prefix + ".weight.nested_quant_map"].numpy().astype(np.float32)
    off = np.float32(qs["nested_offset"])
    vals = np.empty(n, dtype=np.float32)
    i = np.arange(n)
    byte = w[i // 2]
    nibv = np.where(i % 2 == 0, byte >> 4, byte & 0x0F)
    blk = i // qs["blocksize"]
    absmax = (ncode[qabs[blk]] * nabs[blk // qs["nested_blocksize"]]).astype(np.float32) + off
    vals[:] = code[nibv] * absmax.astype(np.float32)
    t = torch.from_numpy(vals).to(torch.bfloat16).to(torch.float32)
    return t.view(shape)


QUANT_SUFFIXES = (
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "linear_attn.in_proj_qkvz.weight", "linear_attn.in_proj_ba.weight",
    "linear_attn.out_proj.weight", "mlp.gate.weight", "mlp.shared_expert_gate.weight",
    "mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.up_proj.weight",
    "mlp.shared_expert.down_proj.weight",
)


def should_quantize(name, spec):
    if not name.startswith("model.layers."):
        return False
    if ".mlp.experts." in name:
        layer, expert = spec["unquantized_expert"]
        if name.startswith(f"model.layers.{layer}.mlp.experts.{expert}."):
            return False
        return name.endswith(("gate_proj.weight", "up_proj.weight", "down_proj.weight"))
    return name.endswith(QUANT_SUFFIXES)


# --------------------------------------------------------------------------------------------
# Independent float64 forward from the files, following MODEL.md (what an engine must do)
# --------------------------------------------------------------------------------------------
class FileModel:
    def __init__(self, path):
        with open(os.path.join(path, "config.json")) as f:
            c = json.load(f)
        self.c = c
        raw = read_checkpoint(path)
        W = {}
        quantized = []
        for k in raw:
            if k.endswith(".weight.quant_state.bitsandbytes__nf4"):
                pre = k[: -len(".weight.quant_state.bitsandbytes__nf4")]
                W[pre + ".weight"] = dequant_from_file_numpy(raw, pre).double()
                quantized.append(pre)
        aux = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4")
        for k, v in raw.items():
            if k in W or k.endswith(aux):
                continue
            if k.startswith("mtp."):
                continue
            W[k] = v.double()
        self.W = W
        self.quantized = quantized
        L = c["num_hidden_layers"]
        lt = c.get("layer_types")
        if lt is None:
            iv = c.get("full_attention_interval", 4)
            lt = ["linear_attention" if (i + 1) % iv else "full_attention" for i in range(L)]
        self.layer_types = lt
        rp = c.get("rope_parameters") or {}
        self.theta = float(rp.get("rope_theta", c.get("rope_theta", 10000.0)))
        self.prf = float(rp.get("partial_rotary_factor", c.get("partial_rotary_factor", 0.25)))
        self.eps = float(c["rms_norm_eps"])
        if "lm_head.weight" not in W:
            assert c.get("tie_word_embeddings"), "no lm_head.weight and tie_word_embeddings is false"
            W["lm_head.weight"] = W["model.embed_tokens.weight"]

    def w(self, k):
        if k not in self.W:
            raise KeyError(f"missing tensor {k}")
        return self.W[k]

    def experts(self, l, e):
        p = f"model.layers.{l}.mlp.experts"
        I = self.c["moe_intermediate_size"]
        if f"{p}.{e}.gate_proj.weight" in self.W:
            return (self.W[f"{p}.{e}.gate_proj.weight"], self.W[f"{p}.{e}.up_proj.weight"],
                    self.W[f"{p}.{e}.down_proj.weight"])
        gu = self.w(f"{p}.gate_up_proj")[e]     # [2I, H], gate rows first
        return gu[:I], gu[I:], self.w(f"{p}.down_proj")[e]

    def rms1(self, x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * (1.0 + w)

    def run(self, tokens, want_router=False):
        c = self.c
        H = c["hidden_size"]
        Hq, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        Hk, Hv = c["linear_num_key_heads"], c["linear_num_value_heads"]
        dk, dv, K = c["linear_key_head_dim"], c["linear_value_head_dim"], c["linear_conv_kernel_dim"]
        r = Hv // Hk
        E, topk = c["num_experts"], c["num_experts_per_tok"]
        drot = int(D * self.prf)
        inv = 1.0 / (self.theta ** (torch.arange(0, drot, 2, dtype=torch.float64) / drot))
        L = c["num_hidden_layers"]
        kv = [([], []) for _ in range(L)]
        conv = [torch.zeros(2 * Hk * dk + Hv * dv, K - 1, dtype=torch.float64) for _ in range(L)]
        S = [torch.zeros(Hv, dk, dv, dtype=torch.float64) for _ in range(L)]
        logits = []
        gaps = []
        for pos, tok in enumerate(tokens):
            h = self.w("model.embed_tokens.weight")[tok].clone()
            for l in range(L):
                pre = f"model.layers.{l}."
                x = self.rms1(h, self.w(pre + "input_layernorm.weight"))
                if self.layer_types[l] == "full_attention":
                    a = pre + "self_attn."
                    qg = (self.w(a + "q_proj.weight") @ x).view(Hq, 2 * D)
                    q, gate = qg[:, :D], qg[:, D:].reshape(-1)
                    q = self.rms1(q, self.w(a + "q_norm.weight"))
                    k = self.rms1((self.w(a + "k_proj.weight") @ x).view(Hkv, D), self.w(a + "k_norm.weight"))
                    v = (self.w(a + "v_proj.weight") @ x).view(Hkv, D)
                    ang = pos * inv
                    cos, sin = torch.cos(ang), torch.sin(ang)

                    def rope(u):
                        u = u.clone()
                        half = drot // 2
                        x1, x2 = u[:, :half].clone(), u[:, half:drot].clone()
                        u[:, :half] = x1 * cos - x2 * sin
                        u[:, half:drot] = x2 * cos + x1 * sin
                        return u
                    q, k = rope(q), rope(k)
                    kv[l][0].append(k)
                    kv[l][1].append(v)
                    Ks = torch.stack(kv[l][0], 1)   # [Hkv, t, D]
                    Vs = torch.stack(kv[l][1], 1)
                    o = torch.empty(Hq, D, dtype=torch.float64)
                    for hh in range(Hq):
                        g = hh // (Hq // Hkv)
                        s = (Ks[g] @ q[hh]) / math.sqrt(D)
                        p = torch.softmax(s, 0)
                        o[hh] = p @ Vs[g]
                    o = o.reshape(-1) * torch.sigmoid(gate)
                    y = self.w(a + "o_proj.weight") @ o
                else:
                    a = pre + "linear_attn."
                    qkvz = (self.w(a + "in_proj_qkvz.weight") @ x).view(Hk, 2 * dk + 2 * r * dv)
                    ba = (self.w(a + "in_proj_ba.weight") @ x).view(Hk, 2 * r)
                    q = qkvz[:, :dk]
                    k = qkvz[:, dk:2 * dk]
                    v = qkvz[:, 2 * dk:2 * dk + r * dv].reshape(Hv, dv)
                    z = qkvz[:, 2 * dk + r * dv:].reshape(Hv, dv)
                    b = ba[:, :r].reshape(Hv)
                    av = ba[:, r:].reshape(Hv)
                    mixed = torch.cat([q.reshape(-1), k.reshape(-1), v.reshape(-1)])
                    win = torch.cat([conv[l], mixed[:, None]], 1)       # [C, K] oldest..newest
                    cw = self.w(a + "conv1d.weight").squeeze(1)        # [C, K]
                    ycv = F.silu((cw * win).sum(1))
                    conv[l] = win[:, 1:]
                    q = ycv[:Hk * dk].view(Hk, dk)
                    k = ycv[Hk * dk:2 * Hk * dk].view(Hk, dk)
                    v = ycv[2 * Hk * dk:].view(Hv, dv)
                    beta = torch.sigmoid(b)
                    g = -torch.exp(self.w(a + "A_log")) * F.softplus(av + self.w(a + "dt_bias"))
                    q = q.repeat_interleave(r, 0)
                    k = k.repeat_interleave(r, 0)
                    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6) / math.sqrt(dk)
                    k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
                    St = S[l] * torch.exp(g)[:, None, None]
                    kvm = torch.einsum("hij,hi->hj", St, k)
                    delta = (v - kvm) * beta[:, None]
                    St = St + k[:, :, None] * delta[:, None, :]
                    S[l] = St
                    o = torch.einsum("hij,hi->hj", St, q)                # [Hv, dv]
                    on = o / torch.sqrt((o * o).mean(-1, keepdim=True) + self.eps)
                    on = on * self.w(a + "norm.weight") * F.silu(z)
                    y = self.w(a + "out_proj.weight") @ on.reshape(-1)
                h = h + y
                x = self.rms1(h, self.w(pre + "post_attention_layernorm.weight"))
                m = pre + "mlp."
                rl = self.w(m + "gate.weight") @ x
                pr = torch.softmax(rl, 0)
                srt = torch.sort(rl, descending=True).values
                gaps.append(float(srt[topk - 1] - srt[topk]))
                wv, idx = torch.topk(pr, topk)
                if c.get("norm_topk_prob", True):
                    wv = wv / wv.sum()
                out = torch.zeros(H, dtype=torch.float64)
                for wk, e in zip(wv.tolist(), idx.tolist()):
                    gp, up, dp = self.experts(l, e)
                    out += wk * (dp @ (F.silu(gp @ x) * (up @ x)))
                sp = m + "shared_expert."
                sh = self.w(sp + "down_proj.weight") @ (F.silu(self.w(sp + "gate_proj.weight") @ x)
                                                       * (self.w(sp + "up_proj.weight") @ x))
                sg = torch.sigmoid(self.w(m + "shared_expert_gate.weight") @ x)
                h = h + out + sg * sh
            hf = self.rms1(h, self.w("model.norm.weight"))
            logits.append(self.w("lm_head.weight") @ hf)
        return torch.stack(logits), min(gaps)


# --------------------------------------------------------------------------------------------
# Per-fixture generation
# --------------------------------------------------------------------------------------------
def choose_tokens(fm, spec, V):
    T = spec["prefill"] + spec["n_decode"]
    for attempt in range(40):
        g = torch.Generator().manual_seed(spec["seed"] * 1000 + attempt)
        toks = torch.randint(0, V, (T,), generator=g).tolist()
        lg, gap = fm.run(toks)
        log(f"[tokens] attempt {attempt}: min router top-k logit gap {gap:.3e}")
        if gap >= ROUTER_MIN_GAP:
            return toks, lg, gap
    raise RuntimeError("no token sequence with a clear top-k router margin found")


def save_common_outputs(d, name, spec, model_ref, tokens, extra_notes, checks):
    cfgd = json.load(open(os.path.join(d, "config.json")))
    write_generation_config(os.path.join(d, "generation_config.json"), cfgd)
    with open(os.path.join(d, "tokens.txt"), "w") as f:
        f.write(" ".join(str(t) for t in tokens) + "\n")
    N = spec["prefill"]
    ref = ref_logits_prefill_decode(model_ref, tokens, N)
    full = ref_logits_full(model_ref, tokens)
    cache_rel = rel_diff(full, ref)
    cache_rel_prefill = rel_diff(full[:N], ref[:N])
    cache_rel_decode = rel_diff(full[N:], ref[N:])
    log(f"[{name}] cache check: full forward vs prefill+decode max|diff|/max|ref| = {cache_rel:.3e} "
        f"(prefill part {cache_rel_prefill:.3e}, decode part {cache_rel_decode:.3e})")
    if not cache_rel < CACHE_REL_TOL:
        raise AssertionError(f"cache path disagrees with full forward: {cache_rel:.3e}")
    V = ref.shape[1]
    T = len(tokens)
    assert tuple(ref.shape) == (T, V)
    arr = ref.numpy().astype("<f4")
    arr.tofile(os.path.join(d, "ref_logits.f32"))
    maxabs = float(np.abs(arr).max())
    nll = nll_of(ref, tokens)
    log(f"[{name}] T={T} V={V} prefill={N} max|logit|={maxabs:.4f} nll={nll:.6f} ppl={math.exp(nll):.4f} "
        f"logit std={float(arr.std()):.4f}")
    if not (0.5 < maxabs < 60.0):
        raise AssertionError(f"max|logit| {maxabs} outside O(1..10) range: rescale the random weights")
    checks.update(cache_rel_full_vs_prefill_decode=cache_rel, cache_rel_prefill=cache_rel_prefill,
                  cache_rel_decode=cache_rel_decode)
    refj = {
        "prefill": N, "n_tokens": T, "vocab": V,
        "nll": nll, "ppl": math.exp(nll), "max_abs_logit": maxabs,
        "generator": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "safetensors": safetensors.__version__, "numpy": np.__version__,
                      "script": "scripts/gen_fixtures.py", "seed": spec["seed"]},
        "checks": checks,
        "notes": extra_notes,
    }
    write_json(os.path.join(d, "ref.json"), refj)
    return ref


def crosscheck(d, name, tokens, ref, checks):
    fm = FileModel(d)
    lg, gap = fm.run(tokens)
    r = rel_diff(lg, ref.double())
    log(f"[{name}] independent MODEL.md float64 forward from the files vs HF reference: "
        f"max|diff|/max|ref| = {r:.3e}; min router gap {gap:.3e}")
    if not r < 1e-4:
        log(f"[{name}] CROSSCHECK MISMATCH: MODEL.md float64 forward disagrees with transformers ({r:.3e})")
    checks["modelmd_float64_rel"] = r
    checks["min_router_topk_logit_gap"] = gap
    return r


def gen_bf16_single(name, spec, outdir, work):
    d = os.path.join(outdir, name)
    model = build_model(spec)
    round_params_bf16(model)
    m2 = copy.deepcopy(model).to(torch.bfloat16)
    m2.save_pretrained(d)
    del m2
    complete_config(d, model.config, spec)
    hubify_config(d, spec)
    if os.path.exists(os.path.join(d, "generation_config.json")):
        os.remove(os.path.join(d, "generation_config.json"))
    t = read_checkpoint(d)
    if any("gate_up_proj" in k for k in t):
        log(f"[{name}] WARNING: save_pretrained wrote fused experts by default; rewriting per-expert names")
        t = to_per_expert(t, spec["cfg"]["moe_intermediate_size"])
        save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        t = read_checkpoint(d)
    log_keys(d, t)
    assert os.path.exists(os.path.join(d, "model.safetensors")), "expected a single model.safetensors"
    assert not os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    assert all(v.dtype == torch.bfloat16 for v in t.values()), "all tensors must be bf16"
    assert any(".mlp.experts.0.gate_proj.weight" in k for k in t), "expected per-expert names"
    assert not any("gate_up_proj" in k for k in t), "unexpected fused expert names"
    assert "lm_head.weight" in t, "untied model must store lm_head.weight"
    fm = FileModel(d)
    V = spec["cfg"]["vocab_size"]
    tokens, _, _ = choose_tokens(fm, spec, V)
    ref_model = load_reference_model(d)
    verify_loaded_config(ref_model, spec)
    check_torch_fallback(ref_model)
    # the saved+reloaded model must equal the in-memory one (layout round trip)
    a = ref_logits_full(model, tokens)
    b = ref_logits_full(ref_model, tokens)
    rt = rel_diff(b, a)
    log(f"[{name}] reload round trip (in-memory bf16-rounded vs from_pretrained): {rt:.3e}")
    assert rt < 1e-5, "reloaded model differs from the in-memory model"
    checks = {"reload_round_trip_rel": rt}
    notes = ("bf16 weights in one model.safetensors, per-expert expert names, untied lm_head; config.json "
             "post-edited to the hub/4.x spelling (top-level rope_theta + partial_rotary_factor, no layer_types: "
             f"derived from full_attention_interval={spec['full_attention_interval']}). Reference = HF "
             "from_pretrained(dtype=float32, eager attention, eager experts) of exactly these files.")
    ref = save_common_outputs(d, name, spec, ref_model, tokens, notes, checks)
    crosscheck(d, name, tokens, ref, checks)
    write_json(os.path.join(d, "ref.json"), {**json.load(open(os.path.join(d, "ref.json"))), "checks": checks})
    list_files(d)


def gen_sharded(name, spec, outdir, work):
    d = os.path.join(outdir, name)
    model = build_model(spec)
    total = sum(p.numel() * 4 for p in model.parameters())
    shard = int(total / 4)
    log(f"[{name}] total f32 bytes {total}, max_shard_size {shard}")
    try:
        model.save_pretrained(d, max_shard_size=shard, save_original_format=False)
    except TypeError as e:
        raise RuntimeError(f"save_pretrained does not accept save_original_format: {e}")
    complete_config(d, model.config, spec)
    finalize_v5_config(d, spec, "float32")
    if os.path.exists(os.path.join(d, "generation_config.json")):
        os.remove(os.path.join(d, "generation_config.json"))
    idx = os.path.join(d, "model.safetensors.index.json")
    assert os.path.exists(idx), "expected a sharded checkpoint with an index"
    shards = sorted(set(json.load(open(idx))["weight_map"].values()))
    log(f"[{name}] shards: {shards}")
    assert len(shards) >= 3, f"only {len(shards)} shards"
    t = read_checkpoint(d)
    log_keys(d, t)
    assert all(v.dtype == torch.float32 for v in t.values())
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in t), "expected fused gate_up_proj"
    assert any(k.endswith("mlp.experts.down_proj") for k in t), "expected fused down_proj"
    assert not any(".mlp.experts.0." in k for k in t), "unexpected per-expert names"
    assert "lm_head.weight" not in t, "tied model must not store lm_head.weight"
    E, I, H = spec["cfg"]["num_experts"], spec["cfg"]["moe_intermediate_size"], spec["cfg"]["hidden_size"]
    gu = t["model.layers.0.mlp.experts.gate_up_proj"]
    dn = t["model.layers.0.mlp.experts.down_proj"]
    log(f"[{name}] fused shapes: gate_up_proj {list(gu.shape)} down_proj {list(dn.shape)} "
        f"(expected [{E}, {2 * I}, {H}] and [{E}, {H}, {I}])")
    assert list(gu.shape) == [E, 2 * I, H] and list(dn.shape) == [E, H, I]
    fm = FileModel(d)
    tokens, _, _ = choose_tokens(fm, spec, spec["cfg"]["vocab_size"])
    ref_model = load_reference_model(d)
    verify_loaded_config(ref_model, spec)
    check_torch_fallback(ref_model)
    a = ref_logits_full(model, tokens)
    b = ref_logits_full(ref_model, tokens)
    rt = rel_diff(b, a)
    log(f"[{name}] reload round trip: {rt:.3e}")
    assert rt < 1e-5, "reloaded model differs from the in-memory model"
    checks = {"reload_round_trip_rel": rt, "shards": len(shards)}
    notes = ("f32 weights in %d shards + model.safetensors.index.json, 5.x config spelling (rope_parameters, "
             "explicit non-default layer_types), fused experts (mlp.experts.gate_up_proj [E,2I,H] gate rows first, "
             "mlp.experts.down_proj [E,H,I]), tied embeddings (no lm_head.weight), norm_topk_prob=false, "
             "rms_norm_eps=1e-5, GQA 3, linear value/key heads ratio 3." % len(shards))
    ref = save_common_outputs(d, name, spec, ref_model, tokens, notes, checks)
    crosscheck(d, name, tokens, ref, checks)
    write_json(os.path.join(d, "ref.json"), {**json.load(open(os.path.join(d, "ref.json"))), "checks": checks})
    list_files(d)


def gen_nf4(name, spec, outdir, work):
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    model = build_model(spec)
    round_params_bf16(model)
    tmp_bf16 = os.path.join(work, name + "-bf16")
    m2 = copy.deepcopy(model).to(torch.bfloat16)
    m2.save_pretrained(tmp_bf16)        # default: per-expert hub names
    del m2
    complete_config(tmp_bf16, model.config, spec)
    src = read_checkpoint(tmp_bf16)
    if any("gate_up_proj" in k for k in src):
        log(f"[{name}] WARNING: save_pretrained wrote fused experts by default; converting to per-expert names")
        src = to_per_expert(src, spec["cfg"]["moe_intermediate_size"])
    assert any(".mlp.experts.0.gate_proj.weight" in k for k in src), "expected per-expert names from save_pretrained"
    out_tensors = {}
    deq_tensors = {}
    stats = []
    for k in sorted(src):
        v = src[k]
        if should_quantize(k, spec):
            assert k.endswith(".weight") and v.dim() == 2, k
            ser, deq, st = quantize_nf4_double(v)
            pre = k[: -len(".weight")]
            for sk, sv in ser.items():
                out_tensors[pre + "." + sk] = sv
            deq_tensors[k] = deq
            stats.append((k, list(v.shape), st))
        else:
            out_tensors[k] = v.to(torch.bfloat16).contiguous()
            deq_tensors[k] = v.to(torch.bfloat16)
    nq = len(stats)
    multi = [s for s in stats if s[2]["ngroups"] > 1]
    partial = [s for s in stats if s[2]["ngroups"] > 1 and s[2]["last_group"] < 256]
    for k, shp, st in stats:
        if ".experts." in k and not any(f".experts.{e}." in k for e in (0, 1)):
            continue
        log(f"[nf4] quantized {k} {shp}: n={st['n']} blocks={st['nblocks']} nested groups={st['ngroups']} "
            f"last group={st['last_group']}")
    log(f"[nf4] {nq} tensors quantized; {len(multi)} with >1 nested group; {len(partial)} with a partial "
        "last nested group")
    assert multi and partial, "need tensors with several nested groups and a partial last group"
    L, ex = spec["unquantized_expert"]
    assert f"model.layers.{L}.mlp.experts.{ex}.gate_proj.weight" in out_tensors
    assert f"model.layers.{L}.mlp.experts.{ex}.gate_proj.weight.absmax" not in out_tensors
    for must in ("model.layers.0.mlp.gate.weight.quant_state.bitsandbytes__nf4",
                 "model.layers.0.mlp.shared_expert_gate.weight.quant_state.bitsandbytes__nf4"):
        assert must in out_tensors, must
    save_file(out_tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    # config: the 5.x config as saved + quantization_config
    with open(os.path.join(tmp_bf16, "config.json")) as f:
        cfgd = json.load(f)
    cfgd["dtype"] = "bfloat16"
    cfgd["quantization_config"] = {
        "_load_in_4bit": True, "_load_in_8bit": False,
        "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
        "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False,
        "llm_int8_skip_modules": None, "llm_int8_threshold": 6.0,
        "load_in_4bit": True, "load_in_8bit": False, "quant_method": "bitsandbytes",
    }
    write_json(os.path.join(d, "config.json"), cfgd)
    finalize_v5_config(d, spec, "bfloat16")
    t = read_checkpoint(d)
    log_keys(d, t)
    # independent dequantization of the written file must equal what the reference model gets
    worst = 0.0
    for k, shp, st in stats:
        pre = k[: -len(".weight")]
        a = dequant_from_file_numpy(t, pre)
        worst = max(worst, float((a - deq_tensors[k].to(torch.float32)).abs().max()))
    log(f"[nf4] independent numpy dequant vs writer dequant: max|diff| = {worst}")
    assert worst == 0.0
    qerr = max(float((deq_tensors[k].float() - src[k].float()).abs().max() / src[k].float().abs().max())
               for k, _, _ in stats)
    log(f"[nf4] quantization error max|W-deq|/max|W| over tensors: {qerr:.3f}")
    # reference model: a plain bf16 checkpoint of the dequantized weights, loaded by HF
    tmp_deq = os.path.join(work, name + "-deq")
    os.makedirs(tmp_deq, exist_ok=True)
    save_file({k: v.contiguous() for k, v in deq_tensors.items()}, os.path.join(tmp_deq, "model.safetensors"),
              metadata={"format": "pt"})
    cd = dict(cfgd)
    cd.pop("quantization_config")
    write_json(os.path.join(tmp_deq, "config.json"), cd)
    fm = FileModel(d)
    log(f"[nf4] FileModel saw {len(fm.quantized)} quantized tensors")
    assert len(fm.quantized) == nq
    tokens, _, _ = choose_tokens(fm, spec, spec["cfg"]["vocab_size"])
    ref_model = load_reference_model(tmp_deq)
    verify_loaded_config(ref_model, spec)
    check_torch_fallback(ref_model)
    # the reference model's parameters equal the dequantized ones (check a few through the HF names)
    sd = ref_model.state_dict()
    for k in ("model.layers.0.linear_attn.in_proj_qkvz.weight", "model.layers.2.self_attn.q_proj.weight",
              "model.layers.1.mlp.shared_expert_gate.weight"):
        diff = float((sd[k].float() - deq_tensors[k].float()).abs().max())
        assert diff == 0.0, (k, diff)
    gk = "model.layers.0.mlp.gate.weight"
    if gk in sd:
        assert float((sd[gk].float() - deq_tensors[gk].float()).abs().max()) == 0.0
    # in-memory fused expert layout of this transformers version (informational)
    I = spec["cfg"]["moe_intermediate_size"]
    fk = "model.layers.1.mlp.experts.gate_up_proj"
    if fk in sd:
        gu, dn = sd[fk], sd["model.layers.1.mlp.experts.down_proj"]
        e = 5
        ok = (float((gu[e, :I] - deq_tensors[f"model.layers.1.mlp.experts.{e}.gate_proj.weight"].float()).abs().max()) == 0
              and float((gu[e, I:] - deq_tensors[f"model.layers.1.mlp.experts.{e}.up_proj.weight"].float()).abs().max()) == 0
              and float((dn[e] - deq_tensors[f"model.layers.1.mlp.experts.{e}.down_proj.weight"].float()).abs().max()) == 0)
        log(f"[nf4] in-memory fused experts gate_up_proj {list(gu.shape)} down_proj {list(dn.shape)}: "
            f"per-expert load = [gate; up] rows, gate first: {ok}")
    else:
        log(f"[nf4] in-memory expert names: {[k for k in sd if 'layers.1.mlp.experts' in k][:4]}")
    checks = {"quantized_tensors": nq, "dequant_independent_max_abs_diff": worst,
              "quantization_rel_error": qerr}
    notes = ("bitsandbytes NF4 (blocksize 64) with double-quantized absmax (nested blocksize 256, offset = "
             "mean(absmax)), written by scripts/gen_fixtures.py's own quantizer (bitsandbytes is not installed "
             "there). Quantized: every attention / linear-attention projection, routed expert, shared expert, "
             "the router mlp.gate.weight and mlp.shared_expert_gate.weight, except layer %d expert %d (bf16). "
             "Not quantized (bf16): embeddings, lm_head, norms, conv1d, A_log, dt_bias. Reference = HF "
             "model (fp32, eager) on the DEQUANTIZED weights: code[nib]*absmax in fp32, absmax = "
             "code2[q]*nested_absmax+offset in fp32, product rounded to bf16 (quant_state dtype), then fp32. "
             "out_proj [128,160] and experts down_proj [128,32] have 64-blocks that straddle rows (blocks follow "
             "the flat row-major index)." % (L, ex))
    ref = save_common_outputs(d, name, spec, ref_model, tokens, notes, checks)
    crosscheck(d, name, tokens, ref, checks)
    write_json(os.path.join(d, "ref.json"), {**json.load(open(os.path.join(d, "ref.json"))), "checks": checks})
    list_files(d)


GENERATORS = {"bf16-single": gen_bf16_single, "f32-sharded-fused": gen_sharded, "nf4": gen_nf4}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="output folder; one subfolder per fixture")
    ap.add_argument("--only", default="", help="comma-separated fixture names")
    args = ap.parse_args()
    check_environment()
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="hmoe-fx-")
    names = [n for n in SPECS if not args.only or n in args.only.split(",")]
    failed = []
    for name in names:
        spec = SPECS[name]
        log(f"==================== {name} ====================")
        d = os.path.join(args.out, name)
        if os.path.exists(d):
            shutil.rmtree(d)
        try:
            GENERATORS[spec["save"]](name, spec, args.out, work)
            log(f"[{name}] OK")
        except Exception as e:  # report every fixture in one run
            traceback.print_exc()
            log(f"[{name}] FAILED: {type(e).__name__}: {e}")
            failed.append(name)
    shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(args.out, "gen_fixtures.log"), "w") as f:
        f.write("\n".join(LOG_LINES) + "\n")
    log(f"summary: ok={[n for n in names if n not in failed]} failed={failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
