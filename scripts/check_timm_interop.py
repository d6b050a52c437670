"""check_timm_interop.py: load an orthofuse ViT checkpoint into timm's VisionTransformer, strictly.

Usage: python3 scripts/check_timm_interop.py RUN_DIR/base.safetensors --heads 4 [--input x.npz]

Reads the safetensors file with the reference library, infers the architecture from the tensor
shapes (square images), builds timm's VisionTransformer(num_classes=0, global_pool='token'),
loads the tensors with strict=True (every name and shape must match), and prints the features of
a few inputs. A task vector or a merged model loads the same way. Needs torch, safetensors and
timm (pip install timm pillow --no-deps).
"""
import argparse
import math
import sys

import torch
from safetensors.torch import load_file

from torch_reference import import_timm


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--heads", type=int, required=True, help="attention heads (not visible in the shapes)")
    args = parser.parse_args()

    state = load_file(args.checkpoint)
    dim = state["cls_token"].shape[-1]
    channels, patch = state["patch_embed.proj.weight"].shape[1], state["patch_embed.proj.weight"].shape[-1]
    tokens = state["pos_embed"].shape[1]
    side = int(math.isqrt(tokens - 1)) * patch
    depth = len({name.split(".")[1] for name in state if name.startswith("blocks.")})
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] // dim

    timm, _ = import_timm()
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=side, patch_size=patch, in_chans=channels, embed_dim=dim, depth=depth,
                              num_heads=args.heads, mlp_ratio=mlp_ratio, num_classes=0, global_pool="token")
    missing, unexpected = model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        features = model(torch.rand(2, channels, side, side, generator=torch.Generator().manual_seed(0)))
    print(f"{args.checkpoint}: loaded into timm {timm.__version__} VisionTransformer "
          f"(img {side}, patch {patch}, dim {dim}, depth {depth}, heads {args.heads}) with strict=True; "
          f"{len(state)} tensors; features {tuple(features.shape)}, first {features[0, :4].tolist()}")


if __name__ == "__main__":
    sys.exit(main())
