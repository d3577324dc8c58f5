/* compiler/derive.c: the derive pass, flow graph to tensor-IR programs (see derive.h).
 * Input: a flow graph accepted by sema. Output: forward, inverse, log_prob and sample.
 * For each bijective op: its forward rule (y and the log|det| term) in fwd_op(), and its
 * inverse rule (x and the log|det| term of the inverse) in inv_op(). Conditioner nets are
 * evaluated by eval_net() in both directions from values known at that point. The inverse
 * walks the graph backwards in the order sema proved possible: an op is inverted once its
 * output is known and every value its parameters need is known. */
#include "derive.h"
#include "grad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const prog_names[PROG_COUNT] = { "forward", "inverse", "log_prob", "sample" };

typedef struct {
    const ir_graph *g;
    tprog          *p;
    tref           *val;     /* flow-graph node -> program value, -1 when not known */
    tref            ld;      /* log|det| accumulated so far, -1 when none */
    tref            like;    /* a batched value, to shape a batched zero */
    char           *err;
    size_t          errlen;
    int             salt;
    int             made_steps;  /* MAF inverses unrolled by degree (maf_inverse_steps): only in
                                    programs that are not differentiated */
} dctx;

static const ir_node *GN(const dctx *d, ir_ref r) { return &d->g->nodes[r]; }

static void add_ld(dctx *d, tref term) {
    d->ld = d->ld < 0 ? term : t_bin(d->p, T_ADD, d->ld, term);
}

static tref param(dctx *d, const ir_node *n, int k) { return t_param(d->p, d->g, n->param0 + k); }

static tref cst(dctx *d, double v) { return t_const(d->p, v); }

/* ---- conditioner nets ---- */

/* MADE masks for the dense layers of an autoregressive net over D inputs (+ C context).
 * Inputs have degrees 1..D (context 0), hidden units j mod (D - 1) + 1, outputs o mod D + 1;
 * a hidden unit reads degrees <= its own, an output degrees < its own. */
static tref made_mask(dctx *d, const ir_net *net, int layer_k, int in_w, int out_w, int D) {
    int C = net->ctx_width;
    int *din = xmalloc(sizeof(int) * (size_t)in_w), *dout = xmalloc(sizeof(int) * (size_t)out_w);
    /* degrees of the previous layer */
    if (layer_k == 0) {
        for (int j = 0; j < in_w; j++) din[j] = j < in_w - C ? j + 1 : 0;
    } else {
        for (int j = 0; j < in_w; j++) din[j] = D > 1 ? (j % (D - 1)) + 1 : 0;
    }
    int last = 1;
    for (int i = 0, k = 0; i < net->nl; i++)
        if (net->L[i].kind == NL_DENSE) { if (k == layer_k && i != net->nl - 1) last = 0; k++; }
    for (int o = 0; o < out_w; o++) dout[o] = last ? (o % D) + 1 : (D > 1 ? (o % (D - 1)) + 1 : 0);
    double *m = xmalloc(sizeof(double) * (size_t)in_w * (size_t)out_w);
    for (int i = 0; i < in_w; i++)
        for (int o = 0; o < out_w; o++) m[(size_t)i * out_w + o] = last ? (din[i] < dout[o]) : (din[i] <= dout[o]);
    tref r = t_consttensor(d->p, m, in_w, out_w);
    free(m);
    free(din);
    free(dout);
    return r;
}

static tref activation(dctx *d, int act, tref h) {
    switch (act) {
    case ACT_RELU: return t_un(d->p, T_RELU, h);
    case ACT_TANH: return t_un(d->p, T_TANH, h);
    case ACT_ELU: return t_un(d->p, T_ELU, h);
    case ACT_GELU: return t_un(d->p, T_GELU, h);
    case ACT_SIGMOID: return t_un(d->p, T_SIGMOID, h);
    case ACT_SOFTPLUS: return t_un(d->p, T_SOFTPLUS, h);
    case ACT_LEAKY_RELU: return t_leaky(d->p, h, 0.01);
    default: return h;
    }
}

/* Evaluate net `net` on input h (already concatenated); made: D for the masks, else 0. */
static tref eval_net(dctx *d, const ir_net *net, tref h, int made_D) {
    tref saved[32];
    int nsaved = 0, k = 0, w = net->in_width;
    for (int i = 0; i < net->nl; i++) {
        const ir_netlayer *l = &net->L[i];
        switch (l->kind) {
        case NL_DENSE: {
            tref W = t_param(d->p, d->g, l->param_w);
            if (made_D) W = t_bin(d->p, T_MUL, W, made_mask(d, net, k, w, l->width, made_D));
            h = t_bin(d->p, T_ADD, t_matmul(d->p, h, W), t_param(d->p, d->g, l->param_b));
            w = l->width;
            k++;
            break;
        }
        case NL_ACT: h = activation(d, l->act, h); break;
        case NL_RES_BEGIN: if (nsaved < 32) saved[nsaved++] = h; break;
        case NL_RES_END: if (nsaved > 0) h = t_bin(d->p, T_ADD, h, saved[--nsaved]); break;
        }
    }
    return h;
}

