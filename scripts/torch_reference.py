#!/usr/bin/env python3
"""PyTorch reference twins of orthofuse's models, written as safetensors parity fixtures.

Run by hand (needs CPU torch and safetensors: `pip install torch==2.13.0+cpu safetensors`;
the ViT fixtures also need `pip install timm pillow --no-deps`: timm's other dependencies,
torchvision and huggingface_hub, are not needed, see import_timm); the Swift tests only read the
fixtures and never need torch.

Model fixtures (parity_mlp_*, parity_vit) hold F32 tensors for one model configuration:
  param.<name>   initial parameters (PyTorch layout: Linear weight [out, in], bias [out])
  input [B, D], labels [B] (class indices stored as float32); a ViT input row is a flat C·H·W image
  features [B, h_last] backbone output, logits [B, C], loss [] (mean cross-entropy)
  grad.<name>    d loss / d parameter, input_grad [B, D] = d loss / d input
  adamw.<name>   parameters after one AdamW step from zero moments (all parameters decayed)
  sgd.<name>     parameters after one SGD step (momentum buffer starts at zero; MLP only)
  adamw2.<name>  parameters after two AdamW steps on the same batch, the gradient recomputed at
                 the first step's parameters (ViT here, MLP in parity_mlp_*_steps)
  sgd2.<name>    the same with SGD (parity_mlp_*_steps)
and __metadata__ {"config": <JSON of the configuration>, "generator": "scripts/torch_reference.py"}.

Other fixtures:
  parity_orthoreg     OrthoReg ‖G − I‖_F and ‖G − I‖²_F with their autograd gradients, for a
                      tall and a wide ΔW (G the smaller Gram matrix)
  parity_lora         one LoRA-adapted Linear: output and gradients of A and B for a given
                      upstream gradient, and the dense task-vector entry (α/r)·B·A
  parity_linearized_* f_lin(x; θ) = f(x; θ0) + J(x; θ0)(θ − θ0) by torch.func.jvp for the backbone
                      parameters param0.<name> (θ0) and param.<name> (θ = θ0 + small Δθ):
                      features0, jvp, linearized_features, features_nonlinear = f(x; θ) (to show
                      the two differ), then with the frozen head.weight/head.bias and labels:
                      logits, loss, features_grad = d loss / d f_lin, and grad.<name> = d loss / dθ
                      of the linearized model, which is the VJP at θ0 of features_grad
Models are evaluated in float64 (the parity_mlp_* files in float32, as first written) and
stored as float32; inputs and parameters are float32 values, so storing them loses nothing.

Families: mlp, vit, orthoreg, lora, linearized. A new one adds a builder and entries in FIXTURES.

Usage: python3 scripts/torch_reference.py [--out DIR] [--only NAME_OR_FAMILY ...]
"""

import argparse
import copy
import importlib.abc
import importlib.machinery
import json
import math
import os
import struct
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

SEED = 1993
GENERATOR = "scripts/torch_reference.py"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "CoreTests", "Fixtures")

ADAMW = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}
SGD = {"lr": 0.1, "momentum": 0.9}

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": lambda: nn.GELU(approximate="none"),  # exact erf form, not the tanh approximation
}

# foreach=False selects PyTorch's plain per-tensor implementation.
OPTIMIZERS = {
    "adamw": lambda ps: torch.optim.AdamW(
        ps, lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"],
        weight_decay=ADAMW["weight_decay"], foreach=False),
    "sgd": lambda ps: torch.optim.SGD(
        ps, lr=SGD["lr"], momentum=SGD["momentum"], weight_decay=0.0, foreach=False),
}


# ---------------------------------------------------------------- shared machinery

def model_features(model, x):
    return model.features(x)


