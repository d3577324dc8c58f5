/* include/nfc.h: the nfc library, for programs that compile and run normalizing flows.
 *
 * Compile a .flow file (or a string) to a model, query its input, context and parameters,
 * set or load parameters, and evaluate log-densities, the forward and inverse transforms and
 * samples on batches. Errors are returned as data: the library never prints and never exits.
 *
 * Conventions: batches are row-major arrays of doubles, one row per sample: x is [n, D],
 * a context is [n, C], log-densities and log-determinants are [n] (in nats). The forward
 * transform maps data to latent, z = f(x); log p(x) = log p_base(z) + log|det df/dx|.
 * A model is not safe to use from several threads at once; separate models are independent.
 *
 * Example:
 *
 *     nfc_options opt;
 *     nfc_options_default(&opt);
 *     nfc_diagnostics *diags = NULL;
 *     nfc_model *m = nfc_compile_file("examples/moons.flow", &opt, &diags);
 *     if (!m) {
 *         for (int i = 0; i < nfc_diagnostics_count(diags); i++) {
 *             const nfc_diagnostic *d = nfc_diagnostics_get(diags, i);
 *             fprintf(stderr, "%s:%d:%d: %s\n", d->file, d->line, d->column, d->message);
 *         }
 *         nfc_diagnostics_free(diags);
 *         return 1;
 *     }
 *     nfc_diagnostics_free(diags);
 *     if (nfc_load_weights(m, "moons.safetensors") != 0)
 *         fprintf(stderr, "%s\n", nfc_last_error(m));
 *     double x[2 * 3] = { 0, 0, 1, 0.5, -1, 0.2 }, lp[3];
 *     nfc_log_prob(m, 3, x, NULL, lp);
 *     double samples[2 * 100];
 *     nfc_sample(m, 100, 7, 1.0, NULL, samples, NULL);
 *     nfc_free(m);
 */
#ifndef NFC_H
#define NFC_H
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NFC_VERSION_STRING "0.1.0"

enum { NFC_F32 = 1, NFC_F64 = 2 };
enum { NFC_BACKEND_JIT = 0, NFC_BACKEND_INTERP = 1 };

typedef struct {
    int         dtype;          /* NFC_F32 (default) or NFC_F64: the precision of the compiled code */
    int         backend;        /* NFC_BACKEND_JIT (default): native code through LLVM;
                                   NFC_BACKEND_INTERP: the reference interpreter (f64, slow) */
    int         opt_level;      /* 0..3 (default 2) */
    int         vector_width;   /* 0 (default): the target's native width; 1: scalar code */
    const char *cpu;            /* NULL (default): the host CPU */
    const char *flow;           /* which flow of a file with several; NULL: the first */
    uint64_t    init_seed;      /* seed of the parameter initializer (default 0) */
    double      init_scale;     /* > 0: zero-initialized parameters start at uniform(-s, s)
                                   instead (for testing untrained models); default 0 */
    int         threads;        /* JIT calls on large batches are split across this many
                                   threads (0, the default: the online CPUs); the results do
                                   not depend on it */
    int         no_fuse;        /* 1: no fusion in the compiled code (every intermediate value
                                   gets its workspace slot and its own loop; for comparisons
                                   and diagnosis); 0 (default): elementwise chains and the
                                   elementwise epilogue of a matrix product are computed in
                                   registers (docs/codegen.md, "Fusion") */
    int         recompute;      /* what training's backward pass does for the forward values:
                                   NFC_RECOMPUTE_NONE (default): keeps them;
                                   NFC_RECOMPUTE_INVERSE: rebuilds each layer's input from its
                                   output with the layer's inverse (a MAF layer's input is kept),
                                   so the workspace does not grow with depth; about one more
                                   evaluation of the conditioner nets per step
                                   (docs/training.md, "Memory") */
} nfc_options;

enum { NFC_RECOMPUTE_NONE = 0, NFC_RECOMPUTE_INVERSE = 1 };

void nfc_options_default(nfc_options *o);

/* ---- diagnostics ---- */
typedef struct {
    const char *file;       /* the .flow file; never NULL */
    int         line;       /* 1-based; 0 when the message is about the whole file */
    int         column;     /* 1-based byte column; 0 with line 0 */
    int         length;     /* bytes the message points at */
    const char *message;
    int         is_note;    /* 1: a note attached to the error before it */
} nfc_diagnostic;
typedef struct nfc_diagnostics nfc_diagnostics;

int                   nfc_diagnostics_count(const nfc_diagnostics *d);
const nfc_diagnostic *nfc_diagnostics_get(const nfc_diagnostics *d, int i);
/* Print clang-style (file:line:col, the source line, a caret); color when nonzero. */
void                  nfc_diagnostics_print(const nfc_diagnostics *d, FILE *out, int color);
void                  nfc_diagnostics_free(nfc_diagnostics *d);

