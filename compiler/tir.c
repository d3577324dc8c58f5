/* compiler/tir.c: building, checking and printing tensor-IR programs (see tir.h).
 * Input: builder calls from derive.c. Output: programs whose shapes follow the broadcast
 * rules of tops.def; tir_verify() checks them (run between stages in tests), tir_dump()
 * prints one line per node: "%N = op operands [rows x w] attrs". */
#include "tir.h"

#include <stdlib.h>
#include <string.h>

const t_opinfo t_ops[T_NUM_OPS] = {
#define X(e, name, arity, flags) { name, arity, flags },
#include "tops.def"
#undef X
};
_Static_assert(sizeof(t_ops) / sizeof(t_ops[0]) == T_NUM_OPS, "op table out of step with tops.def");

tprog *tprog_new(arena *ar, const char *name) {
    tprog *p = arena_alloc(ar, sizeof *p);
    p->ar = ar;
    p->name = name;
    p->cur_src = -1;
    return p;
}

static tref push(tprog *p, t_op op, int rows, int w, const tref *in, int nin) {
    tnode n;
    memset(&n, 0, sizeof n);
    n.op = (uint16_t)op;
    n.rows = rows;
    n.w = w;
    n.nin = (int16_t)nin;
    n.src = p->cur_src;
    for (int i = 0; i < T_MAX_IN; i++) n.in[i] = i < nin ? in[i] : -1;
    VEC_PUSH(p->ar, p->nodes, p->nn, p->cap_n, n);
    return p->nn - 1;
}

static tnode *TN(tprog *p, tref r) { return &p->nodes[r]; }

tref t_arg(tprog *p, int k, int w) {
    tref r = push(p, T_ARG, 0, w, NULL, 0);
    TN(p, r)->iattr[0] = k;
    if (k >= p->nargs) p->nargs = k + 1;
    p->arg_w[k] = w;
    return r;
}

tref t_param(tprog *p, const ir_graph *g, int param) {
    const ir_param *pr = &g->params[param];
    int rows = pr->rank > 1 ? (int)pr->shape[0] : 1;
    int w = pr->rank > 1 ? (int)pr->shape[1] : (int)pr->shape[0];
    tref r = push(p, T_PARAM, rows, w, NULL, 0);
    TN(p, r)->iattr[0] = param;
    return r;
}

tref t_const(tprog *p, double v) {
    tref r = push(p, T_CONST, 1, 1, NULL, 0);
    TN(p, r)->fattr[0] = v;
    return r;
}

tref t_consttensor(tprog *p, const double *v, int rows, int w) {
    tref r = push(p, T_CONSTTENSOR, rows, w, NULL, 0);
    TN(p, r)->aux = p->nconsts;
    TN(p, r)->naux = rows * w;
    for (int i = 0; i < rows * w; i++) VEC_PUSH(p->ar, p->consts, p->nconsts, p->cap_consts, v[i]);
    return r;
}

tref t_scalar(tprog *p, int k) {
    tref r = push(p, T_SCALAR, 1, 1, NULL, 0);
    TN(p, r)->iattr[0] = k;
    if (k >= p->nscalars) p->nscalars = k + 1;
    return r;
}

tref t_un(tprog *p, t_op op, tref a) {
    return push(p, op, TN(p, a)->rows, TN(p, a)->w, &a, 1);
}

/* broadcast shape of several elementwise operands */
static void bshape(tprog *p, const tref *in, int n, int *rows, int *w) {
    *rows = -1;
    *w = 1;
    int batched = 0;
    for (int i = 0; i < n; i++) {
        const tnode *x = TN(p, in[i]);
        if (x->rows == 0) batched = 1;
        else if (x->rows > *rows) *rows = x->rows;
        if (x->w > *w) *w = x->w;
    }
    if (batched) *rows = 0;
}

tref t_bin(tprog *p, t_op op, tref a, tref b) {
    tref in[2] = { a, b };
    int rows, w;
    bshape(p, in, 2, &rows, &w);
    return push(p, op, rows, w, in, 2);
}

tref t_leaky(tprog *p, tref a, double slope) {
    tref r = t_un(p, T_LEAKY, a);
    TN(p, r)->fattr[0] = slope;
    return r;
}

