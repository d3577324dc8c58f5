/* compiler/grad.c: reverse-mode differentiation of tensor-IR programs (see grad.h).
 * Input: a program (the log_prob or the inverse program of a flow) and the value to
 * differentiate. Output: the same program with backward nodes appended and gradient outputs
 * for every parameter. Each op's vector-Jacobian product is in vjp(); loops (the inverse of
 * autoregressive layers) are differentiated by unrolling them (vjp_loop); adjoints may be broadcast
 * (narrower than their value) and are reduced to the operand's shape (sum over the batch
 * for parameters, over features for width-1 operands) when they flow into it.
 * NaN safety: where a rule multiplies the adjoint by something that can be infinite (1/x,
 * exp(x)), a zero adjoint gives exactly zero (SELECT(NONZERO(g), g*f, 0)), so a branch a
 * SELECT discarded cannot turn its zero adjoint into NaN; a NaN adjoint still propagates. */
#include "grad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "derive.h"

typedef struct {
    tprog *p;
    tref  *adj;    /* adjoint of node i, -1 if none: forward nodes and the unrolled copies of loops */
    int    nadj;   /* entries in adj */
    int    nf;
    char  *err;
    size_t errlen;
} gctx;

static tnode *TN(gctx *c, tref r) { return &c->p->nodes[r]; }
static tref cst(gctx *c, double v) { return t_const(c->p, v); }
static tref mul(gctx *c, tref a, tref b) { return t_bin(c->p, T_MUL, a, b); }
static tref add(gctx *c, tref a, tref b) { return t_bin(c->p, T_ADD, a, b); }
static tref neg(gctx *c, tref a) { return t_un(c->p, T_NEG, a); }

/* zero adjoint -> zero, whatever f is */
static tref safe_mul(gctx *c, tref g, tref f) {
    return t_select(c->p, t_un(c->p, T_NONZERO, g), mul(c, g, f), cst(c, 0.0));
}

/* an adjoint with exactly the shape of value v */
static tref full(gctx *c, tref g, tref v) {
    const tnode *G = TN(c, g), *V = TN(c, v);
    if (G->w == V->w && (G->rows == V->rows || (V->rows == 0 && G->rows == 0))) return g;
    tref zeros = mul(c, t_un(c->p, T_STEP, v), cst(c, 0.0));
    return add(c, zeros, g);
}

/* reduce a contribution to the shape of operand v (undo broadcasting) */
static tref reduce_to(gctx *c, tref g, tref v) {
    const tnode *V = TN(c, v);
    if (V->rows != 0 && TN(c, g)->rows == 0) g = t_batchsum(c->p, g);
    if (V->w == 1 && TN(c, g)->w > 1) g = t_rowsum(c->p, g);
    return g;
}

static void acc(gctx *c, tref v, tref g) {
    if (v < 0 || g < 0) return;
    if (v >= c->nadj) return; /* not reached: operands of forward nodes and copies are below nadj */
    const tnode *n = TN(c, v);
    /* constants and data need no adjoint */
    if (n->op == T_CONST || n->op == T_CONSTTENSOR || n->op == T_SCALAR || n->op == T_ARG || n->op == T_RANDN ||
        n->op == T_RANDLOGISTIC)
        return;
    /* the adjoint of a batched value is batched: a broadcast one would lose the sum over rows
     * when it reaches an unbatched operand */
    if (n->rows == 0 && TN(c, g)->rows != 0) g = full(c, g, v);
    g = reduce_to(c, g, v);
    c->adj[v] = c->adj[v] < 0 ? g : add(c, c->adj[v], g);
}

/* The adjoint of lu in y = L U x given gy (the adjoint of y), lg = L^T gy and x:
 * dL = gy (U x)^T strictly lower, dU = lg x^T upper, diag(dlu) = diag(lg x^T) * exp(diag lu). */