/* ---- compiling ---- */
typedef struct nfc_model nfc_model;

/* Compile a file or a string. On success returns the model (and *diags holds warnings, or
 * NULL); on failure returns NULL and *diags the errors. diags may be NULL. */
nfc_model *nfc_compile_file(const char *path, const nfc_options *opt, nfc_diagnostics **diags);
nfc_model *nfc_compile_string(const char *name, const char *text, const nfc_options *opt, nfc_diagnostics **diags);
void       nfc_free(nfc_model *m);

/* The message of the last failed call on m ("" if none). Valid until the next call on m. */
const char *nfc_last_error(const nfc_model *m);

/* ---- what the model is ---- */
const char *nfc_model_name(const nfc_model *m);
int         nfc_model_dim(const nfc_model *m);            /* D */
int         nfc_model_context_dim(const nfc_model *m);    /* C, 0 without context */
const char *nfc_model_input_name(const nfc_model *m);
const char *nfc_model_context_name(const nfc_model *m);   /* NULL without context */
int         nfc_model_dtype(const nfc_model *m);
/* Hash of the model's structure and parameter shapes (checkpoints record it). */
uint64_t    nfc_model_hash(const nfc_model *m);

/* ---- parameters ---- */
int         nfc_param_count(const nfc_model *m);
int64_t     nfc_param_total(const nfc_model *m);          /* number of values */
const char *nfc_param_name(const nfc_model *m, int i);
int         nfc_param_shape(const nfc_model *m, int i, int64_t shape[2]);  /* returns the rank */
int64_t     nfc_param_numel(const nfc_model *m, int i);
int         nfc_param_find(const nfc_model *m, const char *name);         /* index or -1 */
int         nfc_param_get(const nfc_model *m, int i, double *out);
int         nfc_param_set(nfc_model *m, int i, const double *in);
/* All parameters at once, concatenated in index order (nfc_param_total values). */
const double *nfc_params(const nfc_model *m);
int         nfc_params_set(nfc_model *m, const double *all);
/* Parameters [at, at + n) of the flat array from v; -1 (nothing changed) if out of range.
 * Calls on disjoint ranges may run on several threads at once. */
int         nfc_params_set_range(nfc_model *m, int64_t at, int64_t n, const double *v);
/* Parameters [at, at + n) updated in place: fn(ctx, at, p, pf, n) gets the values p[0 .. n)
 * and their float copies pf (what f32 programs read), and must leave pf[i] == (float)p[i].
 * For loops that would otherwise copy the parameters out and back (an optimizer's step).
 * -1 (fn not called) if out of range or fn is NULL. Calls on disjoint ranges may run on several threads
 * at once. */
int         nfc_params_update_range(nfc_model *m, int64_t at, int64_t n,
                                    void (*fn)(void *ctx, int64_t at, double *p, float *pf, int64_t n), void *ctx);
/* Re-run the initializer. */
void        nfc_params_init(nfc_model *m, uint64_t seed, double init_scale);

/* Parameters from a safetensors file written by nfc (or any file with tensors of the
 * parameters' names and shapes, F32 or F64). A file made for a different model is an error. */
int         nfc_load_weights(nfc_model *m, const char *path);
/* Write the parameters to a safetensors file, atomically. */
int         nfc_save_weights(const nfc_model *m, const char *path);

/* ---- running ---- */
/* Each returns 0, or -1 with nfc_last_error(m). ctx is NULL for models without context. */
int nfc_log_prob(nfc_model *m, int64_t n, const double *x, const double *ctx, double *lp);
int nfc_forward(nfc_model *m, int64_t n, const double *x, const double *ctx, double *z, double *logdet);
int nfc_inverse(nfc_model *m, int64_t n, const double *z, const double *ctx, double *x, double *logdet);
/* n samples at the temperature (1: the model; < 1: concentrated); the same seed gives the
 * same samples whatever the backend's tiling. lp (optional) receives log p(x). */
int nfc_sample(nfc_model *m, int64_t n, uint64_t seed, double temperature, const double *ctx, double *x, double *lp);

/* ---- training ---- */
/* The mean negative log-likelihood over the batch and its gradient:
 *   loss = -(1/n) sum_r log p(x_r | ctx_r);  grad[k] = d loss / d param k  (nfc_param_total values).
 * Uses the current parameters. The gradient program is compiled on the first call. */
int nfc_loss_grad(nfc_model *m, int64_t n, const double *x, const double *ctx, double *loss, double *grad);

