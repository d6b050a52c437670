"""job_torch.py: the PyTorch twin of one whole orthofuse job, run the way the OrthoReg reference
code runs one: the tasks one after another in one process, every core as a torch thread.

Per task: a linear-probe head fitted on θ0's frozen features (AdamW, zero start), fine-tuning with the head
frozen (AdamW, warm-up then cosine, global-norm clipping, OrthoReg's Frobenius form on every 2-D
weight), τ = θ − θ0, single-task test accuracy. Then task arithmetic θ0 + α·Στ with α chosen on
the validation splits (held out from train as orthofuse does: 10 %, at most 5,000) over a grid,
and the merged model's test accuracy. θ0 comes from a safetensors file with orthofuse's (= timm's)
tensor names. Prints one JSON line: seconds (wall, everything after imports) and accuracies.

Used by scripts/bench_job.sh, which runs `orthofuse run` on the same job beside it.
Needs a CPU torch (and timm for --arch vit).
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_safetensors(path):
    from safetensors.torch import load_file
    return load_file(path)


def add_model_options(parser, arch, input_shape):
    """The model's options, shared with scripts/check_heads_torch.py: --arch and its shapes."""
    parser.add_argument("--arch", choices=["mlp", "vit"], default=arch)
    parser.add_argument("--input", default=input_shape)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--patch", type=int, default=7)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)


def parse_model_options(args):
    """--input and --hidden as lists of integers."""
    args.input = [int(v) for v in args.input.split(",")]
    args.hidden = [int(v) for v in args.hidden.split(",")]


def make_backbone(args, state):
    if args.arch == "mlp":
        layers, fan_in = [], args.input[0]
        for width in args.hidden:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        model = nn.Sequential(*layers)
        # nn.Sequential names its Linears 0, 2, 4, …; orthofuse's are layers.0, layers.1, …
        mapped = {}
        for i in range(len(args.hidden)):
            mapped[f"{2 * i}.weight"] = state[f"layers.{i}.weight"]
            mapped[f"{2 * i}.bias"] = state[f"layers.{i}.bias"]
        model.load_state_dict(mapped)
        return model, fan_in
    from timm.models.vision_transformer import VisionTransformer
    channels, height, width = args.input
    vit = VisionTransformer(img_size=(height, width), patch_size=args.patch, in_chans=channels, embed_dim=args.width,
                            depth=args.depth, num_heads=args.heads, mlp_ratio=4, num_classes=0, global_pool="token")
    vit.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    return nn.Sequential(nn.Unflatten(1, (channels, height, width)), vit), args.width


def orthoreg(model, base):
    """OrthoReg, Frobenius form: Σ over 2-D weights of ‖ΔᵀΔ − I‖_F (the smaller Gram)."""
    total = 0.0
    for p, p0 in zip(model.parameters(), base):
        if p.dim() != 2:
            continue
        delta = p - p0
        gram = delta.t() @ delta if delta.shape[0] >= delta.shape[1] else delta @ delta.t()
        total = total + torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0]), "fro")
    return total


def inputs(array):
    """As orthofuse reads npz inputs: float32 as is, float64 converted, uint8 divided by 255."""
    values = torch.from_numpy(array).float()
    return values / 255 if array.dtype == np.uint8 else values


def load_task(data, name, validation_fraction=0.1, validation_max=5000, seed=0):
    train = np.load(f"{data}/{name}/train.npz")
    test = np.load(f"{data}/{name}/test.npz")
    x, y = inputs(train["x"]), torch.from_numpy(train["y"]).long()
    held = min(int(validation_fraction * len(y)), validation_max)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return {"train": (x[order[held:]], y[order[held:]]), "validation": (x[order[:held]], y[order[:held]]),
            "test": (inputs(test["x"]), torch.from_numpy(test["y"]).long())}