/* log-scale and scale of an affine transform from its raw parameter */
static void scaling(dctx *d, int mode, double clamp, tref raw, tref *logs, tref *scale) {
    if (mode == SCALE_EXP) {
        *logs = raw;
        *scale = t_un(d->p, T_EXP, raw);
    } else if (mode == SCALE_TANH) {
        *logs = t_bin(d->p, T_MUL, cst(d, clamp), t_un(d->p, T_TANH, t_bin(d->p, T_MUL, raw, cst(d, 1.0 / clamp))));
        *scale = t_un(d->p, T_EXP, *logs);
    } else {
        tref r2 = t_bin(d->p, T_ADD, raw, cst(d, 2.0));
        *logs = t_un(d->p, T_LOGSIGMOID, r2);
        *scale = t_un(d->p, T_SIGMOID, r2);
    }
}

static tref gather_part(dctx *d, tref x, const ir_node *n, int k) {
    int len;
    const int32_t *idx = ir_part(d->g, n, k, &len);
    return t_gather(d->p, x, idx, len);
}

/* x = merge of parts by the index lists of SPLIT/MERGE node n: out[idx_k[j]] = part_k[j] */
static tref merge_parts(dctx *d, const ir_node *n, const tref *parts) {
    int np = ir_nparts(d->g, n), W = 0;
    for (int k = 0; k < np; k++) { int len; ir_part(d->g, n, k, &len); W += len; }
    int32_t *inv = xmalloc(sizeof(int32_t) * (size_t)W);
    int off = 0;
    for (int k = 0; k < np; k++) {
        int len;
        const int32_t *idx = ir_part(d->g, n, k, &len);
        for (int j = 0; j < len; j++) inv[idx[j]] = off + j;
        off += len;
    }
    tref c = t_concat(d->p, parts, np);
    int identity = 1;
    for (int j = 0; j < W; j++) if (inv[j] != j) identity = 0;
    tref r = identity ? c : t_gather(d->p, c, inv, W);
    free(inv);
    return r;
}

/* is node r computed on the conditioner side (a net, a split of one, a concat of such)? */
static int cond_side(const dctx *d, ir_ref r) {
    const ir_node *n = GN(d, r);
    switch ((ir_op)n->op) {
    case IR_NET: return 1;
    case IR_GET: case IR_SPLIT: return cond_side(d, n->in[0]);
    case IR_MERGE:
        for (int k = 0; k < n->nin; k++) if (!cond_side(d, n->in[k])) return 0;
        return 1;
    default: return 0;
    }
}

/* Value of a conditioner (non-spine) node, computed from known values. -1 if not computable. */
static tref cond_value(dctx *d, ir_ref r);

static tref net_node(dctx *d, const ir_node *n) {
    int32_t save = d->p->cur_src;
    d->p->cur_src = (int32_t)(n - d->g->nodes);
    tref ins[IR_MAX_IN];
    for (int k = 0; k < n->nin; k++) {
        ins[k] = cond_value(d, n->in[k]);
        if (ins[k] < 0) return -1;
    }
    tref h = n->nin == 1 ? ins[0] : t_concat(d->p, ins, n->nin);
    tref r = eval_net(d, &d->g->nets[n->iattr[1]], h, 0);
    d->p->cur_src = save;
    return r;
}

static tref cond_value(dctx *d, ir_ref r) {
    if (d->val[r] >= 0) return d->val[r];
    const ir_node *n = GN(d, r);
    tref v = -1;
    switch ((ir_op)n->op) {
    case IR_NET: v = net_node(d, n); break;
    case IR_GET: {
        const ir_node *sp = GN(d, n->in[0]);
        tref x = cond_value(d, sp->in[0]);
        if (x >= 0) v = gather_part(d, x, sp, n->iattr[0]);
        break;
    }
    case IR_SPLIT: v = cond_value(d, n->in[0]); break;
    case IR_MERGE: {
        if (!cond_side(d, r)) break; /* a spine merge: known only through the flow */
        tref parts[IR_MAX_IN];
        for (int k = 0; k < n->nin; k++) {
            parts[k] = cond_value(d, n->in[k]);
            if (parts[k] < 0) return -1;
        }
        v = merge_parts(d, n, parts);
        break;
    }
    default: v = -1; break; /* a spine value not known yet */
    }
    if (v >= 0) d->val[r] = v;
    return v;
}

/* ---- forward rules ---- */