tref t_select(tprog *p, tref c, tref a, tref b) {
    tref in[3] = { c, a, b };
    int rows, w;
    bshape(p, in, 3, &rows, &w);
    return push(p, T_SELECT, rows, w, in, 3);
}

tref t_matmul(tprog *p, tref x, tref w) {
    tref in[2] = { x, w };
    return push(p, T_MATMUL, 0, TN(p, w)->w, in, 2);
}

/* y may be read by a node added now wherever the reader is: not a loop's state or a node of
 * a loop's body (scanning back from y, a LOOP_BEGIN comes before any LOOP_END) */
static int outside_loops(const tprog *p, tref y) {
    if (p->nodes[y].op == T_LOOP_BEGIN || p->nodes[y].op == T_LOOP_END) return 0;
    for (tref i = y - 1; i >= 0; i--) {
        if (p->nodes[i].op == T_LOOP_END) return 1;
        if (p->nodes[i].op == T_LOOP_BEGIN) return 0;
    }
    return 1;
}

/* GATHER reads a GATHER's or a CONCAT's features straight from their sources: gather(gather(
 * y, a), b) = gather(y, a[b]), and a gather of a concat whose indices all fall in one part is
 * a gather of that part (none when it is the whole part in order). Copies only, so the same
 * values; a coupling's merge, the permutation after it and the next layer's split become one
 * gather (or none) instead of three copies of the tile. */
tref t_gather(tprog *p, tref x, const int32_t *idx, int n) {
    const tnode *xn = TN(p, x);
    if (x >= p->compose_floor && xn->op == T_GATHER && outside_loops(p, xn->in[0])) {
        int32_t *c = xmalloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        for (int i = 0; i < n; i++) c[i] = p->ints[xn->aux + idx[i]];
        tref r = t_gather(p, xn->in[0], c, n);
        free(c);
        return r;
    }
    if (x >= p->compose_floor && xn->op == T_CONCAT && n > 0) {
        int off = 0, k = 0;
        for (; k < xn->nin; k++) {
            int w = TN(p, xn->in[k])->w;
            if (idx[0] >= off && idx[0] < off + w) break;
            off += w;
        }
        int w = k < xn->nin ? TN(p, xn->in[k])->w : 0, one = k < xn->nin && outside_loops(p, xn->in[k]), ident = n == w;
        for (int i = 0; i < n && one; i++) {
            one = idx[i] >= off && idx[i] < off + w;
            ident = ident && idx[i] == off + i;
        }
        if (one && ident) return xn->in[k];
        if (one) {
            int32_t *c = xmalloc(sizeof(int32_t) * (size_t)n);
            for (int i = 0; i < n; i++) c[i] = idx[i] - off;
            tref r = t_gather(p, xn->in[k], c, n);
            free(c);
            return r;
        }
    }
    int ident = n == xn->w;
    for (int i = 0; i < n && ident; i++) ident = idx[i] == i;
    if (ident) return x;
    tref r = push(p, T_GATHER, TN(p, x)->rows, n, &x, 1);
    int32_t at = p->nints;
    for (int i = 0; i < n; i++) VEC_PUSH(p->ar, p->ints, p->nints, p->cap_ints, idx[i]);
    TN(p, r)->aux = at;
    TN(p, r)->naux = n;
    return r;
}

tref t_concat(tprog *p, const tref *parts, int n) {
    int w = 0;
    for (int i = 0; i < n; i++) w += TN(p, parts[i])->w;
    return push(p, T_CONCAT, 0, w, parts, n);
}

tref t_rowsum(tprog *p, tref x) { return push(p, T_ROWSUM, TN(p, x)->rows, 1, &x, 1); }
tref t_diag(tprog *p, tref m) { return push(p, T_DIAG, 1, TN(p, m)->w, &m, 1); }

tref t_lu(tprog *p, t_op op, tref x, tref lu) {
    tref in[2] = { x, lu };
    return push(p, op, 0, TN(p, x)->w, in, 2);
}

tref t_rand(tprog *p, t_op op, int w, int salt) {
    tref r = push(p, op, 0, w, NULL, 0);
    TN(p, r)->iattr[0] = salt;
    return r;
}

