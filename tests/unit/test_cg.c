/* tests/unit/test_cg.c: the LLVM code generator and the ORC JIT (compiler/cg.c, jit.c).
 * Programs are built with the tir.h builders on a small fake flow graph, compiled, run in
 * the JIT and compared with a plain C evaluation written here (in double):
 * - every elementwise op, with the broadcast forms (width-1 operand, unbatched row, const,
 *   scalar), f32 and f64, V = 1 and native V, n in {1, V-1, V, V+1, 3V+5, 1000}, Sleef on
 *   and off; relative tolerance 1e-6 (f32; 4e-6 where tanh is involved) and 1e-13 (f64)
 * - MATMUL of several shapes, unbatched precomputation (params, consttensors, scalars,
 *   DIAG, ROWSUM, unbatched elementwise [rows > 1] and loops), GATHER/CONCAT/ROWSUM
 * - LU_FWD against an explicit L U product, LU_FWD then LU_INV round trip
 * - LOOP (x <- 0.5 x + c, 7 trips, against the closed form), and LOOP_BEGIN used after it
 * - RANDN/RANDLOGISTIC bit for bit against the tir.h formula, and row0 sharding
 * - code for x86-64-v3 (AVX2) and x86-64 (SSE2) runs correctly on an AVX-512 host, and
 *   calls the Sleef variants of its own ISA
 * - emitting LLVM IR, assembly and objects; broken programs and bad options are rejected
 * User buffers end at a PROT_NONE page, so the generated code would fault on any access
 * past the end of an input or output; the workspace is filled with NaN before each call.
 * - fusion: hand-built programs and every example's programs, fused against no_fuse
 * NFC_CG_TIMING=1 prints compile times and fusion counts (lines starting with '#'). */
#include "randn.h"
#include "t.h"

#include <math.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cg.h"
#include "derive.h"
#include "front.h"
#include "grad.h"
#include "init.h"
#include "interp.h"
#include "jit.h"

static nfc_jit *J;
static int uniq;

/* The ASan build checks the memory safety of cg.c and jit.c, whose work does not depend on
 * the optimization level; LLVM's own optimizer is much slower there (its allocations go
 * through ASan), so that build compiles at O0 wherever a test doesn't choose a level. */
#if defined(__SANITIZE_ADDRESS__)
enum { TEST_OPT = 0 };
#else
enum { TEST_OPT = 2 };
#endif

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x1234567;
static double urand(void) {
    rng_state += 0x9e3779b97f4a7c15ull;
    uint64_t z = rng_state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53;
}
static double uniform(double lo, double hi) { return lo + (hi - lo) * urand(); }

/* buffer whose last byte is followed by an inaccessible page */
static void *galloc(size_t bytes) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = (bytes + pg - 1) / pg + 1;
    char *m = mmap(NULL, np * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) abort();
    mprotect(m + (np - 1) * pg, pg, PROT_NONE);
    return m + (np - 1) * pg - bytes;
}
static void gfree(void *p, size_t bytes) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = (bytes + pg - 1) / pg + 1;
    munmap((char *)p + bytes - (np - 1) * pg, np * pg);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------ reference evaluation */

static uint64_t mix64(uint64_t z) {
    z ^= z >> 30;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 27;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z;
}
/* tir.h's definition, written out again */
static double ref_rand(int op, int64_t seed, int salt, int64_t r, int w, int c) {
    uint64_t k = op == T_RANDN ? (uint64_t)(r * ((w + 1) / 2) + c / 2) : (uint64_t)(r * w + c);
    uint64_t h1 = mix64((uint64_t)seed ^ mix64(k * 2 + 0 + (uint64_t)salt));
    uint64_t h2 = mix64((uint64_t)seed ^ mix64(k * 2 + 1 + (uint64_t)salt));
    double u1 = ((double)(h1 >> 11) + 0.5) * 0x1p-53, u2 = ((double)(h2 >> 11) + 0.5) * 0x1p-53;
    if (op == T_RANDN) {   /* compiler/randn.h's log, sine and cosine, libm's sqrt */
        double l = tir_log01(u1), sn, cs;
        double a = -2.0 * l;
        double rad = sqrt(a);
        tir_sincos2pi(u2, &sn, &cs);
        return rad * (c % 2 ? sn : cs);
    }
    return log(u1) - log1p(-u1);
}

static double softplus(double x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }

static double ref_un(int op, double x, double a) {
    switch (op) {
    case T_NEG: return -x;
    case T_EXP: return exp(x);
    case T_LOG: return log(x);
    case T_LOG1P: return log1p(x);
    case T_EXPM1: return expm1(x);
    case T_TANH: return tanh(x);
    case T_SIGMOID: return 1 / (1 + exp(-x));
    case T_LOGSIGMOID: return -softplus(-x);
    case T_SOFTPLUS: return softplus(x);
    case T_RELU: return x > 0 || isnan(x) ? x : 0;   /* NaN stays NaN, as in PyTorch */
    case T_ELU: return x > 0 ? x : expm1(x);
    case T_GELU: return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case T_LEAKY: return x > 0 ? x : a * x;
    case T_SQUARE: return x * x;
    case T_ABS: return fabs(x);
    case T_STEP: return x > 0;
    case T_NONZERO: return x != 0;
    }
    return NAN;
}

static double ref_bin(int op, double a, double b) {
    switch (op) {
    case T_ADD: return a + b;
    case T_SUB: return a - b;
    case T_MUL: return a * b;
    case T_DIV: return a / b;
    case T_MAX: return isnan(a) || isnan(b) ? NAN : a > b ? a : b;   /* NaN if either is */
    case T_MIN: return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
    }
    return NAN;
}

static double rat(const tnode *v, const double *b, int64_t r, int j) {
    return b[(v->rows == 1 ? 0 : r) * v->w + (v->w == 1 ? 0 : j)];
}

/* plain evaluation of a program in double: values [rows or n][w] */
static void ref_eval(const tprog *p, const int64_t *poff, int64_t n, int64_t row0, int64_t seed, double *const *args,
                     const double *scalars, const double *params, double **outs) {
    double **v = calloc((size_t)p->nn, sizeof *v);
    int trip = 0;
    for (int i = 0; i < p->nn; i++) {
        const tnode *t = &p->nodes[i];
        int64_t R = t->rows ? t->rows : n;
        int w = t->w;
        if (!v[i]) v[i] = calloc((size_t)(R * w), sizeof(double));
        double *o = v[i];
        const tnode *a = t->nin ? &p->nodes[t->in[0]] : NULL;
        const double *A = t->nin ? v[t->in[0]] : NULL;
        switch (t->op) {
        case T_ARG: memcpy(o, args[t->iattr[0]], sizeof(double) * (size_t)(n * w)); break;
        case T_PARAM: memcpy(o, params + poff[t->iattr[0]], sizeof(double) * (size_t)(R * w)); break;
        case T_CONST: o[0] = t->fattr[0]; break;
        case T_CONSTTENSOR: memcpy(o, p->consts + t->aux, sizeof(double) * (size_t)(R * w)); break;
        case T_SCALAR: o[0] = scalars[t->iattr[0]]; break;
        case T_MATMUL:
            for (int64_t r = 0; r < n; r++)
                for (int j = 0; j < w; j++) {
                    double s = 0;
                    for (int k = 0; k < a->w; k++) s += A[r * a->w + k] * rat(&p->nodes[t->in[1]], v[t->in[1]], k, j) ;
                    o[r * w + j] = s;
                }
            break;
        case T_GATHER:
            for (int64_t r = 0; r < n; r++)
                for (int j = 0; j < w; j++) o[r * w + j] = A[r * a->w + p->ints[t->aux + j]];
            break;
        case T_CONCAT:
            for (int64_t r = 0, c = 0; r < n; r++, c = 0)
                for (int k = 0; k < t->nin; k++) {
                    int kw = p->nodes[t->in[k]].w;
                    memcpy(o + r * w + c, v[t->in[k]] + r * kw, sizeof(double) * (size_t)kw);
                    c += kw;
                }
            break;
        case T_ROWSUM:
            for (int64_t r = 0; r < R; r++) {
                double s = 0;
                for (int j = 0; j < a->w; j++) s += A[r * a->w + j];
                o[r] = s;
            }
            break;
        case T_DIAG:
            for (int j = 0; j < w; j++) o[j] = A[j * a->w + j];
            break;
        case T_LU_FWD:
        case T_LU_INV: {
            const double *M = v[t->in[1]];
            int D = w;
            /* explicit L and U, then a product or two triangular solves */
            for (int64_t r = 0; r < n; r++) {
                const double *xr = A + r * D;
                double *y = o + r * D, u[64];
                if (t->op == T_LU_FWD) {
                    for (int k = 0; k < D; k++) {
                        u[k] = 0;
                        for (int j = k; j < D; j++) u[k] += (j == k ? exp(M[k * D + k]) : M[k * D + j]) * xr[j];
                    }
                    for (int k = 0; k < D; k++) {
                        y[k] = 0;
                        for (int j = 0; j <= k; j++) y[k] += (j == k ? 1 : M[k * D + j]) * u[j];
                    }
                } else {
                    for (int k = 0; k < D; k++) {
                        u[k] = xr[k];
                        for (int j = 0; j < k; j++) u[k] -= M[k * D + j] * u[j];
                    }
                    for (int k = D - 1; k >= 0; k--) {
                        double s = u[k];
                        for (int j = k + 1; j < D; j++) s -= M[k * D + j] * y[j];
                        y[k] = s / exp(M[k * D + k]);
                    }
                }
            }
            break;
        }
        case T_RANDN:
        case T_RANDLOGISTIC:
            for (int64_t r = 0; r < n; r++)
                for (int j = 0; j < w; j++) o[r * w + j] = ref_rand(t->op, seed, t->iattr[0], row0 + r, w, j);
            break;
        case T_BATCHSUM:
            for (int j = 0; j < w; j++) {
                o[j] = 0;
                for (int64_t r = 0; r < n; r++) o[j] += A[r * a->w + j];
            }
            break;
        case T_MATMUL_TN: {
            const tnode *b = &p->nodes[t->in[1]];
            for (int i2 = 0; i2 < R; i2++)
                for (int j = 0; j < w; j++) {
                    double acc = 0;
                    for (int64_t r = 0; r < n; r++) acc += A[r * a->w + i2] * v[t->in[1]][r * b->w + j];
                    o[i2 * w + j] = acc;
                }
            break;
        }
        case T_MATMUL_NT: {
            const tnode *W = &p->nodes[t->in[1]];
            for (int64_t r = 0; r < n; r++)
                for (int i2 = 0; i2 < w; i2++) {
                    double acc = 0;
                    for (int j = 0; j < a->w; j++) acc += A[r * a->w + j] * rat(W, v[t->in[1]], i2, j);
                    o[r * w + i2] = acc;
                }
            break;
        }
        case T_SCATTER:
            memset(o, 0, sizeof(double) * (size_t)(n * w));
            for (int64_t r = 0; r < n; r++)
                for (int j = 0; j < a->w; j++) o[r * w + p->ints[t->aux + j]] += A[r * a->w + j];
            break;
        case T_DIAGEMBED:
            for (int i2 = 0; i2 < w; i2++)
                for (int j = 0; j < w; j++) o[i2 * w + j] = i2 == j ? rat(a, A, 0, j) : 0;
            break;
        case T_LU_U:
        case T_LU_LT:
        case T_LU_UT: {   /* with explicit L and U */
            const double *M = v[t->in[1]];
            int D = w;
            for (int64_t r = 0; r < n; r++)
                for (int k = 0; k < D; k++) {
                    double acc = 0;
                    for (int j = 0; j < D; j++) {
                        double U = j == k ? exp(M[k * D + k]) : j > k ? M[k * D + j] : 0;       /* U[k][j] */
                        double Lt = j == k ? 1 : j > k ? M[j * D + k] : 0;                       /* L[j][k] */
                        double Ut = j == k ? exp(M[k * D + k]) : j < k ? M[j * D + k] : 0;      /* U[j][k] */
                        acc += (t->op == T_LU_U ? U : t->op == T_LU_LT ? Lt : Ut) * A[r * D + j];
                    }
                    o[r * D + k] = acc;
                }
            break;
        }
        case T_LU_INVT: {   /* solve (L U)^T y = x with explicit matrices: U^T w = x, then L^T y = w */
            const double *M = v[t->in[1]];
            int D = w;
            for (int64_t r = 0; r < n; r++) {
                double *y = o + r * D;
                for (int k = 0; k < D; k++) {
                    double acc = A[r * D + k];
                    for (int j = 0; j < k; j++) acc -= M[j * D + k] * y[j];   /* U^T[k][j] = U[j][k] */
                    y[k] = acc / exp(M[k * D + k]);
                }
                for (int k = D - 1; k >= 0; k--)
                    for (int j = k + 1; j < D; j++) y[k] -= M[j * D + k] * y[j];   /* L^T[k][j] = L[j][k] */
            }
            break;
        }
        case T_LOOP_BEGIN:
            if (trip == 0) memcpy(o, A, sizeof(double) * (size_t)(R * w));
            break;
        case T_LOOP_END:
            memcpy(o, A, sizeof(double) * (size_t)(R * w));
            if (++trip < p->nodes[t->in[1]].iattr[0]) {
                memcpy(v[t->in[1]], A, sizeof(double) * (size_t)(R * w));
                i = t->in[1];
                continue;
            }
            trip = 0;
            break;
        default:
            for (int64_t r = 0; r < R; r++)
                for (int j = 0; j < w; j++) {
                    double x = rat(a, A, r, j);
                    if (t->nin == 1) o[r * w + j] = ref_un(t->op, x, t->fattr[0]);
                    else if (t->op == T_SELECT)
                        o[r * w + j] = x > 0 ? rat(&p->nodes[t->in[1]], v[t->in[1]], r, j) : rat(&p->nodes[t->in[2]], v[t->in[2]], r, j);
                    else o[r * w + j] = ref_bin(t->op, x, rat(&p->nodes[t->in[1]], v[t->in[1]], r, j));
                }
        }
    }
    for (int k = 0; k < p->nouts; k++)
        memcpy(outs[k], v[p->outs[k]], sizeof(double) * (size_t)(n * p->nodes[p->outs[k]].w));
    if (p->ngrad) {
        memset(outs[p->nouts], 0, sizeof(double) * (size_t)p->param_total);
        for (int k = 0; k < p->ngrad; k++) {
            const tnode *t = &p->nodes[p->gval[k]];
            for (int e = 0; e < t->rows * t->w; e++) outs[p->nouts][poff[p->gparam[k]] + e] += v[p->gval[k]][e];
        }
    }
    for (int i = 0; i < p->nn; i++) free(v[i]);
    free(v);
}