static int fwd_op(dctx *d, ir_ref r) {
    const ir_node *n = GN(d, r);
    tprog *p = d->p;
    p->cur_src = r;
    tref x = n->nin > 0 && n->in[0] != IR_NONE ? d->val[n->in[0]] : -1;
    tref y = -1;
    switch ((ir_op)n->op) {
    case IR_INPUT: y = t_arg(p, 0, n->width); d->like = y; break;
    case IR_CONTEXT: y = t_arg(p, 1, n->width); break;
    case IR_SPLIT: y = x; break;
    case IR_GET: y = gather_part(d, d->val[GN(d, n->in[0])->in[0]], GN(d, n->in[0]), n->iattr[0]); break;
    case IR_MERGE: {
        tref parts[IR_MAX_IN];
        for (int k = 0; k < n->nin; k++) parts[k] = d->val[n->in[k]];
        y = merge_parts(d, n, parts);
        break;
    }
    case IR_PERMUTE: y = t_gather(p, x, &d->g->ints[n->aux], n->naux); break;
    case IR_AFFINE: {
        tref t = n->in[2] != IR_NONE ? cond_value(d, n->in[2]) : -1;
        y = x;
        if (n->in[1] != IR_NONE) {
            tref logs, scale;
            scaling(d, n->iattr[0], n->fattr[0], cond_value(d, n->in[1]), &logs, &scale);
            y = t_bin(p, T_MUL, x, scale);
            add_ld(d, t_rowsum(p, logs));
        }
        if (t >= 0) y = t_bin(p, T_ADD, y, t);
        break;
    }
    case IR_ACTNORM: {
        tref ls = param(d, n, 0);
        y = t_bin(p, T_ADD, t_bin(p, T_MUL, x, t_un(p, T_EXP, ls)), param(d, n, 1));
        add_ld(d, t_rowsum(p, ls));
        break;
    }
    case IR_LINEAR_LU: {
        tref lu = param(d, n, 0);
        y = t_bin(p, T_ADD, t_lu(p, T_LU_FWD, x, lu), param(d, n, 1));
        add_ld(d, t_rowsum(p, t_diag(p, lu)));
        break;
    }
    case IR_LEAKY_RELU: {
        double a = n->fattr[0];
        y = t_leaky(p, x, a);
        add_ld(d, t_rowsum(p, t_select(p, x, cst(d, 0.0), cst(d, log(a)))));
        break;
    }
    case IR_SIGMOID:
        y = t_un(p, T_SIGMOID, x);
        add_ld(d, t_rowsum(p, t_bin(p, T_ADD, t_un(p, T_LOGSIGMOID, x), t_un(p, T_LOGSIGMOID, t_un(p, T_NEG, x)))));
        break;
    case IR_LOGIT: {
        tref lx = t_un(p, T_LOG, x), l1 = t_un(p, T_LOG1P, t_un(p, T_NEG, x));
        y = t_bin(p, T_SUB, lx, l1);
        add_ld(d, t_rowsum(p, t_un(p, T_NEG, t_bin(p, T_ADD, lx, l1))));
        break;
    }
    case IR_MAF: {
        const ir_net *net = &d->g->nets[n->iattr[1]];
        tref h = x;
        if (n->nin > 1) { tref parts[2] = { x, d->val[n->in[1]] }; h = t_concat(p, parts, 2); }
        tref out = eval_net(d, net, h, n->width);
        int D = n->width;
        int32_t *idx = xmalloc(sizeof(int32_t) * (size_t)D * 2);
        for (int j = 0; j < 2 * D; j++) idx[j] = j;
        tref raw = t_gather(p, out, idx, D), t = t_gather(p, out, idx + D, D);
        free(idx);
        tref logs, scale;
        scaling(d, n->iattr[0], n->fattr[0], raw, &logs, &scale);
        y = t_bin(p, T_ADD, t_bin(p, T_MUL, x, scale), t);
        add_ld(d, t_rowsum(p, logs));
        break;
    }
    case IR_NET: y = net_node(d, n); break;
    case IR_NUM_OPS: break;
    }
    if (y < 0) { snprintf(d->err, d->errlen, "derive: cannot differentiate node %%%d (%s)", r, ir_ops[n->op].name); return -1; }
    d->val[r] = y;
    return 0;
}

/* The inverse of a MAF layer unrolled by degree, each MADE unit computed once (instead of
 * the loop of inv_op, which evaluates the whole net D + 1 times). With made_mask's degrees,
 * a hidden unit of degree k reads only inputs and units of degree <= k, and output d (x_d's
 * scale and shift) only units of degree < d. So once x_1 .. x_{d-1} are known, the units of
 * degree d - 1 are final: step d computes just those, in every hidden layer from the
 * previous layer's units so far, then output d and x_d. Each layer's units so far are kept
 * as a full-width value (each step's units SCATTERed and added; the units not computed yet
 * are 0). That value holds exactly the entries the mask lets the step's units read, so the
 * step's weights are the plain columns of its units (an unbatched GATHER, no mask): every
 * sum has the loop's nonzero terms in the same order, and the results are the loop's up
 * to the sign of a zero (test maf_steps_equal_loop), for finite weights (an infinite weight
 * where the mask is 0 makes the unit NaN here). The log-determinant is summed in dimension
 * order, as ROWSUM does. The program grows with D (about 45 nodes per step, compiled
 * once per layer shape only in part), so D is capped at MAF_STEPS_MAX_D. Returns 1 (done)
 * or 0, before emitting anything, for a net this does not cover (D < 2 or too large, fewer
 * than two dense layers, residual blocks, which made() nets do not have): the loop is used. */
