/* compiler/interp.c: the reference interpreter (see interp.h).
 * Input: a verified program, a batch of rows, parameters. Output: the program's outputs.
 * Every value is a plain array of doubles: [n][w] when batched, [rows][w] otherwise;
 * operations are written the obvious way, for clarity over speed. */
#include "interp.h"

#include <math.h>

#include "randn.h"
#include <stdlib.h>
#include <string.h>

uint64_t tir_mix64(uint64_t z) {
    z ^= z >> 30;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 27;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z;
}

static void uniforms(int64_t seed, int salt, int64_t row, int w, int col, double *u1, double *u2) {
    uint64_t k = (uint64_t)row * (uint64_t)w + (uint64_t)col;
    uint64_t h1 = tir_mix64((uint64_t)seed ^ tir_mix64(k * 2 + 0 + (uint64_t)salt));
    uint64_t h2 = tir_mix64((uint64_t)seed ^ tir_mix64(k * 2 + 1 + (uint64_t)salt));
    *u1 = ((double)(h1 >> 11) + 0.5) * 0x1p-53;
    *u2 = ((double)(h2 >> 11) + 0.5) * 0x1p-53;
}

double tir_rand_normal(int64_t seed, int salt, int64_t row, int w, int col) {
    double u1, u2, sn, cs;
    uniforms(seed, salt, row, (w + 1) / 2, col / 2, &u1, &u2);   /* a pair per two columns */
    double l = tir_log01(u1);
    double a = -2.0 * l;
    double rad = sqrt(a);
    tir_sincos2pi(u2, &sn, &cs);
    return rad * (col & 1 ? sn : cs);
}

double tir_rand_logistic(int64_t seed, int salt, int64_t row, int w, int col) {
    double u1, u2;
    uniforms(seed, salt, row, w, col, &u1, &u2);
    return log(u1) - log1p(-u1);
}

static double softplus(double x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }
static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

static double unary(int op, double x, double a) {
    switch (op) {
    case T_NEG: return -x;
    case T_EXP: return exp(x);
    case T_LOG: return log(x);
    case T_LOG1P: return log1p(x);
    case T_EXPM1: return expm1(x);
    case T_TANH: return tanh(x);
    case T_SIGMOID: return sigmoid(x);
    case T_LOGSIGMOID: return -softplus(-x);
    case T_SOFTPLUS: return softplus(x);
    case T_RELU: return x < 0 ? 0 : x;   /* NaN stays NaN, as in PyTorch; relu(-0) = -0 */
    case T_ELU: return x > 0 ? x : expm1(x);
    case T_GELU: return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    case T_LEAKY: return x > 0 ? x : a * x;
    case T_SQUARE: return x * x;
    case T_ABS: return fabs(x);
    case T_STEP: return x > 0 ? 1.0 : 0.0;
    case T_NONZERO: return x != 0 ? 1.0 : 0.0;
    default: return NAN;
    }
}

static double binary(int op, double a, double b) {
    switch (op) {
    case T_ADD: return a + b;
    case T_SUB: return a - b;
    case T_MUL: return a * b;
    case T_DIV: return a / b;
    case T_MAX: return isnan(a) || isnan(b) ? a + b : a > b ? a : b;   /* NaN if either is */
    case T_MIN: return isnan(a) || isnan(b) ? a + b : a < b ? a : b;
    default: return NAN;
    }
}

/* element (r, j) of value v with broadcasting */
static double at(const tnode *v, const double *buf, int64_t r, int j) {
    int64_t rr = (v->rows == 1) ? 0 : r;
    int jj = v->w == 1 ? 0 : j;
    return buf[rr * v->w + jj];
}

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto fail; } while (0)

int interp_run(const tprog *p, int64_t n, int64_t row0, int64_t seed, const double *const *args,
               const double *scalars, double *const *outs, const double *params, const int64_t *param_off,
               char *err, size_t errlen) {
    return interp_run_check(p, n, row0, seed, args, scalars, outs, params, param_off, NULL, err, errlen);
}

