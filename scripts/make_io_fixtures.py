# Generates the small IO test fixtures in Tests/CoreTests/Fixtures (run once; outputs are committed).
# Usage: python3 scripts/make_io_fixtures.py Tests/CoreTests/Fixtures   (needs numpy and safetensors)
import gzip, io, os, struct, sys, zipfile, zlib
import numpy as np
from safetensors.numpy import save_file

out = sys.argv[1]
def path(name): return os.path.join(out, name)

# safetensors written by the reference library, covering every dtype our reader converts.
save_file({
    "weight": np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(0.5) - np.float32(1),
    "half": np.array([1.0, -2.5, 65504.0, 2.0**-24], dtype=np.float16),
    "double": np.array(3.141592653589793, dtype=np.float64),
    "ints64": np.array([-3, 0, 1 << 40], dtype=np.int64),
    "ints32": np.array([-7, 7], dtype=np.int32),
    "ints16": np.array([-300, 300], dtype=np.int16),
    "ints8": np.array([-128, 127], dtype=np.int8),
    "bytes": np.array([[0, 255], [1, 128]], dtype=np.uint8),
    "flags": np.array([True, False, True]),
    "empty": np.zeros((0, 4), dtype=np.float32),
}, path("safetensors_reference.safetensors"), metadata={"format": "np", "note": "h\u00e9llo \"quoted\"\n"})

# .npy: dtypes, byte orders and format versions.
np.save(path("npy_f4_2x3.npy"), np.array([[1.5, -2, 0], [3.25, 1e-3, -7]], dtype="<f4"))
np.save(path("npy_f8_big_endian.npy"), np.array([1.0, -0.5, 1e10], dtype=">f8"))
np.save(path("npy_i2_big_endian.npy"), np.array([-2, 513, 32767], dtype=">i2"))
np.save(path("npy_0d.npy"), np.array(2.5, dtype="<f4"))
np.save(path("npy_fortran_2x3.npy"), np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
with open(path("npy_u1_v2.npy"), "wb") as f:
    np.lib.format.write_array(f, np.array([[0, 1], [254, 255]], dtype="|u1"), version=(2, 0))
with open(path("npy_i8_v3.npy"), "wb") as f:
    np.lib.format.write_array(f, np.array([-(1 << 33), 5], dtype="<i8"), version=(3, 0))

# .npz datasets, stored and deflated, and the malformed variants.
x_bytes = np.arange(24, dtype=np.uint8).reshape(4, 2, 3) * 10
np.savez(path("npz_stored_u8.npz"), x=x_bytes, y=np.array([0, 1, 2, 1], dtype=np.int64))
np.savez_compressed(path("npz_deflated_f4.npz"), x=np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4),
                    y=np.array([3, 0, 1, 2, 3], dtype=np.uint8))
np.savez_compressed(path("npz_f8_i4.npz"), x=np.array([[0.25, 0.5], [1.0, 2.0]], dtype=np.float64),
                    y=np.array([1, 0], dtype=np.int32))
np.savez(path("npz_missing_y.npz"), x=np.zeros((2, 2), dtype=np.float32), labels=np.array([0, 1]))
np.savez(path("npz_float_labels.npz"), x=np.zeros((2, 2), dtype=np.float32), y=np.array([0.0, 1.0], dtype=np.float32))
np.savez(path("npz_count_mismatch.npz"), x=np.zeros((3, 2), dtype=np.float32), y=np.array([0, 1], dtype=np.int64))
np.savez(path("npz_no_samples.npz"), x=np.zeros((0, 2), dtype=np.float32), y=np.zeros((0,), dtype=np.int64))
np.savez(path("npz_nonfinite.npz"), x=np.array([[0, 1], [np.nan, 2]], dtype=np.float32), y=np.array([0, 1], dtype=np.int64))

# IDX (MNIST layout): 3 images of 2x3 unsigned bytes and 3 labels.
images = np.array([[[0, 51, 102], [153, 204, 255]], [[1, 2, 3], [4, 5, 6]], [[255, 0, 255], [0, 255, 0]]], dtype=np.uint8)
labels = np.array([7, 0, 9], dtype=np.uint8)
idx_images = struct.pack(">IIII", 0x00000803, 3, 2, 3) + images.tobytes()
idx_labels = struct.pack(">II", 0x00000801, 3) + labels.tobytes()
open(path("idx_images.idx"), "wb").write(idx_images)
open(path("idx_labels.idx"), "wb").write(idx_labels)
# gzip-compressed, named without .gz: the reader must recognise the magic bytes.
with open(path("idx_images_gzipped.idx"), "wb") as raw:
    with gzip.GzipFile(filename="idx_images.idx", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(idx_images)
with open(path("idx_labels.idx.gz"), "wb") as raw:
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(idx_labels)
# Hand-made gzip header with every optional field: FEXTRA, FNAME, FCOMMENT and FHCRC.
flags = 0x04 | 0x08 | 0x10 | 0x02
header = bytes([0x1F, 0x8B, 8, flags]) + struct.pack("<I", 0) + bytes([0, 255])
extra = b"AB" + struct.pack("<H", 3) + b"xyz"
header += struct.pack("<H", len(extra)) + extra + b"labels.idx\0" + b"a comment\0"
header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
body = compressor.compress(idx_labels) + compressor.flush()
open(path("idx_labels_allflags.gz"), "wb").write(header + body + struct.pack("<II", zlib.crc32(idx_labels), len(idx_labels)))

# A deflate stream that never ends inside the file: a stored block claiming 65535 bytes.
# Entry written stored, then its method patched to deflate in both headers.
with zipfile.ZipFile(path("npz_endless_deflate.npz"), "w", zipfile.ZIP_STORED) as archive:
    archive.writestr("x.npy", b"\x00\xff\xff\x00\x00abc")
patched = bytearray(open(path("npz_endless_deflate.npz"), "rb").read())
patched[8:10] = struct.pack("<H", 8)
central = patched.find(b"PK\x01\x02")
patched[central + 10:central + 12] = struct.pack("<H", 8)
open(path("npz_endless_deflate.npz"), "wb").write(bytes(patched))