#define MAF_STEPS_MAX_D 64
static int maf_inverse_steps(dctx *d, const ir_node *n, tref y, tref *xout) {
    tprog *p = d->p;
    const ir_net *net = &d->g->nets[n->iattr[1]];
    int D = n->width, ndense = 0;
    if (D < 2 || D > MAF_STEPS_MAX_D || net->out_width != 2 * D) return 0;
    for (int i = 0; i < net->nl; i++) {
        if (net->L[i].kind == NL_DENSE) ndense++;
        if (net->L[i].kind == NL_RES_BEGIN || net->L[i].kind == NL_RES_END) return 0;   /* not in made() nets */
    }
    if (ndense < 2 || ndense > 32) return 0;
    tref ctx = n->nin > 1 ? d->val[n->in[1]] : -1;
    tref full[32], xfull = -1, ldsum = -1;   /* full[k]: dense layer k's input so far (k >= 1) */
    int nS = 0;
    for (int i = 0, k = 0; i < net->nl; i++)
        if (net->L[i].kind == NL_DENSE) {
            full[k++] = -1;
            nS += net->L[i].width;
        }
    int32_t *S = xmalloc(sizeof(int32_t) * (size_t)nS);
    for (int dd = 1; dd <= D; dd++) {
        tref cur = -1;
        int ncur = 0, k = 0, w = net->in_width;
        int32_t *cs = NULL;   /* cur's columns: S + off */
        int off = 0;
        for (int i = 0; i < net->nl; i++) {
            const ir_netlayer *l = &net->L[i];
            if (l->kind == NL_DENSE) {
                int last = k == ndense - 1;
                tref F;
                if (k == 0) {
                    F = xfull;
                    if (F >= 0 && ctx >= 0) { tref parts[2] = { xfull, ctx }; F = t_concat(p, parts, 2); }
                } else {
                    if (cur >= 0) {
                        tref sc = t_scatter(p, cur, cs, ncur, w);
                        full[k] = full[k] < 0 ? sc : t_bin(p, T_ADD, full[k], sc);
                    }
                    F = full[k];
                }
                /* this step's units of dense layer k */
                int32_t *ns = S + off + ncur;
                int nn = 0;
                if (last) {
                    ns[nn++] = dd - 1;
                    ns[nn++] = D + dd - 1;
                } else if (dd >= 2) {
                    for (int o = dd - 2; o < l->width; o += D - 1) ns[nn++] = o;
                }
                off += ncur;
                cs = ns;
                ncur = nn;
                if (nn == 0) {
                    cur = -1;
                } else {
                    tref W = t_param(p, d->g, l->param_w), b = t_param(p, d->g, l->param_b);
                    /* no mask: F holds exactly the values it allows, the rest are 0 */
                    tref Ws = t_gather(p, W, ns, nn), bs = t_gather(p, b, ns, nn);
                    cur = F >= 0 ? t_bin(p, T_ADD, t_matmul(p, F, Ws), bs) : bs;   /* F < 0: no input yet, all weights 0 */
                }
                w = l->width;
                k++;
            } else if (l->kind == NL_ACT && cur >= 0) {
                cur = activation(d, l->act, cur);
            }
        }
        /* cur: [raw scale, shift] of dimension dd */
        int32_t i0 = 0, i1 = 1, id = dd - 1;
        tref raw = t_gather(p, cur, &i0, 1), t = t_gather(p, cur, &i1, 1), logs, scale;
        scaling(d, n->iattr[0], n->fattr[0], raw, &logs, &scale);
        tref xd = t_bin(p, T_SUB, t_gather(p, y, &id, 1), t);
        xd = n->iattr[0] == SCALE_SIGMOID ? t_bin(p, T_DIV, xd, scale) : t_bin(p, T_MUL, xd, t_un(p, T_EXP, t_un(p, T_NEG, logs)));
        tref sx = t_scatter(p, xd, &id, 1, D);
        xfull = xfull < 0 ? sx : t_bin(p, T_ADD, xfull, sx);
        ldsum = ldsum < 0 ? logs : t_bin(p, T_ADD, ldsum, logs);
    }
    free(S);
    add_ld(d, t_un(p, T_NEG, ldsum));
    *xout = xfull;
    return 1;
}

/* ---- inverse rules: y = value of node r (known); compute its spine operand(s) ---- */

