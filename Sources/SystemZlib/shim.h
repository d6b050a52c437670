// shim.h: zlib, for its CRC-32 (the checksum of zip entries and gzip members).
#include <zlib.h>