def reference_tensors(model, x, y, label_smoothing, features=model_features, optimizers=("adamw", "sgd")):
    """Forward, backward and one step of each optimizer; returns the fixture tensors.

    `features(model, x)` -> [B, h] is the backbone output; `model.head` maps it to logits.
    """
    out = {f"param.{n}": p.detach().clone() for n, p in model.named_parameters()}

    x = x.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    feats = features(model, x)
    logits = model.head(feats)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()

    out["input"] = x.detach().clone()
    out["labels"] = y.to(torch.float32)
    out["features"] = feats.detach().clone()
    out["logits"] = logits.detach().clone()
    out["loss"] = loss.detach().clone().reshape(())
    out["input_grad"] = x.grad.detach().clone()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    for n, g in grads.items():
        out[f"grad.{n}"] = g

    # Each optimizer gets its own copy of the initial model and the same gradients.
    for prefix in optimizers:
        m = copy.deepcopy(model)
        for n, p in m.named_parameters():
            p.grad = grads[n].clone()
        OPTIMIZERS[prefix](m.parameters()).step()
        for n, p in m.named_parameters():
            out[f"{prefix}.{n}"] = p.detach().clone()

    return {k: v.to(torch.float32).contiguous() for k, v in out.items()}


def stepped_tensors(model, x, y, label_smoothing, prefix, steps, features=model_features):
    """Parameters after `steps` optimizer steps on the same batch, `<prefix><steps>.<name>`.

    The gradient is recomputed at each step's parameters and one optimizer object carries its
    state across steps, so a wrong moment or momentum update shows up from the second step on.
    """
    m = copy.deepcopy(model)
    opt = OPTIMIZERS[prefix](m.parameters())
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m.head(features(m, x)), y, label_smoothing=label_smoothing).backward()
        opt.step()
    return {f"{prefix}{steps}.{n}": p.detach().to(torch.float32).clone() for n, p in m.named_parameters()}


def features_function(model, features, x, names):
    """θ ↦ features(model with θ, x) for the parameters in `names`, for torch.func transforms."""
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, inp):
            return features(self.m, inp)

    wrapped = Wrapped()
    return lambda params: torch.func.functional_call(wrapped, {f"m.{n}": params[n] for n in names}, (x,))


def canonicalize_header(path):
    """Rewrite the header with __metadata__ keys sorted, so regenerating gives identical bytes.

    safetensors keeps metadata in a hash map whose order changes from run to run; tensor
    entries and data are already deterministic. Same keys, same length: padded in place.
    """
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        canon = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
        text = json.dumps(canon, separators=(",", ":"), ensure_ascii=False).encode()
        assert len(text) <= n, "canonical header longer than the original"
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def write_fixture(path, tensors, config, extra_metadata=None):
    meta = {"config": json.dumps(config, sort_keys=True), "generator": GENERATOR, **(extra_metadata or {})}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    canonicalize_header(tmp)
    # safetensors creates files 0600; use the usual umask-based mode instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def f32(tensors):
    return {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}


def labels_for(classes, batch):
    # Every class appears at least once (when the batch allows), so each one-hot column is exercised.
    c, b = classes, batch
    return torch.cat([torch.arange(min(c, b)), torch.randint(0, c, (max(b - c, 0),))])[torch.randperm(b)]


# ---------------------------------------------------------------- family: mlp