/* ------------------------------------------------------------------ compile and run */

typedef void (*kern_fn)(int64_t n, int64_t row0, int64_t seed, const void *const *args, const double *scalars,
                        void *const *outs, const void *params, void *ws);
typedef struct {
    kern_fn f;
    int64_t ws;
    int     V, dtype;
    int     nfused;   /* cg_fused_count */
    double  ms;
} kern;

static int compile_opts(const tprog *p, const ir_graph *g, const cg_options *o, kern *k, char *ir_path) {
    char err[1024] = "", prefix[32];
    snprintf(prefix, sizeof prefix, "t%d", uniq++);
    cg_module *m = NULL;
    double t0 = now_ms();
    int rc = cg_build(&p, 1, g, prefix, o, &m, err, sizeof err);
    CHECK(rc == 0 && m, "cg_build %s: %s", p->name, err);
    if (rc) return -1;
    k->ws = cg_workspace_bytes(m, 0);
    k->V = cg_vector_width(m);
    k->dtype = o->dtype;
    k->nfused = cg_fused_count(m, 0);
    CHECK(k->ws >= 0 && k->ws % 64 == 0, "workspace %lld", (long long)k->ws);
    if (ir_path) CHECK(cg_emit_file(m, ir_path, CG_EMIT_LLVM, err, sizeof err) == 0, "%s", err);
    char name[96];
    snprintf(name, sizeof name, "%s", cg_function_name(m, 0));
    rc = jit_add(J, m, err, sizeof err);
    CHECK(rc == 0, "jit_add: %s", err);
    if (rc) return -1;
    k->f = (kern_fn)jit_lookup(J, name, err, sizeof err);
    CHECK(k->f != NULL, "jit_lookup %s: %s", name, err);
    k->ms = now_ms() - t0;
    return k->f ? 0 : -1;
}

/* for CPU cpu (NULL: the host) */
static int compile_cpu(const tprog *p, const ir_graph *g, int dtype, int V, int sleef, const char *cpu, kern *k) {
    cg_options o;
    cg_default_options(&o);
    o.dtype = dtype;
    o.vector_width = V;
    o.use_sleef = sleef;
    o.opt_level = TEST_OPT;
    o.cpu = cpu;
    return compile_opts(p, g, &o, k, NULL);
}
static int compile(const tprog *p, const ir_graph *g, int dtype, int V, int sleef, kern *k) {
    return compile_cpu(p, g, dtype, V, sleef, NULL, k);
}

/* Runs k on double data (converted to and from its dtype) with guarded user buffers. */
static void krun(const kern *k, const tprog *p, int64_t nparams, int64_t n, int64_t row0, int64_t seed, double *const *args,
                 const double *scalars, const double *params, double **outs) {
    size_t es = k->dtype == DT_F64 ? 8 : 4;
    void *a[TPROG_MAX_IO] = { 0 }, *o[TPROG_MAX_IO + 1] = { 0 };
    size_t ab[TPROG_MAX_IO], ob[TPROG_MAX_IO + 1];
    for (int i = 0; i < p->nargs; i++) {
        size_t cnt = (size_t)(n * p->arg_w[i]);
        ab[i] = cnt * es;
        a[i] = galloc(ab[i]);
        for (size_t e = 0; e < cnt; e++) {
            if (es == 8) ((double *)a[i])[e] = args[i][e];
            else ((float *)a[i])[e] = (float)args[i][e];
        }
    }
    int no = p->nouts + (p->ngrad ? 1 : 0);
    for (int i = 0; i < no; i++) {
        ob[i] = (size_t)(i < p->nouts ? n * p->nodes[p->outs[i]].w : p->param_total) * es;
        o[i] = galloc(ob[i]);
    }
    size_t pb = (size_t)(nparams > 0 ? nparams : 1) * es;
    void *pr = galloc(pb);
    for (int64_t e = 0; e < nparams; e++) {
        if (es == 8) ((double *)pr)[e] = params[e];
        else ((float *)pr)[e] = (float)params[e];
    }
    size_t wsb = (size_t)(k->ws > 0 ? k->ws : 64);
    void *ws = aligned_alloc(64, wsb);
    memset(ws, 0xff, wsb);   /* NaN everywhere: the code must not read what it did not write */
    k->f(n, row0, seed, (const void *const *)a, scalars, o, pr, ws);
    free(ws);
    for (int i = 0; i < no; i++) {
        size_t cnt = ob[i] / es;
        for (size_t e = 0; e < cnt; e++) outs[i][e] = es == 8 ? ((double *)o[i])[e] : ((float *)o[i])[e];
        gfree(o[i], ob[i]);
    }
    for (int i = 0; i < p->nargs; i++) gfree(a[i], ab[i]);
    gfree(pr, pb);
}

static int close_enough(double got, double ref, double tol) {
    if (isnan(ref) || isnan(got)) return isnan(ref) && isnan(got);
    if (isinf(ref) || isinf(got)) return got == ref;
    double s = fabs(ref) > 1 ? fabs(ref) : 1;
    return fabs(got - ref) <= tol * s;
}

typedef struct {
    double alo, ahi;        /* argument values */
    double plo, phi;        /* parameter values */
    const double *params;   /* or fixed parameters */
    double scalars[4];
    double tol32, tol64;
    int    sleef_both;      /* also run without Sleef */
    const double *values;   /* arguments drawn from these instead, if set */
    int    nvalues;
    const char *cpu;        /* compile for this CPU (NULL: the host) */
} spec;

/* Every (dtype, V, n) combination against ref_eval. */
static void check_prog(const char *what, const tprog *p, const ir_graph *g, const spec *s) {
    int64_t np = g ? tir_param_offsets(g, NULL) : 0;
    int64_t *poff = calloc((size_t)(g && g->np ? g->np : 1), sizeof *poff);
    if (g) tir_param_offsets(g, poff);
    for (int dt = DT_F32; dt <= DT_F64; dt++)
        for (int vi = 0; vi < 2; vi++)
            for (int sl = 1; sl >= (s->sleef_both ? 0 : 1); sl--) {
                kern k;
                if (compile_cpu(p, g, dt, vi == 0 ? 1 : 0, sl, s->cpu, &k)) continue;
                int V = k.V;
                int64_t ns[6] = { 1, V - 1, V, V + 1, 3 * V + 5, 1000 };
                double tol = dt == DT_F32 ? s->tol32 : s->tol64;
                for (int ni = 0; ni < 6; ni++) {
                    int64_t n = ns[ni];
                    if (n < 1) continue;
                    double *args[TPROG_MAX_IO], *outs[TPROG_MAX_IO + 1], *ref[TPROG_MAX_IO + 1];
                    int no = p->nouts + (p->ngrad ? 1 : 0);
                    double *params = malloc(sizeof(double) * (size_t)(np + 1));
                    for (int64_t e = 0; e < np; e++) {
                        double v = s->params ? s->params[e] : uniform(s->plo, s->phi);
                        params[e] = dt == DT_F32 ? (double)(float)v : v;
                    }
                    for (int a = 0; a < p->nargs; a++) {
                        args[a] = malloc(sizeof(double) * (size_t)(n * p->arg_w[a]));
                        for (int64_t e = 0; e < n * p->arg_w[a]; e++) {
                            double v = s->values ? s->values[(int)(urand() * s->nvalues)] : uniform(s->alo, s->ahi);
                            args[a][e] = dt == DT_F32 ? (double)(float)v : v;
                        }
                    }
                    for (int o = 0; o < no; o++) {
                        size_t cnt = (size_t)(o < p->nouts ? n * p->nodes[p->outs[o]].w : p->param_total);
                        outs[o] = malloc(sizeof(double) * cnt);
                        ref[o] = malloc(sizeof(double) * cnt);
                    }
                    ref_eval(p, poff, n, 0, 42, args, s->scalars, params, ref);
                    krun(&k, p, np, n, 0, 42, args, s->scalars, params, outs);
                    for (int o = 0; o < no; o++) {
                        int w = o < p->nouts ? p->nodes[p->outs[o]].w : 1, bad = 0;
                        int64_t cnt = o < p->nouts ? n * w : p->param_total;
                        for (int64_t e = 0; e < cnt && bad < 3; e++)
                            if (!close_enough(outs[o][e], ref[o][e], tol)) {
                                bad++;
                                CHECK(0, "%s %s V=%d sleef=%d n=%lld out %d row %lld col %lld: %.17g vs %.17g", what,
                                      dt == DT_F32 ? "f32" : "f64", V, sl, (long long)n, o, (long long)(e / w),
                                      (long long)(e % w), outs[o][e], ref[o][e]);
                            }
                        free(outs[o]);
                        free(ref[o]);
                    }
                    for (int a = 0; a < p->nargs; a++) free(args[a]);
                    free(params);
                }
            }
    free(poff);
}

/* a fake flow graph with the given parameters ([rows, w] each; rows 0: rank 1) */
static ir_graph *fake_graph(arena *ar, int np, const int *rows, const int *w) {
    ir_graph *g = ir_new(ar, "g", loc_none());
    for (int i = 0; i < np; i++) {
        char *name = arena_printf(ar, "p%d", i);
        if (rows[i]) ir_add_param(g, IR_NONE, name, 2, rows[i], w[i], INIT_ZERO, 0);
        else ir_add_param(g, IR_NONE, name, 1, w[i], 0, INIT_ZERO, 0);
    }
    return g;
}

/* concatenation of many batched values (CONCAT takes at most T_MAX_IN operands) */
static tref concat_all(tprog *p, const tref *v, int n) {
    if (n <= T_MAX_IN) return t_concat(p, v, n);
    tref parts[T_MAX_IN];
    int np = 0;
    for (int i = 0; i < n; i += T_MAX_IN) parts[np++] = t_concat(p, v + i, n - i < T_MAX_IN ? n - i : T_MAX_IN);
    return concat_all(p, parts, np);
}

/* ------------------------------------------------------------------ tests */

static const t_op unary_ops[] = { T_NEG, T_EXP, T_EXPM1, T_TANH, T_SIGMOID, T_LOGSIGMOID, T_SOFTPLUS, T_RELU,
                                  T_ELU, T_GELU, T_SQUARE, T_ABS, T_STEP, T_NONZERO };

TEST(unary_ops_all) {
    arena ar;
    arena_init(&ar);
    tprog *p = tprog_new(&ar, "unary");
    tref x = t_arg(p, 0, 5), v[32];
    int nv = 0;
    for (size_t i = 0; i < sizeof unary_ops / sizeof unary_ops[0]; i++) v[nv++] = t_un(p, unary_ops[i], x);
    v[nv++] = t_leaky(p, x, 0.125);
    t_output(p, concat_all(p, v, nv));
    spec s = { .alo = -12, .ahi = 12, .tol32 = 4e-6, .tol64 = 1e-13, .sleef_both = 1 };
    check_prog("unary", p, NULL, &s);

    /* log and log1p on their domains, plus exp/tanh with large arguments */
    tprog *q = tprog_new(&ar, "logs");
    tref y = t_arg(q, 0, 3);
    tref l[2] = { t_un(q, T_LOG, y), t_un(q, T_LOG1P, y) };
    t_output(q, t_concat(q, l, 2));
    spec s2 = { .alo = 1e-3, .ahi = 50, .tol32 = 1e-6, .tol64 = 1e-13, .sleef_both = 1 };
    check_prog("log", q, NULL, &s2);
    tprog *q2 = tprog_new(&ar, "log1p_neg");
    tref y2 = t_arg(q2, 0, 2);
    t_output(q2, t_un(q2, T_LOG1P, y2));
    spec s3 = { .alo = -0.99, .ahi = 0.5, .tol32 = 1e-6, .tol64 = 1e-13 };
    check_prog("log1p", q2, NULL, &s3);
    tprog *q3 = tprog_new(&ar, "wide");
    tref y3 = t_arg(q3, 0, 4);
    tref e3[5] = { t_un(q3, T_EXP, y3), t_un(q3, T_TANH, y3), t_un(q3, T_SIGMOID, y3), t_un(q3, T_SOFTPLUS, y3),
                   t_un(q3, T_LOGSIGMOID, y3) };
    t_output(q3, t_concat(q3, e3, 5));
    spec s4 = { .alo = -80, .ahi = 80, .tol32 = 4e-6, .tol64 = 1e-13 };
    check_prog("wide", q3, NULL, &s4);
    arena_free(&ar);
}

/* NaN propagates (the training runtime's NaN guard relies on it: no nnan/ninf flags), and
 * infinities and signed zeros come out as in C, through every elementwise op and MATMUL */
TEST(nan_inf) {
    arena ar;
    arena_init(&ar);
    int rows[1] = { 4 }, w[1] = { 3 };
    ir_graph *g = fake_graph(&ar, 1, rows, w);
    tprog *p = tprog_new(&ar, "nan");
    tref x = t_arg(p, 0, 4), y = t_arg(p, 1, 4), v[40];
    int nv = 0;
    for (size_t i = 0; i < sizeof unary_ops / sizeof unary_ops[0]; i++) v[nv++] = t_un(p, unary_ops[i], x);
    v[nv++] = t_leaky(p, x, 0.5);
    v[nv++] = t_un(p, T_LOG, x);
    v[nv++] = t_un(p, T_LOG1P, x);
    for (t_op op = T_ADD; op <= T_MIN; op++) v[nv++] = t_bin(p, op, x, y);
    v[nv++] = t_select(p, x, y, x);
    v[nv++] = t_matmul(p, x, t_param(p, g, 0));
    t_output(p, concat_all(p, v, nv));
    static const double vals[] = { NAN, INFINITY, -INFINITY, 0.0, -0.0, 1.5, -2.5, 50 };
    spec s = { .plo = -1, .phi = 1, .tol32 = 4e-6, .tol64 = 1e-13, .sleef_both = 1, .values = vals, .nvalues = 8 };
    check_prog("nan_inf", p, g, &s);
    arena_free(&ar);
}

static const t_op binary_ops[] = { T_ADD, T_SUB, T_MUL, T_DIV, T_MAX, T_MIN };

