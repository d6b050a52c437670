#!/usr/bin/env python3
"""open_clip's image tower as the reference of orthofuse's `arch: clip_vit`, written as parity fixtures.

Run by hand (needs CPU torch, safetensors and open-clip-torch: `pip install torch==2.13.0+cpu
safetensors open-clip-torch`); the Swift tests only read the fixtures and never need torch.

The tower is open_clip.transformer.VisionTransformer (pool_type 'tok', ln_pre, proj), evaluated in
float64, with a Linear(output_dim, classes) head and cross-entropy. Every value — parameters, input,
the JVP's tangent — comes from `hashed_uniform`, a SplitMix64 hash of (stream, index) mapped to a
float32 in [-1, 1) and scaled in float32, which the Swift test recomputes bit for bit
(Tests/CoreTests/CLIPParityTests.swift), so a large configuration needs no stored weights.

parity_clip_vit (small: 3×8×8, patch 4, width 16, depth 2, 2 heads, output 12, QuickGELU):
  param.<name>, grad.<name>, adamw.<name>, adamw2.<name>, input, labels, features, logits, loss,
  input_grad, tangent.<name> and jvp = J(x; θ)·tangent [B, E] — every tensor in full.
parity_clip_vit_b32 (ViT-B/32's shapes: 3×224×224, patch 32, width 768, depth 12, 12 heads,
  output 512, QuickGELU, batch 2): features, logits, loss, jvp in full; for every parameter its
  gradient's norm (gradnorm.<name>) and, at `SAMPLES` hashed positions (index.<name>, stored as
  float32 integers), the gradient (grad.<name>) and the change after two AdamW steps
  (adamw2_delta.<name> = θ₂ − θ₀).

Usage: python3 scripts/clip_reference.py [--out DIR] [--only parity_clip_vit ...]
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402  (the shared fixture machinery)

GENERATOR = "scripts/clip_reference.py"
SAMPLES = 32
MASK64 = (1 << 64) - 1


def hashed_uniform(stream, count):
    """float32 values in [-1, 1): SplitMix64 of stream·2³² + index, its top 24 bits / 2²³ − 1 (exact)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(stream) << np.uint64(32)) + np.arange(count, dtype=np.uint64)
        z = z * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    top = (z >> np.uint64(40)).astype(np.float32)  # < 2²⁴, exact in float32
    return top * np.float32(2.0 ** -23) - np.float32(1.0)


def scale_for(name, shape):
    """The uniform scale of each tensor (variance 1/fan-in for the maps); Swift's `CLIPParityTests.scale` twin."""
    if name == "class_embedding":
        return 1.0
    if name == "positional_embedding":
        return 0.5
    if "ln_" in name or name.endswith("bias"):
        return 0.3
    fan_in = shape[0] if name == "proj" else int(np.prod(shape[1:]))
    return float(np.sqrt(3.0 / fan_in))


def hashed_tensor(stream, name, shape):
    """u·scale in float32; LayerNorm weights 1 + u·scale."""
    values = hashed_uniform(stream, int(np.prod(shape))) * np.float32(scale_for(name, shape))
    if "ln_" in name and name.endswith("weight"):
        values = values + np.float32(1.0)
    return torch.from_numpy(values.reshape(shape))


TANGENT_SCALE = 0.01


class Tower(nn.Module):
    """open_clip's VisionTransformer under `visual` and a Linear head, as reference_tensors expects."""

    def __init__(self, cfg):
        super().__init__()
        from open_clip.model import QuickGELU
        from open_clip.transformer import VisionTransformer
        act = QuickGELU if cfg["activation"] == "quick_gelu" else nn.GELU
        self.visual = VisionTransformer(
            image_size=(cfg["height"], cfg["width"]), patch_size=cfg["patch"], width=cfg["dim"], layers=cfg["depth"],
            heads=cfg["heads"], mlp_ratio=cfg["mlp_ratio"], output_dim=cfg["output_dim"], act_layer=act)
        self.head = nn.Linear(cfg["output_dim"], cfg["classes"])
        self.cfg = cfg

    def features(self, x):
        c = self.cfg
        return self.visual(x.reshape(x.shape[0], 3, c["height"], c["width"]))