@torch.no_grad()
def accuracy(backbone, head, split, batch=1024):
    x, y = split
    correct = 0
    for start in range(0, len(y), batch):
        correct += (head(backbone(x[start:start + batch])).argmax(1) == y[start:start + batch]).sum().item()
    return correct / len(y)


def fit_head(backbone, features, classes, train, args):
    """As orthofuse's linear probe: θ0's features of the whole training split computed once, a
    zero-initialised head, shuffled minibatches."""
    x, y = train
    with torch.no_grad():
        f = torch.cat([backbone(x[start:start + 1024]) for start in range(0, len(y), 1024)])
    head = nn.Linear(features, classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.head_lr, weight_decay=0.0)
    batches = minibatches(len(y), args.head_batch, seed=1)
    for _ in range(args.head_steps):
        index = next(batches)
        loss = F.cross_entropy(head(f[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for p in head.parameters():
        p.requires_grad_(False)
    return head


def minibatches(count, batch, seed):
    """Endless minibatches of indices: each epoch a fresh permutation."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - batch + 1, batch):
            yield order[start:start + batch]


def learning_rate(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


def fine_tune(backbone, head, train, args):
    base = [p.detach().clone() for p in backbone.parameters()]
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    x, y = train
    batches = minibatches(len(y), args.batch, seed=2)
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        index = next(batches)
        loss = F.cross_entropy(head(backbone(x[index])), y[index])
        if args.orthoreg > 0:
            loss = loss + args.orthoreg * orthoreg(backbone, base)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), args.clip)
        optimizer.step()
    return [p.detach() - p0 for p, p0 in zip(backbone.parameters(), base)]


def main():
    parser = argparse.ArgumentParser()
    add_model_options(parser, arch="mlp", input_shape="784")
    parser.add_argument("--base", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tasks", required=True, help="comma-separated task folders under --data")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--orthoreg", type=float, default=1.0)
    parser.add_argument("--head-steps", type=int, default=300)
    parser.add_argument("--head-batch", type=int, default=256)
    parser.add_argument("--head-lr", type=float, default=1e-2)
    parser.add_argument("--alphas", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    parse_model_options(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    started = time.perf_counter()
    state = load_safetensors(args.base)
    names = args.tasks.split(",")
    tasks, heads, vectors, zero_shot, fine_tuned = [], [], [], [], []
    for name in names:
        task = load_task(args.data, name)
        backbone, features = make_backbone(args, state)
        head = fit_head(backbone, features, args.classes, task["train"], args)
        zero_shot.append(accuracy(backbone, head, task["test"]))
        vectors.append(fine_tune(backbone, head, task["train"], args))
        fine_tuned.append(accuracy(backbone, head, task["test"]))
        tasks.append(task)
        heads.append(head)

    backbone, _ = make_backbone(args, state)
    base = [p.detach().clone() for p in backbone.parameters()]
    summed = [sum(v[i] for v in vectors) for i in range(len(base))]

    def merged(alpha):
        with torch.no_grad():
            for p, p0, s in zip(backbone.parameters(), base, summed):
                p.copy_(p0 + alpha * s)
        return backbone

    grid = [i / (args.alphas - 1) for i in range(args.alphas)]
    validation = [np.mean([accuracy(merged(a), h, t["validation"]) for t, h in zip(tasks, heads)]) for a in grid]
    best = grid[int(np.argmax(validation))]
    merged_test = [accuracy(merged(best), h, t["test"]) for t, h in zip(tasks, heads)]
    seconds = time.perf_counter() - started
    print(json.dumps({"pipeline": "torch", "arch": args.arch, "tasks": len(names), "steps": args.steps,
                      "threads": args.threads, "seconds": round(seconds, 2), "alpha": best,
                      "zero_shot": round(float(np.mean(zero_shot)), 4), "fine_tuned": round(float(np.mean(fine_tuned)), 4),
                      "merged": round(float(np.mean(merged_test)), 4)}))


if __name__ == "__main__":
    main()
