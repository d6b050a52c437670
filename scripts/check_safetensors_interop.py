# check_safetensors_interop: reads a .safetensors file with the reference library and prints what it holds.
"""Usage: python3 scripts/check_safetensors_interop.py FILE.safetensors

Needs `pip install safetensors numpy` (torch is not needed). Exits non-zero if the reference
library rejects the file, so it doubles as a check that orthofuse's writer is compatible.
"""
import sys

import numpy as np
from safetensors import safe_open


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = sys.argv[1]
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            names = list(handle.keys())
            print(f"{path}: {len(names)} tensors")
            for name in names:
                array = handle.get_tensor(name)
                preview = np.array2string(array.reshape(-1)[:6], precision=4, separator=", ")
                print(f"  {name}: dtype={array.dtype} shape={list(array.shape)} first={preview}")
    except Exception as error:  # the reference library raises its own error types
        print(f"{path}: rejected by the reference library: {error}", file=sys.stderr)
        return 1
    print("metadata:")
    for key in sorted(metadata):
        print(f"  {key!r}: {metadata[key]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