TEST(binary_ops_broadcast) {
    arena ar;
    arena_init(&ar);
    int rows[2] = { 0, 0 }, w[2] = { 6, 1 };
    ir_graph *g = fake_graph(&ar, 2, rows, w);   /* p0: [6] (a row), p1: [1] */
    tprog *p = tprog_new(&ar, "binary");
    tref a = t_arg(p, 0, 6), b = t_arg(p, 1, 6), c = t_arg(p, 2, 1);
    tref prow = t_param(p, g, 0), pone = t_param(p, g, 1), k = t_const(p, 0.75), sc = t_scalar(p, 0);
    tref v[64];
    int nv = 0;
    for (size_t i = 0; i < sizeof binary_ops / sizeof binary_ops[0]; i++) {
        t_op op = binary_ops[i];
        v[nv++] = t_bin(p, op, a, b);      /* batched, same width */
        v[nv++] = t_bin(p, op, a, c);      /* width-1 batched operand */
        v[nv++] = t_bin(p, op, c, a);
        v[nv++] = t_bin(p, op, a, prow);   /* unbatched row */
        v[nv++] = t_bin(p, op, prow, a);
        v[nv++] = t_bin(p, op, a, k);      /* constant */
        v[nv++] = t_bin(p, op, sc, a);     /* scalar */
        v[nv++] = t_bin(p, op, a, pone);   /* unbatched [1, 1] */
    }
    t_output(p, concat_all(p, v, nv / 2));
    t_output(p, concat_all(p, v + nv / 2, nv - nv / 2));
    /* select with mixed operands */
    tref s1 = t_select(p, t_bin(p, T_SUB, a, b), prow, k);
    tref s2 = t_select(p, c, a, sc);
    tref sv[2] = { s1, s2 };
    t_output(p, t_concat(p, sv, 2));
    spec s = { .alo = 0.5, .ahi = 3, .plo = -2, .phi = 2, .scalars = { 1.5 }, .tol32 = 1e-6, .tol64 = 1e-13 };
    check_prog("binary", p, g, &s);
    /* negative values too (DIV stays away from 0 through the ranges above) */
    spec t = { .alo = -3, .ahi = 3, .plo = 0.5, .phi = 2, .scalars = { -1.5 }, .tol32 = 2e-6, .tol64 = 1e-13 };
    tprog *q = tprog_new(&ar, "binary_neg");
    tref qa = t_arg(q, 0, 6), qc = t_arg(q, 1, 1);
    tref qv[4] = { t_bin(q, T_MAX, qa, qc), t_bin(q, T_MIN, qa, t_param(q, g, 0)), t_bin(q, T_DIV, qa, t_param(q, g, 0)),
                   t_select(q, qa, qa, t_un(q, T_NEG, qa)) };
    t_output(q, t_concat(q, qv, 4));
    check_prog("binary_neg", q, g, &t);
    arena_free(&ar);
}

TEST(matmul_shapes) {
    static const int shapes[][2] = { { 1, 1 }, { 3, 5 }, { 5, 3 }, { 7, 17 }, { 16, 16 }, { 33, 9 }, { 2, 64 } };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        arena ar;
        arena_init(&ar);
        int in = shapes[si][0], out = shapes[si][1];
        int rows[2] = { in, 0 }, w[2] = { out, out };
        ir_graph *g = fake_graph(&ar, 2, rows, w);
        tprog *p = tprog_new(&ar, "mlp");
        tref x = t_arg(p, 0, in);
        tref h = t_bin(p, T_ADD, t_matmul(p, x, t_param(p, g, 0)), t_param(p, g, 1));
        t_output(p, t_un(p, T_TANH, h));
        t_output(p, t_matmul(p, x, t_param(p, g, 0)));
        spec s = { .alo = -1, .ahi = 1, .plo = -1, .phi = 1, .tol32 = 4e-6 * (1 + in / 8), .tol64 = 1e-13 };
        char what[32];
        snprintf(what, sizeof what, "matmul %dx%d", in, out);
        check_prog(what, p, g, &s);
        arena_free(&ar);
    }
}

TEST(unbatched_precompute) {
    arena ar;
    arena_init(&ar);
    int rows[4] = { 0, 4, 5, 3 }, w[4] = { 4, 4, 5, 4 };
    ir_graph *g = fake_graph(&ar, 4, rows, w);   /* p0 log-scale [4], p1 W [4,4], p2 square [5,5], p3 [3,4] */
    tprog *p = tprog_new(&ar, "unbatched");
    tref x = t_arg(p, 0, 4), z = t_arg(p, 1, 5);
    tref sc = t_un(p, T_EXP, t_param(p, g, 0));                              /* exp(log_scale) */
    tref W = t_un(p, T_TANH, t_bin(p, T_MUL, t_param(p, g, 1), t_const(p, 0.5))); /* [4,4] computed */
    tref y = t_bin(p, T_MUL, t_matmul(p, x, W), sc);
    tref dg = t_diag(p, t_param(p, g, 2));                                   /* [1,5] */
    tref rs = t_rowsum(p, t_param(p, g, 0));                                 /* [1,1] */
    tref zz = t_bin(p, T_ADD, t_bin(p, T_MUL, z, dg), rs);
    tref r3 = t_rowsum(p, t_param(p, g, 3));                                 /* [3,1] */
    tref m3 = t_matmul(p, t_bin(p, T_MUL, t_arg(p, 2, 3), t_scalar(p, 1)), t_bin(p, T_MUL, t_param(p, g, 3), r3));
    double ct[8] = { 1, -2, 3.5, 0.25, -1, 2, 0.5, 4 };
    tref cw = t_consttensor(p, ct, 2, 4);                                    /* [2,4] weight */
    tref cr = t_consttensor(p, ct + 3, 1, 4);                                /* [1,4] row */
    tref m4 = t_bin(p, T_ADD, t_matmul(p, t_arg(p, 3, 2), cw), cr);
    tref sq = t_bin(p, T_MUL, x, t_scalar(p, 0));
    /* an unbatched loop: q <- 0.5 q + 1, 3 trips, from exp(log_scale) */
    tref qb = t_loop_begin(p, sc, 3);
    tref qn = t_bin(p, T_ADD, t_bin(p, T_MUL, qb, t_const(p, 0.5)), t_const(p, 1));
    tref qe = t_loop_end(p, qn, qb);
    tref lq = t_bin(p, T_ADD, x, qe);
    tref o1[3] = { y, sq, lq }, o2[2] = { m3, m4 };
    t_output(p, t_concat(p, o1, 3));
    t_output(p, zz);
    t_output(p, t_concat(p, o2, 2));
    spec s = { .alo = -2, .ahi = 2, .plo = -1, .phi = 1, .scalars = { 0.5, -3 }, .tol32 = 4e-6, .tol64 = 1e-13 };
    check_prog("unbatched", p, g, &s);
    arena_free(&ar);
}

TEST(gather_concat_rowsum) {
    arena ar;
    arena_init(&ar);
    tprog *p = tprog_new(&ar, "struct");
    tref x = t_arg(p, 0, 20), y = t_arg(p, 1, 3);
    int32_t perm[7] = { 3, 1, 4, 0, 5, 9, 2 }, cont[6] = { 5, 6, 7, 8, 9, 10 }, rev[20], dup[4] = { 2, 2, 2, 2 };
    for (int i = 0; i < 20; i++) rev[i] = 19 - i;
    tref g1 = t_gather(p, x, perm, 7), g2 = t_gather(p, x, cont, 6), g3 = t_gather(p, x, rev, 20);
    tref g4 = t_gather(p, y, dup, 4);
    tref parts[5] = { g1, y, g2, g3, g4 };
    t_output(p, t_concat(p, parts, 5));
    t_output(p, t_rowsum(p, x));
    t_output(p, t_rowsum(p, t_rowsum(p, y)));   /* width 1 -> width 1 */
    spec s = { .alo = -1, .ahi = 1, .tol32 = 1e-6, .tol64 = 1e-13 };
    check_prog("gather", p, NULL, &s);
    arena_free(&ar);
}

TEST(lu_forward_inverse) {
    static const int Ds[4] = { 1, 3, 5, 9 };   /* 1 and 3: straight-line code; 5, 9: loops */
    for (int di = 0; di < 4; di++) {
        int D = Ds[di];
        arena ar;
        arena_init(&ar);
        int rows[1] = { D }, w[1] = { D };
        ir_graph *g = fake_graph(&ar, 1, rows, w);
        tprog *p = tprog_new(&ar, "lu");
        tref x = t_arg(p, 0, D), lu = t_param(p, g, 0);
        tref y = t_lu(p, T_LU_FWD, x, lu);
        tref back = t_lu(p, T_LU_INV, y, lu);
        t_output(p, y);
        t_output(p, back);
        t_output(p, t_lu(p, T_LU_INV, x, lu));
        spec s = { .alo = -1, .ahi = 1, .plo = -0.5, .phi = 0.5, .tol32 = 4e-6, .tol64 = 1e-13 };
        check_prog("lu", p, g, &s);

        /* round trip and an explicit dense product W = L U, computed here */
        double M[81], W[81];
        for (int i = 0; i < D * D; i++) M[i] = uniform(-0.5, 0.5);
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++) {
                double sum = 0;
                for (int k = 0; k < D; k++) {
                    double L = i == k ? 1 : k < i ? M[i * D + k] : 0;
                    double U = k == j ? exp(M[k * D + k]) : k < j ? M[k * D + j] : 0;
                    sum += L * U;
                }
                W[i * D + j] = sum;
            }
        kern k;
        if (compile(p, g, DT_F64, 0, 1, &k) == 0) {
            int64_t n = 2 * k.V + 3;
            double *xa = malloc(sizeof(double) * (size_t)(n * D)), *o[3];
            for (int i = 0; i < 3; i++) o[i] = malloc(sizeof(double) * (size_t)(n * D));
            for (int64_t i = 0; i < n * D; i++) xa[i] = uniform(-1, 1);
            krun(&k, p, D * D, n, 0, 0, &xa, NULL, M, o);
            for (int64_t r = 0; r < n; r++)
                for (int i = 0; i < D; i++) {
                    double want = 0;
                    for (int j = 0; j < D; j++) want += W[i * D + j] * xa[r * D + j];
                    CHECK_NEAR(o[0][r * D + i], want, 1e-13 * (1 + fabs(want)));
                    CHECK_NEAR(o[1][r * D + i], xa[r * D + i], 1e-13);
                }
            for (int i = 0; i < 3; i++) free(o[i]);
            free(xa);
        }
        arena_free(&ar);
    }
}

TEST(loops) {
    arena ar;
    arena_init(&ar);
    int rows[1] = { 0 }, w[1] = { 3 };
    ir_graph *g = fake_graph(&ar, 1, rows, w);
    tprog *p = tprog_new(&ar, "loop");
    tref x = t_arg(p, 0, 3), c = t_param(p, g, 0);
    tref b = t_loop_begin(p, x, 7);
    tref nx = t_bin(p, T_ADD, t_bin(p, T_MUL, t_const(p, 0.5), b), c);
    tref e = t_loop_end(p, nx, b);
    t_output(p, e);
    spec s = { .alo = -4, .ahi = 4, .plo = -1, .phi = 1, .tol32 = 1e-6, .tol64 = 1e-13 };
    check_prog("loop", p, g, &s);

    /* closed form: x_7 = 0.5^7 x + c (1 - 0.5^7) / 0.5 */
    kern k;
    double cp[3] = { 0.25, -1, 3 };
    for (int dt = DT_F32; dt <= DT_F64; dt++) {
        if (compile(p, g, dt, 0, 1, &k)) continue;
        int64_t n = 37;
        double xa[37 * 3], o[37 * 3], *op = o, *xp = xa;
        for (int i = 0; i < 37 * 3; i++) xa[i] = dt == DT_F32 ? (float)uniform(-4, 4) : uniform(-4, 4);
        krun(&k, p, 3, n, 0, 0, &xp, NULL, cp, &op);
        for (int i = 0; i < 37 * 3; i++) {
            double want = ldexp(xa[i], -7) + cp[i % 3] * (1 - ldexp(1, -7)) * 2;
            CHECK_NEAR(o[i], want, dt == DT_F32 ? 1e-6 * (1 + fabs(want)) : 1e-14);
        }
    }

    /* LOOP_BEGIN used after the loop: the state at the start of the last trip */
    tprog *q = tprog_new(&ar, "loop2");
    tref qx = t_arg(q, 0, 2);
    tref qb = t_loop_begin(q, qx, 4);
    tref qn = t_bin(q, T_ADD, t_un(q, T_TANH, qb), t_const(q, 1));
    tref qe = t_loop_end(q, qn, qb);
    t_output(q, qe);
    t_output(q, t_bin(q, T_SUB, qb, qe));
    spec s2 = { .alo = -2, .ahi = 2, .tol32 = 4e-6, .tol64 = 1e-13 };
    check_prog("loop2", q, NULL, &s2);
    /* one trip, and an identity loop */
    tprog *r = tprog_new(&ar, "loop3");
    tref rx = t_arg(r, 0, 2);
    tref rb = t_loop_begin(r, rx, 1);
    tref re = t_loop_end(r, t_un(r, T_EXP, rb), rb);
    tref rb2 = t_loop_begin(r, re, 3);
    tref re2 = t_loop_end(r, rb2, rb2);
    t_output(r, re2);
    check_prog("loop3", r, NULL, &s2);
    arena_free(&ar);
}

/* the ops of gradient programs: transposed products, scatter, the LU pieces, sums over the
 * batch (accumulated across tiles), what is computed from those sums after the last tile,
 * and gradient outputs (outs[nouts], laid out like params, accumulated per parameter) */