static tref lu_param_adj(gctx *c, tref gy, tref lg, tref x, tref lu) {
    tprog *p = c->p;
    int D = TN(c, x)->w;
    double *lower = xmalloc(sizeof(double) * (size_t)D * D), *upper = xmalloc(sizeof(double) * (size_t)D * D);
    for (int r = 0; r < D; r++)
        for (int q = 0; q < D; q++) { lower[r * D + q] = r > q; upper[r * D + q] = r < q; }
    tref u = t_lu(p, T_LU_U, x, lu);
    tref dl = mul(c, t_matmul_tn(p, gy, u), t_consttensor(p, lower, D, D));
    tref du_full = t_matmul_tn(p, lg, x);
    tref du = mul(c, du_full, t_consttensor(p, upper, D, D));
    tref ddiag = t_diagembed(p, mul(c, t_diag(p, du_full), t_un(p, T_EXP, t_diag(p, lu))));
    free(lower);
    free(upper);
    return add(c, add(c, dl, du), ddiag);
}

static int vjp(gctx *c, tref i) {
    tprog *p = c->p;
    const tnode n = *TN(c, i); /* copy: the node array grows below */
    tref g = c->adj[i];
    tref a = n.nin > 0 ? n.in[0] : -1, b = n.nin > 1 ? n.in[1] : -1;
    switch ((t_op)n.op) {
    case T_ARG: case T_PARAM: case T_CONST: case T_CONSTTENSOR: case T_SCALAR:
    case T_RANDN: case T_RANDLOGISTIC: case T_STEP: case T_NONZERO:
        return 0;
    case T_NEG: acc(c, a, neg(c, g)); return 0;
    case T_EXP: acc(c, a, safe_mul(c, g, i)); return 0;
    case T_LOG: acc(c, a, safe_mul(c, g, t_bin(p, T_DIV, cst(c, 1.0), a))); return 0;
    case T_LOG1P: acc(c, a, safe_mul(c, g, t_bin(p, T_DIV, cst(c, 1.0), add(c, a, cst(c, 1.0))))); return 0;
    case T_EXPM1: acc(c, a, safe_mul(c, g, add(c, i, cst(c, 1.0)))); return 0;
    case T_TANH: acc(c, a, mul(c, g, t_bin(p, T_SUB, cst(c, 1.0), t_un(p, T_SQUARE, i)))); return 0;
    case T_SIGMOID: acc(c, a, mul(c, g, mul(c, i, t_bin(p, T_SUB, cst(c, 1.0), i)))); return 0;
    case T_LOGSIGMOID: acc(c, a, mul(c, g, t_un(p, T_SIGMOID, neg(c, a)))); return 0;
    case T_SOFTPLUS: acc(c, a, mul(c, g, t_un(p, T_SIGMOID, a))); return 0;
    /* relu(a) > 0 and elu(a) > 0 exactly when a > 0 (a NaN: neither), so the branch is
     * chosen on the activation's output: the backward pass then needs only the output,
     * and the input (a product's sum) is not kept for it */
    case T_RELU: acc(c, a, t_select(p, i, g, cst(c, 0.0))); return 0;
    case T_ELU: acc(c, a, t_select(p, i, g, mul(c, g, add(c, i, cst(c, 1.0))))); return 0;
    case T_LEAKY: acc(c, a, t_select(p, a, g, mul(c, g, cst(c, n.fattr[0])))); return 0;
    case T_GELU: {
        /* d/dx 0.5 x (1 + tanh(k (x + 0.044715 x^3))) = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2) */
        const double k = 0.7978845608028654;
        tref x2 = t_un(p, T_SQUARE, a);
        tref inner = mul(c, cst(c, k), add(c, a, mul(c, cst(c, 0.044715), mul(c, x2, a))));
        tref t = t_un(p, T_TANH, inner);
        tref d1 = mul(c, cst(c, 0.5), add(c, cst(c, 1.0), t));
        tref d2 = mul(c, mul(c, cst(c, 0.5 * k), a), mul(c, t_bin(p, T_SUB, cst(c, 1.0), t_un(p, T_SQUARE, t)),
                                                     add(c, cst(c, 1.0), mul(c, cst(c, 3 * 0.044715), x2))));
        acc(c, a, mul(c, g, add(c, d1, d2)));
        return 0;
    }
    case T_SQUARE: acc(c, a, mul(c, g, mul(c, cst(c, 2.0), a))); return 0;
    case T_ABS: acc(c, a, t_select(p, a, g, neg(c, g))); return 0;
    case T_ADD: acc(c, a, g); acc(c, b, g); return 0;
    case T_SUB: acc(c, a, g); acc(c, b, neg(c, g)); return 0;
    case T_MUL: acc(c, a, mul(c, g, b)); acc(c, b, mul(c, g, a)); return 0;
    case T_DIV:
        acc(c, a, safe_mul(c, g, t_bin(p, T_DIV, cst(c, 1.0), b)));
        acc(c, b, safe_mul(c, g, neg(c, t_bin(p, T_DIV, i, b))));
        return 0;
    case T_MAX:
    case T_MIN: {
        tref d = n.op == T_MAX ? t_bin(p, T_SUB, a, b) : t_bin(p, T_SUB, b, a);
        acc(c, a, t_select(p, d, g, cst(c, 0.0)));
        acc(c, b, t_select(p, d, cst(c, 0.0), g));
        return 0;
    }
    case T_SELECT:
        acc(c, n.in[1], t_select(p, a, g, cst(c, 0.0)));
        acc(c, n.in[2], t_select(p, a, cst(c, 0.0), g));
        return 0;
    case T_MATMUL: {
        tref gf = full(c, g, i);
        acc(c, a, t_matmul_nt(p, gf, b));
        acc(c, b, t_matmul_tn(p, a, gf));
        return 0;
    }
    case T_GATHER: {
        if (n.rows) {   /* unbatched: only in the sample and inverse programs, never differentiated */
            snprintf(c->err, c->errlen, "gradient: an unbatched gather is not differentiable yet");
            return -1;
        }
        tref gf = full(c, g, i);
        acc(c, a, t_scatter(p, gf, &p->ints[n.aux], n.naux, TN(c, a)->w));
        return 0;
    }
    case T_CONCAT: {
        tref gf = full(c, g, i);
        int off = 0;
        for (int k = 0; k < n.nin; k++) {
            int w = TN(c, n.in[k])->w;
            int32_t *idx = xmalloc(sizeof(int32_t) * (size_t)w);
            for (int j = 0; j < w; j++) idx[j] = off + j;
            acc(c, n.in[k], t_gather(p, gf, idx, w));
            free(idx);
            off += w;
        }
        return 0;
    }
    case T_ROWSUM:
        acc(c, a, g); /* broadcast over the features of a */
        return 0;
    case T_BATCHSUM:
        acc(c, a, g);
        return 0;
    case T_DIAG:
        acc(c, a, t_diagembed(p, full(c, g, i)));
        return 0;
    case T_LU_FWD: {
        /* y = L u, u = U x.  dx = U^T L^T dy; dL = dy u^T (strictly lower); dU = (L^T dy) x^T
         * (upper; its diagonal through exp) */
        tref gf = full(c, g, i);
        tref lg = t_lu(p, T_LU_LT, gf, b);
        acc(c, a, t_lu(p, T_LU_UT, lg, b));
        acc(c, b, lu_param_adj(c, gf, lg, a, b));
        return 0;
    }
    case T_LU_INV: {
        /* x = A^-1 y with A = L U.  dy = A^-T dx = L^-T U^-T dx (one LU_INVT); from
         * d(x) = -A^-1 dA x, the adjoint of A is -dy x^T: LU_FWD's rule with (its input, its
         * output adjoint) = (x, -dy), so dL = -dy (U x)^T (strictly lower), dU = -(L^T dy) x^T
         * (upper; its diagonal through exp) */
        tref gf = full(c, g, i);
        tref gy = t_lu(p, T_LU_INVT, gf, b);
        acc(c, a, gy);
        tref ng = neg(c, gy);
        acc(c, b, lu_param_adj(c, ng, t_lu(p, T_LU_LT, ng, b), i, b));
        return 0;
    }
    default:
        snprintf(c->err, c->errlen, "gradient: %s is not differentiable yet", t_ops[n.op].name);
        return -1;
    }
}