def tower_features(model, x):
    return model.features(x)


def make_tower(cfg):
    import open_clip
    torch.manual_seed(ref.SEED)
    model = Tower(cfg)
    model.eval()
    with torch.no_grad():
        # Streams: 1 + layout index for the tower (open_clip's state_dict order), then head, input, tangent.
        names = [n for n, _ in model.visual.named_parameters()]
        assert names == list(model.visual.state_dict().keys())
        for k, (name, p) in enumerate(model.visual.named_parameters()):
            p.copy_(hashed_tensor(1 + k, name, tuple(p.shape)))
        head_stream = 1 + len(names)
        model.head.weight.copy_(hashed_tensor(head_stream, "head.weight", tuple(model.head.weight.shape)))
        model.head.bias.copy_(hashed_tensor(head_stream + 1, "head.bias", tuple(model.head.bias.shape)))
    x = torch.from_numpy(hashed_uniform(head_stream + 2, cfg["batch"] * 3 * cfg["height"] * cfg["width"]))
    x = x.reshape(cfg["batch"], -1)
    y = torch.arange(cfg["batch"]) % cfg["classes"]  # recomputed by the Swift test
    tangent = {name: torch.from_numpy(hashed_uniform(head_stream + 3 + k, p.numel()) * np.float32(TANGENT_SCALE)).reshape(p.shape)
               for k, (name, p) in enumerate(model.visual.named_parameters())}
    model = model.double()
    cfg["state_dict_order"] = names
    return model, x.double(), y, tangent, open_clip.__version__


def tower_jvp(model, x, tangent):
    names = [n for n, _ in model.named_parameters() if n.startswith("visual.")]
    theta = {n: p.detach() for n, p in model.named_parameters() if n in names}
    # nn.MultiheadAttention's eval-mode fast path has no forward-mode AD; train mode takes the
    # plain path (the tower has no dropout, so both compute the same function).
    model.train()
    f = ref.features_function(model, tower_features, x, names)
    direction = {n: tangent[n[len("visual."):]].double() for n in names}
    # The fused CPU attention kernel has no forward-mode AD either; the math backend composes
    # differentiable operations (the same function).
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.MATH):
        _, jvp = torch.func.jvp(f, (theta,), (direction,))
    # The JVP is the derivative it claims to be: a central difference along the tangent.
    eps = 1e-5
    fd = (f({n: theta[n] + eps * direction[n] for n in names}) - f({n: theta[n] - eps * direction[n] for n in names})) / (2 * eps)
    assert torch.allclose(fd, jvp, rtol=1e-5, atol=1e-8), (fd - jvp).abs().max()
    model.eval()
    return jvp


