// CMPI: the OpenMPI C API as found by pkg-config (ompi-c).
#include <mpi.h>