static int inv_op(dctx *d, ir_ref r) {
    const ir_node *n = GN(d, r);
    tprog *p = d->p;
    p->cur_src = r;
    tref y = d->val[r];
    tref x = -1;
    switch ((ir_op)n->op) {
    case IR_MERGE:
        for (int k = 0; k < n->nin; k++) d->val[n->in[k]] = gather_part(d, y, n, k);
        return 0;
    case IR_SPLIT: {
        tref parts[IR_MAX_IN];
        int np = ir_nparts(d->g, n);
        for (int k = 0; k < np; k++) {
            parts[k] = -1;
            for (int j = r + 1; j < d->g->nn; j++)
                if (GN(d, j)->op == IR_GET && GN(d, j)->in[0] == r && GN(d, j)->iattr[0] == k) parts[k] = d->val[j];
            if (parts[k] < 0) { snprintf(d->err, d->errlen, "derive: part %d of split %%%d unknown", k, r); return -1; }
        }
        x = merge_parts(d, n, parts);
        break;
    }
    case IR_PERMUTE: {
        int D = n->naux;
        int32_t *inv = xmalloc(sizeof(int32_t) * (size_t)D);
        for (int j = 0; j < D; j++) inv[d->g->ints[n->aux + j]] = j;
        x = t_gather(p, y, inv, D);
        free(inv);
        break;
    }
    case IR_AFFINE: {
        x = y;
        if (n->in[2] != IR_NONE) x = t_bin(p, T_SUB, x, cond_value(d, n->in[2]));
        if (n->in[1] != IR_NONE) {
            tref logs, scale;
            scaling(d, n->iattr[0], n->fattr[0], cond_value(d, n->in[1]), &logs, &scale);
            x = n->iattr[0] == SCALE_SIGMOID ? t_bin(p, T_DIV, x, scale) : t_bin(p, T_MUL, x, t_un(p, T_EXP, t_un(p, T_NEG, logs)));
            add_ld(d, t_un(p, T_NEG, t_rowsum(p, logs)));
        }
        break;
    }
    case IR_ACTNORM: {
        tref ls = param(d, n, 0);
        x = t_bin(p, T_MUL, t_bin(p, T_SUB, y, param(d, n, 1)), t_un(p, T_EXP, t_un(p, T_NEG, ls)));
        add_ld(d, t_un(p, T_NEG, t_rowsum(p, ls)));
        break;
    }
    case IR_LINEAR_LU: {
        tref lu = param(d, n, 0);
        x = t_lu(p, T_LU_INV, t_bin(p, T_SUB, y, param(d, n, 1)), lu);
        add_ld(d, t_un(p, T_NEG, t_rowsum(p, t_diag(p, lu))));
        break;
    }
    case IR_LEAKY_RELU: {
        double a = n->fattr[0];
        x = t_select(p, y, y, t_bin(p, T_MUL, y, cst(d, 1.0 / a)));
        add_ld(d, t_rowsum(p, t_select(p, y, cst(d, 0.0), cst(d, -log(a)))));
        break;
    }
    case IR_SIGMOID: {
        tref ly = t_un(p, T_LOG, y), l1 = t_un(p, T_LOG1P, t_un(p, T_NEG, y));
        x = t_bin(p, T_SUB, ly, l1);
        add_ld(d, t_rowsum(p, t_un(p, T_NEG, t_bin(p, T_ADD, ly, l1))));
        break;
    }
    case IR_LOGIT:
        x = t_un(p, T_SIGMOID, y);
        add_ld(d, t_rowsum(p, t_bin(p, T_ADD, t_un(p, T_LOGSIGMOID, y), t_un(p, T_LOGSIGMOID, t_un(p, T_NEG, y)))));
        break;
    case IR_MAF: {
        if (d->made_steps) {
            if (maf_inverse_steps(d, n, y, &x)) break;
        }
        /* x_{k+1} = (y - t(x_k)) * exp(-logs(x_k)); after D trips every dimension is exact,
         * because dimension d's parameters depend only on dimensions before d. */
        const ir_net *net = &d->g->nets[n->iattr[1]];
        int D = n->width;
        tref ctx = n->nin > 1 ? d->val[n->in[1]] : -1;
        int32_t *idx = xmalloc(sizeof(int32_t) * (size_t)D * 2);
        for (int j = 0; j < 2 * D; j++) idx[j] = j;
        tref logs = -1, scale = -1;
        tref b = t_loop_begin(p, y, D);
        for (int pass = 0; pass < 2; pass++) {
            tref cur = pass == 0 ? b : x;
            tref h = cur;
            if (ctx >= 0) { tref parts[2] = { cur, ctx }; h = t_concat(p, parts, 2); }
            tref out = eval_net(d, net, h, D);
            tref raw = t_gather(p, out, idx, D), t = t_gather(p, out, idx + D, D);
            scaling(d, n->iattr[0], n->fattr[0], raw, &logs, &scale);
            if (pass == 0) {
                tref nx = t_bin(p, T_SUB, y, t);
                nx = n->iattr[0] == SCALE_SIGMOID ? t_bin(p, T_DIV, nx, scale) : t_bin(p, T_MUL, nx, t_un(p, T_EXP, t_un(p, T_NEG, logs)));
                x = t_loop_end(p, nx, b);
            }
        }
        free(idx);
        add_ld(d, t_un(p, T_NEG, t_rowsum(p, logs)));
        break;
    }
    default:
        snprintf(d->err, d->errlen, "derive: cannot invert node %%%d (%s)", r, ir_ops[n->op].name);
        return -1;
    }
    d->val[n->in[0]] = x;
    return 0;
}

/* can the parameters of spine op r be computed from what is known now? */
static int params_known(dctx *d, ir_ref r, char *seen);

static int value_known(dctx *d, ir_ref r, char *seen) {
    if (d->val[r] >= 0) return 1;
    if (seen[r]) return 0;
    seen[r] = 1;
    const ir_node *n = GN(d, r);
    if (n->op == IR_NET) {
        for (int k = 0; k < n->nin; k++) if (!value_known(d, n->in[k], seen)) return 0;
        return 1;
    }
    if (cond_side(d, r)) {
        /* a conditioner-side split or concat: known when its sources are */
        for (int k = 0; k < n->nin; k++) if (!value_known(d, n->in[k], seen)) return 0;
        return 1;
    }
    return 0;
}

static int params_known(dctx *d, ir_ref r, char *seen) {
    const ir_node *n = GN(d, r);
    for (int k = 1; k < n->nin; k++) {
        if (n->in[k] == IR_NONE) continue;
        memset(seen, 0, (size_t)d->g->nn);
        if (!value_known(d, n->in[k], seen)) return 0;
    }
    return 1;
}

static tref batched_zero(dctx *d) {
    int32_t zero = 0;
    tref col = t_gather(d->p, d->like, &zero, 1);
    return t_bin(d->p, T_MUL, t_un(d->p, T_STEP, col), cst(d, 0.0));
}

/* make sure the log-det is a batched [n, 1] value */
static tref final_ld(dctx *d) {
    tref z = batched_zero(d);
    if (d->ld < 0) return z;
    if (d->p->nodes[d->ld].rows != 0) return t_bin(d->p, T_ADD, z, d->ld);
    return d->ld;
}


static int emit_forward(dctx *d) {
    for (int i = 0; i < d->g->nn; i++) {
        if (cond_side(d, i)) continue; /* evaluated when used, by cond_value */
        if (d->val[i] >= 0) continue;
        if (fwd_op(d, i)) return -1;
    }
    return 0;
}