class MLP(nn.Module):
    """layers.{i}: Linear + activation (also after the last hidden layer); head: Linear."""

    def __init__(self, d_in, hidden, classes, activation):
        super().__init__()
        sizes = [d_in] + list(hidden)
        # A ModuleList of Linears only, so parameter names are exactly layers.{i}.weight/bias.
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = ACTIVATIONS[activation]()
        self.head = nn.Linear(sizes[-1], classes)

    def features(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        return x

    def forward(self, x):
        return self.head(self.features(x))


def make_mlp(cfg):
    """The model, batch and labels of an MLP configuration (the same draws for every fixture)."""
    torch.manual_seed(SEED)
    model = MLP(cfg["input"], cfg["hidden"], cfg["classes"], cfg["activation"])
    # PyTorch's default init draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)): pre-activation variance
    # about 1/3 of the input's, so activations shrink layer by layer. Scaling weights by
    # init_gain (sqrt(6) = He-uniform bound) and biases by bias_gain keeps every layer's
    # activations O(1) and puts ReLU units on both sides of zero.
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(cfg["init_gain"] if name.endswith("weight") else cfg["bias_gain"])
    x = torch.randn(cfg["batch"], cfg["input"])
    y = labels_for(cfg["classes"], cfg["batch"])
    return model, x, y


def activity_report(tensors, cfg):
    """Fraction of positive hidden outputs per layer (recomputed from the stored parameters)."""
    h = tensors["input"]
    act = ACTIVATIONS[cfg["activation"]]()
    fracs = []
    for i in range(len(cfg["hidden"])):
        h = act(h @ tensors[f"param.layers.{i}.weight"].T + tensors[f"param.layers.{i}.bias"])
        fracs.append(f"{(h > 0).float().mean().item():.2f}")
    return "/".join(fracs)


def build_mlp(cfg):
    model, x, y = make_mlp(cfg)
    tensors = reference_tensors(model, x, y, cfg["label_smoothing"])

    # Guard against degenerate fixtures: every hidden layer must have both active and inactive
    # (ReLU) or both signs (GELU) among its outputs, and logits must not be saturated.
    h = x
    for layer in model.layers:
        h = model.act(layer(h)).detach()
        assert (h > 0).any() and (h <= 0).any(), f"degenerate activations in {cfg}"
    assert tensors["logits"].abs().max() < 20, "saturated logits"
    summary = f"loss {tensors['loss'].item():.7f}, positive hidden outputs {activity_report(tensors, cfg)}"
    return tensors, cfg, {}, summary


def build_mlp_steps(cfg):
    """Two AdamW and two SGD steps from the parity_mlp_* starting point (same model and batch)."""
    model, x, y = make_mlp(cfg)
    tensors = {f"param.{n}": p.detach().clone() for n, p in model.named_parameters()}
    tensors["input"] = x
    tensors["labels"] = y.to(torch.float32)
    for prefix in ("adamw", "sgd"):
        tensors.update(stepped_tensors(model, x, y, cfg["label_smoothing"], prefix, cfg["steps"]))
    moved = max((tensors[f"adamw2.{n}"] - tensors[f"param.{n}"]).abs().max().item() for n, _ in model.named_parameters())
    return f32(tensors), cfg, {}, f"max |adamw2 − param| {moved:.3e} (2·lr = {2 * ADAMW['lr']:.0e})"


def mlp_config(activation, label_smoothing):
    return {
        "family": "mlp", "input": 12, "hidden": [16, 8], "classes": 5, "batch": 6,
        "activation": activation, "label_smoothing": label_smoothing,
        "seed": SEED, "init_gain": math.sqrt(6.0), "bias_gain": 1.0,
        "adamw": ADAMW, "sgd": SGD,
    }


def mlp_steps_config(activation, label_smoothing):
    return {**mlp_config(activation, label_smoothing), "steps": 2}


# ---------------------------------------------------------------- family: vit

class _Placeholder(type):
    """A class whose every attribute is another placeholder class (enums, constants, types)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = roots

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _PlaceholderModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def import_timm():
    """Import timm; returns (timm, whether torchvision was stood in for).

    timm imports torchvision when the package loads, for its data pipeline and FrozenBatchNorm;
    VisionTransformer never calls it. PyPI has no torchvision that loads with a CPU-only torch
    (its wheel links libtorch_cuda), so when torchvision fails to import, placeholder modules
    satisfy those import-time references. PIL (pillow) is imported and used for real.
    """
    try:
        import torchvision  # noqa: F401
        stood_in = False
    except Exception:  # ImportError, or torchvision's RuntimeError on a mismatched torch
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        sys.meta_path.insert(0, _PlaceholderFinder({"torchvision"}))
        stood_in = True
    import timm
    return timm, stood_in


def vit_parameter_shapes(cfg):
    """timm's VisionTransformer state_dict (num_classes=0), in its order: the names Swift uses."""
    C, P, D = cfg["channels"], cfg["patch"], cfg["dim"]
    tokens = (cfg["height"] // P) * (cfg["width"] // P) + 1
    hidden = cfg["mlp_ratio"] * D
    shapes = [("cls_token", [1, 1, D]), ("pos_embed", [1, tokens, D]),
              ("patch_embed.proj.weight", [D, C, P, P]), ("patch_embed.proj.bias", [D])]
    for i in range(cfg["depth"]):
        b = f"blocks.{i}"
        shapes += [(f"{b}.norm1.weight", [D]), (f"{b}.norm1.bias", [D]),
                   (f"{b}.attn.qkv.weight", [3 * D, D]), (f"{b}.attn.qkv.bias", [3 * D]),
                   (f"{b}.attn.proj.weight", [D, D]), (f"{b}.attn.proj.bias", [D]),
                   (f"{b}.norm2.weight", [D]), (f"{b}.norm2.bias", [D]),
                   (f"{b}.mlp.fc1.weight", [hidden, D]), (f"{b}.mlp.fc1.bias", [hidden]),
                   (f"{b}.mlp.fc2.weight", [D, hidden]), (f"{b}.mlp.fc2.bias", [D])]
    return shapes + [("norm.weight", [D]), ("norm.bias", [D])]


def vit_features(model, x):
    """Flat C·H·W rows -> class-token output of the final norm (timm's pre-logits, 'token' pool)."""
    img = x.reshape(x.shape[0], model.patch_embed.proj.in_channels, *model.patch_embed.img_size)
    return model.forward_head(model.forward_features(img), pre_logits=True)


def vit_features_explicit(p, x, cfg):
    """The same ViT written out op by op: the layout the Swift model follows, checked against timm."""
    B, C, H, W, P, D, NH = x.shape[0], cfg["channels"], cfg["height"], cfg["width"], cfg["patch"], cfg["dim"], cfg["heads"]
    hd, eps = D // NH, cfg["layer_norm_eps"]
    # Patches in row-major order over the (H/P, W/P) grid, each flattened (c, py, px) like the conv weight.
    patches = x.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * P * P)
    h = patches @ p["patch_embed.proj.weight"].reshape(D, -1).T + p["patch_embed.proj.bias"]
    # Class token first, then pos_embed over all N + 1 tokens (timm's default, no_embed_class=False).
    h = torch.cat([p["cls_token"].expand(B, 1, D), h], dim=1) + p["pos_embed"]
    T = h.shape[1]
    for i in range(cfg["depth"]):
        b = f"blocks.{i}."
        a = F.layer_norm(h, (D,), p[b + "norm1.weight"], p[b + "norm1.bias"], eps)
        # qkv output columns: [q | k | v], each D wide, head j at columns j·hd … (j+1)·hd − 1.
        qkv = (a @ p[b + "attn.qkv.weight"].T + p[b + "attn.qkv.bias"]).reshape(B, T, 3, NH, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax((q * hd ** -0.5) @ k.transpose(-2, -1), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, D)  # heads concatenated back in the same order
        h = h + o @ p[b + "attn.proj.weight"].T + p[b + "attn.proj.bias"]
        m = F.layer_norm(h, (D,), p[b + "norm2.weight"], p[b + "norm2.bias"], eps)
        m = F.gelu(m @ p[b + "mlp.fc1.weight"].T + p[b + "mlp.fc1.bias"], approximate="none")
        h = h + m @ p[b + "mlp.fc2.weight"].T + p[b + "mlp.fc2.bias"]
    return F.layer_norm(h, (D,), p["norm.weight"], p["norm.bias"], eps)[:, 0]


def make_vit(cfg):
    """timm's VisionTransformer with a Linear head, values drawn here, float64; and the batch."""
    timm, stood_in = import_timm()
    from timm.models.vision_transformer import VisionTransformer

    C, H, W = cfg["channels"], cfg["height"], cfg["width"]
    model = VisionTransformer(
        img_size=(H, W), patch_size=cfg["patch"], in_chans=C, embed_dim=cfg["dim"], depth=cfg["depth"],
        num_heads=cfg["heads"], mlp_ratio=cfg["mlp_ratio"], num_classes=0, global_pool="token", class_token=True)
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == vit_parameter_shapes(cfg), f"timm {timm.__version__} state_dict differs:\n{got}"
    assert all(blk.norm1.eps == cfg["layer_norm_eps"] for blk in model.blocks) and model.norm.eps == cfg["layer_norm_eps"]
    # Head as timm's own classifier: Linear(D, classes) named head.weight / head.bias.
    model.reset_classifier(cfg["classes"])
    model.eval()  # every dropout rate is 0 anyway
    # Fused attention (scaled_dot_product_attention) has no forward-mode AD for torch.func.jvp;
    # the explicit softmax path computes the same function (checked below).
    for blk in model.blocks:
        blk.attn.fused_attn = False

    # timm's init (trunc-normal 0.02 Linear weights, zero biases, LayerNorm 1/0, cls_token ~1e-6,
    # pos_embed 0.02) would make attention nearly uniform and LayerNorm gradients trivial. Values
    # are drawn here instead, from SEED after construction, so they do not depend on timm's init:
    # weights N(0, 1/fan_in), biases N(0, 0.2²), LayerNorm weight 1 + N(0, 0.2²), bias N(0, 0.2²),
    # cls_token N(0, 1), pos_embed N(0, 0.5²).
    kinds = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            kinds[f"{mname}.{pname}" if mname else pname] = type(mod)
    torch.manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape)
            if name == "cls_token":
                p.copy_(z)
            elif name == "pos_embed":
                p.copy_(0.5 * z)
            elif issubclass(kinds[name], nn.LayerNorm):  # timm uses its own LayerNorm subclass
                p.copy_(1 + 0.2 * z if name.endswith("weight") else 0.2 * z)
            elif name.endswith("weight"):
                p.copy_(z / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.2 * z)
    x = torch.randn(cfg["batch"], C * H * W)
    y = labels_for(cfg["classes"], cfg["batch"])
    model = model.double()
    x = x.double()

    # The explicit twin and timm's fused-attention path must agree with what is stored.
    params = {n: p.detach() for n, p in model.named_parameters()}
    with torch.no_grad():
        ours = vit_features(model, x)
        assert torch.allclose(vit_features_explicit(params, x, cfg), ours, rtol=0, atol=1e-12)
        for blk in model.blocks:
            blk.attn.fused_attn = True
        assert torch.allclose(vit_features(model, x), ours, rtol=0, atol=1e-12)
        for blk in model.blocks:
            blk.attn.fused_attn = False
    return model, x, y, timm.__version__, stood_in


def vit_activity(model, x, cfg):
    """Guards against a degenerate fixture; returns the largest attention weight."""
    B, D, NH = x.shape[0], cfg["dim"], cfg["heads"]
    peaks, pre_gelu = [], []
    hooks = [blk.mlp.fc1.register_forward_hook(lambda m, i, o: pre_gelu.append(o)) for blk in model.blocks]

    def attn_hook(mod, inp, out):
        a = inp[0]
        q, k, _ = mod.qkv(a).reshape(B, a.shape[1], 3, NH, D // NH).permute(2, 0, 3, 1, 4)
        peaks.append(torch.softmax((q * mod.scale) @ k.transpose(-2, -1), dim=-1))
    hooks += [blk.attn.register_forward_hook(attn_hook) for blk in model.blocks]
    with torch.no_grad():
        logits = model.head(vit_features(model, x))
    for h in hooks:
        h.remove()
    tokens = peaks[0].shape[-1]
    for att in peaks:
        # Neither uniform (1/T everywhere) nor one-hot.
        assert 2.0 / tokens < att.max() < 0.99, f"degenerate attention, max weight {att.max():.3f}"
    for z in pre_gelu:
        assert (z > 0).float().mean().item() > 0.1 and (z < 0).float().mean().item() > 0.1, "one-sided GELU inputs"
    assert logits.abs().max() < 20, "saturated logits"
    return max(att.max().item() for att in peaks)


def build_vit(cfg):
    model, x, y, timm_version, stood_in = make_vit(cfg)
    cfg = {**cfg, "timm_version": timm_version}
    tensors = reference_tensors(model, x, y, cfg["label_smoothing"], features=vit_features, optimizers=("adamw",))
    tensors.update(stepped_tensors(model, x, y, cfg["label_smoothing"], "adamw", 2, features=vit_features))
    peak = vit_activity(model, x, cfg)
    note = f", timm {timm_version}" + (" (torchvision placeholder)" if stood_in else "")
    return tensors, cfg, {}, f"loss {tensors['loss'].item():.7f}, max attention weight {peak:.3f}{note}"


def vit_config():
    return {
        "family": "vit", "channels": 1, "height": 8, "width": 8, "patch": 4, "dim": 16, "depth": 2,
        "heads": 2, "mlp_ratio": 4, "classes": 5, "batch": 3, "layer_norm_eps": 1e-6,
        "label_smoothing": 0.1, "seed": SEED, "compute_dtype": "float64", "adamw": ADAMW,
        "class_token": True, "global_pool": "token", "qkv_bias": True, "gelu": "erf",
    }


# ---------------------------------------------------------------- family: orthoreg

def orthoreg(delta, form):
    """‖G − I‖_F ("frobenius", released code), ‖G − I‖²_F ("squared", paper), ‖G − diag G‖_F
    ("offdiagonal") or ‖ΔW‖²_F ("l2"), G the smaller Gram."""
    if form == "l2":
        return (delta ** 2).sum()
    m, n = delta.shape
    gram = delta.T @ delta if m >= n else delta @ delta.T
    target = torch.diag(torch.diagonal(gram)) if form == "offdiagonal" else torch.eye(min(m, n), dtype=delta.dtype)
    norm = torch.linalg.matrix_norm(gram - target, "fro")
    return norm ** 2 if form == "squared" else norm


def build_orthoreg(cfg):
    torch.manual_seed(SEED)
    tensors, notes = {}, []
    for orientation, shape in cfg["shapes"].items():
        delta = (cfg["scale"] * torch.randn(shape)).double()  # float32 draws, exact in float64
        tensors[f"{orientation}.delta"] = delta
        m, n = shape
        gram = delta.T @ delta if m >= n else delta @ delta.T
        dev = gram - torch.eye(min(m, n), dtype=delta.dtype)
        offdiagonal = gram - torch.diag(torch.diagonal(gram))
        for form in cfg["forms"]:
            d = delta.clone().requires_grad_(True)
            value = orthoreg(d, form)
            value.backward()
            # The closed forms of OrthoReg.swift must agree with autograd.
            target = offdiagonal if form == "offdiagonal" else dev
            closed = 4 * (d.detach() @ target if m >= n else target @ d.detach())
            if form in ("frobenius", "offdiagonal"):
                closed = closed / (2 * torch.linalg.matrix_norm(target, "fro"))
            if form == "l2":
                closed = 2 * d.detach()
            assert torch.allclose(d.grad, closed, rtol=1e-12, atol=1e-12)
            tensors[f"{orientation}.{form}.value"] = value.detach().reshape(())
            tensors[f"{orientation}.{form}.grad"] = d.grad
        notes.append(f"{orientation} {m}x{n} ‖G−I‖_F {tensors[f'{orientation}.frobenius.value'].item():.4f}")
    return f32(tensors), cfg, {}, ", ".join(notes)


def orthoreg_config():
    return {"family": "orthoreg", "shapes": {"tall": [12, 5], "wide": [4, 9]}, "scale": 0.5, "seed": SEED,
            "compute_dtype": "float64", "forms": ["frobenius", "squared", "offdiagonal", "l2"]}


# ---------------------------------------------------------------- family: lora

def build_lora(cfg):
    torch.manual_seed(SEED)
    out_f, in_f, r, batch = cfg["out"], cfg["in"], cfg["rank"], cfg["batch"]
    scale = cfg["alpha"] / r
    w0 = torch.randn(out_f, in_f) / math.sqrt(in_f)
    bias = 0.2 * torch.randn(out_f)
    # B is zero at the start of LoRA training; here it is random so that grad A is non-trivial.
    a = torch.randn(r, in_f) / math.sqrt(in_f)
    b = 0.5 * torch.randn(out_f, r)
    x = torch.randn(batch, in_f)
    g = torch.randn(batch, out_f)
    w0, bias, a, b, x, g = (t.double() for t in (w0, bias, a, b, x, g))

    a_, b_, x_ = (t.clone().requires_grad_(True) for t in (a, b, x))
    y = x_ @ (w0 + scale * b_ @ a_).T + bias
    y.backward(g)
    assert torch.allclose(a_.grad, scale * b.T @ g.T @ x, rtol=1e-12, atol=1e-12)
    assert torch.allclose(b_.grad, scale * g.T @ x @ a.T, rtol=1e-12, atol=1e-12)
    tensors = {"w0": w0, "bias": bias, "lora_a": a, "lora_b": b, "input": x, "upstream": g,
               "output": y.detach(), "grad.lora_a": a_.grad, "grad.lora_b": b_.grad,
               "input_grad": x_.grad, "dense_delta": scale * b @ a}
    extra = {"rank": str(r), "alpha": f"{cfg['alpha']:g}", "scale": f"{scale:g}"}
    return f32(tensors), cfg, extra, f"rank {r}, alpha {cfg['alpha']:g}, ‖dense_delta‖ {torch.linalg.norm(scale * b @ a).item():.4f}"


def lora_config():
    return {"family": "lora", "out": 6, "in": 8, "rank": 2, "alpha": 4.0, "scale": 2.0, "batch": 3,
            "seed": SEED, "compute_dtype": "float64",
            "layout": "lora_a [rank, in], lora_b [out, rank]; y = x (w0 + scale·B·A)ᵀ + bias"}


# ---------------------------------------------------------------- family: linearized

def linearized_tensors(model, x, y, label_smoothing, features, delta_scale, delta_seed):
    """f_lin(x; θ) = f(x; θ0) + J(x; θ0)(θ − θ0) for θ = θ0 + Δθ, its loss and ∇θ loss."""
    names = [n for n, _ in model.named_parameters() if not n.startswith("head.")]
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    # A stream of its own so that Δθ is not a multiple of the draws that made θ0.
    gen = torch.Generator().manual_seed(delta_seed)
    delta = {n: (delta_scale * torch.randn(p.shape, generator=gen)).to(p.dtype) for n, p in theta0.items()}
    theta = {n: theta0[n] + delta[n] for n in names}
    # The tangent is what the Swift side sees: θ − θ0 from the stored (float32) θ and θ0.
    theta0_32 = {n: t.float() for n, t in theta0.items()}
    theta_32 = {n: t.float() for n, t in theta.items()}
    tangent = {n: (theta_32[n].double() - theta0_32[n].double()) for n in names}
    f = features_function(model, features, x, names)
    w, bias = model.head.weight.detach(), model.head.bias.detach()

    features0, jvp = torch.func.jvp(f, (theta0,), (tangent,))
    lin = features0 + jvp
    # Central difference along the tangent: the JVP is the derivative it claims to be.
    eps = 1e-4
    fd = (f({n: theta0[n] + eps * tangent[n] for n in names}) - f({n: theta0[n] - eps * tangent[n] for n in names})) / (2 * eps)
    assert torch.allclose(fd, jvp, rtol=1e-5, atol=1e-7), (fd - jvp).abs().max()

    z = lin.detach().clone().requires_grad_(True)
    logits = F.linear(z, w, bias)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    upstream = z.grad
    # The linearized model's gradient is one VJP at θ0 with the upstream gradient of f_lin.
    _, vjp_fn = torch.func.vjp(f, theta0)
    (grads,) = vjp_fn(upstream)

    # Cross-check: differentiate the linearized loss in θ directly (reverse over forward mode).
    def lin_loss(th):
        f0, j = torch.func.jvp(f, (theta0,), ({n: th[n] - theta0[n] for n in names},))
        return F.cross_entropy(F.linear(f0 + j, w, bias), y, label_smoothing=label_smoothing)
    direct = torch.func.grad(lin_loss)({n: theta0[n] + tangent[n] for n in names})
    for n in names:
        assert torch.allclose(direct[n], grads[n], rtol=1e-9, atol=1e-12), n

    nonlinear = f({n: theta0[n] + tangent[n] for n in names})
    tensors = {"input": x, "labels": y.to(torch.float32), "head.weight": w, "head.bias": bias,
               "features0": features0, "jvp": jvp, "linearized_features": lin,
               "features_nonlinear": nonlinear, "logits": logits.detach(), "loss": loss.detach().reshape(()),
               "features_grad": upstream}
    for n in names:
        tensors[f"param0.{n}"] = theta0_32[n]
        tensors[f"param.{n}"] = theta_32[n]
        tensors[f"grad.{n}"] = grads[n]
    gap = (nonlinear - lin).abs().max().item() / lin.abs().max().item()
    summary = (f"loss {loss.item():.7f}, ‖jvp‖∞ {jvp.abs().max().item():.4f}, "
               f"relative |f(θ) − f_lin(θ)| {gap:.2e}")
    return f32(tensors), summary


def build_linearized(cfg):
    if cfg["family"] == "mlp":
        model, x, y = make_mlp(cfg)
        model, x = model.double(), x.double()
        features = model_features
    else:
        model, x, y, timm_version, _ = make_vit(cfg)
        cfg = {**cfg, "timm_version": timm_version}
        features = vit_features
    tensors, summary = linearized_tensors(model, x, y, cfg["label_smoothing"], features,
                                          cfg["delta_scale"], cfg["delta_seed"])
    return tensors, cfg, {}, summary


def linearized_config(base):
    cfg = {**base, "mode": "linearized", "delta_scale": 0.05, "delta_seed": SEED + 1, "compute_dtype": "float64"}
    for unused in ("adamw", "sgd"):
        cfg.pop(unused, None)
    return cfg


# ---------------------------------------------------------------- fixtures

BUILDERS = {"mlp": build_mlp, "mlp_steps": build_mlp_steps, "vit": build_vit, "orthoreg": build_orthoreg,
            "lora": build_lora, "linearized": build_linearized}

# name -> (builder, configuration); --only accepts a name, a builder name or a configuration family.
FIXTURES = {
    "parity_mlp_relu": ("mlp", mlp_config("relu", 0.0)),
    "parity_mlp_gelu": ("mlp", mlp_config("gelu", 0.1)),
    "parity_mlp_relu_steps": ("mlp_steps", mlp_steps_config("relu", 0.0)),
    "parity_mlp_gelu_steps": ("mlp_steps", mlp_steps_config("gelu", 0.1)),
    "parity_vit": ("vit", vit_config()),
    "parity_orthoreg": ("orthoreg", orthoreg_config()),
    "parity_lora": ("lora", lora_config()),
    "parity_linearized_mlp": ("linearized", linearized_config(mlp_config("gelu", 0.1))),
    "parity_linearized_vit": ("linearized", linearized_config(vit_config())),
}


# ---------------------------------------------------------------- driver

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture directory (default: Tests/CoreTests/Fixtures)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="fixture, builder or family names to write")
    args = ap.parse_args()

    torch.set_num_threads(1)
    selected = [n for n, (b, c) in FIXTURES.items()
                if not args.only or n in args.only or b in args.only or c["family"] in args.only]
    if not selected:
        families = sorted(set(BUILDERS) | {c["family"] for _, c in FIXTURES.values()})
        print(f"error: --only matched nothing; fixtures: {', '.join(FIXTURES)}; families: {', '.join(families)}",
              file=sys.stderr)
        return 1
    for name in selected:
        builder, cfg = FIXTURES[name]
        tensors, cfg, extra, summary = BUILDERS[builder](cfg)
        path = os.path.join(args.out, name + ".safetensors")
        write_fixture(path, tensors, cfg, extra)
        print(f"{name}: {len(tensors)} tensors, {os.path.getsize(path)} bytes, {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
