#!/usr/bin/env python3
"""images_to_npz.py: a class-per-folder image tree as an orthofuse .npz dataset, with CLIP's
preprocessing (resize the shorter side to SIZE with bicubic interpolation, centre crop SIZE×SIZE,
RGB), exactly as torchvision's Resize(SIZE, BICUBIC) + CenterCrop(SIZE) do it on PIL images.

    python3 scripts/images_to_npz.py ROOT --size 224 --output data/task/train.npz

ROOT/<class>/<image> (the classes sorted by name are the labels 0, 1, …, as torchvision's
ImageFolder numbers them; files sorted by name within each class). Writes `x` uint8 [N, SIZE, SIZE, 3]
(channels last: orthofuse moves them channels first for the ViT) and `y` int64 [N], and
OUTPUT's classes beside it (`<output>.classes.txt`, one name per line in label order — the input
of scripts/clip_zeroshot_heads.py). Normalisation is not applied here: give the task
`normalize: {mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711]}`.

Needs Pillow (and numpy). `scripts/check_images_to_npz.py` checks it against torchvision.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def resized_shorter_side(image, size):
    """torchvision's Resize(size) for an int size: the shorter side becomes `size`, the longer
    int(size * long / short), bicubic."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    return image.resize((new_width, new_height), Image.BICUBIC)


def centre_crop(image, size):
    """torchvision's CenterCrop(size) for an image at least `size` on each side."""
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def preprocess(path, size):
    with Image.open(path) as image:
        return np.asarray(centre_crop(resized_shorter_side(image.convert("RGB"), size), size), dtype=np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder with one subfolder of images per class")
    parser.add_argument("--size", type=int, default=224, help="side of the square images (default 224)")
    parser.add_argument("--output", required=True, help="the .npz to write")
    args = parser.parse_args()
    if args.size < 1:
        sys.exit("images_to_npz.py: --size must be positive")
    if not os.path.isdir(args.root):
        sys.exit(f"images_to_npz.py: {args.root}: not a folder")
    classes = sorted(entry for entry in os.listdir(args.root) if os.path.isdir(os.path.join(args.root, entry)))
    if len(classes) < 2:
        sys.exit(f"images_to_npz.py: {args.root}: needs at least two class folders, found {len(classes)}")
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(args.root, name)
        files = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in EXTENSIONS)
        if not files:
            sys.exit(f"images_to_npz.py: {folder}: no images")
        for file in files:
            try:
                images.append(preprocess(os.path.join(folder, file), args.size))
            except OSError as error:
                sys.exit(f"images_to_npz.py: {os.path.join(folder, file)}: cannot read ({error})")
            labels.append(label)
    x = np.stack(images)
    y = np.asarray(labels, dtype=np.int64)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    temporary = args.output + ".tmp.npz"
    np.savez(temporary, x=x, y=y)
    os.replace(temporary, args.output)
    with open(args.output + ".classes.txt", "w") as handle:
        handle.write("\n".join(classes) + "\n")
    print(f"{args.output}: {len(y)} images of {len(classes)} classes, x {list(x.shape)} uint8")


if __name__ == "__main__":
    main()
