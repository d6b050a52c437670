"""bench_torch.py: the PyTorch twin of `orthofuse bench train`'s step (MLP, AdamW, ± OrthoReg).

Needs a CPU torch (pip install torch==2.13.0+cpu from the local wheel folder), and timm for the
ViT (pip install timm pillow --no-deps); `--open-clip ViT-B-32` times open_clip's image tower
instead (pip install open-clip-torch). One thread, like
one orthofuse rank. Prints one ms/step line per setting (scripts/bench.sh pairs them with `orthofuse bench train`).
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def orthoreg(model, base):
    """Plain-norm OrthoReg (the released code's form): sum over 2-D weights of ||G - I||_F."""
    total = 0.0
    for (name, p), p0 in zip(model.named_parameters(), base):
        if p.dim() != 2:
            continue
        delta = p - p0
        m, n = delta.shape
        gram = delta.t() @ delta if m >= n else delta @ delta.t()
        total = total + torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0]), "fro")
    return total


def make_mlp(input_dim, hidden):
    layers = []
    fan_in = input_dim
    for width in hidden:
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    return nn.Sequential(*layers), fan_in


def make_vit():
    """The demo's ViT from timm (28x28, patch 7, width 64, depth 4, 4 heads), features only."""
    from torch_reference import import_timm
    timm, _ = import_timm()
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, embed_dim=64, depth=4, num_heads=4,
                              mlp_ratio=4, num_classes=0, global_pool="token")
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), model), 64


def make_open_clip(name):
    """open_clip's image tower of `name` (e.g. ViT-B-32) with random weights; features [B, E]."""
    import open_clip
    visual = open_clip.create_model(name, pretrained=None).visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    return nn.Sequential(nn.Unflatten(1, (3, size, size)), visual), visual.output_dim, 3 * size * size


def step_ms(backbone, fan_in, input_dim, classes, batch, steps, lam):
    torch.manual_seed(1)
    head = nn.Linear(fan_in, classes)
    for p in head.parameters():
        p.requires_grad_(False)
    base = [p.detach().clone() for p in backbone.parameters()]
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-3, weight_decay=0.1)
    x = torch.rand(batch * 8, input_dim)
    y = torch.randint(0, classes, (batch * 8,))
    times = []
    for run in range(4):
        start = time.perf_counter()
        for step in range(steps):
            index = torch.randint(0, batch * 8, (batch,))
            loss = F.cross_entropy(head(backbone(x[index])), y[index])
            if lam > 0:
                loss = loss + lam * orthoreg(backbone, base)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
        if run > 0:
            times.append((time.perf_counter() - start) * 1000 / steps)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--input", type=int, default=784)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--open-clip", help="time only open_clip's image tower of this model (e.g. ViT-B-32)")
    parser.add_argument("--lambdas", default="0,1", help="OrthoReg λ values to time (default 0,1)")
    args = parser.parse_args()
    lambdas = [float(v) for v in args.lambdas.split(",")]
    torch.set_num_threads(1)
    if args.open_clip:
        for lam in lambdas:
            backbone, width, input_dim = make_open_clip(args.open_clip)
            ms = step_ms(backbone, width, input_dim, args.classes, args.batch, args.steps, lam)
            print(f"torch open_clip {args.open_clip} batch {args.batch} adamw orthoreg={lam:g}: {ms:.3f} ms/step")
        return
    hidden = [int(h) for h in args.hidden.split(",")]
    for lam in lambdas:
        backbone, width = make_mlp(args.input, hidden)
        ms = step_ms(backbone, width, args.input, args.classes, args.batch, args.steps, lam)
        print(f"torch mlp {args.input}-{'-'.join(map(str, hidden))}-{args.classes} batch {args.batch} "
              f"adamw orthoreg={lam:g}: {ms:.3f} ms/step")
    try:
        for lam in lambdas:
            backbone, width = make_vit()
            ms = step_ms(backbone, width, 784, args.classes, args.batch, max(args.steps // 5, 10), lam)
            print(f"torch vit 28x28 p7 d64 depth4 batch {args.batch} adamw orthoreg={lam:g}: {ms:.3f} ms/step")
    except ImportError as error:
        print(f"torch vit: skipped (timm not importable: {error}); pip install timm pillow --no-deps")


if __name__ == "__main__":
    main()
