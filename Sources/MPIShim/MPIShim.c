// MPIShim: function wrappers over OpenMPI's casting macros.
#include "MPIShim.h"

MPI_Comm ofmpi_comm_world(void) { return MPI_COMM_WORLD; }
MPI_Comm ofmpi_comm_null(void) { return MPI_COMM_NULL; }
MPI_Datatype ofmpi_byte(void) { return MPI_BYTE; }
MPI_Datatype ofmpi_float(void) { return MPI_FLOAT; }
MPI_Datatype ofmpi_double(void) { return MPI_DOUBLE; }
MPI_Datatype ofmpi_int64(void) { return MPI_INT64_T; }
MPI_Op ofmpi_op_sum(void) { return MPI_SUM; }
MPI_Op ofmpi_op_max(void) { return MPI_MAX; }
MPI_Op ofmpi_op_min(void) { return MPI_MIN; }
void *ofmpi_in_place(void) { return MPI_IN_PLACE; }
int ofmpi_any_source(void) { return MPI_ANY_SOURCE; }
int ofmpi_any_tag(void) { return MPI_ANY_TAG; }
int ofmpi_undefined(void) { return MPI_UNDEFINED; }
MPI_Errhandler ofmpi_errors_return(void) { return MPI_ERRORS_RETURN; }
int ofmpi_success(void) { return MPI_SUCCESS; }
int ofmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
int ofmpi_status_source(const MPI_Status *status) { return status->MPI_SOURCE; }
int ofmpi_status_tag(const MPI_Status *status) { return status->MPI_TAG; }