TEST(gradient_ops) {
    arena ar;
    arena_init(&ar);
    int rows[4] = { 5, 0, 4, 3 }, w[4] = { 3, 4, 4, 4 };
    ir_graph *g = fake_graph(&ar, 4, rows, w);   /* W [5,3], v [4], lu [4,4], m [3,4] */
    tprog *p = tprog_new(&ar, "grads");
    tref x = t_arg(p, 0, 3), y = t_arg(p, 1, 4), z = t_arg(p, 2, 5);
    tref W = t_param(p, g, 0), v = t_param(p, g, 1), lu = t_param(p, g, 2);
    tref nt = t_matmul_nt(p, x, W);                       /* [n, 5] */
    int32_t sidx[5] = { 2, 0, 2, 6, 1 };                  /* with a repeated index */
    tref parts[7] = { nt, t_lu(p, T_LU_U, y, lu), t_lu(p, T_LU_LT, y, lu), t_lu(p, T_LU_UT, y, lu),
                      t_scatter(p, z, sidx, 5, 7), t_un(p, T_NONZERO, t_un(p, T_RELU, y)), t_lu(p, T_LU_INVT, y, lu) };
    t_output(p, t_concat(p, parts, 7));
    tref bs = t_batchsum(p, y);                           /* [1, 4] */
    tref tn = t_matmul_tn(p, x, y);                       /* [3, 4] */
    tref e1 = t_bin(p, T_MUL, t_un(p, T_TANH, t_bin(p, T_MUL, bs, t_const(p, 0.1))), v);   /* epilogue */
    tref d1 = t_diagembed(p, e1), d2 = t_diagembed(p, v);                                   /* epilogue, prologue */
    t_output(p, t_rowsum(p, y));
    t_grad_output(p, 1, e1);
    t_grad_output(p, 2, t_bin(p, T_ADD, d1, d2));
    t_grad_output(p, 3, tn);
    t_grad_output(p, 3, t_bin(p, T_MUL, tn, t_rowsum(p, t_batchsum(p, z))));   /* the same parameter again */
    p->param_total = tir_param_offsets(g, NULL);
    spec s = { .alo = -1, .ahi = 1, .plo = -0.5, .phi = 0.5, .tol32 = 2e-5, .tol64 = 1e-12 };
    check_prog("grads", p, g, &s);

    /* gradient outputs only; a batchsum of a wide value */
    tprog *q = tprog_new(&ar, "gonly");
    tref qx = t_arg(q, 0, 3);
    t_grad_output(q, 0, t_matmul_tn(q, t_un(q, T_EXP, qx), t_matmul_nt(q, qx, t_param(q, g, 0))));
    t_grad_output(q, 1, t_batchsum(q, t_un(q, T_SQUARE, t_matmul(q, qx, t_param(q, g, 3)))));
    q->param_total = tir_param_offsets(g, NULL);
    check_prog("gonly", q, g, &s);

    /* reductions whose operands are -inf in the padding rows of a partial tile (log of the
     * zero padding): the sums must stay those of the valid rows. The second factor of the
     * weight-gradient kernel is wider than a vector (several column blocks, a partial one) */
    int rows2[2] = { 3, 20 }, w2[2] = { 20, 1 };
    ir_graph *g2 = fake_graph(&ar, 2, rows2, w2);   /* a [3, 20], b [20] */
    tprog *r = tprog_new(&ar, "padding");
    tref rx = t_arg(r, 0, 3), ry = t_arg(r, 1, 20);
    tref lx = t_un(r, T_LOG, rx), ly = t_un(r, T_LOG, ry);
    t_grad_output(r, 0, t_matmul_tn(r, lx, ly));
    t_grad_output(r, 1, t_batchsum(r, ly));
    r->param_total = tir_param_offsets(g2, NULL);
    spec s2 = { .alo = 0.5, .ahi = 2, .plo = -0.5, .phi = 0.5, .tol32 = 2e-5, .tol64 = 1e-12 };
    check_prog("padding", r, g2, &s2);

    /* weight gradients of shapes that use every part of the blocked kernel (tn_kernel): full
     * groups of 6 rows (24 accumulators) and a last row, column blocks in groups of 4 and
     * the rest, a single row, a single partial block */
    enum { NTN = 4 };
    int rows3[NTN] = { 7, 13, 1, 24 }, w3[NTN] = { 37, 64, 5, 20 };
    ir_graph *g3 = fake_graph(&ar, NTN, rows3, w3);
    tprog *b = tprog_new(&ar, "blocking");
    tref b0 = t_un(b, T_TANH, t_arg(b, 0, 24)), b1 = t_arg(b, 1, 64);
    int32_t first[64];
    for (int k = 0; k < 64; k++) first[k] = k;
    for (int k = 0; k < NTN; k++)   /* the first rows3[k] features of one, w3[k] of the other */
        t_grad_output(b, k, t_matmul_tn(b, t_gather(b, b0, first, rows3[k]), t_gather(b, b1, first, w3[k])));
    b->param_total = tir_param_offsets(g3, NULL);
    check_prog("blocking", b, g3, &s);
#if defined(__x86_64__)
    /* and with the 16 vector registers of AVX2 (the kernel's other blocking: m 3-4, nb 2) */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        spec s3 = s;
        s3.cpu = "x86-64-v3";
        check_prog("blocking avx2", b, g3, &s3);
    }
#endif
    arena_free(&ar);
}

/* every program derived from the examples (forward, inverse, log_prob, sample, loss_grad,
 * inverse_grad) gives the interpreter's results */
/* Compiles example `path` into ar and derives its programs: the four of derive_all, the
 * gradient (gp) and, when gi is not NULL, the gradient through the inverse. Returns the
 * flow graph, or NULL after a CHECK failure. */
static ir_graph *load_example(const char *path, arena *ar, derived *dv, tprog **gp, tprog **gi) {
    diag_ctx dc;
    diag_init(&dc, ar);
    sema_result res;
    memset(&res, 0, sizeof res);
    char err[1024] = "";
    if (front_compile_file(&dc, path, &res, NULL) || res.nflows < 1) {
        CHECK(0, "%s does not compile", path);
        return NULL;
    }
    ir_graph *g = res.flows[0];
    if (derive_all(g, ar, dv, err, sizeof err) || grad_build(g, ar, gp, err, sizeof err)
        || (gi && grad_build_inverse(g, ar, gi, err, sizeof err))) {
        CHECK(0, "%s: %s", path, err);
        return NULL;
    }
    return g;
}

TEST(jit_equals_interpreter) {
    static const char *const files[] = { "examples/moons.flow", "examples/cmoons.flow", "examples/maf.flow",
                                         "examples/glow_dense.flow", "examples/custom.flow" };
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        arena ar;
        arena_init(&ar);
        derived dv;
        tprog *gp = NULL, *gi = NULL;
        char err[1024] = "";
        ir_graph *g = load_example(files[fi], &ar, &dv, &gp, &gi);
        if (!g) {
            arena_free(&ar);
            continue;
        }
        enum { NPROG = PROG_COUNT + 2 };
        const tprog *progs[NPROG];
        for (int k = 0; k < PROG_COUNT; k++) progs[k] = dv.p[k];
        progs[PROG_COUNT] = gp;
        progs[PROG_COUNT + 1] = gi;
        int64_t np = tir_param_offsets(g, NULL), *poff = calloc((size_t)g->np + 1, sizeof *poff);
        tir_param_offsets(g, poff);
        double *params = malloc(sizeof(double) * (size_t)(np + 1));
        init_params(g, params, 7, 0.5);
        /* two configurations (compiling these programs takes seconds): f64 with the native
         * width at O2 for every example, f32 scalar at O0 for the two small ones */
        for (int cfg = 0; cfg < (strstr(files[fi], "moons.flow") == files[fi] + 9 || strstr(files[fi], "custom") ? 2 : 1); cfg++) {
                int dt = cfg == 0 ? DT_F64 : DT_F32;
                cg_options o;
                cg_default_options(&o);
                o.dtype = dt;
                o.vector_width = cfg == 0 ? 0 : 1;
                o.opt_level = cfg == 0 ? TEST_OPT : 0;
                cg_module *m = NULL;
                char prefix[32];
                snprintf(prefix, sizeof prefix, "ex%d", uniq++);
                int rc = cg_build(progs, NPROG, g, prefix, &o, &m, err, sizeof err);
                CHECK(rc == 0, "%s: %s", files[fi], err);
                if (rc) continue;
                kern k[NPROG];
                char names[NPROG][96];
                for (int q = 0; q < NPROG; q++) {
                    k[q].ws = cg_workspace_bytes(m, q);
                    k[q].V = cg_vector_width(m);
                    k[q].dtype = dt;
                    snprintf(names[q], sizeof names[q], "%s", cg_function_name(m, q));
                }
                if (jit_add(J, m, err, sizeof err)) { CHECK(0, "%s", err); continue; }
                for (int q = 0; q < NPROG; q++) {
                    const tprog *p = progs[q];
                    k[q].f = (kern_fn)jit_lookup(J, names[q], err, sizeof err);
                    CHECK(k[q].f != NULL, "%s", err);
                    if (!k[q].f) continue;
                    int64_t n = 3 * k[q].V + 5;
                    double *args[TPROG_MAX_IO], *outs[TPROG_MAX_IO + 1], *ref[TPROG_MAX_IO + 1];
                    double scalars[4] = { 0.8, 0.8, 0.8, 0.8 };
                    for (int a = 0; a < p->nargs; a++) {
                        args[a] = malloc(sizeof(double) * (size_t)(n * p->arg_w[a]));
                        for (int64_t e = 0; e < n * p->arg_w[a]; e++) {
                            double u = uniform(-1.5, 1.5);
                            args[a][e] = dt == DT_F32 ? (double)(float)u : u;
                        }
                    }
                    double *pr = malloc(sizeof(double) * (size_t)(np + 1));
                    for (int64_t e = 0; e < np; e++) pr[e] = dt == DT_F32 ? (double)(float)params[e] : params[e];
                    int no = p->nouts + (p->ngrad ? 1 : 0);
                    for (int o2 = 0; o2 < no; o2++) {
                        size_t cnt = (size_t)(o2 < p->nouts ? n * p->nodes[p->outs[o2]].w : p->param_total);
                        outs[o2] = malloc(sizeof(double) * cnt);
                        ref[o2] = malloc(sizeof(double) * cnt);
                    }
                    rc = interp_run(p, n, 11, 99, (const double *const *)args, scalars, ref, pr, poff, err, sizeof err);
                    CHECK(rc == 0, "interp %s: %s", p->name, err);
                    krun(&k[q], p, np, n, 11, 99, args, scalars, pr, outs);
                    double tol = dt == DT_F32 ? 1e-4 : 1e-10;
                    for (int o2 = 0; o2 < no && rc == 0; o2++) {
                        int64_t cnt = o2 < p->nouts ? n * p->nodes[p->outs[o2]].w : p->param_total;
                        int bad = 0;
                        for (int64_t e = 0; e < cnt && bad < 3; e++)
                            if (!close_enough(outs[o2][e], ref[o2][e], tol)) {
                                bad++;
                                CHECK(0, "%s %s %s V=%d out %d elem %lld: %.17g vs interp %.17g", files[fi], p->name,
                                      dt == DT_F32 ? "f32" : "f64", k[q].V, o2, (long long)e, outs[o2][e], ref[o2][e]);
                            }
                    }
                    for (int o2 = 0; o2 < no; o2++) { free(outs[o2]); free(ref[o2]); }
                    for (int a = 0; a < p->nargs; a++) free(args[a]);
                    free(pr);
                }
            }
        free(params);
        free(poff);
        arena_free(&ar);
    }
}

static void rand_prog(arena *ar, tprog **out) {
    tprog *p = tprog_new(ar, "sample");
    tref a = t_rand(p, T_RANDN, 3, 7), b = t_rand(p, T_RANDLOGISTIC, 2, 9), c = t_rand(p, T_RANDN, 1, 1000);
    t_output(p, a);
    t_output(p, b);
    t_output(p, t_bin(p, T_MUL, c, t_scalar(p, 0)));
    *out = p;
}

/* RANDN's own log and cosine (compiler/randn.h, shared by the interpreter and the code
 * generator so that they agree bit for bit) are accurate: against long double libm over
 * 10^6 uniforms of the generator's form, a third of them scaled into the far tail. */
TEST(randn_functions_accurate) {
    double maxl = 0, maxc = 0, maxs = 0;
    uint64_t z = 12345;
    for (int i = 0; i < 1000000; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        double u = ((double)(z >> 11) + 0.5) * 0x1p-53;
        if (i % 3 == 0) u *= 1e-10;
        long double L = logl((long double)u);
        double el = fabs((double)(((long double)tir_log01(u) - L) / L)) / 0x1p-53;
        if (el > maxl) maxl = el;
        long double C = cosl(2 * 3.141592653589793238462643383279502884L * (long double)u);
        long double S = sinl(2 * 3.141592653589793238462643383279502884L * (long double)u);
        double sn, cs;
        tir_sincos2pi(u, &sn, &cs);
        double ec = fabs((double)((long double)cs - C)), es = fabs((double)((long double)sn - S));
        if (ec > maxc) maxc = ec;
        if (es > maxs) maxs = es;
    }
    CHECK(maxl <= 3, "tir_log01: %.2f ulp", maxl);
    CHECK(maxc <= 4e-16, "tir_sincos2pi, cos: absolute error %.3g", maxc);
    CHECK(maxs <= 4e-16, "tir_sincos2pi, sin: absolute error %.3g", maxs);
    /* the four quadrants' exact points: u = 1/2 (q = 0), 3/4 (q = 1), 1/4 (q = -1), 1 (q = 2) */
    static const double uq[4] = { 0.5, 0.75, 0.25, 1.0 }, sq[4] = { 0, -1, 1, 0 }, cq[4] = { -1, 0, 0, 1 };
    for (int i = 0; i < 4; i++) {
        double sn, cs;
        tir_sincos2pi(uq[i], &sn, &cs);
        CHECK(fabs(sn - sq[i]) <= 4e-16 && fabs(cs - cq[i]) <= 4e-16, "sincos2pi(%g) = %.17g, %.17g", uq[i], sn, cs);
    }
    CHECK(tir_log01(1.0) == 0, "log01(1)");
}

