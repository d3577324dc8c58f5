/* compiler/aot.h: the exported C API of an ahead-of-time build (nfc MODEL -o NAME.so).
 *
 * Input: a cg_module whose kernels (tir.h kernel ABI) were built from the derive.h programs
 * in PROG_* order, and a description of the model. Output: the same module with
 *   - the parameters as an internal global: constant data when embedded, else a zeroed array
 *     that NAME_load_weights fills (from the weight-loader support code, aot_rt.c, linked in
 *     as bitcode built for the target);
 *   - exported wrappers with a plain C signature (see aot_header for the exact text):
 *       int64_t NAME_workspace_size(void);
 *       int NAME_log_prob(int64_t n, const T *x, [const T *ctx,] T *lp, void *ws);
 *       int NAME_forward(int64_t n, const T *x, [const T *ctx,] T *z, T *logdet, void *ws);
 *       int NAME_inverse(int64_t n, const T *z, [const T *ctx,] T *x, T *logdet, void *ws);
 *       int NAME_sample(int64_t n, uint64_t seed, double temperature, [const T *ctx,]
 *                       T *x, T *lp, void *ws);
 *       int NAME_load_weights(const void *bytes, size_t len)       (not embedded)
 *       int NAME_load_weights_file(const char *path)               (not embedded)
 *       int NAME_weights_loaded(void)
 *   - every other symbol (the kernels, the support code) internal, so that two models link
 *     into one program without clashes.
 * aot_header() writes the matching C header.
 *
 * Library code: never prints or exits. Only cg.c, jit.c, aot.c and cg_math.c include LLVM.
 */
#ifndef NFC_AOT_H
#define NFC_AOT_H
#include <stdio.h>
#include "cg.h"

/* Error codes returned by the generated functions (also written into the header). */
enum {
    AOT_OK = 0,
    AOT_EINVAL = -1,     /* a NULL pointer, n < 0, a bad temperature */
    AOT_EWS = -2,        /* workspace NULL or not 64-byte aligned */
    AOT_ENOWEIGHTS = -3, /* weights not embedded and not loaded yet */
    AOT_EFORMAT = -4,    /* load_weights: not a safetensors file, or truncated */
    AOT_EMODEL = -5,     /* load_weights: a tensor missing, of the wrong shape, or another model */
    AOT_EVALUE = -6,     /* load_weights: a non-finite value or an unsupported dtype */
    AOT_EIO = -7         /* load_weights_file: cannot open or read the file */
};

typedef struct {
    const char    *prefix;     /* symbol prefix, a C identifier */
    int            D, C;       /* input and context widths (C = 0: no context) */
    int            dtype;      /* DT_F32 / DT_F64 */
    int64_t        ptotal;     /* parameter elements */
    const double  *params;     /* embedded parameters (ptotal values), or NULL: loaded at run time */
    int            np;         /* parameters, for the loader's table */
    const char *const *pnames;
    const int64_t *pshape;     /* np x 2 (second entry 0 for rank 1) */
    const int64_t *poff;       /* np offsets into the flat array */
    uint64_t       hash;       /* model hash, checked against "nfc.model_hash" metadata */
} aot_spec;

/* Adds the wrappers to m (kernel i = program i, in PROG_* order). The support code for
 * loading weights is linked from the bitcode for m's architecture (x86_64 or aarch64);
 * another architecture with params == NULL is an error. Runs the optimizer again over the
 * new functions. Returns 0, or -1 with a message. */
int aot_finish(cg_module *m, const aot_spec *s, char *err, size_t errlen);

/* Writes the header for the library aot_finish made. guard/what go into comments. */
void aot_header(FILE *out, const aot_spec *s, const char *flow_file, int64_t ws_bytes, int vector_width,
                const char *triple, const char *cpu, int sleef);

#endif
