#!/usr/bin/env python3
"""check_clip_job.py: an `arch: clip_vit` job end to end against open_clip's own zero-shot accuracy.

Builds a small CLIP with open_clip (random weights, QuickGELU, both towers) and saves its whole
state dict as the job's `base:`; makes each task's zero-shot head with scripts/clip_zeroshot_heads.py
from the text tower; writes synthetic uint8 image splits [N, H, W, 3]; runs the job with
`mpirun -np 2 orthofuse run` (CLIP's normalisation, a few fine-tuning steps); and compares the
report's zero-shot accuracy of every task with open_clip's — encode_image of the same normalised
images, cosine against the same head, argmax — and the largest feature difference.

Usage: python3 scripts/check_clip_job.py [--orthofuse .build/release/orthofuse] [--work DIR]
Needs torch, safetensors and open-clip-torch (`/opt/mkvenv` in docs/clip.md) and OpenMPI.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
MODEL = {"embed_dim": 32, "quick_gelu": True,
         "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
CONV_GAIN = 40.0
TASKS = {"shapes": ["circle", "square", "triangle"], "colours": ["red", "green", "blue", "yellow"],
         "tints": ["one", "two", "three", "four", "five"]}
# A random text tower gives class embeddings so alike that most images get one class; this task's
# head is instead the normalised class means of open_clip's image features on its train split
# (written as a head file like the others), so its accuracy is far from chance.
PROTOTYPE_TASKS = {"tints"}


def synthetic_split(seed, classes, count):
    """uint8 images [N, 32, 32, 3]: noise with a class-dependent tint and stripe, labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % classes
    x = rng.integers(0, 256, size=(count, 32, 32, 3)).astype(np.float64) * 0.5
    for c in range(classes):
        rows = y == c
        x[rows, :, :, c % 3] += 12
        x[rows, (4 * c) % 32:(4 * c) % 32 + 4, :, :] += 8
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def clip_features(model, work, name, split):
    """open_clip's image features of a split, normalised as the job's `normalize` does; and its labels."""
    data = np.load(os.path.join(work, "data", f"{name}-{split}.npz"))
    images = torch.from_numpy(data["x"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        features = model.encode_image((images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    return features, data["y"]


def write_prototype_head(model, work, name, classes):
    from safetensors.torch import save_file
    features, labels = clip_features(model, work, name, "train")
    features = features / features.norm(dim=-1, keepdim=True)
    rows = [features[torch.from_numpy(labels == c)].mean(dim=0) for c in range(classes)]
    weight = torch.stack([r / r.norm() for r in rows]).contiguous()
    os.makedirs(os.path.join(work, "heads"), exist_ok=True)
    save_file({"weight": weight}, os.path.join(work, "heads", f"{name}.safetensors"))


def write_job(work, names):
    tasks = "\n".join(
        f"  - {{name: {name}, classes: {len(classes)}, train: data/{name}-train.npz, test: data/{name}-test.npz, "
        f"head: heads/{name}.safetensors, normalize: {{mean: {MEAN}, std: {STD}}}}}"
        for name, classes in names.items())
    vision = MODEL["vision_cfg"]
    text = f"""name: clip-check
seed: 7
model: {{arch: clip_vit, input: [3, 32, 32], patch: {vision['patch_size']}, width: {vision['width']}, depth: {vision['layers']}, heads: {vision['width'] // vision['head_width']}, output_dim: {MODEL['embed_dim']}, activation: quick_gelu}}
base: base.safetensors
tasks:
{tasks}
validation_fraction: 0.0
finetune: {{mode: attention, steps: 3, batch_size: 16, micro_batches: 1, optimizer: {{name: adamw, lr: 1.0e-5}}, orthoreg: {{lambda: 1.0}}}}
merge: {{methods: [task_arithmetic], alpha: {{from: 0.3, to: 0.3, count: 1}}}}
evaluate: {{disentanglement: false}}
runtime: {{blas_threads: 1}}
output: run
"""
    path = os.path.join(work, "job.yaml")
    with open(path, "w") as handle:
        handle.write(text)
    return path


def mpirun_environment():
    """A clean environment for mpirun: no variables of an enclosing MPI job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "OPAL_", "ORTE_"))}
    env["OMPI_MCA_pml"] = "ob1"
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orthofuse", default=os.path.join(HERE, "..", ".build", "release", "orthofuse"))
    parser.add_argument("--work", help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    import open_clip
    from safetensors.torch import save_file

    work = args.work or tempfile.mkdtemp(prefix="clip-check-")
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    config_path = os.path.join(work, "tiny-clip.json")
    with open(config_path, "w") as handle:
        json.dump(MODEL, handle)
    open_clip.add_model_config(config_path)
    torch.manual_seed(1)
    model = open_clip.create_model("tiny-clip", pretrained=None)
    model.eval()
    with torch.no_grad():
        # At open_clip's random initialisation the image features hardly depend on the image (the
        # class and position embeddings dominate), so every image would get one class; a stronger
        # patch embedding makes the predictions, and so the comparison, depend on each image.
        model.visual.conv1.weight.mul_(CONV_GAIN)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(work, "base.safetensors"), metadata={"format": "pt"})

    for index, (name, classes) in enumerate(TASKS.items()):
        with open(os.path.join(work, "data", f"{name}.classes.txt"), "w") as handle:
            handle.write("\n".join(classes) + "\n")
        for split, count, seed in (("train", 64, 10 + index), ("test", 96, 20 + index)):
            x, y = synthetic_split(seed, len(classes), count)
            np.savez(os.path.join(work, "data", f"{name}-{split}.npz"), x=x, y=y)
        if name in PROTOTYPE_TASKS:
            write_prototype_head(model, work, name, len(classes))
            continue
        subprocess.run([sys.executable, os.path.join(HERE, "clip_zeroshot_heads.py"), "--model", "tiny-clip",
                        "--model-config", config_path, "--pretrained", os.path.join(work, "base.safetensors"),
                        "--classes", os.path.join(work, "data", f"{name}.classes.txt"), "--templates", "simple",
                        "--output", os.path.join(work, "heads", f"{name}.safetensors")], check=True)

    job = write_job(work, TASKS)
    command = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2",
               os.path.abspath(args.orthofuse), "run", job, "--quiet"]
    subprocess.run(command, check=True, env=mpirun_environment(), cwd=work)
    report = json.load(open(os.path.join(work, "run", "report.json")))

    from safetensors.torch import load_file
    failures = 0
    for task in report["tasks"]:
        name = task["name"]
        features, labels = clip_features(model, work, name, "test")
        head = load_file(os.path.join(work, "heads", f"{name}.safetensors"))["weight"]
        cosine = (features / features.norm(dim=-1, keepdim=True)) @ head.T
        predictions = cosine.argmax(dim=-1).numpy()
        spread = np.bincount(predictions, minlength=head.shape[0]).tolist()
        accuracy = float((predictions == labels).mean())
        ours = task["zero_shot_accuracy"]
        margin = torch.sort(cosine, dim=-1).values
        closest = float((margin[:, -1] - margin[:, -2]).min())
        equal = abs(accuracy - ours) < 1e-12
        failures += not equal
        print(f"{name}: orthofuse zero-shot {ours:.4f}, open_clip {accuracy:.4f} ({len(predictions)} images, "
              f"predicted classes {spread}, smallest top-2 cosine margin {closest:.2e}){'' if equal else '  MISMATCH'}")
    print("check_clip_job: " + ("zero-shot accuracies equal" if not failures else f"{failures} task(s) differ") + f" (work: {work})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