TEST(random_bits) {
    arena ar;
    arena_init(&ar);
    tprog *p;
    rand_prog(&ar, &p);
    double temp = 1.0;
    int ws[3] = { 3, 2, 1 };
    for (int dt = DT_F32; dt <= DT_F64; dt++)
        for (int vi = 0; vi < 2; vi++) {
            kern k;
            if (compile(p, NULL, dt, vi ? 0 : 1, 1, &k)) continue;
            int64_t n = 1000, n1 = 3 * k.V + 5, row0 = 123456789;
            int64_t seed = (int64_t)0xdeadbeefcafe1234ull;
            double *o[3], *s1[3], *s2[3];
            for (int i = 0; i < 3; i++) o[i] = malloc(sizeof(double) * (size_t)(n * ws[i]));
            krun(&k, p, 0, n, row0, seed, NULL, &temp, NULL, o);
            int bad = 0;
            for (int i = 0; i < 3; i++)
                for (int64_t e = 0; e < n * ws[i] && bad < 5; e++) {
                    const tnode *t = &p->nodes[i == 2 ? 2 : p->outs[i]];
                    double want = ref_rand(t->op, seed, t->iattr[0], row0 + e / ws[i], ws[i], (int)(e % ws[i]));
                    if (dt == DT_F32) want = (float)want;
                    if (o[i][e] != want) {
                        bad++;
                        CHECK(0, "rand %s V=%d out %d elem %lld: %.17g vs %.17g", dt == DT_F32 ? "f32" : "f64", k.V, i,
                              (long long)e, o[i][e], want);
                    }
                }
            /* two shards (row0, n1 rows) + (row0 + n1, n - n1 rows) give the same numbers */
            for (int i = 0; i < 3; i++) {
                s1[i] = malloc(sizeof(double) * (size_t)(n * ws[i]));
                s2[i] = s1[i] + n1 * ws[i];
            }
            krun(&k, p, 0, n1, row0, seed, NULL, &temp, NULL, s1);
            krun(&k, p, 0, n - n1, row0 + n1, seed, NULL, &temp, NULL, s2);
            for (int i = 0; i < 3; i++) {
                CHECK(memcmp(s1[i], o[i], sizeof(double) * (size_t)(n * ws[i])) == 0, "shards differ, output %d", i);
                free(s1[i]);
                free(o[i]);
            }
        }
    arena_free(&ar);
}

/* RANDN's numbers are standard normals, and the two of a Box-Muller pair (columns 0 and 1
 * share one, column 2 has its own) are independent: over 200000 rows of the compiled kernel,
 * each column's mean, variance and share beyond 3, and the correlations of the values and of
 * their squares between columns, within 5 standard errors. Taking the cosine for both columns
 * of a pair, or one uniform for both the radius and the angle, fails it. */
TEST(randn_moments) {
    arena ar;
    arena_init(&ar);
    tprog *p;
    rand_prog(&ar, &p);
    double temp = 1.0;
    kern k;
    if (compile(p, NULL, DT_F64, 0, 1, &k) == 0) {
        int64_t n = 200000;
        double *o[3];
        int ws[3] = { 3, 2, 1 };
        for (int i = 0; i < 3; i++) o[i] = malloc(sizeof(double) * (size_t)(n * ws[i]));
        krun(&k, p, 0, n, 77, 4242, NULL, &temp, NULL, o);
        double se = 1 / sqrt((double)n);
        for (int c = 0; c < 3; c++) {
            double m = 0, v = 0, tail = 0;
            for (int64_t r = 0; r < n; r++) {
                double z = o[0][r * 3 + c];
                m += z;
                v += z * z;
                tail += fabs(z) > 3;
            }
            m /= (double)n;
            v = v / (double)n - m * m;
            CHECK(fabs(m) < 5 * se, "column %d mean %.4f", c, m);
            CHECK(fabs(v - 1) < 5 * sqrt(2.0) * se, "column %d variance %.4f", c, v);
            double pt = 0.0026997960632601866, set = sqrt(pt * (1 - pt) / (double)n);
            CHECK(fabs(tail / (double)n - pt) < 5 * set, "column %d: %.5f beyond 3", c, tail / (double)n);
        }
        for (int a = 0; a < 3; a++)
            for (int b = a + 1; b < 3; b++) {
                double cz = 0, cq = 0;
                for (int64_t r = 0; r < n; r++) {
                    double za = o[0][r * 3 + a], zb = o[0][r * 3 + b];
                    cz += za * zb;
                    cq += (za * za - 1) * (zb * zb - 1);
                }
                cz /= (double)n;
                cq /= 2 * (double)n;   /* var(z^2 - 1) = 2 */
                CHECK(fabs(cz) < 5 * se && fabs(cq) < 5 * se, "columns %d, %d: corr %.4f, of squares %.4f", a, b, cz,
                      cq);
            }
        for (int i = 0; i < 3; i++) free(o[i]);
    }
    arena_free(&ar);
}

static int read_file(const char *path, char **text) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *text = calloc((size_t)n + 1, 1);
    size_t got = fread(*text, 1, (size_t)n, f);
    fclose(f);
    return (long)got == n ? (int)n : -1;
}

static int file_has(const char *path, const char *s) {
    char *t = NULL;
    int n = read_file(path, &t);
    int r = n >= 0 && memmem(t, (size_t)n, s, strlen(s)) != NULL;
    free(t);
    return r;
}

/* the ISA-mismatch trap: code for an older x86 CPU must call that CPU's Sleef variants */
TEST(isa_variants_on_host) {
#if defined(__x86_64__)
    arena ar;
    arena_init(&ar);
    tprog *p = tprog_new(&ar, "isa");
    tref x = t_arg(p, 0, 3);
    tref v[6] = { t_un(p, T_EXP, x), t_un(p, T_TANH, x), t_un(p, T_LOG1P, t_un(p, T_ABS, x)), t_un(p, T_EXPM1, x),
                  t_un(p, T_LOG, t_un(p, T_ABS, x)), t_un(p, T_GELU, x) };
    t_output(p, t_concat(p, v, 6));
    /* need: 1 AVX2+FMA, 2 AVX-512F on the host */
    struct { const char *cpu; int vw, v32, v64; const char *f32name, *f64name; int need; } cases[] = {
        { "x86-64-v3", 0, 8, 4, "Sleef_expf8_u10avx2", "Sleef_expd4_u10avx2", 1 },
        { "x86-64", 0, 4, 2, "Sleef_expf4_u10sse2", "Sleef_expd2_u10sse2", 0 },
        { "x86-64-v3", 16, 16, 16, "Sleef_expm1f8_u10avx2", "Sleef_tanhd4_u35avx2", 1 },  /* split in halves */
        { "x86-64-v2", 0, 4, 2, "Sleef_expf4_u10sse4", "Sleef_expd2_u10sse4", 0 },
        { "x86-64", 2, 2, 2, "Sleef_expf_u10", "Sleef_expd2_u10sse2", 0 },                  /* f32: scalar calls */
        { NULL, 16, 16, 16, "Sleef_expf16_u10avx512f", "Sleef_expd8_u10avx512f", 2 },        /* host */
    };
    __builtin_cpu_init();
    int have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int have_avx512 = __builtin_cpu_supports("avx512f");
    char path[64];
    snprintf(path, sizeof path, "/tmp/nfc_test_cg_%d.ll", (int)getpid());
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        if ((cases[ci].need == 1 && !have_avx2) || (cases[ci].need == 2 && !have_avx512)) continue;
        const char *cpu = cases[ci].cpu ? cases[ci].cpu : "host";
        for (int dt = DT_F32; dt <= DT_F64; dt++) {
            cg_options o;
            cg_default_options(&o);
            o.dtype = dt;
            o.cpu = cases[ci].cpu;
            o.vector_width = cases[ci].vw;
            kern k;
            if (compile_opts(p, NULL, &o, &k, path)) continue;
            CHECK(k.V == (dt == DT_F32 ? cases[ci].v32 : cases[ci].v64), "%s: V = %d", cpu, k.V);
            const char *want = dt == DT_F32 ? cases[ci].f32name : cases[ci].f64name;
            CHECK(file_has(path, want), "%s %s: no call to %s", cpu, dt == DT_F32 ? "f32" : "f64", want);
            if (cases[ci].cpu) CHECK(!file_has(path, "avx512f"), "%s: calls an AVX-512 variant", cpu);
            /* f32 tanh is nfc's own inline code (cg_math.c) with or without Sleef */
            if (dt == DT_F32) CHECK(!file_has(path, "Sleef_tanhf"), "%s: f32 tanh calls Sleef", cpu);
            int64_t n = 3 * k.V + 5;
            double *xa = malloc(sizeof(double) * (size_t)(n * 3)), *out = malloc(sizeof(double) * (size_t)(n * 18)),
                   *ref = malloc(sizeof(double) * (size_t)(n * 18));
            for (int64_t i = 0; i < n * 3; i++) xa[i] = dt == DT_F32 ? (float)uniform(-5, 5) : uniform(-5, 5);
            ref_eval(p, NULL, n, 0, 0, &xa, NULL, NULL, &ref);
            krun(&k, p, 0, n, 0, 0, &xa, NULL, NULL, &out);
            int bad = 0;
            for (int64_t i = 0; i < n * 18 && bad < 3; i++)
                if (!close_enough(out[i], ref[i], dt == DT_F32 ? 4e-6 : 1e-13)) {
                    bad++;
                    CHECK(0, "%s %s elem %lld: %.17g vs %.17g", cpu, dt == DT_F32 ? "f32" : "f64", (long long)i,
                          out[i], ref[i]);
                }
            free(xa);
            free(out);
            free(ref);
        }
    }
    remove(path);
    arena_free(&ar);
#endif
}

/* exp of a value bounded by its definition (an affine coupling's c * tanh(r / c), negated or
 * not) is inlined without special cases (cg_math.c, exp_inrange); a bound above 80 keeps the
 * Sleef call. Both equal the reference, also for arguments far outside the clamp and NaN. */
TEST(exp_of_bounded) {
    static const double cs[2] = { 2.0, 100.0 };
    for (int ci = 0; ci < 2; ci++) {
        arena ar;
        arena_init(&ar);
        tprog *p = tprog_new(&ar, "expb");
        tref x = t_arg(p, 0, 5);
        tref s = t_bin(p, T_MUL, t_const(p, cs[ci]), t_un(p, T_TANH, t_bin(p, T_MUL, x, t_const(p, 1 / cs[ci]))));
        tref v[2] = { t_un(p, T_EXP, s), t_un(p, T_EXP, t_un(p, T_NEG, s)) };
        t_output(p, t_concat(p, v, 2));
        char path[64];
        snprintf(path, sizeof path, "/tmp/nfc_test_cg_expb_%d.ll", (int)getpid());
        for (int dt = DT_F32; dt <= DT_F64; dt++) {
            cg_options o;
            cg_default_options(&o);
            o.dtype = dt;
            kern k;
            if (compile_opts(p, NULL, &o, &k, path)) continue;
            int calls = file_has(path, "Sleef_exp");
            CHECK(ci == 0 ? !calls : calls, "c = %g, %s: %s Sleef's exp", cs[ci], dt == DT_F32 ? "f32" : "f64",
                  calls ? "calls" : "does not call");
            int64_t n = 2 * k.V + 3;
            double *xa = malloc(sizeof(double) * (size_t)(n * 5)), *out = malloc(sizeof(double) * (size_t)(n * 10)),
                   *ref = malloc(sizeof(double) * (size_t)(n * 10));
            for (int64_t i = 0; i < n * 5; i++) xa[i] = uniform(-300, 300);
            xa[0] = 1e30;
            xa[1] = -1e30;
            xa[2] = NAN;
            for (int64_t i = 0; i < n * 5; i++) if (dt == DT_F32) xa[i] = (float)xa[i];
            ref_eval(p, NULL, n, 0, 0, &xa, NULL, NULL, &ref);
            krun(&k, p, 0, n, 0, 0, &xa, NULL, NULL, &out);
            int bad = 0;
            for (int64_t i = 0; i < n * 10 && bad < 3; i++) {
                /* e^100 overflows f32; an argument s carries s times its relative rounding */
                double want = dt == DT_F32 ? (double)(float)ref[i] : ref[i];
                double tol = (dt == DT_F32 ? 4e-6 : 1e-13) * (1 + fabs(log(fabs(want))));
                if (isnan(want) ? isnan(out[i]) : isinf(want) ? out[i] == want : close_enough(out[i], want, tol)) continue;
                bad++;
                CHECK(0, "c = %g %s elem %lld: %.17g vs %.17g", cs[ci], dt == DT_F32 ? "f32" : "f64", (long long)i, out[i],
                      want);
            }
            free(xa);
            free(out);
            free(ref);
        }
        remove(path);
        arena_free(&ar);
    }
}

