// CBLAS: OpenBLAS's CBLAS interface and thread-count control, and the LAPACK routines it exports (lapack.h).
#include <cblas.h>
#include "lapack.h"
