/* compiler/tir.h: the tensor IR, the language of the programs nfc derives from a flow graph
 * (forward, inverse, log_prob, sample) and that the interpreter (interp.c) and the LLVM code
 * generator (cg.c) both execute. Op table: tops.def.
 *
 * A program is an array of nodes in topological order (operands refer to earlier nodes by
 * index). Every node has a static width w. A batched node holds one row of w values per
 * sample; the batch size n is a run-time argument. An unbatched node is a [rows, w] matrix
 * (parameters and constants). Nothing in a program depends on n except the rows it touches:
 * row r of every batched value depends only on row r of the inputs (and of RANDN's row r),
 * so any implementation may process rows in tiles of any size, in any order, in parallel.
 *
 * Loops (for the sequential inverse of autoregressive layers): nodes strictly between a
 * LOOP_BEGIN b and its LOOP_END e form the body. On entry b's value is in[0]'s value; the
 * body is evaluated; if fewer than iattr[0] trips have run, b's value becomes e.in[0]'s value
 * and the body runs again; after the last trip e's value is e.in[0]'s value. Body nodes may
 * use nodes before b; nodes after e may use e but no body node. Loops do not nest.
 *
 * LU layout: lu is [D, D]; L = I + strictly-lower(lu); U = strictly-upper(lu) + diag(exp(diag(lu))).
 * LU_FWD: y = L (U x); LU_INV: x = U^-1 (L^-1 y) (forward then back substitution); for
 * gradients, LU_U, LU_LT, LU_UT (products) and LU_INVT: y = L^-T (U^-T x), the adjoint of LU_INV.
 *
 * RANDN/RANDLOGISTIC (counter-based, so any tiling gives the same numbers): for global row
 * r = row0 + (the row's index within the call) and column c of a node with width w,
 *   k   = (uint64)(r * w + c) for RANDLOGISTIC;
 *         (uint64)(r * ((w + 1) / 2) + c / 2) for RANDN (columns 2j and 2j + 1 share a pair)
 *   h1  = mix64(seed ^ mix64(k * 2 + 0 + salt)),  h2 = mix64(seed ^ mix64(k * 2 + 1 + salt))
 *   u1  = ((h1 >> 11) + 0.5) * 2^-53,  u2 = ((h2 >> 11) + 0.5) * 2^-53      (both in (0, 1))
 *   normal:   sqrt(-2 L) * C for even c, sqrt(-2 L) * S for odd c (Box-Muller: the two are
 *             independent), L = tir_log01(u1), (S, C) = tir_sincos2pi(u2) (compiler/randn.h:
 *             log, sin and cos(2 pi .) from basic operations in a fixed order, so every
 *             backend gets the same bits)
 *   logistic: log(u1) - log1p(-u1)   (libm)
 * where mix64 is the splitmix64 finalizer (z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
 * z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31) and salt = iattr[0] (distinct per node).
 * The whole value (uniforms and transform) is computed in f64 and rounded once to the
 * program's dtype, so an f32 program never sees log(0) from a uniform rounded to 1.
 *
 * Kernel ABI, shared by every backend (JIT, AOT, the interpreter's wrapper), T = float or double:
 *   void prog(int64_t n, int64_t row0, int64_t seed, const T *const *args, const double *scalars,
 *             T *const *outs, const T *params, void *ws);
 * n rows are processed; row0 is the global index of the first (only RANDN/RANDLOGISTIC read
 * it, so a batch split into shards samples the same numbers as one call); args[k] is the
 * row-major [n, w] array of ARG k; outs[k] receives output k ([n, w] row-major); params is
 * every parameter of the flow graph, concatenated in index order, each row-major (offsets
 * from tir_param_offsets); ws is a workspace, 64-byte aligned, of the size the backend
 * reports for the program (independent of n). Buffers in args/outs need only the natural
 * alignment of T. Calls with different ws may run concurrently. A program with gradient
 * outputs (ngrad > 0) writes them to outs[nouts] (see tprog.gval).
 *
 * Sections: an implementation evaluates (1) the prologue, unbatched nodes that depend on no
 * batched node (parameters and what is computed from them alone); (2) batched nodes, per
 * tile of rows, accumulating TF_RED reductions over all tiles; (3) the epilogue, unbatched
 * nodes that depend on a reduction. tir_section() tells which is which.
 */
#ifndef NFC_TIR_H
#define NFC_TIR_H
#include "ir.h"