/* grow adj to cover every node of the program so far (new entries: no adjoint) */
static int cover(gctx *c) {
    if (c->nadj >= c->p->nn) return 0;
    tref *a = realloc(c->adj, sizeof(tref) * (size_t)c->p->nn);
    if (!a) { snprintf(c->err, c->errlen, "out of memory"); return -1; }
    for (int k = c->nadj; k < c->p->nn; k++) a[k] = -1;
    c->adj = a;
    c->nadj = c->p->nn;
    return 0;
}

/* Reverse mode through a loop (LOOP_BEGIN b ... LOOP_END e, T trips), by unrolling.
 * A trip overwrites the values of the body, so the backward pass cannot read trip t's values
 * from the forward loop. Instead the body is copied T times as straight-line code after the
 * forward program (trip 0 reads b's initial value, trip t+1 reads trip t's copy of e.in[0]):
 * every trip's values are stored in their own nodes, the gradient program stays free of
 * loops, and the copies are differentiated by the ordinary rules, last trip first. The
 * result of the last copy equals e's value; the adjoint of e seeds it. Body nodes read
 * values from before the loop directly, so their adjoints accumulate there as for any other
 * use. Cost: T copies of the body (time and workspace), the price of exact gradients without
 * a tape; T is the dimension of an autoregressive layer. */
