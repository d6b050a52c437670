"""check_heads_torch.py: a run's zero-shot accuracies recomputed in PyTorch (timm for the ViT).

Loads θ0 (the run's base.safetensors) into the PyTorch twin's model (scripts/job_torch.py), each
task's frozen head from the run's heads/, the task's test split as orthofuse reads it, and prints
the test accuracy beside the zero_shot_accuracy of the run's report.json. Equal figures say that
orthofuse's forward pass and data reading agree with PyTorch's on real data.

Usage: python scripts/check_heads_torch.py RUN_DIR --data DATA [--arch vit --input 1,28,28 --patch 7
       --width 64 --depth 4 --heads 4 | --arch mlp --input 784 --hidden 256,256]
"""
import argparse
import json
import os

import numpy as np
import torch

from job_torch import accuracy, add_model_options, inputs, load_safetensors, make_backbone, parse_model_options


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--data", required=True)
    add_model_options(parser, arch="vit", input_shape="1,28,28")
    args = parser.parse_args()
    parse_model_options(args)
    backbone, features = make_backbone(args, load_safetensors(os.path.join(args.run, "base.safetensors")))
    report = json.load(open(os.path.join(args.run, "report.json")))
    for task in report["tasks"]:
        name = task["name"]
        weights = load_safetensors(os.path.join(args.run, "heads", f"{name}.safetensors"))
        head = torch.nn.Linear(features, weights["head.weight"].shape[0])
        with torch.no_grad():
            head.weight.copy_(weights["head.weight"])
            head.bias.copy_(weights["head.bias"])
        test = np.load(os.path.join(args.data, name, "test.npz"))
        torch_accuracy = accuracy(backbone, head, (inputs(test["x"]), torch.from_numpy(test["y"]).long()))
        print(f"{name}: torch {torch_accuracy:.4f}, orthofuse {task['zero_shot_accuracy']:.4f}")


if __name__ == "__main__":
    main()