tref t_loop_begin(tprog *p, tref init, int trips) {
    tref r = push(p, T_LOOP_BEGIN, TN(p, init)->rows, TN(p, init)->w, &init, 1);
    TN(p, r)->iattr[0] = trips;
    return r;
}

tref t_loop_end(tprog *p, tref next, tref begin) {
    tref in[2] = { next, begin };
    return push(p, T_LOOP_END, TN(p, next)->rows, TN(p, next)->w, in, 2);
}

void t_output(tprog *p, tref v) {
    if (p->nouts < TPROG_MAX_IO) p->outs[p->nouts++] = v;
}

tref t_batchsum(tprog *p, tref x) { return push(p, T_BATCHSUM, 1, TN(p, x)->w, &x, 1); }

tref t_matmul_tn(tprog *p, tref a, tref b) {
    tref in[2] = { a, b };
    return push(p, T_MATMUL_TN, TN(p, a)->w, TN(p, b)->w, in, 2);
}

tref t_matmul_nt(tprog *p, tref g, tref w) {
    tref in[2] = { g, w };
    return push(p, T_MATMUL_NT, 0, TN(p, w)->rows, in, 2);
}

tref t_scatter(tprog *p, tref x, const int32_t *idx, int n, int width) {
    tref r = push(p, T_SCATTER, 0, width, &x, 1);
    int32_t at = p->nints;
    for (int i = 0; i < n; i++) VEC_PUSH(p->ar, p->ints, p->nints, p->cap_ints, idx[i]);
    TN(p, r)->aux = at;
    TN(p, r)->naux = n;
    TN(p, r)->iattr[0] = width;
    return r;
}

tref t_diagembed(tprog *p, tref v) { return push(p, T_DIAGEMBED, TN(p, v)->w, TN(p, v)->w, &v, 1); }

void t_grad_output(tprog *p, int param, tref v) {
    VEC_PUSH(p->ar, p->gval, p->ngrad, p->cap_grad, v);
    int n = p->ngrad - 1;
    VEC_PUSH(p->ar, p->gparam, n, p->cap_gparam, param);
}

void tir_sections(const tprog *p, int8_t *sec) {
    for (int i = 0; i < p->nn; i++) {
        const tnode *n = &p->nodes[i];
        if (n->rows == 0) { sec[i] = SEC_BATCHED; continue; }
        int s = SEC_PROLOGUE;
        if (t_ops[n->op].flags & TF_RED) s = SEC_EPILOGUE;
        for (int k = 0; k < n->nin; k++) if (sec[n->in[k]] == SEC_EPILOGUE) s = SEC_EPILOGUE;
        sec[i] = (int8_t)s;
    }
}

int64_t tir_param_offsets(const ir_graph *g, int64_t *off) {
    int64_t at = 0;
    for (int i = 0; i < g->np; i++) {
        if (off) off[i] = at;
        at += ir_param_numel(&g->params[i]);
    }
    return at;
}

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)

/* closed_by[a] (p->nn entries, zeroed): the LOOP_END of the loop whose body holds node a,
 * once that loop has ended; 0 otherwise. (Loops do not nest, so marking is linear.) */
