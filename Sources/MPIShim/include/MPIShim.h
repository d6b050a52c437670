// MPIShim: OpenMPI's handle macros, which Swift cannot import, exposed as functions.
#ifndef ORTHOFUSE_MPISHIM_H
#define ORTHOFUSE_MPISHIM_H

#include <mpi.h>

MPI_Comm ofmpi_comm_world(void);
MPI_Comm ofmpi_comm_null(void);
MPI_Datatype ofmpi_byte(void);
MPI_Datatype ofmpi_float(void);
MPI_Datatype ofmpi_double(void);
MPI_Datatype ofmpi_int64(void);
MPI_Op ofmpi_op_sum(void);
MPI_Op ofmpi_op_max(void);
MPI_Op ofmpi_op_min(void);
void *ofmpi_in_place(void);
int ofmpi_any_source(void);
int ofmpi_any_tag(void);
/// The color with which MPI_Comm_split leaves a rank out of every group.
int ofmpi_undefined(void);
MPI_Errhandler ofmpi_errors_return(void);
int ofmpi_success(void);
int ofmpi_thread_funneled(void);
/// The source and tag of a completed MPI_Status (Swift cannot read the struct portably).
int ofmpi_status_source(const MPI_Status *status);
int ofmpi_status_tag(const MPI_Status *status);

#endif