static int vjp_loop(gctx *c, tref e) {
    tprog *p = c->p;
    const tref b = p->nodes[e].in[1], next = p->nodes[e].in[0];
    const int T = p->nodes[b].iattr[0], nb = e - b - 1;
    if (c->adj[b] >= 0) {
        snprintf(c->err, c->errlen, "gradient: a loop_begin is used after its loop");
        return -1;
    }
    tref *map = malloc(sizeof(tref) * (size_t)(nb > 0 ? nb : 1));
    if (!map) { snprintf(c->err, c->errlen, "out of memory"); return -1; }
    tref state = p->nodes[b].in[0];
    const int start = p->nn;
    for (int t = 0; t < T; t++) {
        for (int j = b + 1; j < e; j++) {
            tnode cp = p->nodes[j];
            for (int k = 0; k < cp.nin; k++) {
                tref a = cp.in[k];
                if (a == b) cp.in[k] = state;
                else if (a > b && a < e) cp.in[k] = map[a - b - 1];
            }
            VEC_PUSH(p->ar, p->nodes, p->nn, p->cap_n, cp);
            map[j - b - 1] = p->nn - 1;
        }
        state = next == b ? state : (next > b && next < e) ? map[next - b - 1] : next;
    }
    const int end = p->nn;
    free(map);
    if (cover(c)) return -1;
    acc(c, state, c->adj[e]);
    for (int k = end - 1; k >= start; k--) {
        if (c->adj[k] < 0) continue;
        if (vjp(c, k)) return -1;
    }
    return 0;
}

struct grad_ctx { gctx c; };

/* one gradient output per parameter: the sum over every use of it (forward nodes, their
 * copies in unrolled loops, recomputed layers) */
static int param_outputs(gctx *c, const ir_graph *g) {
    tprog *p = c->p;
    tref *per = malloc(sizeof(tref) * (size_t)(g->np + 1));
    if (!per) { snprintf(c->err, c->errlen, "out of memory"); return -1; }
    for (int k = 0; k < g->np; k++) per[k] = -1;
    int na = c->nadj;
    for (int i = 0; i < na; i++) {
        if (p->nodes[i].op != T_PARAM || c->adj[i] < 0) continue;
        int k = p->nodes[i].iattr[0];
        tref gi = full(c, c->adj[i], i);
        per[k] = per[k] < 0 ? gi : add(c, per[k], gi);
    }
    for (int k = 0; k < g->np; k++) if (per[k] >= 0) t_grad_output(p, k, per[k]);
    free(per);
    p->param_total = tir_param_offsets(g, NULL);
    return 0;
}

int grad_end(grad_ctx *gc, const ir_graph *g) {
    int rc = param_outputs(&gc->c, g);
    free(gc->c.adj);
    free(gc);
    return rc;
}

void grad_abort(grad_ctx *gc) {
    if (!gc) return;
    free(gc->c.adj);
    free(gc);
}

/* ---- the incremental interface (derive.c's recompute-by-inverse backward pass) ---- */