TEST(emit_files) {
    arena ar;
    arena_init(&ar);
    tprog *fwd = tprog_new(&ar, "forward"), *inv = tprog_new(&ar, "inverse");
    tref x = t_arg(fwd, 0, 4);
    t_output(fwd, t_un(fwd, T_EXP, x));
    tref z = t_arg(inv, 0, 4);
    t_output(inv, t_un(inv, T_LOG, z));
    const tprog *progs[2] = { fwd, inv };
    cg_module *m = NULL;
    char err[512] = "";
    int rc = cg_build(progs, 2, NULL, "mymodel", NULL, &m, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    if (rc) { arena_free(&ar); return; }
    CHECK_STR(cg_function_name(m, 0), "mymodel_forward");
    CHECK_STR(cg_function_name(m, 1), "mymodel_inverse");
    CHECK(cg_function_name(m, 2) == NULL);
    CHECK(cg_workspace_bytes(m, 0) > 0 && cg_workspace_bytes(m, 5) == -1);
    char base[64], path[96];
    snprintf(base, sizeof base, "/tmp/nfc_test_cg_%d", (int)getpid());
    static const char *const ext[3] = { "ll", "s", "o" };
    for (int kind = CG_EMIT_LLVM; kind <= CG_EMIT_OBJ; kind++) {
        snprintf(path, sizeof path, "%s.%s", base, ext[kind]);
        rc = cg_emit_file(m, path, kind, err, sizeof err);
        CHECK(rc == 0, "emit %s: %s", path, err);
        CHECK(file_has(path, "mymodel_forward"), "%s lacks the function name", path);
        CHECK(file_has(path, "mymodel_inverse"), "%s lacks the function name", path);
        remove(path);
    }
    CHECK(cg_emit_file(m, "/nonexistent/dir/x.ll", CG_EMIT_LLVM, err, sizeof err) == -1 && err[0]);
    CHECK(cg_emit_file(m, "/nonexistent/dir/x.o", CG_EMIT_OBJ, err, sizeof err) == -1 && err[0]);
    /* the module still runs after emitting */
    rc = jit_add(J, m, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    kern_fn f = (kern_fn)jit_lookup(J, "mymodel_inverse", err, sizeof err);
    CHECK(f != NULL, "%s", err);
    if (f) {
        float in[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, out[8];
        const void *a[1] = { in };
        void *o[1] = { out };
        void *ws = aligned_alloc(64, 4096);
        f(2, 0, 0, a, NULL, o, NULL, ws);
        free(ws);
        for (int i = 0; i < 8; i++) CHECK_NEAR(out[i], log(in[i]), 1e-6);
    }
    arena_free(&ar);
}

TEST(errors_are_messages) {
    arena ar;
    arena_init(&ar);
    char err[512];
    cg_module *m = (cg_module *)1;
    /* a program that tir_verify rejects: a loop that is never closed */
    tprog *p = tprog_new(&ar, "broken");
    tref x = t_arg(p, 0, 2);
    t_loop_begin(p, x, 3);
    t_output(p, x);
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&p, 1, NULL, "b", NULL, &m, err, sizeof err) == -1 && m == NULL);
    CHECK(strstr(err, "not closed") != NULL, "message: %s", err);
    /* bad operand reference */
    tprog *q = tprog_new(&ar, "broken2");
    tref y = t_arg(q, 0, 2);
    tref e = t_un(q, T_EXP, y);
    q->nodes[e].in[0] = 5;
    t_output(q, e);
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&q, 1, NULL, "b", NULL, &m, err, sizeof err) == -1 && err[0]);
    /* a PARAM without a graph, a bad parameter index */
    int rows[1] = { 0 }, w[1] = { 2 };
    ir_graph *g = fake_graph(&ar, 1, rows, w);
    tprog *r = tprog_new(&ar, "params");
    tref ra = t_arg(r, 0, 2), rp = t_param(r, g, 0);
    t_output(r, t_bin(r, T_ADD, ra, rp));
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&r, 1, NULL, "b", NULL, &m, err, sizeof err) == -1 && err[0]);
    r->nodes[rp].iattr[0] = 3;
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&r, 1, g, "b", NULL, &m, err, sizeof err) == -1 && strstr(err, "parameter"), "%s", err);
    /* bad options */
    tprog *ok = tprog_new(&ar, "ok");
    t_output(ok, t_un(ok, T_EXP, t_arg(ok, 0, 2)));
    cg_options o;
    cg_default_options(&o);
    o.vector_width = 3;
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&ok, 1, NULL, "b", &o, &m, err, sizeof err) == -1 && err[0]);
    cg_default_options(&o);
    o.dtype = 7;
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&ok, 1, NULL, "b", &o, &m, err, sizeof err) == -1 && err[0]);
    cg_default_options(&o);
    o.opt_level = 9;
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&ok, 1, NULL, "b", &o, &m, err, sizeof err) == -1 && err[0]);
    cg_default_options(&o);
    o.triple = "nosucharch-unknown-none";
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&ok, 1, NULL, "b", &o, &m, err, sizeof err) == -1 && err[0], "%s", err);
#if defined(__x86_64__)
    cg_default_options(&o);
    o.cpu = "pentium9000";
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&ok, 1, NULL, "b", &o, &m, err, sizeof err) == -1 && strstr(err, "pentium9000"), "%s", err);
#endif
    /* a batched value that needs the sum over the whole batch */
    tprog *red = tprog_new(&ar, "red");
    tref ry = t_arg(red, 0, 2);
    t_output(red, t_bin(red, T_SUB, ry, t_batchsum(red, ry)));
    err[0] = 0;
    CHECK(cg_build((const tprog *const *)&red, 1, NULL, "b", NULL, &m, err, sizeof err) == -1 && strstr(err, "sum over the batch"),
          "%s", err);
    /* two programs with the same name */
    const tprog *two[2] = { ok, ok };
    err[0] = 0;
    CHECK(cg_build(two, 2, NULL, "b", NULL, &m, err, sizeof err) == -1 && strstr(err, "two programs"), "%s", err);
    /* a cross-target module builds, but the host JIT refuses it */
    cg_default_options(&o);
    o.triple = "aarch64-linux-gnu";
    err[0] = 0;
    int rc = cg_build((const tprog *const *)&ok, 1, NULL, "cross", &o, &m, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    if (rc == 0) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/nfc_test_cg_%d.s", (int)getpid());
        CHECK(cg_vector_width(m) == 4);
        CHECK(cg_emit_file(m, path, CG_EMIT_ASM, err, sizeof err) == 0, "%s", err);
        CHECK(file_has(path, "Sleef_expf4_u10advsimd"), "aarch64 code should call the advsimd variant");
        remove(path);
#if defined(__x86_64__)
        err[0] = 0;
        CHECK(jit_add(J, m, err, sizeof err) == -1 && strstr(err, "cannot run"), "%s", err);
#else
        cg_free(m);
#endif
    }
    /* unknown symbols */
    err[0] = 0;
    CHECK(jit_lookup(J, "no_such_function", err, sizeof err) == NULL && err[0]);
    arena_free(&ar);
}

TEST(opt_levels) {
    arena ar;
    arena_init(&ar);
    int rows[2] = { 6, 0 }, w[2] = { 6, 6 };
    ir_graph *g = fake_graph(&ar, 2, rows, w);
    tprog *p = tprog_new(&ar, "opt");
    tref x = t_arg(p, 0, 6);
    tref h = t_un(p, T_SOFTPLUS, t_bin(p, T_ADD, t_matmul(p, x, t_param(p, g, 0)), t_param(p, g, 1)));
    t_output(p, t_lu(p, T_LU_FWD, h, t_param(p, g, 0)));
    for (int lvl = 0; lvl <= 3; lvl++) {
        cg_options o;
        cg_default_options(&o);
        o.opt_level = lvl;
        o.dtype = DT_F64;
        kern k;
        if (compile_opts(p, g, &o, &k, NULL)) continue;
        int64_t n = 2 * k.V + 1, np = tir_param_offsets(g, NULL), poff[2];
        tir_param_offsets(g, poff);
        double *xa = malloc(sizeof(double) * (size_t)(n * 6)), *out = malloc(sizeof(double) * (size_t)(n * 6)),
               *ref = malloc(sizeof(double) * (size_t)(n * 6)), *pr = malloc(sizeof(double) * (size_t)np);
        for (int64_t i = 0; i < n * 6; i++) xa[i] = uniform(-1, 1);
        for (int64_t i = 0; i < np; i++) pr[i] = uniform(-0.5, 0.5);
        ref_eval(p, poff, n, 0, 0, &xa, NULL, pr, &ref);
        krun(&k, p, np, n, 0, 0, &xa, NULL, pr, &out);
        for (int64_t i = 0; i < n * 6; i++) CHECK(close_enough(out[i], ref[i], 1e-13), "O%d: %g vs %g", lvl, out[i], ref[i]);
        free(xa); free(out); free(ref); free(pr);
    }
    arena_free(&ar);
}

/* A coupling-flow-like program of about 300 nodes: correctness, and the compile time
 * (printed with NFC_CG_TIMING=1). */
TEST(big_program) {
    arena ar;
    arena_init(&ar);
    enum { D = 8, H = 32, L = 8 };
    int rows[6 * L], w[6 * L];
    for (int l = 0; l < L; l++) {
        rows[6 * l + 0] = D / 2; w[6 * l + 0] = H;   /* W1 */
        rows[6 * l + 1] = 0;     w[6 * l + 1] = H;   /* b1 */
        rows[6 * l + 2] = H;     w[6 * l + 2] = H;   /* W2 */
        rows[6 * l + 3] = 0;     w[6 * l + 3] = H;   /* b2 */
        rows[6 * l + 4] = H;     w[6 * l + 4] = D;   /* W3 -> (s, t) */
        rows[6 * l + 5] = 0;     w[6 * l + 5] = D;   /* b3 */
    }
    ir_graph *g = fake_graph(&ar, 6 * L, rows, w);
    tprog *p = tprog_new(&ar, "forward");
    tref x = t_arg(p, 0, D), ld = -1;
    int32_t lo[D / 2], hi[D / 2], rev[D];
    for (int i = 0; i < D / 2; i++) { lo[i] = i; hi[i] = i + D / 2; }
    for (int i = 0; i < D; i++) rev[i] = D - 1 - i;
    for (int l = 0; l < L; l++) {
        tref x1 = t_gather(p, x, lo, D / 2), x2 = t_gather(p, x, hi, D / 2);
        tref h = t_un(p, T_RELU, t_bin(p, T_ADD, t_matmul(p, x1, t_param(p, g, 6 * l)), t_param(p, g, 6 * l + 1)));
        h = t_un(p, T_GELU, t_bin(p, T_ADD, t_matmul(p, h, t_param(p, g, 6 * l + 2)), t_param(p, g, 6 * l + 3)));
        tref st = t_bin(p, T_ADD, t_matmul(p, h, t_param(p, g, 6 * l + 4)), t_param(p, g, 6 * l + 5));
        tref s = t_gather(p, st, lo, D / 2), t = t_gather(p, st, hi, D / 2);
        s = t_bin(p, T_MUL, t_const(p, 2), t_un(p, T_TANH, t_bin(p, T_MUL, s, t_const(p, 0.5))));
        tref y2 = t_bin(p, T_ADD, t_bin(p, T_MUL, x2, t_un(p, T_EXP, s)), t);
        tref rs = t_rowsum(p, s);
        ld = ld < 0 ? rs : t_bin(p, T_ADD, ld, rs);
        tref parts[2] = { x1, y2 };
        x = t_gather(p, t_concat(p, parts, 2), rev, D);
        tref sq = t_bin(p, T_MUL, t_un(p, T_SQUARE, x), t_const(p, -0.5));
        tref lp = t_bin(p, T_ADD, t_rowsum(p, sq), t_const(p, -0.5 * D * log(2 * M_PI)));
        lp = t_bin(p, T_ADD, lp, ld);
        (void)lp;
        if (l == L - 1) t_output(p, lp);
    }
    t_output(p, x);
    t_output(p, ld);
    spec s = { .alo = -2, .ahi = 2, .plo = -0.3, .phi = 0.3, .tol32 = 2e-5, .tol64 = 1e-12 };
    check_prog("big", p, g, &s);
    if (getenv("NFC_CG_TIMING")) {
        for (int lvl = 0; lvl <= 3; lvl++)
            for (int dt = DT_F32; dt <= DT_F64; dt++) {
                cg_options o;
                cg_default_options(&o);
                o.opt_level = lvl;
                o.dtype = dt;
                double best = 1e9, bb = 1e9;
                for (int rep = 0; rep < 5; rep++) {
                    kern k;
                    char err[512];
                    cg_module *m;
                    double t0 = now_ms();
                    if (cg_build((const tprog *const *)&p, 1, g, "timing", &o, &m, err, sizeof err)) break;
                    double t1 = now_ms();
                    if (compile_opts(p, g, &o, &k, NULL) == 0 && k.ms < best) best = k.ms;
                    if (t1 - t0 < bb) bb = t1 - t0;
                    cg_free(m);
                }
                printf("# big program (%d nodes) O%d %s: cg_build %.1f ms, cg_build+jit %.1f ms\n", p->nn, lvl,
                       dt == DT_F32 ? "f32" : "f64", bb, best);
            }
    }
    arena_free(&ar);
}

/* ------------------------------------------------------------------ fusion */

/* Compiles p fused and with no_fuse (f32 and f64, V = 1 and native) and compares every
 * output of the two on n = 1, 7, 17, 33 rows (partial tiles, several tiles): f64 within
 * 1e-12, f32 within 1e-5 relative (a multiply and an add computed in registers may be
 * contracted into an FMA, so the two are not bit for bit the same). Checks that fusion made
 * exactly nfused nodes virtual (none with no_fuse) and that the workspace shrank. */
static void check_fused(const char *what, const tprog *p, const ir_graph *g, int nfused, double lo, double hi) {
    int64_t np = g ? tir_param_offsets(g, NULL) : 0;
    double scalars[4] = { 0.7, 0.7, 0.7, 0.7 };
    for (int dt = DT_F32; dt <= DT_F64; dt++)
        for (int vi = 0; vi < 2; vi++) {
            cg_options o;
            cg_default_options(&o);
            o.dtype = dt;
            o.vector_width = vi ? 0 : 1;
            o.opt_level = TEST_OPT;
            kern kf, ku;
            if (compile_opts(p, g, &o, &kf, NULL)) continue;
            o.no_fuse = 1;
            if (compile_opts(p, g, &o, &ku, NULL)) continue;
            const char *ds = dt == DT_F32 ? "f32" : "f64";
            CHECK(kf.nfused == nfused, "%s %s V=%d: %d virtual nodes, expected %d", what, ds, kf.V, kf.nfused, nfused);
            CHECK(ku.nfused == 0, "%s %s: %d virtual nodes with no_fuse", what, ds, ku.nfused);
            CHECK(nfused == 0 ? kf.ws == ku.ws : kf.ws < ku.ws, "%s %s V=%d: workspace %lld fused, %lld not", what, ds, kf.V,
                  (long long)kf.ws, (long long)ku.ws);
            double tol = dt == DT_F32 ? 1e-5 : 1e-12;
            static const int64_t ns[4] = { 1, 7, 17, 33 };
            for (int ni = 0; ni < 4; ni++) {
                int64_t n = ns[ni];
                double *args[TPROG_MAX_IO], *of[TPROG_MAX_IO + 1], *ou[TPROG_MAX_IO + 1];
                double *params = malloc(sizeof(double) * (size_t)(np + 1));
                for (int64_t e = 0; e < np; e++) {
                    double v = uniform(-0.7, 0.7);
                    params[e] = dt == DT_F32 ? (double)(float)v : v;
                }
                for (int a = 0; a < p->nargs; a++) {
                    args[a] = malloc(sizeof(double) * (size_t)(n * p->arg_w[a]));
                    for (int64_t e = 0; e < n * p->arg_w[a]; e++) {
                        double v = uniform(lo, hi);
                        args[a][e] = dt == DT_F32 ? (double)(float)v : v;
                    }
                }
                int no = p->nouts + (p->ngrad ? 1 : 0);
                for (int k = 0; k < no; k++) {
                    size_t cnt = (size_t)(k < p->nouts ? n * p->nodes[p->outs[k]].w : p->param_total);
                    of[k] = malloc(sizeof(double) * cnt);
                    ou[k] = malloc(sizeof(double) * cnt);
                }
                krun(&kf, p, np, n, 0, 5, args, scalars, params, of);
                krun(&ku, p, np, n, 0, 5, args, scalars, params, ou);
                for (int k = 0; k < no; k++) {
                    int64_t cnt = k < p->nouts ? n * p->nodes[p->outs[k]].w : p->param_total;
                    int bad = 0;
                    for (int64_t e = 0; e < cnt && bad < 3; e++)
                        if (!close_enough(of[k][e], ou[k][e], tol)) {
                            bad++;
                            CHECK(0, "%s %s V=%d n=%lld out %d elem %lld: fused %.17g, not fused %.17g", what, ds, kf.V,
                                  (long long)n, k, (long long)e, of[k][e], ou[k][e]);
                        }
                    free(of[k]);
                    free(ou[k]);
                }
                for (int a = 0; a < p->nargs; a++) free(args[a]);
                free(params);
            }
        }
}