/* given d->val[output] (and context), recover the input */
/* The inverse's walk: given d->val[output] (and context), visit the spine ops in an order
 * where an op is taken once its output is known (a tuple: all its parts) and the values its
 * parameters need are known; with `pending` (recomputation), also once no op reading its
 * output is left (pending[v] == 0 for each output v). act(ctx, i) inverts op i (it must set
 * the values of its spine operands). Returns 0, or -1 with a message (`what`: the pass). */
static int walk_inverse(dctx *d, const int *pending, int (*act)(void *ctx, ir_ref i), void *ctx, const char *what) {
    const ir_graph *g = d->g;
    char *done = calloc((size_t)g->nn, 1), *seen = calloc((size_t)g->nn, 1);
    if (!done || !seen) {
        free(done);
        free(seen);
        snprintf(d->err, d->errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (int progress = 1; progress;) {
        progress = 0;
        for (int i = g->nn - 1; i >= 0; i--) {
            const ir_node *n = GN(d, i);
            int f = ir_ops[n->op].flags;
            if (done[i] || !(f & (OPF_BIJ | OPF_MERGE | OPF_TUPLE | OPF_PROJ))) continue;
            if (f & OPF_PROJ) { if (d->val[i] >= 0) { done[i] = 1; } continue; }
            if (cond_side(d, i)) { done[i] = 1; continue; } /* conditioner side: computed, not inverted */
            if (f & OPF_TUPLE) {
                int all = 1;
                for (int j = i + 1; j < g->nn; j++)
                    if (GN(d, j)->op == IR_GET && GN(d, j)->in[0] == i && (d->val[j] < 0 || (pending && pending[j] > 0))) all = 0;
                if (!all) continue;
            } else {
                if (d->val[i] < 0 || (pending && pending[i] > 0)) continue;
                if ((f & OPF_BIJ) && !params_known(d, i, seen)) continue;
            }
            if (act(ctx, i)) { rc = -1; goto out; }
            done[i] = 1;
            progress = 1;
        }
    }
    if (d->val[g->input] < 0) {
        snprintf(d->err, d->errlen, "derive: %s does not reach the input", what);
        rc = -1;
    }
out:
    free(done);
    free(seen);
    return rc;
}

static int inv_act(void *ctx, ir_ref i) { return inv_op(ctx, i); }

static int emit_inverse(dctx *d) { return walk_inverse(d, NULL, inv_act, d, "the inverse"); }

/* log density of the base distribution at z, per row [n, 1] */
static tref base_logp(dctx *d, tref z) {
    tprog *p = d->p;
    const ir_graph *g = d->g;
    const double hl2pi = 0.5 * log(2 * M_PI);
    switch (g->base) {
    case BASE_NORMAL_LEARNED: {
        tref mean = t_param(p, g, g->np - 2), ls = t_param(p, g, g->np - 1);
        tref u = t_bin(p, T_MUL, t_bin(p, T_SUB, z, mean), t_un(p, T_EXP, t_un(p, T_NEG, ls)));
        tref e = t_bin(p, T_ADD, t_bin(p, T_MUL, t_un(p, T_SQUARE, u), cst(d, -0.5)), t_un(p, T_NEG, ls));
        return t_rowsum(p, t_bin(p, T_SUB, e, cst(d, hl2pi)));
    }
    case BASE_LOGISTIC:
        return t_rowsum(p, t_bin(p, T_ADD, t_un(p, T_LOGSIGMOID, z), t_un(p, T_LOGSIGMOID, t_un(p, T_NEG, z))));
    default:
        return t_rowsum(p, t_bin(p, T_SUB, t_bin(p, T_MUL, t_un(p, T_SQUARE, z), cst(d, -0.5)), cst(d, hl2pi)));
    }
}

static void reset(dctx *d, tprog *p) {
    d->p = p;
    for (int i = 0; i < d->g->nn; i++) d->val[i] = -1;
    d->ld = -1;
    d->like = -1;
}

tref derive_value_into(const ir_graph *g, tprog *p, ir_ref node, char *err, size_t errlen) {
    dctx d;
    memset(&d, 0, sizeof d);
    d.g = g;
    d.err = err;
    d.errlen = errlen;
    d.val = arena_alloc(p->ar, sizeof(tref) * (size_t)(g->nn + 1));
    reset(&d, p);
    for (int i = 0; i <= node && i < g->nn; i++) {
        if (cond_side(&d, i) || d.val[i] >= 0) continue;
        if (fwd_op(&d, i)) return -1;
    }
    return cond_value(&d, node);
}

tref derive_log_prob_into(const ir_graph *g, tprog *p, char *err, size_t errlen) {
    dctx d;
    memset(&d, 0, sizeof d);
    d.g = g;
    d.err = err;
    d.errlen = errlen;
    d.val = arena_alloc(p->ar, sizeof(tref) * (size_t)(g->nn + 1));
    reset(&d, p);
    if (emit_forward(&d)) return -1;
    return t_bin(p, T_ADD, base_logp(&d, d.val[g->output]), final_ld(&d));
}

int derive_inverse_into(const ir_graph *g, tprog *p, tref *x, tref *logdet, char *err, size_t errlen) {
    dctx d;
    memset(&d, 0, sizeof d);
    d.g = g;
    d.err = err;
    d.errlen = errlen;
    d.val = arena_alloc(p->ar, sizeof(tref) * (size_t)(g->nn + 1));
    reset(&d, p);
    int D = g->nodes[g->input].width;
    int C = g->context != IR_NONE ? g->nodes[g->context].width : 0;
    tref z = t_arg(p, 0, D);
    if (C) d.val[g->context] = t_arg(p, 1, C);
    d.like = z;
    d.val[g->output] = z;
    if (emit_inverse(&d)) return -1;
    *x = d.val[g->input];
    *logdet = final_ld(&d);
    return 0;
}

int derive_all(const ir_graph *g, arena *ar, derived *out, char *err, size_t errlen) {
    dctx d;
    memset(&d, 0, sizeof d);
    d.g = g;
    d.err = err;
    d.errlen = errlen;
    d.val = arena_alloc(ar, sizeof(tref) * (size_t)(g->nn + 1));
    int D = g->nodes[g->input].width;
    int C = g->context != IR_NONE ? g->nodes[g->context].width : 0;
    memset(out, 0, sizeof *out);

    for (int k = 0; k < PROG_COUNT; k++) out->p[k] = tprog_new(ar, prog_names[k]);

    /* forward and log_prob */
    for (int k = 0; k < 2; k++) {
        tprog *p = out->p[k == 0 ? PROG_FORWARD : PROG_LOG_PROB];
        reset(&d, p);
        if (emit_forward(&d)) return -1;
        tref z = d.val[g->output];
        tref ld = final_ld(&d);
        if (k == 0) {
            t_output(p, z);
            t_output(p, ld);
        } else {
            t_output(p, t_bin(p, T_ADD, base_logp(&d, z), ld));
        }
    }
    /* inverse and sample (not differentiated: MAF inverses unrolled by degree) */
    d.made_steps = 1;
    for (int k = 0; k < 2; k++) {
        tprog *p = out->p[k == 0 ? PROG_INVERSE : PROG_SAMPLE];
        reset(&d, p);
        tref z;
        if (k == 0) {
            z = t_arg(p, 0, D);
            if (C) d.val[g->context] = t_arg(p, 1, C);
        } else {
            if (C) d.val[g->context] = t_arg(p, 0, C);
            tref temp = t_scalar(p, 0);
            if (g->base == BASE_LOGISTIC) {
                z = t_bin(p, T_MUL, t_rand(p, T_RANDLOGISTIC, D, 1), temp);
            } else {
                z = t_bin(p, T_MUL, t_rand(p, T_RANDN, D, 1), temp);
                if (g->base == BASE_NORMAL_LEARNED)
                    z = t_bin(p, T_ADD, t_bin(p, T_MUL, z, t_un(p, T_EXP, t_param(p, g, g->np - 1))), t_param(p, g, g->np - 2));
            }
        }
        d.like = z;
        d.val[g->output] = z;
        if (emit_inverse(&d)) return -1;
        tref x = d.val[g->input];
        tref ld = final_ld(&d);
        t_output(p, x);
        if (k == 0) t_output(p, ld);
        else t_output(p, t_bin(p, T_SUB, base_logp(&d, z), ld)); /* log p(x) = log p_base(z) - log|det df^-1/dz| */
    }
    for (int k = 0; k < PROG_COUNT; k++)
        if (tir_verify(out->p[k], err, errlen)) return -1;
    return 0;
}

/* ---- the training program with recomputation by inverse ----
 * The backward pass walks the spine ops in an order where an op is taken once (1) its
 * output is known (rebuilt by the inverses of the ops after it), (2) the values its
 * conditioner reads are known, and (3) every op that reads its output, directly or through
 * a conditioner, has been taken, so the output's adjoint is complete. For each op:
 *   c0..c1  its conditioner nets, evaluated afresh from the rebuilt values
 *           (shared by the inverse and the forward rule below);
 *           the inverse rule: the op's input from its output (not differentiated);
 *   f0..f1  the forward rule again, from that input: the op's output and log-det term;
 * then the adjoints are seeded (the output's, complete by (3); -1 per row on the log-det
 * term, as the loss is -sum lp) and the VJP rules run over f0..f1 and c0..c1 only. What
 * reaches the values the op read (its input, the spine values its nets read) is added to
 * their adjoints. Nothing of the forward pass is kept but z and the inputs of MAF layers,
 * whose inverse would cost D evaluations of the MADE net. */

typedef struct {
    dctx      A, B;          /* A: the forward pass; B: the values rebuilt backwards */
    grad_ctx *gc;
    tref     *gadj;          /* flow-graph value -> its adjoint, -1 if none (yet) */
    char     *is_cond;
    int      *pending;       /* ops reading the value not taken yet */
    int32_t  *rd;            /* reads of op i: rd[rd0[i] .. rd0[i + 1]) */
    int      *rd0;
} rcx;

/* the spine values node k stands for: itself, or, for a conditioner-side node, what it reads */
static void spine_reads(rcx *x, ir_ref k, char *mark, int32_t **out, int *n, int *cap, arena *ar) {
    if (k == IR_NONE || mark[k]) return;
    mark[k] = 1;
    if (!x->is_cond[k]) { VEC_PUSH(ar, *out, *n, *cap, k); return; }
    const ir_node *nd = &x->A.g->nodes[k];
    for (int j = 0; j < nd->nin; j++) spine_reads(x, nd->in[j], mark, out, n, cap, ar);
}

static void add_adj(rcx *x, ir_ref k, tref a) {
    if (a < 0) return;
    x->gadj[k] = x->gadj[k] < 0 ? a : t_bin(x->B.p, T_ADD, x->gadj[k], a);
}

static int recompute_op(rcx *x, ir_ref i) {
    dctx *B = &x->B;
    const ir_graph *g = B->g;
    tprog *p = B->p;
    const ir_node *n = GN(B, i);
    for (int k = 0; k < g->nn; k++) if (x->is_cond[k]) B->val[k] = -1;
    int c0 = p->nn;
    for (int k = 0; k < n->nin; k++)
        if (n->in[k] != IR_NONE && x->is_cond[n->in[k]] && cond_value(B, n->in[k]) < 0) {
            snprintf(B->err, B->errlen, "derive: conditioner of %%%d not computable", i);
            return -1;
        }
    int c1 = p->nn;
    B->ld = -1;
    if (n->op == IR_MAF) B->val[n->in[0]] = x->A.val[n->in[0]];
    else if (inv_op(B, i)) return -1;
    int f0 = p->nn;
    B->ld = -1;
    p->compose_floor = f0;   /* the forward below is differentiated as a range: it reads its input, not the inverse's nodes */
    int bad = fwd_op(B, i);
    if (!bad && n->op == IR_SPLIT)
        for (int j = i + 1; j < g->nn && !bad; j++)
            if (GN(B, j)->op == IR_GET && GN(B, j)->in[0] == i) bad = fwd_op(B, j);
    p->compose_floor = 0;
    if (bad) return -1;
    if (B->ld >= 0) {   /* a term from parameters alone (actnorm, LU) counts once per row */
        B->like = B->val[n->in[0]];
        B->ld = final_ld(B);
    }
    int f1 = p->nn;
    if (n->op == IR_SPLIT) {
        for (int j = i + 1; j < g->nn; j++)
            if (GN(B, j)->op == IR_GET && GN(B, j)->in[0] == i && x->gadj[j] >= 0 && grad_seed(x->gc, B->val[j], x->gadj[j])) return -1;
    } else if (x->gadj[i] >= 0 && grad_seed(x->gc, B->val[i], x->gadj[i])) {
        return -1;
    }
    if (B->ld >= 0 && grad_seed(x->gc, B->ld, cst(B, -1.0))) return -1;
    if (grad_range(x->gc, f0, f1) || grad_range(x->gc, c0, c1)) return -1;
    for (int r = x->rd0[i]; r < x->rd0[i + 1]; r++) {
        ir_ref k = x->rd[r];
        if (B->val[k] >= 0) add_adj(x, k, grad_take(x->gc, B->val[k]));
        x->pending[k]--;
    }
    return 0;
}

static int recompute_act(void *ctx, ir_ref i) { return recompute_op(ctx, i); }

int derive_grad_recompute_into(const ir_graph *g, tprog *p, char *err, size_t errlen) {
    rcx x;
    memset(&x, 0, sizeof x);
    arena *ar = p->ar;
    int nn = g->nn;
    for (int k = 0; k < 2; k++) {
        dctx *d = k ? &x.B : &x.A;
        d->g = g;
        d->err = err;
        d->errlen = errlen;
        d->val = arena_alloc(ar, sizeof(tref) * (size_t)(nn + 1));
        reset(d, p);
    }
    /* forward: z and the loss; the base density's adjoint gives z's */
    if (emit_forward(&x.A)) return -1;
    tref z = x.A.val[g->output], ld = final_ld(&x.A);
    int b0 = p->nn;
    tref bl = base_logp(&x.A, z);
    int b1 = p->nn;
    t_output(p, t_bin(p, T_ADD, bl, ld));
    x.gc = grad_begin(p, err, errlen);
    if (!x.gc) return -1;
    x.gadj = arena_alloc(ar, sizeof(tref) * (size_t)(nn + 1));
    x.is_cond = arena_alloc(ar, (size_t)nn + 1);
    x.pending = arena_alloc(ar, sizeof(int) * (size_t)(nn + 1));
    x.rd0 = arena_alloc(ar, sizeof(int) * (size_t)(nn + 2));
    char *mark = arena_alloc(ar, (size_t)nn + 1);
    int nrd = 0, caprd = 0;
    for (int k = 0; k < nn; k++) { x.gadj[k] = -1; x.is_cond[k] = (char)cond_side(&x.A, k); x.pending[k] = 0; }
    /* what each spine op reads, and how many ops read each value */
    for (int i = 0; i < nn; i++) {
        x.rd0[i] = nrd;
        int f = ir_ops[GN(&x.A, i)->op].flags;
        if (x.is_cond[i] || !(f & (OPF_BIJ | OPF_MERGE | OPF_TUPLE))) continue;
        memset(mark, 0, (size_t)nn);
        const ir_node *n = GN(&x.A, i);
        for (int j = 0; j < n->nin; j++) spine_reads(&x, n->in[j], mark, &x.rd, &nrd, &caprd, ar);
        for (int r = x.rd0[i]; r < nrd; r++) x.pending[x.rd[r]]++;
    }
    x.rd0[nn] = nrd;
    int rc = -1;
    if (grad_seed(x.gc, bl, cst(&x.A, -1.0)) || grad_range(x.gc, b0, b1)) goto out;
    x.gadj[g->output] = grad_take(x.gc, z);
    dctx *B = &x.B;
    B->val[g->output] = z;
    if (g->context != IR_NONE) B->val[g->context] = x.A.val[g->context];
    B->like = z;
    if (walk_inverse(B, x.pending, recompute_act, &x, "the backward pass with recomputation")) goto out;
    rc = grad_end(x.gc, g);
    x.gc = NULL;
out:
    grad_abort(x.gc);
    return rc;
}