int interp_run_check(const tprog *p, int64_t n, int64_t row0, int64_t seed, const double *const *args,
                     const double *scalars, double *const *outs, const double *params, const int64_t *param_off,
                     int *first_bad, char *err, size_t errlen) {
    if (first_bad) *first_bad = -1;
    double **val = calloc((size_t)p->nn, sizeof(double *));
    if (!val) { snprintf(err, errlen, "out of memory"); return -1; }
    int loop_begin = -1, trip = 0;
    for (int i = 0; i < p->nn; i++) {
        const tnode *nd = &p->nodes[i];
        int64_t rows = nd->rows ? nd->rows : n;
        int w = nd->w;
        if (!val[i]) {
            val[i] = calloc((size_t)(rows * w > 0 ? rows * w : 1), sizeof(double));
            if (!val[i]) FAIL("out of memory");
        }
        double *o = val[i];
        const tnode *a = nd->nin > 0 ? &p->nodes[nd->in[0]] : NULL;
        const double *A = nd->nin > 0 ? val[nd->in[0]] : NULL;
        switch ((t_op)nd->op) {
        case T_ARG:
            memcpy(o, args[nd->iattr[0]], sizeof(double) * (size_t)(n * w));
            break;
        case T_PARAM:
            memcpy(o, params + param_off[nd->iattr[0]], sizeof(double) * (size_t)(rows * w));
            break;
        case T_CONST: o[0] = nd->fattr[0]; break;
        case T_CONSTTENSOR: memcpy(o, p->consts + nd->aux, sizeof(double) * (size_t)(rows * w)); break;
        case T_SCALAR: o[0] = scalars[nd->iattr[0]]; break;
        case T_MATMUL: {
            const tnode *W = &p->nodes[nd->in[1]];
            const double *B = val[nd->in[1]];
            for (int64_t r = 0; r < n; r++)
                for (int j = 0; j < w; j++) {
                    double s = 0;
                    for (int k = 0; k < W->rows; k++) s += A[r * a->w + k] * B[(int64_t)k * w + j];
                    o[r * w + j] = s;
                }
            break;
        }
        case T_GATHER:   /* batched, or unbatched (rows) */
            for (int64_t r = 0; r < rows; r++)
                for (int j = 0; j < w; j++) o[r * w + j] = A[r * a->w + p->ints[nd->aux + j]];
            break;
        case T_CONCAT:
            for (int64_t r = 0; r < n; r++) {
                int c = 0;
                for (int k = 0; k < nd->nin; k++) {
                    const tnode *q = &p->nodes[nd->in[k]];
                    memcpy(o + r * w + c, val[nd->in[k]] + r * q->w, sizeof(double) * (size_t)q->w);
                    c += q->w;
                }
            }
            break;
        case T_ROWSUM:
            for (int64_t r = 0; r < rows; r++) {
                double s = 0;
                for (int j = 0; j < a->w; j++) s += A[r * a->w + j];
                o[r] = s;
            }
            break;
        case T_DIAG:
            for (int j = 0; j < w; j++) o[j] = A[(int64_t)j * a->w + j];
            break;
        case T_LU_FWD:
        case T_LU_INV: {
            const double *M = val[nd->in[1]];
            int D = w;
            for (int64_t r = 0; r < n; r++) {
                const double *x = A + r * D;
                double *y = o + r * D;
                if (nd->op == T_LU_FWD) {
                    /* u = U x; y = L u */
                    double *u = malloc(sizeof(double) * (size_t)D);
                    if (!u) FAIL("out of memory");
                    for (int k = 0; k < D; k++) {
                        double s = exp(M[(int64_t)k * D + k]) * x[k];
                        for (int j = k + 1; j < D; j++) s += M[(int64_t)k * D + j] * x[j];
                        u[k] = s;
                    }
                    for (int k = 0; k < D; k++) {
                        double s = u[k];
                        for (int j = 0; j < k; j++) s += M[(int64_t)k * D + j] * u[j];
                        y[k] = s;
                    }
                    free(u);
                } else {
                    /* L v = x (forward substitution), U y = v (back substitution) */
                    for (int k = 0; k < D; k++) {
                        double s = x[k];
                        for (int j = 0; j < k; j++) s -= M[(int64_t)k * D + j] * y[j];
                        y[k] = s;
                    }
                    for (int k = D - 1; k >= 0; k--) {
                        double s = y[k];
                        for (int j = k + 1; j < D; j++) s -= M[(int64_t)k * D + j] * y[j];
                        y[k] = s * exp(-M[(int64_t)k * D + k]);
                    }
                }
            }
            break;
        }
        case T_BATCHSUM:
            for (int j = 0; j < w; j++) {
                double acc = 0;
                for (int64_t r = 0; r < n; r++) acc += A[r * a->w + j];
                o[j] = acc;
            }
            break;
        case T_MATMUL_TN: {
            const tnode *b = &p->nodes[nd->in[1]];
            const double *B = val[nd->in[1]];
            memset(o, 0, sizeof(double) * (size_t)(rows * w));
            for (int64_t r = 0; r < n; r++)
                for (int i2 = 0; i2 < a->w; i2++)
                    for (int j = 0; j < b->w; j++) o[(int64_t)i2 * w + j] += A[r * a->w + i2] * B[r * b->w + j];
            break;
        }
        case T_MATMUL_NT: {
            const tnode *W = &p->nodes[nd->in[1]];
            const double *B = val[nd->in[1]];
            for (int64_t r = 0; r < n; r++)
                for (int i2 = 0; i2 < w; i2++) {
                    double acc = 0;
                    for (int j = 0; j < W->w; j++) acc += A[r * a->w + j] * B[(int64_t)i2 * W->w + j];
                    o[r * w + i2] = acc;
                }
            break;
        }
        case T_SCATTER:
            memset(o, 0, sizeof(double) * (size_t)(n * w));
            for (int64_t r = 0; r < n; r++)
                for (int j = 0; j < a->w; j++) o[r * w + p->ints[nd->aux + j]] += A[r * a->w + j];
            break;
        case T_DIAGEMBED:
            memset(o, 0, sizeof(double) * (size_t)(rows * w));
            for (int j = 0; j < w; j++) o[(int64_t)j * w + j] = A[j];
            break;
        case T_LU_INVT: {
            /* U^T w = x (forward substitution), L^T y = w (back substitution) */
            const double *M = val[nd->in[1]];
            int D = w;
            for (int64_t r = 0; r < n; r++) {
                const double *x = A + r * D;
                double *y = o + r * D;
                for (int k = 0; k < D; k++) {
                    double s = x[k];
                    for (int j = 0; j < k; j++) s -= M[(int64_t)j * D + k] * y[j];
                    y[k] = s * exp(-M[(int64_t)k * D + k]);
                }
                for (int k = D - 1; k >= 0; k--) {
                    double s = y[k];
                    for (int j = k + 1; j < D; j++) s -= M[(int64_t)j * D + k] * y[j];
                    y[k] = s;
                }
            }
            break;
        }
        case T_LU_U:
        case T_LU_LT:
        case T_LU_UT: {
            const double *M = val[nd->in[1]];
            int D = w;
            for (int64_t r = 0; r < n; r++) {
                const double *x = A + r * D;
                double *y = o + r * D;
                for (int k = 0; k < D; k++) {
                    double acc;
                    if (nd->op == T_LU_U) {
                        acc = exp(M[(int64_t)k * D + k]) * x[k];
                        for (int j = k + 1; j < D; j++) acc += M[(int64_t)k * D + j] * x[j];
                    } else if (nd->op == T_LU_LT) {
                        acc = x[k];
                        for (int j = k + 1; j < D; j++) acc += M[(int64_t)j * D + k] * x[j];
                    } else {
                        acc = exp(M[(int64_t)k * D + k]) * x[k];
                        for (int j = 0; j < k; j++) acc += M[(int64_t)j * D + k] * x[j];
                    }
                    y[k] = acc;
                }
            }
            break;
        }
        case T_RANDN:
        case T_RANDLOGISTIC:
            for (int64_t r = 0; r < n; r++)
                for (int j = 0; j < w; j++)
                    o[r * w + j] = nd->op == T_RANDN ? tir_rand_normal(seed, nd->iattr[0], row0 + r, w, j)
                                                     : tir_rand_logistic(seed, nd->iattr[0], row0 + r, w, j);
            break;
        case T_LOOP_BEGIN:
            if (loop_begin != i) { loop_begin = i; trip = 0; memcpy(o, A, sizeof(double) * (size_t)(rows * w)); }
            break;
        case T_LOOP_END:
            memcpy(o, A, sizeof(double) * (size_t)(rows * w));
            if (++trip < p->nodes[nd->in[1]].iattr[0]) {
                memcpy(val[nd->in[1]], A, sizeof(double) * (size_t)(rows * w));
                i = nd->in[1]; /* continue with the body */
                continue;
            }
            loop_begin = -1;
            break;
        default:
            if (!(t_ops[nd->op].flags & TF_EW)) FAIL("interp: %s not implemented", t_ops[nd->op].name);
            for (int64_t r = 0; r < rows; r++)
                for (int j = 0; j < w; j++) {
                    double x = at(a, A, r, j);
                    if (nd->nin == 1) {
                        o[r * w + j] = unary(nd->op, x, nd->fattr[0]);
                    } else if (nd->op == T_SELECT) {
                        const tnode *b = &p->nodes[nd->in[1]], *c = &p->nodes[nd->in[2]];
                        o[r * w + j] = x > 0 ? at(b, val[nd->in[1]], r, j) : at(c, val[nd->in[2]], r, j);
                    } else {
                        const tnode *b = &p->nodes[nd->in[1]];
                        o[r * w + j] = binary(nd->op, x, at(b, val[nd->in[1]], r, j));
                    }
                }
            break;
        }
        if (first_bad && *first_bad < 0) {
            for (int64_t e = 0; e < rows * w; e++)
                if (!isfinite(o[e])) { *first_bad = i; break; }
        }
    }
    for (int k = 0; k < p->nouts; k++) {
        const tnode *v = &p->nodes[p->outs[k]];
        memcpy(outs[k], val[p->outs[k]], sizeof(double) * (size_t)(n * v->w));
    }
    if (p->ngrad > 0) {
        double *gout = outs[p->nouts];
        memset(gout, 0, sizeof(double) * (size_t)p->param_total);
        for (int k = 0; k < p->ngrad; k++) {
            const tnode *v = &p->nodes[p->gval[k]];
            const double *src = val[p->gval[k]];
            double *dst = gout + param_off[p->gparam[k]];
            for (int64_t e = 0; e < (int64_t)v->rows * v->w; e++) dst[e] += src[e];
        }
    }
    for (int i = 0; i < p->nn; i++) free(val[i]);
    free(val);
    return 0;
fail:
    for (int i = 0; i < p->nn; i++) free(val[i]);
    free(val);
    return -1;
}
