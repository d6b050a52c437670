#!/usr/bin/env python3
"""check_images_to_npz.py: scripts/images_to_npz.py on a synthetic class-per-folder tree (images
of several sizes and modes), against torchvision's CLIP preprocessing (Resize(SIZE, BICUBIC),
CenterCrop(SIZE), RGB): the same pixels, labels in sorted class order, the classes file.

    PYTHON=/opt/mkvenv/bin/python; $PYTHON scripts/check_images_to_npz.py

Needs numpy, Pillow and torchvision (`pip install torchvision`, in the PyTorch venv).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
from torchvision import transforms

SIZE = 32


def main():
    random = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as root:
        tree = os.path.join(root, "tree")
        shapes = {"cat": [(40, 50), (64, 33), (32, 32)], "dog": [(90, 45), (33, 70)], "bird": [(50, 50)]}
        expected = []
        reference = transforms.Compose([transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
                                        transforms.CenterCrop(SIZE)])
        for name in sorted(shapes):
            os.makedirs(os.path.join(tree, name))
            for index, (width, height) in enumerate(shapes[name]):
                pixels = random.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                image = Image.fromarray(pixels) if index % 2 == 0 else Image.fromarray(pixels[:, :, 0], mode="L")
                path = os.path.join(tree, name, f"{index:03d}.png")
                image.save(path)
                with Image.open(path) as stored:
                    expected.append((np.asarray(reference(stored.convert("RGB")), dtype=np.uint8), sorted(shapes).index(name)))
        output = os.path.join(root, "out", "train.npz")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images_to_npz.py")
        subprocess.run([sys.executable, script, tree, "--size", str(SIZE), "--output", output], check=True)
        data = np.load(output)
        assert data["x"].dtype == np.uint8 and data["x"].shape == (len(expected), SIZE, SIZE, 3), data["x"].shape
        assert list(data["y"]) == [label for _, label in expected], list(data["y"])
        for index, (pixels, _) in enumerate(expected):
            assert np.array_equal(data["x"][index], pixels), f"image {index} differs from torchvision's"
        with open(output + ".classes.txt") as handle:
            assert handle.read().split() == sorted(shapes)
    print(f"images_to_npz.py: {len(expected)} images equal torchvision's Resize({SIZE}, BICUBIC) + CenterCrop({SIZE}); labels and classes file in sorted order")


if __name__ == "__main__":
    main()
