// CBLAS: OpenBLAS's CBLAS and LAPACKE interface, plus its thread-count control.
#include <cblas.h>