def tower_activity(model, x, cfg):
    """Guards against a degenerate fixture: attention neither uniform nor one-hot, activations fed
    values of both signs, logits not saturated. Returns the largest attention weight."""
    D, NH = cfg["dim"], cfg["heads"]
    peaks, pre_activation, hooks = [], [], []
    for blk in model.visual.transformer.resblocks:
        def attention_of(mod, inp, out, attn=blk.attn):
            a = out  # ln_1's output [B, T, D]
            qkv = a @ attn.in_proj_weight.T + attn.in_proj_bias
            q, k, _ = qkv.reshape(a.shape[0], a.shape[1], 3, NH, D // NH).permute(2, 0, 3, 1, 4)
            peaks.append(torch.softmax(q @ k.transpose(-2, -1) / (D // NH) ** 0.5, dim=-1))
        hooks.append(blk.ln_1.register_forward_hook(attention_of))
        hooks.append(blk.mlp.c_fc.register_forward_hook(lambda m, i, o: pre_activation.append(o)))
    with torch.no_grad():
        logits = model.head(tower_features(model, x))
    for h in hooks:
        h.remove()
    tokens = peaks[0].shape[-1]
    for att in peaks:
        assert 2.0 / tokens < att.max() < 0.99, f"degenerate attention, max weight {att.max():.3f}"
    for z in pre_activation:
        assert (z > 0).float().mean().item() > 0.1 and (z < 0).float().mean().item() > 0.1, "one-sided activation inputs"
    assert logits.abs().max() < 20, "saturated logits"
    return max(att.max().item() for att in peaks)


def build_small(cfg):
    model, x, y, tangent, version = make_tower(cfg)
    tensors = ref.reference_tensors(model, x, y, cfg["label_smoothing"], features=tower_features, optimizers=("adamw",))
    tensors.update(ref.stepped_tensors(model, x, y, cfg["label_smoothing"], "adamw", 2, features=tower_features))
    tensors["jvp"] = tower_jvp(model, x, tangent)
    for name, t in tangent.items():
        tensors[f"tangent.{name}"] = t
    # The fixture's names are the tower's own (param.conv1.weight ...), as orthofuse's layout spells them.
    renamed = {k.replace(".visual.", "."): v for k, v in tensors.items()}
    peak = tower_activity(model, x, cfg)
    return ref.f32(renamed), {**cfg, "open_clip_version": version}, f"loss {tensors['loss'].item():.7f}, max attention weight {peak:.3f}"


def sample_indices(stream, count):
    """SAMPLES distinct positions in [0, count), from the hash (sorted)."""
    u = hashed_uniform(stream, 4 * SAMPLES).astype(np.float64)
    picks = np.unique(np.floor((u + 1) / 2 * count).astype(np.int64))
    return picks[:SAMPLES]


def build_b32(cfg):
    model, x, y, tangent, version = make_tower(cfg)
    full = ref.reference_tensors(model, x, y, cfg["label_smoothing"], features=tower_features, optimizers=())
    stepped = ref.stepped_tensors(model, x, y, cfg["label_smoothing"], "adamw", 2, features=tower_features)
    out = {k: full[k] for k in ("features", "logits", "loss", "labels")}
    out["jvp"] = tower_jvp(model, x, tangent)
    for k, (name, _) in enumerate(model.visual.named_parameters()):
        grad = full[f"grad.visual.{name}"].flatten().double()
        delta = (stepped[f"adamw2.visual.{name}"].double() - full[f"param.visual.{name}"].double()).flatten()
        picks = torch.from_numpy(sample_indices(10_000 + k, grad.numel()))
        out[f"index.{name}"] = picks.to(torch.float32)  # < 2²⁴ entries per tensor: exact
        out[f"grad.{name}"] = grad[picks]
        out[f"adamw2_delta.{name}"] = delta[picks]
        out[f"gradnorm.{name}"] = grad.norm().reshape(())
    out["grad.head.weight"] = full["grad.head.weight"]
    peak = tower_activity(model, x, cfg)
    return ref.f32(out), {**cfg, "open_clip_version": version}, f"loss {full['loss'].item():.7f}, max attention weight {peak:.3f}"


def config(name, **sizes):
    """height/width: the image; dim: the token width D."""
    return {"family": "clip_vit", "name": name, "mlp_ratio": 4, "activation": "quick_gelu", "classes": 5,
            "label_smoothing": 0.1, "layer_norm_eps": 1e-5, "adamw": ref.ADAMW, "hash": "splitmix64",
            "tangent_scale": TANGENT_SCALE, **sizes}


FIXTURES = {
    "parity_clip_vit": (build_small, config("small", height=8, width=8, patch=4, dim=16, depth=2, heads=2,
                                            output_dim=12, batch=3)),
    "parity_clip_vit_b32": (build_b32, config("ViT-B-32", height=224, width=224, patch=32, dim=768, depth=12,
                                              heads=12, output_dim=512, batch=2)),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=ref.DEFAULT_OUT, help="fixture directory (default: Tests/CoreTests/Fixtures)")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(FIXTURES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.only or FIXTURES:
        builder, cfg = FIXTURES[name]
        tensors, cfg, summary = builder(cfg)
        path = os.path.join(args.out, name + ".safetensors")
        ref.write_fixture(path, tensors, cfg, {"generator": GENERATOR})
        print(f"{name}: {len(tensors)} tensors, {os.path.getsize(path)} bytes, {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
