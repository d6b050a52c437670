#!/usr/bin/env python3
"""PyTorch reference twins of orthofuse's models, written as safetensors parity fixtures.

Run by hand (needs CPU torch and safetensors: `pip install torch==2.13.0+cpu safetensors`);
the Swift tests only read the fixtures and never need torch.

Each fixture holds F32 tensors for one model configuration:
  param.<name>   initial parameters (PyTorch layout: Linear weight [out, in], bias [out])
  input [B, D], labels [B] (class indices stored as float32)
  features [B, h_last] backbone output, logits [B, C], loss [] (mean cross-entropy)
  grad.<name>    d loss / d parameter, input_grad [B, D] = d loss / d input
  adamw.<name>   parameters after one AdamW step from zero moments (all parameters decayed)
  sgd.<name>     parameters after one SGD step (momentum buffer starts at zero)
and __metadata__ {"config": <JSON of the configuration>, "generator": "scripts/torch_reference.py"}.

Model families: "mlp" (below). A new family adds a builder function and entries in FIXTURES.

Usage: python3 scripts/torch_reference.py [--out DIR] [--only NAME_OR_FAMILY ...]
"""

import argparse
import copy
import json
import math
import os
import struct
import sys

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


# ---------------------------------------------------------------- shared machinery

def reference_tensors(model, x, y, label_smoothing):
    """Forward, backward and one optimizer step of each kind; returns the fixture tensors.

    `model` must provide features(x) -> [B, h] and a `head` module mapping features to logits.
    """
    out = {f"param.{n}": p.detach().clone() for n, p in model.named_parameters()}

    x = x.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    features = model.features(x)
    logits = model.head(features)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()

    out["input"] = x.detach().clone()
    out["labels"] = y.to(torch.float32)
    out["features"] = features.detach().clone()
    out["logits"] = logits.detach().clone()
    out["loss"] = loss.detach().clone().reshape(())
    out["input_grad"] = x.grad.detach().clone()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    for n, g in grads.items():
        out[f"grad.{n}"] = g

    # Each optimizer gets its own copy of the initial model and the same gradients.
    # foreach=False selects PyTorch's plain per-tensor implementation.
    def stepped(prefix, make_opt):
        m = copy.deepcopy(model)
        for n, p in m.named_parameters():
            p.grad = grads[n].clone()
        make_opt(m.parameters()).step()
        for n, p in m.named_parameters():
            out[f"{prefix}.{n}"] = p.detach().clone()

    stepped("adamw", lambda ps: torch.optim.AdamW(
        ps, lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"],
        weight_decay=ADAMW["weight_decay"], foreach=False))
    stepped("sgd", lambda ps: torch.optim.SGD(
        ps, lr=SGD["lr"], momentum=SGD["momentum"], weight_decay=0.0, foreach=False))

    return {k: v.to(torch.float32).contiguous() for k, v in out.items()}


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


def write_fixture(path, tensors, config):
    meta = {"config": json.dumps(config, sort_keys=True), "generator": GENERATOR}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    canonicalize_header(tmp)
    # safetensors creates files 0600; use the usual umask-based mode instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


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


def build_mlp(cfg):
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
    # Every class appears at least once (when the batch allows), so each one-hot column is exercised.
    c, b = cfg["classes"], cfg["batch"]
    y = torch.cat([torch.arange(min(c, b)), torch.randint(0, c, (max(b - c, 0),))])[torch.randperm(b)]
    tensors = reference_tensors(model, x, y, cfg["label_smoothing"])

    # Guard against degenerate fixtures: every hidden layer must have both active and inactive
    # (ReLU) or both signs (GELU) among its outputs, and logits must not be saturated.
    h = x
    for layer in model.layers:
        h = model.act(layer(h)).detach()
        assert (h > 0).any() and (h <= 0).any(), f"degenerate activations in {cfg}"
    assert tensors["logits"].abs().max() < 20, "saturated logits"
    return tensors


def mlp_config(activation, label_smoothing):
    return {
        "family": "mlp", "input": 12, "hidden": [16, 8], "classes": 5, "batch": 6,
        "activation": activation, "label_smoothing": label_smoothing,
        "seed": SEED, "init_gain": math.sqrt(6.0), "bias_gain": 1.0,
        "adamw": ADAMW, "sgd": SGD,
    }


FAMILIES = {"mlp": build_mlp}

FIXTURES = {
    "parity_mlp_relu": mlp_config("relu", 0.0),
    "parity_mlp_gelu": mlp_config("gelu", 0.1),
}


# ---------------------------------------------------------------- driver

def activity_report(tensors, cfg):
    """Fraction of positive hidden outputs per layer (recomputed from the stored parameters)."""
    h = tensors["input"]
    act = ACTIVATIONS[cfg["activation"]]()
    fracs = []
    for i in range(len(cfg["hidden"])):
        h = act(h @ tensors[f"param.layers.{i}.weight"].T + tensors[f"param.layers.{i}.bias"])
        fracs.append(f"{(h > 0).float().mean().item():.2f}")
    return "/".join(fracs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture directory (default: Tests/CoreTests/Fixtures)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="fixture names or family names to write")
    args = ap.parse_args()

    torch.set_num_threads(1)
    selected = [n for n, c in FIXTURES.items() if not args.only or n in args.only or c["family"] in args.only]
    if not selected:
        print(f"error: --only matched nothing; fixtures: {', '.join(FIXTURES)}; families: {', '.join(FAMILIES)}",
              file=sys.stderr)
        return 1
    for name in selected:
        cfg = FIXTURES[name]
        tensors = FAMILIES[cfg["family"]](cfg)
        path = os.path.join(args.out, name + ".safetensors")
        write_fixture(path, tensors, cfg)
        extra = f", positive hidden outputs {activity_report(tensors, cfg)}" if cfg["family"] == "mlp" else ""
        print(f"{name}: loss {tensors['loss'].item():.7f}, {len(tensors)} tensors, "
              f"{os.path.getsize(path)} bytes{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