static int verify(const tprog *p, int *closed_by, char *err, size_t errlen) {
    tref open_loop = -1;
    for (int i = 0; i < p->nn; i++) {
        const tnode *n = &p->nodes[i];
        if (n->op >= T_NUM_OPS) FAIL("%s: %%%d: bad op %d", p->name, i, n->op);
        const t_opinfo *oi = &t_ops[n->op];
        if (oi->arity >= 0 && n->nin != oi->arity) FAIL("%s: %%%d %s: %d operands, expected %d", p->name, i, oi->name, n->nin, oi->arity);
        if (n->w < 1 || n->rows < 0) FAIL("%s: %%%d %s: bad shape [%d x %d]", p->name, i, oi->name, n->rows, n->w);
        for (int k = 0; k < n->nin; k++) {
            tref a = n->in[k];
            if (a < 0 || a >= i) FAIL("%s: %%%d %s: operand %d refers to %%%d", p->name, i, oi->name, k, a);
            /* no use of a loop body node after its loop */
            if (open_loop < 0 && closed_by[a])
                FAIL("%s: %%%d uses %%%d from inside the loop that ends at %%%d", p->name, i, a, closed_by[a]);
        }
        if (oi->flags & TF_EW) {
            int batched = 0, rows = 1;
            for (int k = 0; k < n->nin; k++) {
                const tnode *a = &p->nodes[n->in[k]];
                if (a->w != n->w && a->w != 1) FAIL("%s: %%%d %s: operand width %d vs %d", p->name, i, oi->name, a->w, n->w);
                if (a->rows == 0) batched = 1;
                else if (a->rows != 1 && n->rows != a->rows) FAIL("%s: %%%d %s: operand rows %d vs %d", p->name, i, oi->name, a->rows, n->rows);
                if (a->rows > rows) rows = a->rows;
            }
            if (batched != (n->rows == 0)) FAIL("%s: %%%d %s: batched mismatch", p->name, i, oi->name);
        }
        switch ((t_op)n->op) {
        case T_MATMUL: {
            const tnode *x = &p->nodes[n->in[0]], *w = &p->nodes[n->in[1]];
            if (x->rows != 0 || w->rows == 0 || x->w != w->rows || n->w != w->w)
                FAIL("%s: %%%d matmul: [%d x %d] times [%d x %d]", p->name, i, x->rows, x->w, w->rows, w->w);
            break;
        }
        case T_GATHER: {
            const tnode *x = &p->nodes[n->in[0]];
            if (n->naux != n->w || x->rows != n->rows) FAIL("%s: %%%d gather: bad shape", p->name, i);
            for (int k = 0; k < n->naux; k++)
                if (p->ints[n->aux + k] < 0 || p->ints[n->aux + k] >= x->w) FAIL("%s: %%%d gather: index %d out of range", p->name, i, p->ints[n->aux + k]);
            break;
        }
        case T_CONCAT: {
            int w = 0;
            for (int k = 0; k < n->nin; k++) {
                if (p->nodes[n->in[k]].rows != 0) FAIL("%s: %%%d concat: unbatched operand", p->name, i);
                w += p->nodes[n->in[k]].w;
            }
            if (w != n->w) FAIL("%s: %%%d concat: width", p->name, i);
            break;
        }
        case T_LU_FWD:
        case T_LU_INV: {
            const tnode *x = &p->nodes[n->in[0]], *m = &p->nodes[n->in[1]];
            if (x->rows != 0 || m->rows != x->w || m->w != x->w || n->w != x->w) FAIL("%s: %%%d lu: bad shapes", p->name, i);
            break;
        }
        case T_DIAG: {
            const tnode *m = &p->nodes[n->in[0]];
            if (m->rows != m->w || n->rows != 1) FAIL("%s: %%%d diag: not square", p->name, i);
            break;
        }
        case T_BATCHSUM:
            if (p->nodes[n->in[0]].rows != 0 || n->rows != 1) FAIL("%s: %%%d batchsum: bad shapes", p->name, i);
            break;
        case T_MATMUL_TN: {
            const tnode *a = &p->nodes[n->in[0]], *b = &p->nodes[n->in[1]];
            if (a->rows != 0 || b->rows != 0 || n->rows != a->w || n->w != b->w) FAIL("%s: %%%d matmul_tn: bad shapes", p->name, i);
            break;
        }
        case T_MATMUL_NT: {
            const tnode *g = &p->nodes[n->in[0]], *w = &p->nodes[n->in[1]];
            if (g->rows != 0 || w->rows == 0 || g->w != w->w || n->w != w->rows) FAIL("%s: %%%d matmul_nt: bad shapes", p->name, i);
            break;
        }
        case T_SCATTER: {
            const tnode *x = &p->nodes[n->in[0]];
            if (x->rows != 0 || n->naux != x->w || n->w != n->iattr[0]) FAIL("%s: %%%d scatter: bad shapes", p->name, i);
            for (int k = 0; k < n->naux; k++)
                if (p->ints[n->aux + k] < 0 || p->ints[n->aux + k] >= n->w) FAIL("%s: %%%d scatter: index out of range", p->name, i);
            break;
        }
        case T_DIAGEMBED: {
            const tnode *v = &p->nodes[n->in[0]];
            if (v->rows != 1 || n->rows != v->w || n->w != v->w) FAIL("%s: %%%d diagembed: bad shapes", p->name, i);
            break;
        }
        case T_LU_U:
        case T_LU_LT:
        case T_LU_UT:
        case T_LU_INVT: {
            const tnode *x = &p->nodes[n->in[0]], *m = &p->nodes[n->in[1]];
            if (x->rows != 0 || m->rows != x->w || m->w != x->w || n->w != x->w) FAIL("%s: %%%d lu: bad shapes", p->name, i);
            break;
        }
        case T_LOOP_BEGIN:
            if (open_loop >= 0) FAIL("%s: %%%d: nested loop", p->name, i);
            if (n->iattr[0] < 1) FAIL("%s: %%%d: loop trip count %d", p->name, i, n->iattr[0]);
            open_loop = i;
            break;
        case T_LOOP_END: {
            if (open_loop < 0 || n->in[1] != open_loop) FAIL("%s: %%%d: loop_end without its loop_begin", p->name, i);
            const tnode *b = &p->nodes[open_loop], *nx = &p->nodes[n->in[0]];
            if (b->w != nx->w || b->rows != nx->rows) FAIL("%s: %%%d: loop state changes shape", p->name, i);
            for (int j = open_loop + 1; j < i; j++) closed_by[j] = i;
            open_loop = -1;
            break;
        }
        case T_ARG:
            if (n->iattr[0] < 0 || n->iattr[0] >= p->nargs || p->arg_w[n->iattr[0]] != n->w) FAIL("%s: %%%d: bad arg", p->name, i);
            break;
        default:
            break;
        }
    }
    if (open_loop >= 0) FAIL("%s: loop at %%%d is not closed", p->name, open_loop);
    for (int k = 0; k < p->nouts; k++)
        if (p->outs[k] < 0 || p->outs[k] >= p->nn || p->nodes[p->outs[k]].rows != 0) FAIL("%s: output %d is not a batched value", p->name, k);
    for (int k = 0; k < p->ngrad; k++)
        if (p->gval[k] < 0 || p->gval[k] >= p->nn || p->nodes[p->gval[k]].rows == 0) FAIL("%s: gradient output %d is not an unbatched value", p->name, k);
    return 0;
}

