/* compiler/interp.h: the reference interpreter of the tensor IR, in f64.
 * The slow, simple oracle that every compiled kernel is checked against. Same calling
 * convention as the kernel ABI in tir.h, with T = double and no workspace. */
#ifndef NFC_INTERP_H
#define NFC_INTERP_H
#include "tir.h"

/* Returns 0, or -1 with a message (out of memory, malformed program). */
int interp_run(const tprog *p, int64_t n, int64_t row0, int64_t seed, const double *const *args,
               const double *scalars, double *const *outs, const double *params, const int64_t *param_off,
               char *err, size_t errlen);

/* The same, and *first_bad gets the index of the first node (in program order) whose value
 * holds a NaN or infinity, or -1. */
int interp_run_check(const tprog *p, int64_t n, int64_t row0, int64_t seed, const double *const *args,
                     const double *scalars, double *const *outs, const double *params, const int64_t *param_off,
                     int *first_bad, char *err, size_t errlen);

/* The counter-based random numbers of tir.h, for backends and tests. */
uint64_t tir_mix64(uint64_t z);
double   tir_rand_normal(int64_t seed, int salt, int64_t row, int w, int col);
double   tir_rand_logistic(int64_t seed, int salt, int64_t row, int w, int col);

#endif
