// lapack.h: the LAPACK routines orthofuse calls, as OpenBLAS exports them (Fortran ABI).
#ifndef ORTHOFUSE_LAPACK_H
#define ORTHOFUSE_LAPACK_H
#include <stddef.h>

/* Single-precision SVD by divide and conquer, A = U·diag(S)·VT, all column-major; every
   argument is passed by pointer. `jobz_length` is the hidden length of the character argument
   that gfortran-built LAPACK expects last (always 1 here; harmless if the routine ignores it). */
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s,
             float *u, const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork,
             int *iwork, int *info, size_t jobz_length);

/* The same by QR iteration: slower, but converges on matrices where divide and conquer reports
   info > 0. Two hidden character lengths (jobu, jobvt). */
void sgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, float *a, const int *lda,
             float *s, float *u, const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork,
             int *info, size_t jobu_length, size_t jobvt_length);

#endif