/* Hand-built programs with every kind of fusion, for widths that are not multiples of the
 * product kernel's 8-wide blocks (nor of V), fused against not fused (check_fused, with the
 * exact count of virtual nodes) and fused against the C reference (check_prog). */
TEST(fusion_programs) {
    static const int cfg[][3] = { { 3, 13, 5 }, { 5, 19, 13 }, { 4, 16, 1 } };   /* in, hidden, out */
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        arena ar;
        arena_init(&ar);
        int din = cfg[ci][0], h = cfg[ci][1], dout = cfg[ci][2];
        char what[64];
        /* W1 [in, h], b1 [h], W2 [h, h], b2 [h], W3 [h, out], b3 [out] */
        int rows[6] = { din, 0, h, 0, h, 0 }, w[6] = { h, h, h, h, dout, dout };
        ir_graph *g = fake_graph(&ar, 6, rows, w);
        tref W[6];

        /* an MLP: MATMUL -> ADD -> TANH and MATMUL -> ADD -> RELU (the products and the bias
         * adds virtual, the activations materialized: their users are products), the output
         * layer MATMUL -> ADD (the add is an output); the backward pattern MATMUL_NT -> MUL
         * by STEP (both virtual) under a SUB; two products in one tree (only the first is
         * virtual); a product used twice (ADD(m, m): materialized) */
        tprog *p = tprog_new(&ar, "mlp");
        for (int k = 0; k < 6; k++) W[k] = t_param(p, g, k);
        tref x = t_arg(p, 0, din);
        tref h1 = t_un(p, T_TANH, t_bin(p, T_ADD, t_matmul(p, x, W[0]), W[1]));
        tref h2 = t_un(p, T_RELU, t_bin(p, T_ADD, t_matmul(p, h1, W[2]), W[3]));
        tref o = t_bin(p, T_ADD, t_matmul(p, h2, W[4]), W[5]);
        t_output(p, o);
        tref gb = t_bin(p, T_MUL, t_matmul_nt(p, o, W[4]), t_un(p, T_STEP, h2));
        t_output(p, t_bin(p, T_SUB, gb, h1));
        t_output(p, t_un(p, T_TANH, t_bin(p, T_ADD, t_matmul(p, x, W[0]), t_matmul(p, x, W[0]))));
        tref mm = t_matmul(p, x, W[0]);
        t_output(p, t_bin(p, T_ADD, mm, mm));
        snprintf(what, sizeof what, "fusion mlp %d-%d-%d", din, h, dout);
        check_fused(what, p, g, 10, -1, 1);
        spec s = { .alo = -1, .ahi = 1, .plo = -0.7, .phi = 0.7, .tol32 = 2e-5, .tol64 = 1e-12 };
        check_prog(what, p, g, &s);

        /* elementwise trees: two virtual operands (EXP, MUL) under an ADD used twice, one of
         * them by MUL(s, s) (three uses: materialized); SELECT of three virtual operands;
         * width-1 values: NEG(c) under a width-h ADD stays (broadcast), EXP(c) under a width-1
         * ADD is virtual, that ADD under a width-h MUL not; fused nodes under reductions
         * (BATCHSUM of MUL(EXP(a), a); MATMUL_TN of TANH(ADD(MATMUL)), the product and the add
         * virtual). At most 3 outputs beside the gradients. */
        tprog *q = tprog_new(&ar, "tree");
        tref a = t_arg(q, 0, h), c = t_arg(q, 1, 1);
        tref sum = t_bin(q, T_ADD, t_un(q, T_EXP, a), t_bin(q, T_MUL, a, t_const(q, 0.5)));
        t_output(q, t_bin(q, T_SUB, sum, a));
        t_output(q, t_select(q, t_bin(q, T_SUB, a, t_const(q, 0.2)), t_un(q, T_SIGMOID, a), t_un(q, T_SOFTPLUS, a)));
        tref v1 = t_bin(q, T_ADD, t_un(q, T_NEG, c), a);
        tref v2 = t_bin(q, T_ADD, t_un(q, T_EXP, c), c);
        t_output(q, t_bin(q, T_MUL, t_bin(q, T_MUL, v1, v2), t_bin(q, T_MUL, sum, sum)));
        t_grad_output(q, 3, t_batchsum(q, t_bin(q, T_MUL, t_un(q, T_EXP, a), a)));
        tref th = t_un(q, T_TANH, t_bin(q, T_ADD, t_matmul(q, a, t_param(q, g, 2)), t_param(q, g, 3)));
        t_grad_output(q, 2, t_matmul_tn(q, th, a));
        q->param_total = tir_param_offsets(g, NULL);
        snprintf(what, sizeof what, "fusion tree %d", h);
        check_fused(what, q, g, 12, -1, 1);
        check_prog(what, q, g, &s);

        /* a loop: the whole body's tree (product, bias, tanh, two scalings, their sum) is
         * fused into the ADD that is the next state; a value computed before the loop and
         * used in the body stays materialized (another region), as does the LOOP_END's
         * operand; after the loop, SUB under MUL */
        tprog *r = tprog_new(&ar, "loopfuse");
        tref rx = t_arg(r, 0, h);
        tref pre = t_un(r, T_NEG, rx);
        tref b = t_loop_begin(r, rx, 5);
        tref th2 = t_un(r, T_TANH, t_bin(r, T_ADD, t_matmul(r, b, t_param(r, g, 2)), t_param(r, g, 3)));
        tref nx0 = t_bin(r, T_ADD, t_bin(r, T_MUL, b, t_const(r, 0.5)), t_bin(r, T_MUL, th2, t_const(r, 0.25)));
        tref e = t_loop_end(r, t_bin(r, T_ADD, nx0, pre), b);
        t_output(r, t_bin(r, T_MUL, t_bin(r, T_SUB, e, t_const(r, 1)), e));
        snprintf(what, sizeof what, "fusion loop %d", h);
        check_fused(what, r, g, 7, -1, 1);
        check_prog(what, r, g, &s);
        arena_free(&ar);
    }
}

/* Every program of every example (forward, inverse, log_prob, sample) and its gradient
 * program, compiled fused and not fused, give the same outputs (f64 within 1e-12, f32 within
 * 1e-5 relative), and fusion applies to each example. The ASan build (whose JIT compiles
 * are slow, and whose code paths do not depend on the dtype) runs f32 only. */
TEST(fusion_examples) {
    static const char *const files[] = { "examples/moons.flow", "examples/cmoons.flow", "examples/maf.flow",
                                         "examples/glow_dense.flow", "examples/custom.flow" };
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        arena ar;
        arena_init(&ar);
        derived dv;
        tprog *gp = NULL;
        char err[1024] = "";
        ir_graph *g = load_example(files[fi], &ar, &dv, &gp, NULL);
        if (!g) {
            arena_free(&ar);
            continue;
        }
        enum { NPROG = PROG_COUNT + 1 };
        const tprog *progs[NPROG];
        for (int k = 0; k < PROG_COUNT; k++) progs[k] = dv.p[k];
        progs[PROG_COUNT] = gp;
        int64_t np = tir_param_offsets(g, NULL);
        double *params = malloc(sizeof(double) * (size_t)(np + 1));
        init_params(g, params, 7, 0.5);
#if defined(__SANITIZE_ADDRESS__)
        const int last_dt = DT_F32;
#else
        const int last_dt = DT_F64;
#endif
        for (int dt = DT_F32; dt <= last_dt; dt++) {
            kern k[2][NPROG];
            int ok = 1, nf = 0;
            for (int fu = 0; fu < 2 && ok; fu++) {   /* 0: fused, 1: no_fuse */
                cg_options o;
                cg_default_options(&o);
                o.dtype = dt;
                o.opt_level = TEST_OPT;
                o.no_fuse = fu;
                cg_module *m = NULL;
                char prefix[32], names[NPROG][96];
                snprintf(prefix, sizeof prefix, "fx%d", uniq++);
                int rc = cg_build(progs, NPROG, g, prefix, &o, &m, err, sizeof err);
                CHECK(rc == 0, "%s: %s", files[fi], err);
                if (rc) { ok = 0; break; }
                for (int q = 0; q < NPROG; q++) {
                    k[fu][q].ws = cg_workspace_bytes(m, q);
                    k[fu][q].V = cg_vector_width(m);
                    k[fu][q].dtype = dt;
                    k[fu][q].nfused = cg_fused_count(m, q);
                    if (!fu) nf += k[fu][q].nfused;
                    else CHECK(k[fu][q].nfused == 0, "%s %s: %d virtual nodes with no_fuse", files[fi], progs[q]->name,
                               k[fu][q].nfused);
                    snprintf(names[q], sizeof names[q], "%s", cg_function_name(m, q));
                }
                if (jit_add(J, m, err, sizeof err)) { CHECK(0, "%s", err); ok = 0; break; }
                for (int q = 0; q < NPROG; q++) {
                    k[fu][q].f = (kern_fn)jit_lookup(J, names[q], err, sizeof err);
                    CHECK(k[fu][q].f != NULL, "%s", err);
                    if (!k[fu][q].f) ok = 0;
                }
            }
            if (!ok) continue;
            CHECK(nf > 0, "%s: fusion made no node virtual", files[fi]);
            for (int q = 0; q < NPROG; q++) {
                const tprog *p = progs[q];
                if (getenv("NFC_CG_TIMING") && dt == DT_F32)
                    printf("# fusion %s %s (%d nodes): %d virtual, workspace %lld bytes fused, %lld not (f32, V = %d)\n",
                           files[fi], p->name, p->nn, k[0][q].nfused, (long long)k[0][q].ws, (long long)k[1][q].ws, k[0][q].V);
                /* (the workspaces are not compared: with slots reused by liveness, a fused
                 * program can need more, since a virtual node's operands live to its root) */
                int64_t n = 3 * k[0][q].V + 5;
                double *args[TPROG_MAX_IO], *of[TPROG_MAX_IO + 1], *ou[TPROG_MAX_IO + 1];
                double scalars[4] = { 0.8, 0.8, 0.8, 0.8 };
                for (int a = 0; a < p->nargs; a++) {
                    args[a] = malloc(sizeof(double) * (size_t)(n * p->arg_w[a]));
                    for (int64_t e = 0; e < n * p->arg_w[a]; e++) {
                        double u = uniform(-1.5, 1.5);
                        args[a][e] = dt == DT_F32 ? (double)(float)u : u;
                    }
                }
                double *pr = malloc(sizeof(double) * (size_t)(np + 1));
                for (int64_t e = 0; e < np; e++) pr[e] = dt == DT_F32 ? (double)(float)params[e] : params[e];
                int no = p->nouts + (p->ngrad ? 1 : 0);
                for (int o2 = 0; o2 < no; o2++) {
                    size_t cnt = (size_t)(o2 < p->nouts ? n * p->nodes[p->outs[o2]].w : p->param_total);
                    of[o2] = malloc(sizeof(double) * cnt);
                    ou[o2] = malloc(sizeof(double) * cnt);
                }
                krun(&k[0][q], p, np, n, 11, 99, args, scalars, pr, of);
                krun(&k[1][q], p, np, n, 11, 99, args, scalars, pr, ou);
                double tol = dt == DT_F32 ? 1e-5 : 1e-12;
                for (int o2 = 0; o2 < no; o2++) {
                    int64_t cnt = o2 < p->nouts ? n * p->nodes[p->outs[o2]].w : p->param_total;
                    int bad = 0;
                    for (int64_t e = 0; e < cnt && bad < 3; e++)
                        if (!close_enough(of[o2][e], ou[o2][e], tol)) {
                            bad++;
                            CHECK(0, "%s %s %s V=%d out %d elem %lld: fused %.17g, not fused %.17g", files[fi], p->name,
                                  dt == DT_F32 ? "f32" : "f64", k[0][q].V, o2, (long long)e, of[o2][e], ou[o2][e]);
                        }
                    free(of[o2]);
                    free(ou[o2]);
                }
                for (int a = 0; a < p->nargs; a++) free(args[a]);
                free(pr);
            }
        }
        free(params);
        arena_free(&ar);
    }
}

#define DEEP_FLOW_HEAD "flow deep {\n  input x: f32[8]\n  base normal\n"

/* Segments (cg_options.segment_nodes): a program's tile code split into functions of a few
 * nodes computes the same bits as one function, for every program of three examples (the
 * MAF inverse has a tensor-IR loop, which a segment must not cut; glow_dense has LU). */