int tir_verify(const tprog *p, char *err, size_t errlen) {
    int *closed_by = calloc((size_t)p->nn + 1, sizeof *closed_by);
    if (!closed_by) FAIL("%s: out of memory verifying %d nodes", p->name, p->nn);
    int rc = verify(p, closed_by, err, errlen);
    free(closed_by);
    return rc;
}

void tir_dump(const tprog *p, FILE *out) {
    fprintf(out, "program %s (args", p->name);
    for (int k = 0; k < p->nargs; k++) fprintf(out, " [%d]", p->arg_w[k]);
    fprintf(out, ", scalars %d)\n", p->nscalars);
    for (int i = 0; i < p->nn; i++) {
        const tnode *n = &p->nodes[i];
        fprintf(out, "  %%%d = %s", i, t_ops[n->op].name);
        for (int k = 0; k < n->nin; k++) fprintf(out, " %%%d", n->in[k]);
        if (n->rows == 0) fprintf(out, " [n x %d]", n->w);
        else fprintf(out, " [%d x %d]", n->rows, n->w);
        switch ((t_op)n->op) {
        case T_ARG: case T_PARAM: case T_SCALAR: case T_RANDN: case T_RANDLOGISTIC: case T_LOOP_BEGIN:
            fprintf(out, " #%d", n->iattr[0]);
            break;
        case T_CONST: case T_LEAKY:
            fprintf(out, " %g", n->fattr[0]);
            break;
        case T_GATHER:
            fputs(" [", out);
            for (int k = 0; k < n->naux; k++) fprintf(out, "%s%d", k ? " " : "", p->ints[n->aux + k]);
            fputc(']', out);
            break;
        default:
            break;
        }
        fputc('\n', out);
    }
    fputs("  outputs", out);
    for (int k = 0; k < p->nouts; k++) fprintf(out, " %%%d", p->outs[k]);
    fputc('\n', out);
}