/* A worker evaluates loss gradients on its own workspace, so several workers of one model
 * may run at once on different threads (while nobody changes the parameters). Sums, not
 * means: loss_sum = -sum_r log p(x_r), grad_sum = its gradient; a caller that splits a batch
 * into shards adds the shards' sums in a fixed order, so the result does not depend on timing. */
typedef struct nfc_worker nfc_worker;
nfc_worker *nfc_worker_new(nfc_model *m);
int         nfc_worker_loss_grad(nfc_worker *w, int64_t n, const double *x, const double *ctx, double *loss_sum,
                                 double *grad_sum);
/* The same for 1 to nfc_worker_rows_max() rows (one call of the compiled program), with the
 * gradient sum written as the program makes it: nfc_grad_elem_size(m) bytes a value (4, float,
 * for f32 models on the JIT; 8, double, otherwise), nfc_param_total values. A caller that
 * adds shards in f64 itself saves a conversion pass over the parameters per shard. */
int         nfc_worker_loss_grad_raw(nfc_worker *w, int64_t n, const double *x, const double *ctx, double *loss_sum,
                                     void *grad);
int64_t     nfc_worker_rows_max(void);
/* Bytes of the compiled gradient program's workspace that each worker holds (0 where the
 * interpreter evaluates the gradient, -1 for NULL); *activations (may be NULL) gets the part
 * that holds the values of a tile of rows kept for the backward pass: with
 * NFC_RECOMPUTE_INVERSE it does not grow with depth. The rest accumulates the parameters'
 * gradients and grows with them. */
int64_t     nfc_worker_workspace_bytes(const nfc_worker *w, int64_t *activations);
int         nfc_grad_elem_size(const nfc_model *m);
const char *nfc_worker_error(const nfc_worker *w);
void        nfc_worker_free(nfc_worker *w);

/* Data-dependent initialization of every actnorm layer, in order: each gets the scale and
 * bias that make its output zero-mean and unit-variance per dimension on this batch. */
int nfc_actnorm_init(nfc_model *m, int64_t n, const double *x, const double *ctx);

/* Which user-level layer (1-based, as `nfc check` numbers them) first produces a non-finite
 * value on this batch, in the forward direction; 0 when every value is finite. desc gets the
 * layer's text. Runs the reference interpreter: for diagnosis, not for speed. */
int nfc_find_nonfinite(nfc_model *m, int64_t n, const double *x, const double *ctx, char *desc, size_t desclen);

/* ---- ahead-of-time builds ---- */
/* What nfc_aot_build writes: LLVM IR text, assembly, a relocatable object, a shared library,
 * or only the C header. Every kind but the header holds the whole library: the kernels, the
 * exported C functions "<prefix>_log_prob" ... (documented in the generated header), and the
 * parameters when embedded. */
enum { NFC_EMIT_LLVM = 0, NFC_EMIT_ASM = 1, NFC_EMIT_OBJ = 2, NFC_EMIT_SO = 3, NFC_EMIT_HEADER = 4 };
typedef struct {
    int         kind;           /* NFC_EMIT_* (default NFC_EMIT_SO) */
    const char *header;         /* also write the C header to this path (NULL: none) */
    const char *prefix;         /* symbol prefix, a C identifier (NULL: the flow's name) */
    const char *triple;         /* target triple, e.g. "aarch64-linux-gnu" (NULL: the host) */
    const char *cpu;            /* target CPU (NULL: the model's option, i.e. the host's CPU for
                                   the host, "generic" for other architectures) */
    int         no_sleef;       /* 1: nfc's own vector math instead of Sleef (no libsleef needed) */
    int         embed_weights;  /* 1 (default): the model's current parameters become constant
                                   data; 0: the library exports <prefix>_load_weights */
    const char *cc;             /* NFC_EMIT_SO: the C compiler driver used to link (NULL: $NFC_CC,
                                   else "cc" for the host and "<triple>-gcc" for other targets) */
    const char *source_name;    /* named in the header's first line (NULL: the .flow file) */
} nfc_aot_options;
void nfc_aot_options_default(nfc_aot_options *o);
/* Build the library for the model (its dtype, optimization level and vector width) and write
 * it to path, and the header to o->header; each file is written atomically (a temporary file
 * renamed into place), so a failure leaves no partial output. Returns 0 or -1 with
 * nfc_last_error(m) (a failed link includes the linker's own message). */
int nfc_aot_build(nfc_model *m, const char *path, const nfc_aot_options *o);
/* The same as nfc_aot_build with only kind set: LLVM IR, assembly or an object. */
int nfc_emit(nfc_model *m, const char *path, int kind);

#ifdef __cplusplus
}
#endif
#endif