grad_ctx *grad_begin(tprog *p, char *err, size_t errlen) {
    grad_ctx *gc = calloc(1, sizeof *gc);
    if (!gc) { snprintf(err, errlen, "out of memory"); return NULL; }
    gc->c.p = p;
    gc->c.err = err;
    gc->c.errlen = errlen;
    if (cover(&gc->c)) { free(gc); return NULL; }
    return gc;
}

int grad_seed(grad_ctx *gc, tref v, tref g) {
    if (cover(&gc->c)) return -1;
    acc(&gc->c, v, g);
    return 0;
}

int grad_range(grad_ctx *gc, int lo, int hi) {
    gctx *c = &gc->c;
    if (cover(c)) return -1;
    for (int i = hi - 1; i >= lo; i--) {
        if (c->adj[i] < 0) continue;
        if (c->p->nodes[i].op == T_LOOP_END) {
            if (c->p->nodes[i].in[1] < lo) {
                snprintf(c->err, c->errlen, "gradient: a loop crosses a differentiated range");
                return -1;
            }
            if (vjp_loop(c, i)) return -1;
            i = c->p->nodes[i].in[1];
            continue;
        }
        if (vjp(c, i)) return -1;
    }
    return 0;
}

tref grad_take(grad_ctx *gc, tref v) {
    gctx *c = &gc->c;
    if (v < 0 || v >= c->nadj) return -1;
    tref a = c->adj[v];
    c->adj[v] = -1;
    return a;
}

int grad_append(tprog *p, const ir_graph *g, tref of, tref seed, char *err, size_t errlen) {
    gctx c;
    memset(&c, 0, sizeof c);
    c.p = p;
    c.nf = p->nn;
    c.err = err;
    c.errlen = errlen;
    if (cover(&c)) return -1;
    c.adj[of] = p->nodes[of].rows == 0 ? full(&c, seed, of) : seed;
    int rc = 0;
    for (int i = c.nf - 1; i >= 0 && rc == 0; i--) {
        if (c.adj[i] < 0) continue;
        if (p->nodes[i].op == T_LOOP_END) {
            rc = vjp_loop(&c, i);
            i = p->nodes[i].in[1]; /* the body and its LOOP_BEGIN are done */
            continue;
        }
        rc = vjp(&c, i);
    }
    if (rc == 0) rc = param_outputs(&c, g);
    free(c.adj);
    return rc;
}

int grad_build(const ir_graph *g, arena *ar, tprog **out, char *err, size_t errlen) {
    tprog *p = tprog_new(ar, "loss_grad");
    tref lp = derive_log_prob_into(g, p, err, errlen);
    if (lp < 0) return -1;
    t_output(p, lp);
    /* L = -sum over rows of lp: the adjoint of each row's lp is -1 */
    if (grad_append(p, g, lp, t_const(p, -1.0), err, errlen)) return -1;
    if (tir_verify(p, err, errlen)) return -1;
    *out = p;
    return 0;
}

int grad_build_inverse(const ir_graph *g, arena *ar, tprog **out, char *err, size_t errlen) {
    tprog *p = tprog_new(ar, "inverse_grad");
    tref x, ld;
    if (derive_inverse_into(g, p, &x, &ld, err, errlen)) return -1;
    int D = g->nodes[g->input].width;
    int C = g->context != IR_NONE ? g->nodes[g->context].width : 0;
    tref w = t_arg(p, C ? 2 : 1, D);
    tref s = t_bin(p, T_ADD, t_rowsum(p, t_bin(p, T_MUL, w, x)), ld);
    t_output(p, x);
    t_output(p, ld);
    t_output(p, s);
    if (grad_append(p, g, s, t_const(p, 1.0), err, errlen)) return -1;
    if (tir_verify(p, err, errlen)) return -1;
    *out = p;
    return 0;
}

int grad_build_recompute(const ir_graph *g, arena *ar, tprog **out, char *err, size_t errlen) {
    tprog *p = tprog_new(ar, "loss_grad");
    if (derive_grad_recompute_into(g, p, err, errlen)) return -1;
    if (tir_verify(p, err, errlen)) return -1;
    *out = p;
    return 0;
}
