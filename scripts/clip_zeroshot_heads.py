#!/usr/bin/env python3
"""clip_zeroshot_heads.py: a task's zero-shot head for orthofuse (`tasks[].head`) from CLIP's text
tower, as open_clip builds its zero-shot classifiers: for each class name, every prompt template
filled in, encoded, normalised, averaged and normalised again; `logit_scale` the model's own.

    python3 scripts/clip_zeroshot_heads.py --model ViT-B-32 --pretrained laion2b_s34b_b79k \\
        --classes data/cars/train.npz.classes.txt --output heads/cars.safetensors

--classes: one class name per line, in label order (scripts/images_to_npz.py writes this file).
--templates: `openai` (the 80 ImageNet prompts of the CLIP paper, the default), `simple` (the
short set open_clip also ships), or a file with one template per line using `{}` for the name.
--pretrained: an open_clip tag or a checkpoint file; `none` gives random weights (for trying
the pipeline). --model-config FILE registers a model of your own (open_clip's JSON format). Writes `weight` float32 [classes, embedding] and `logit_scale` (a scalar, the log
of the scale, as CLIP stores it), with the model and templates in the metadata.

Needs torch and open-clip-torch (`pip install open-clip-torch`) and the weights, which this
script does not download unless open_clip does.
"""
import argparse
import os
import sys

import torch
import open_clip
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from safetensors.torch import save_file


def templates(choice):
    if choice == "openai":
        return OPENAI_IMAGENET_TEMPLATES
    if choice == "simple":
        return SIMPLE_IMAGENET_TEMPLATES
    with open(choice) as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    if not lines or not all("{}" in line for line in lines):
        sys.exit(f"clip_zeroshot_heads.py: {choice}: every template needs a '{{}}' for the class name")
    return [lambda c, line=line: line.format(c) for line in lines]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    parser.add_argument("--model-config", help="a model config JSON (open_clip's format) to register first; "
                                               "--model is then its file name without .json")
    parser.add_argument("--pretrained", required=True, help="open_clip pretrained tag, a checkpoint file, or none")
    parser.add_argument("--classes", required=True, help="class names, one per line, in label order")
    parser.add_argument("--templates", default="openai", help="openai, simple, or a file of templates with {}")
    parser.add_argument("--output", required=True, help="the head .safetensors to write")
    args = parser.parse_args()
    with open(args.classes) as handle:
        names = [line.strip() for line in handle if line.strip()]
    if len(names) < 2:
        sys.exit(f"clip_zeroshot_heads.py: {args.classes}: needs at least two class names")
    prompts = templates(args.templates)
    if args.model_config:
        open_clip.add_model_config(args.model_config)
    pretrained = None if args.pretrained == "none" else args.pretrained
    model = open_clip.create_model(args.model, pretrained=pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    rows = []
    with torch.no_grad():
        for name in names:
            texts = tokenizer([prompt(name.replace("_", " ")) for prompt in prompts])
            embeddings = model.encode_text(texts).float()
            embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
            mean = embeddings.mean(dim=0)
            rows.append(mean / mean.norm())
        weight = torch.stack(rows).contiguous()
        logit_scale = model.logit_scale.detach().float().reshape(())
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_file({"weight": weight, "logit_scale": logit_scale}, args.output,
              metadata={"open_clip.model": args.model, "open_clip.pretrained": args.pretrained,
                        "templates": args.templates, "template_count": str(len(prompts))})
    print(f"{args.output}: weight {list(weight.shape)}, exp(logit_scale) {float(logit_scale.exp()):.2f}, "
          f"{len(prompts)} templates per class")


if __name__ == "__main__":
    main()