typedef enum {
#define X(e, name, arity, flags) T_##e,
#include "tops.def"
#undef X
    T_NUM_OPS
} t_op;

enum { TF_EW = 1, TF_RED = 2 };
typedef struct { const char *name; int arity; int flags; } t_opinfo;
extern const t_opinfo t_ops[T_NUM_OPS];

typedef int32_t tref;
#define T_MAX_IN 8

typedef struct {
    uint16_t op;
    int16_t  nin;
    int32_t  w;          /* width (features) */
    int32_t  rows;       /* 0: batched [n, w]; >= 1: unbatched [rows, w] */
    tref     in[T_MAX_IN];
    int32_t  iattr[2];
    double   fattr[1];
    int32_t  aux, naux;  /* GATHER: index list in prog->ints; CONSTTENSOR: offset in prog->consts */
    int32_t  src;        /* the flow-graph node this was derived from, -1 if none */
} tnode;

#define TPROG_MAX_IO 4

typedef struct {
    const char *name;                 /* "forward", "inverse", "log_prob", "sample" */
    arena      *ar;
    tnode      *nodes; int nn, cap_n;
    int32_t    *ints;  int nints, cap_ints;
    double     *consts; int nconsts, cap_consts;
    int         nargs;  int arg_w[TPROG_MAX_IO];   /* batched inputs and their widths */
    int         nscalars;
    int         nouts;  tref outs[TPROG_MAX_IO];   /* batched outputs */
    /* gradient outputs (grad.c): value gval[k] is the gradient of parameter gparam[k]; a
     * kernel writes them into outs[nouts], a flat array laid out like params, as the sum
     * over the call's rows (parameters without a gradient output get 0) */
    tref       *gval;   int32_t *gparam; int ngrad, cap_grad, cap_gparam;
    int64_t     param_total;                        /* length of the gradient array */
    int32_t     cur_src;                            /* src given to new nodes (derive sets it) */
    int32_t     compose_floor;                      /* t_gather reads through GATHER/CONCAT nodes
                                                       >= this only (derive's recomputed layers:
                                                       their forward must read its own input) */
} tprog;

/* ---- building (used by derive.c and by tests) ---- */
tprog *tprog_new(arena *ar, const char *name);
tref   t_arg(tprog *p, int k, int w);
tref   t_param(tprog *p, const ir_graph *g, int param);
tref   t_const(tprog *p, double v);
tref   t_consttensor(tprog *p, const double *v, int rows, int w);
tref   t_scalar(tprog *p, int k);
tref   t_un(tprog *p, t_op op, tref a);
tref   t_bin(tprog *p, t_op op, tref a, tref b);
tref   t_leaky(tprog *p, tref a, double slope);
tref   t_select(tprog *p, tref c, tref a, tref b);
tref   t_matmul(tprog *p, tref x, tref w);
tref   t_gather(tprog *p, tref x, const int32_t *idx, int n);
tref   t_concat(tprog *p, const tref *parts, int n);
tref   t_rowsum(tprog *p, tref x);
tref   t_diag(tprog *p, tref m);
tref   t_lu(tprog *p, t_op op, tref x, tref lu);
tref   t_rand(tprog *p, t_op op, int w, int salt);
tref   t_loop_begin(tprog *p, tref init, int trips);
tref   t_loop_end(tprog *p, tref next, tref begin);
void   t_output(tprog *p, tref v);
tref   t_batchsum(tprog *p, tref x);
tref   t_matmul_tn(tprog *p, tref a, tref b);
tref   t_matmul_nt(tprog *p, tref g, tref w);
tref   t_scatter(tprog *p, tref x, const int32_t *idx, int n, int width);
tref   t_diagembed(tprog *p, tref v);
void   t_grad_output(tprog *p, int param, tref v);

enum { SEC_PROLOGUE = 0, SEC_BATCHED = 1, SEC_EPILOGUE = 2 };
/* The section of every node (sec[] has p->nn entries). */
void   tir_sections(const tprog *p, int8_t *sec);

/* ---- queries ---- */
/* Offsets of each parameter in the flat params array, and the total (in elements). */
int64_t tir_param_offsets(const ir_graph *g, int64_t *off /* g->np entries, may be NULL */);
/* Check the program's invariants (operand order, shapes, loops); 0 if fine, else writes err. */
int     tir_verify(const tprog *p, char *err, size_t errlen);
void    tir_dump(const tprog *p, FILE *out);

#endif
