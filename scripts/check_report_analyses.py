#!/usr/bin/env python3
"""check_report_analyses.py: recompute a run's task vector analyses with numpy (Float64) from the
saved task_vectors/*.safetensors and assert that report.json holds the same numbers.

Usage: scripts/check_report_analyses.py RUN_DIR

Checks cosine_similarity (whole flattened vector), cosine_similarity_per_layer, orthoreg_penalty
(‖G − I‖_F of each 2-D tensor, G the smaller Gram), sign_conflict (over entries where both task
vectors are non-zero, the fraction with opposite signs) and singular_values (the largest ones of
each 2-D tensor). Needs numpy and safetensors.
"""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def cosine(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def sign_conflict(a, b):
    both = (a != 0) & (b != 0)
    count = int(both.sum())
    return float(((np.sign(a) != np.sign(b)) & both).sum() / count) if count else 0.0


def gram_deviation(w):
    g = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return float(np.linalg.norm(g - np.eye(g.shape[0])))


def check(name, expected, actual, rtol, atol):
    expected, actual = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if expected.shape != actual.shape:
        raise AssertionError(f"{name}: shape {actual.shape} in report.json, numpy gives {expected.shape}")
    worst = float(np.max(np.abs(expected - actual) - rtol * np.abs(expected))) if expected.size else 0.0
    if not np.allclose(actual, expected, rtol=rtol, atol=atol):
        raise AssertionError(f"{name}: report.json {actual.ravel()[:6]} vs numpy {expected.ravel()[:6]} (worst excess {worst:.3g})")
    return float(np.max(np.abs(expected - actual))) if expected.size else 0.0


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    run = Path(sys.argv[1])
    report = json.loads((run / "report.json").read_text())
    tasks = report["cosine_similarity"]["tasks"]
    vectors = {t: {k: v.astype(np.float64) for k, v in load_file(str(run / "task_vectors" / f"{t}.safetensors")).items()} for t in tasks}
    names = sorted(vectors[tasks[0]])
    flat = {t: np.concatenate([vectors[t][n].ravel() for n in names]) for t in tasks}
    # The tensors analysed per layer: 2-D and changed by at least one task.
    matrices = [n for n in names if vectors[tasks[0]][n].ndim == 2 and any(np.any(vectors[t][n] != 0) for t in tasks)]

    worst = {}
    pairs = [(i, j) for i in range(len(tasks)) for j in range(len(tasks))]
    expected = np.zeros((len(tasks), len(tasks)))
    for i, j in pairs:
        expected[i, j] = cosine(flat[tasks[i]], flat[tasks[j]])
    worst["cosine_similarity"] = check("cosine_similarity", expected, report["cosine_similarity"]["matrix"], 1e-9, 1e-12)

    per_layer = report["cosine_similarity_per_layer"]
    assert sorted(per_layer) == sorted(matrices), f"per-layer tensors {sorted(per_layer)} vs {sorted(matrices)}"
    worst["cosine_similarity_per_layer"] = 0.0
    for n in matrices:
        for i, j in pairs:
            expected[i, j] = cosine(vectors[tasks[i]][n].ravel(), vectors[tasks[j]][n].ravel())
        worst["cosine_similarity_per_layer"] = max(worst["cosine_similarity_per_layer"],
                                                   check(f"cosine_similarity_per_layer[{n}]", expected, per_layer[n], 1e-9, 1e-12))

    for i, j in pairs:
        expected[i, j] = sign_conflict(flat[tasks[i]], flat[tasks[j]])
    assert report["sign_conflict"]["tasks"] == tasks
    worst["sign_conflict"] = check("sign_conflict", expected, report["sign_conflict"]["matrix"], 0, 1e-12)

    # The report's Gram and SVD come from float32 BLAS/LAPACK: compare at float32 precision.
    worst["orthoreg_penalty"] = 0.0
    worst["singular_values"] = 0.0
    for t in tasks:
        assert sorted(report["orthoreg_penalty"][t]) == sorted(matrices), f"orthoreg_penalty[{t}] tensors"
        for n in matrices:
            w = vectors[t][n]
            worst["orthoreg_penalty"] = max(worst["orthoreg_penalty"], check(
                f"orthoreg_penalty[{t}][{n}]", gram_deviation(w), report["orthoreg_penalty"][t][n], 1e-4, 1e-5))
            s = np.linalg.svd(w, compute_uv=False)
            reported = report["singular_values"][t][n]
            worst["singular_values"] = max(worst["singular_values"], check(
                f"singular_values[{t}][{n}]", s[:len(reported)], reported, 1e-4, 1e-5 * max(s[0], 1e-30)))
            assert len(reported) == min(32, len(s)), f"singular_values[{t}][{n}]: {len(reported)} values"

    print(f"{run}: {len(tasks)} task vectors, {len(matrices)} matrices; report.json equals numpy")
    for key, value in worst.items():
        print(f"  {key}: max |difference| {value:.3g}")


if __name__ == "__main__":
    main()