TEST(segments_equal_one_function) {
    char deep[64];
    snprintf(deep, sizeof deep, "/tmp/nfc_test_deep_%d.flow", (int)getpid());
    FILE *df = fopen(deep, "w");
    CHECK(df != NULL, "cannot write %s", deep);
    if (!df) return;
    fputs(DEEP_FLOW_HEAD "  repeat 6 {\n    affine_coupling mask=alternate net=mlp(24, 24)\n    reverse\n    actnorm\n  }\n}\n", df);
    fclose(df);
    /* the examples, and a deep RealNVP whose layers share their segments (close_segment) */
    const char *const files[] = { "examples/moons.flow", "examples/maf.flow", "examples/glow_dense.flow", deep };
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        arena ar;
        arena_init(&ar);
        derived dv;
        tprog *gp = NULL;
        char err[1024] = "";
        ir_graph *g = load_example(files[fi], &ar, &dv, &gp, NULL);
        if (!g) {
            arena_free(&ar);
            continue;
        }
        enum { NPROG = PROG_COUNT + 1 };
        const tprog *progs[NPROG];
        for (int k = 0; k < PROG_COUNT; k++) progs[k] = dv.p[k];
        progs[PROG_COUNT] = gp;
        int64_t np = tir_param_offsets(g, NULL);
        double *params = malloc(sizeof(double) * (size_t)(np + 1));
        init_params(g, params, 3, 0.5);
        for (int64_t e = 0; e < np; e++) params[e] = (double)(float)params[e];
        enum { NVAR = 6 };
        double *res_out[NVAR][NPROG][TPROG_MAX_IO + 1];
        memset(res_out, 0, sizeof res_out);
        int64_t cnt[NPROG][TPROG_MAX_IO + 1];
        /* 0: one function; 1: segments in the module (tile pairs for the training program);
         * 2: each segment in a module and context of its own, compiled on the JIT's threads
         * while the next is built (segment_sink, as the JIT of model.c does); 3: tile pairs
         * for every program (as AOT builds); 4: no tile pairs; 5: tile pairs for every program,
         * compiled for x86-64-v3 (AVX2: 8 lanes, 16 vector registers, products in half blocks),
         * on x86-64 hosts with AVX2 and FMA */
        int avx2 = 0;
#if defined(__x86_64__)
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
        int64_t V0 = 0;
        for (int variant = 0; variant < NVAR; variant++) {
            if (variant == 5 && !avx2) break;
            cg_options o;
            cg_default_options(&o);
            o.opt_level = TEST_OPT;
            o.segment_nodes = variant == 0 ? -1 : 5;
            if (variant == 2) { o.segment_sink = jit_compile_async; o.segment_ctx = J; }
            if (variant >= 3) o.tile_pairs = variant == 4 ? -1 : 1;
            if (variant == 5) o.cpu = "x86-64-v3";
            cg_module *m = NULL;
            char prefix[32], ir[64];
            snprintf(prefix, sizeof prefix, "sg%d", uniq++);
            int rc = cg_build(progs, NPROG, g, prefix, &o, &m, err, sizeof err);
            CHECK(rc == 0, "%s: %s", files[fi], err);
            if (variant == 2) CHECK(jit_segments_finish(J, rc == 0, err, sizeof err) == 0, "%s: %s", files[fi], err);
            if (rc) break;
            /* the split happened (or not) */
            snprintf(ir, sizeof ir, "/tmp/nfc_test_seg_%d.ll", (int)getpid());
            CHECK(cg_emit_file(m, ir, CG_EMIT_LLVM, err, sizeof err) == 0, "%s", err);
            CHECK(file_has(ir, "_log_prob.seg1.n") == (variant >= 1), "%s: segments %s", files[fi], variant ? "missing" : "present");
            /* split: the main module only declares the segments (their code is compiled already) */
            CHECK(file_has(ir, "define internal void @") == (variant != 0 && variant != 2), "%s variant %d: segment definitions in the main module", files[fi], variant);
            unlink(ir);
            kern k[NPROG];
            char names[NPROG][96];
            for (int q = 0; q < NPROG; q++) {
                k[q].ws = cg_workspace_bytes(m, q);
                k[q].V = cg_vector_width(m);
                k[q].dtype = DT_F32;
                snprintf(names[q], sizeof names[q], "%s", cg_function_name(m, q));
            }
            if (jit_add(J, m, err, sizeof err)) { CHECK(0, "%s", err); break; }
            for (int q = 0; q < NPROG; q++) {
                const tprog *p = progs[q];
                k[q].f = (kern_fn)jit_lookup(J, names[q], err, sizeof err);
                CHECK(k[q].f != NULL, "%s", err);
                if (!k[q].f) continue;
                /* with tile pairs: the training program's second pair has a partial second
                 * tile, the other programs' second pair has no second tile (the host's V:
                 * every variant runs the same rows) */
                if (variant == 0) V0 = k[q].V;
                int64_t n = (p->ngrad ? 3 : 2) * V0 + 3;
                double *args[TPROG_MAX_IO];
                double scalars[4] = { 0.8, 0.8, 0.8, 0.8 };
                rng_state = 77;
                for (int a = 0; a < p->nargs; a++) {
                    args[a] = malloc(sizeof(double) * (size_t)(n * p->arg_w[a]));
                    for (int64_t e = 0; e < n * p->arg_w[a]; e++) args[a][e] = (double)(float)uniform(-1.5, 1.5);
                }
                int no = p->nouts + (p->ngrad ? 1 : 0);
                for (int o2 = 0; o2 < no; o2++) {
                    cnt[q][o2] = o2 < p->nouts ? n * p->nodes[p->outs[o2]].w : p->param_total;
                    res_out[variant][q][o2] = malloc(sizeof(double) * (size_t)cnt[q][o2]);
                }
                krun(&k[q], p, np, n, 5, 42, args, scalars, params, res_out[variant][q]);
                for (int a = 0; a < p->nargs; a++) free(args[a]);
            }
        }
        for (int q = 0; q < NPROG; q++)
            for (int o2 = 0; o2 <= TPROG_MAX_IO; o2++) {
                for (int v = 1; v < NVAR; v++) {
                    if (v == 5 && !avx2) continue;
                    CHECK(!res_out[0][q][o2] == !res_out[v][q][o2], "%s %s output %d: variant %d did not run", files[fi], progs[q]->name, o2, v);
                    if (v == 5 && o2 == progs[q]->nouts && res_out[0][q][o2] && res_out[v][q][o2]) {
                        /* the parameter gradient sums a tile's rows first: 8 lanes group them
                         * otherwise than 16, so only close (every other output: the same bits) */
                        double mx = 0, dmax = 0;
                        for (int64_t e = 0; e < cnt[q][o2]; e++) {
                            mx = fmax(mx, fabs(res_out[0][q][o2][e]));
                            dmax = fmax(dmax, fabs(res_out[0][q][o2][e] - res_out[v][q][o2][e]));
                        }
                        CHECK(dmax <= 1e-5 * mx, "%s %s: x86-64-v3 gradient differs by %.3g (largest %.3g)", files[fi],
                              progs[q]->name, dmax, mx);
                        continue;
                    }
                    if (res_out[0][q][o2] && res_out[v][q][o2])
                        CHECK(memcmp(res_out[0][q][o2], res_out[v][q][o2], sizeof(double) * (size_t)cnt[q][o2]) == 0,
                              "%s %s output %d: %s differs from one function", files[fi], progs[q]->name, o2,
                              v == 1 ? "segmented" : v == 2 ? "segments compiled one module at a time"
                              : v == 3 ? "tile pairs in every program" : v == 4 ? "no tile pairs"
                              : "x86-64-v3 with tile pairs");
                }
                for (int v = 0; v < NVAR; v++) free(res_out[v][q][o2]);
            }
        free(params);
        arena_free(&ar);
    }
    unlink(deep);
}

/* A RealNVP-like flow of `depth` layers (D = 8, mlp(64, 64) couplings with a reverse, and
 * an actnorm per layer when `actnorm`), compiled at O0 with segments: 0: its log_prob, 1:
 * the training program keeping the forward values, 2: the training program recomputing
 * them, 3: log_prob and the kept training program in one build. NULL after a failed CHECK. */
static cg_module *deep_module(int depth, int actnorm, int which) {
    char src[1024];
    snprintf(src, sizeof src,
             DEEP_FLOW_HEAD "  repeat %d {\n    affine_coupling mask=alternate net=mlp(64, 64)\n"
             "    reverse\n%s  }\n}\n", depth, actnorm ? "    actnorm\n" : "");
    arena ar;
    arena_init(&ar);
    diag_ctx dc;
    diag_init(&dc, &ar);
    sema_result res;
    memset(&res, 0, sizeof res);
    derived dv;
    tprog *gp = NULL;
    char err[1024] = "";
    int bad = front_compile_text(&dc, "deep.flow", src, strlen(src), &res, NULL) || res.nflows < 1;
    if (!bad && which != 1 && which != 2) bad = derive_all(res.flows[0], &ar, &dv, err, sizeof err);
    if (!bad && which != 0)
        bad = which == 2 ? grad_build_recompute(res.flows[0], &ar, &gp, err, sizeof err) : grad_build(res.flows[0], &ar, &gp, err, sizeof err);
    CHECK(!bad, "deep flow %d: %s", depth, err);
    cg_module *m = NULL;
    if (!bad) {
        cg_options o;
        cg_default_options(&o);
        o.opt_level = 0;
        const tprog *p[2] = { which == 1 || which == 2 ? gp : dv.p[PROG_LOG_PROB], gp };
        int rc = cg_build(p, which == 3 ? 2 : 1, res.flows[0], "deep", &o, &m, err, sizeof err);
        CHECK(rc == 0, "%s", err);
    }
    arena_free(&ar);
    return m;
}

/* deep_module's program 0: its workspace in *total and the tile part in *tile; 0 or -1 */
static int deep_workspace(int depth, int actnorm, int which, int64_t *tile, int64_t *total) {
    cg_module *m = deep_module(depth, actnorm, which);
    if (!m) return -1;
    *tile = cg_tile_workspace_bytes(m, 0);
    *total = cg_workspace_bytes(m, 0);
    cg_free(m);
    return 0;
}

/* The segment functions compiled for deep_module(depth, 0, 3) (log_prob and the training
 * program) in *compiled, the calls that reuse one in *shared; 0 or -1 */
static int deep_segments(int depth, int *compiled, int *shared) {
    cg_module *m = deep_module(depth, 0, 3);
    if (!m) return -1;
    *compiled = cg_segment_count(m, shared);
    cg_free(m);
    return 0;
}

/* Layers of the same shape share their segments' code (close_segment): the number of
 * segment functions compiled for a RealNVP's log_prob and training programs is the same at
 * depth 6 and 16 (the first and last layers differ, and masks alternate), so compiling takes
 * about the same time; what grows is the calls that reuse one (24 per layer, both programs
 * together; 29 functions are compiled in all, 23 at depth 2). The shared code computes
 * the same bits as one function per program: segments_equal_one_function, deep flow. */
TEST(segments_shared_in_depth) {
    int compiled[2], shared[2];
    if (deep_segments(6, &compiled[0], &shared[0]) || deep_segments(16, &compiled[1], &shared[1])) return;
    printf("    segment functions at depth 6/16: %d/%d compiled, %d/%d calls sharing one\n", compiled[0], compiled[1], shared[0], shared[1]);
    CHECK(compiled[0] > 0 && compiled[1] == compiled[0], "compiled segments at depth 6/16: %d/%d", compiled[0], compiled[1]);
    CHECK(shared[1] - shared[0] >= 10 * 10, "shared calls at depth 6/16: %d/%d", shared[0], shared[1]);
}

/* Slots of batched values are reused once dead: the log_prob workspace of a RealNVP does not
 * grow with its depth from depth 8 on (it grew by one slot per node before), and the
 * programs still compute what the interpreter does (jit_equals_interpreter, fusion_examples). */
TEST(workspace_flat_in_depth) {
    int64_t ws[3] = { 0, 0, 0 }, tile;
    static const int depth[3] = { 2, 8, 32 };
    for (int t = 0; t < 3; t++)
        if (deep_workspace(depth[t], 0, 0, &tile, &ws[t])) return;
    /* the same from depth 8 on (a slot per node would be some 40 slots of 64 x V floats per
     * layer; before fusion's span limit, CG_FUSE_SPAN, the sum of the layers' log-determinant
     * terms was one fused chain that kept a width-1 slot per layer alive to the end) */
    printf("    log_prob workspace at depth 2/8/32: %lld/%lld/%lld bytes\n", (long long)ws[0], (long long)ws[1], (long long)ws[2]);
    CHECK(ws[0] > 0 && ws[2] == ws[1] && ws[1] - ws[0] <= (8 - 2) * 64 && ws[2] < 16384,
          "log_prob workspace at depth 2/8/32: %lld/%lld/%lld bytes", (long long)ws[0], (long long)ws[1], (long long)ws[2]);
}

/* The training program's workspace: with the forward values kept (grad_build) the tile part
 * grows with depth (each layer's activations wait for the backward pass); with recomputation
 * by inverse (grad_build_recompute) it does not: only the values around one layer are live. */
TEST(recompute_workspace_flat_in_depth) {
    static const int depth[3] = { 2, 8, 32 };
    int64_t tile[2][3], total[2][3];
    for (int t = 0; t < 3; t++)
        for (int mode = 0; mode < 2; mode++)
            if (deep_workspace(depth[t], 1, 1 + mode, &tile[mode][t], &total[mode][t])) return;
    printf("    training workspace, tile part (total), at depth 2/8/32: kept %lld (%lld) / %lld (%lld) / %lld (%lld); "
           "recomputed %lld (%lld) / %lld (%lld) / %lld (%lld) bytes\n",
           (long long)tile[0][0], (long long)total[0][0], (long long)tile[0][1], (long long)total[0][1], (long long)tile[0][2], (long long)total[0][2],
           (long long)tile[1][0], (long long)total[1][0], (long long)tile[1][1], (long long)total[1][1], (long long)tile[1][2], (long long)total[1][2]);
    /* kept: at least a 64-wide activation per layer and tile row group */
    CHECK(tile[0][2] - tile[0][1] >= (32 - 8) * 64 * 4 * 16, "kept: %lld -> %lld", (long long)tile[0][1], (long long)tile[0][2]);
    /* recomputed: the same from depth 8 to 32, and far below the kept program's */
    CHECK(tile[1][0] > 0 && tile[1][2] == tile[1][1] && tile[1][2] * 4 < tile[0][2], "recomputed: %lld / %lld / %lld",
          (long long)tile[1][0], (long long)tile[1][1], (long long)tile[1][2]);
}

int main(void) {
    char err[512];
    if (jit_create(&J, err, sizeof err)) {
        printf("FAIL jit_create\n    %s\n", err);
        return 1;
    }
    RUN(unary_ops_all);
    RUN(nan_inf);
    RUN(binary_ops_broadcast);
    RUN(matmul_shapes);
    RUN(unbatched_precompute);
    RUN(gather_concat_rowsum);
    RUN(lu_forward_inverse);
    RUN(loops);
    RUN(randn_functions_accurate);
    RUN(random_bits);
    RUN(randn_moments);
    RUN(isa_variants_on_host);
    RUN(exp_of_bounded);
    RUN(emit_files);
    RUN(errors_are_messages);
    RUN(opt_levels);
    RUN(big_program);
    RUN(gradient_ops);
    RUN(jit_equals_interpreter);
    RUN(fusion_programs);
    RUN(fusion_examples);
    RUN(segments_equal_one_function);
    RUN(segments_shared_in_depth);
    RUN(workspace_flat_in_depth);
    RUN(recompute_workspace_flat_in_depth);
    jit_free(J);
    return t_done();
}
