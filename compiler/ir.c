/* compiler/ir.c: building and printing flow graphs (see ir.h).
 * Input: calls from sema.c. Output: the node, index-list, parameter and net tables, and a
 * stable text dump: one line per node, "%N = op operands [width] attributes  @line:col". */
#include "ir.h"

#include <string.h>

const ir_opinfo ir_ops[IR_NUM_OPS] = {
#define X(e, name, flags) { name, flags },
#include "ops.def"
#undef X
};
_Static_assert(sizeof(ir_ops) / sizeof(ir_ops[0]) == IR_NUM_OPS, "op table out of step with ops.def");

const char *const ir_act_names[ACT_NUM] = { "none", "relu", "tanh", "elu", "gelu", "sigmoid", "softplus", "leaky_relu" };

ir_graph *ir_new(arena *ar, const char *name, loc_t loc) {
    ir_graph *g = arena_alloc(ar, sizeof *g);
    g->ar = ar;
    g->name = name;
    g->loc = loc;
    g->dtype = DT_F32;
    g->input = g->context = g->output = IR_NONE;
    return g;
}

ir_ref ir_add(ir_graph *g, ir_op op, int width, const ir_ref *in, int nin, loc_t loc) {
    ir_node n;
    memset(&n, 0, sizeof n);
    n.op = (uint16_t)op;
    n.width = width;
    n.nin = (int16_t)(nin > IR_MAX_IN ? IR_MAX_IN : nin);
    for (int i = 0; i < IR_MAX_IN; i++) n.in[i] = i < n.nin ? in[i] : IR_NONE;
    n.loc = loc;
    n.layer = g->nlayers - 1;
    n.param0 = g->np;
    VEC_PUSH(g->ar, g->nodes, g->nn, g->cap_n, n);
    return g->nn - 1;
}

int32_t ir_add_ints(ir_graph *g, const int32_t *v, int n) {
    int32_t at = g->nints;
    for (int i = 0; i < n; i++) VEC_PUSH(g->ar, g->ints, g->nints, g->cap_ints, v[i]);
    return at;
}

int ir_add_param(ir_graph *g, ir_ref owner, const char *name, int rank, int64_t d0, int64_t d1, int init, int fan_in) {
    ir_param p;
    memset(&p, 0, sizeof p);
    p.name = name;
    p.rank = rank;
    p.shape[0] = d0;
    p.shape[1] = rank > 1 ? d1 : 1;
    p.init = init;
    p.fan_in = fan_in;
    p.owner = owner;
    VEC_PUSH(g->ar, g->params, g->np, g->cap_p, p);
    return g->np - 1;
}

int64_t ir_param_numel(const ir_param *p) { return p->rank > 1 ? p->shape[0] * p->shape[1] : p->shape[0]; }

int64_t ir_param_count(const ir_graph *g) {
    int64_t n = 0;
    for (int i = 0; i < g->np; i++) n += ir_param_numel(&g->params[i]);
    return n;
}

/* index lists of SPLIT/MERGE: [nparts, len0, idx..., len1, idx..., ...] */
int ir_nparts(const ir_graph *g, const ir_node *n) { return n->naux ? g->ints[n->aux] : 0; }

const int32_t *ir_part(const ir_graph *g, const ir_node *n, int k, int *len) {
    int32_t at = n->aux + 1;
    for (int i = 0; i < k; i++) at += 1 + g->ints[at];
    *len = g->ints[at];
    return &g->ints[at + 1];
}

static void dump_list(FILE *out, const int32_t *v, int n) {
    fputc('[', out);
    /* print runs a..b compactly as a:b+1 when contiguous and long */
    int contiguous = 1;
    for (int i = 1; i < n; i++) if (v[i] != v[i - 1] + 1) contiguous = 0;
    if (contiguous && n > 3) {
        fprintf(out, "%d:%d", v[0], v[n - 1] + 1);
    } else {
        for (int i = 0; i < n; i++) fprintf(out, "%s%d", i ? " " : "", v[i]);
    }
    fputc(']', out);
}

static const char *scaling_name(int s) {
    return s == SCALE_EXP ? "exp" : s == SCALE_TANH ? "tanh" : "sigmoid";
}

void ir_dump(const ir_graph *g, FILE *out) {
    static const char *base_names[] = { "normal", "normal(learned)", "logistic" };
    fprintf(out, "flow %s %s base=%s\n", g->name, g->dtype == DT_F64 ? "f64" : "f32", base_names[g->base]);
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->nodes[i];
        fprintf(out, "  %%%d = %s", i, ir_ops[n->op].name);
        for (int k = 0; k < n->nin; k++) {
            if (n->in[k] == IR_NONE) fputs(" _", out);
            else fprintf(out, " %%%d", n->in[k]);
        }
        fprintf(out, " [%d]", n->width);
        switch ((ir_op)n->op) {
        case IR_INPUT:
        case IR_CONTEXT:
            fprintf(out, " %s", n->name);
            break;
        case IR_GET:
            fprintf(out, " part=%d", n->iattr[0]);
            break;
        case IR_SPLIT:
        case IR_MERGE:
            for (int k = 0; k < ir_nparts(g, n); k++) {
                int len;
                const int32_t *v = ir_part(g, n, k, &len);
                fputc(' ', out);
                dump_list(out, v, len);
            }
            break;
        case IR_PERMUTE:
            fputc(' ', out);
            dump_list(out, &g->ints[n->aux], n->naux);
            break;
        case IR_AFFINE:
            if (n->in[1] != IR_NONE) {
                fprintf(out, " scaling=%s", scaling_name(n->iattr[0]));
                if (n->iattr[0] == SCALE_TANH) fprintf(out, " clamp=%g", n->fattr[0]);
            }
            break;
        case IR_MAF:
            fprintf(out, " scaling=%s", scaling_name(n->iattr[0]));
            if (n->iattr[0] == SCALE_TANH) fprintf(out, " clamp=%g", n->fattr[0]);
            /* fallthrough */
        case IR_NET: {
            const ir_net *net = &g->nets[n->iattr[1]];
            fprintf(out, " %s in=%d out=%d {", net->desc, net->in_width, net->out_width);
            for (int k = 0; k < net->nl; k++) {
                const ir_netlayer *l = &net->L[k];
                int first = k == 0 || net->L[k - 1].kind == NL_RES_BEGIN;
                switch (l->kind) {
                case NL_DENSE: fprintf(out, "%sdense %d%s", first ? " " : "; ", l->width, l->zero_init ? " zero" : ""); break;
                case NL_ACT: fprintf(out, "%s%s", first ? " " : "; ", ir_act_names[l->act]); break;
                case NL_RES_BEGIN: fprintf(out, "%sresidual {", first ? " " : "; "); break;
                case NL_RES_END: fputs(" }", out); break;
                }
            }
            fputs(" }", out);
            break;
        }
        case IR_LEAKY_RELU:
            fprintf(out, " slope=%g", n->fattr[0]);
            break;
        case IR_ACTNORM:
        case IR_LINEAR_LU:
        case IR_SIGMOID:
        case IR_LOGIT:
        case IR_NUM_OPS:
            break;
        }
        if (n->name && n->op != IR_INPUT && n->op != IR_CONTEXT) fprintf(out, " \"%s\"", n->name);
        if (n->loc.line > 0) fprintf(out, "  @%d:%d", n->loc.line, n->loc.col);
        fputc('\n', out);
        for (int p = n->param0; p < n->param0 + n->nparam; p++) {
            const ir_param *pr = &g->params[p];
            if (pr->rank > 1)
                fprintf(out, "      param %s [%lld, %lld]%s\n", pr->name, (long long)pr->shape[0], (long long)pr->shape[1],
                        pr->init == INIT_ZERO ? " zero" : "");
            else
                fprintf(out, "      param %s [%lld]%s\n", pr->name, (long long)pr->shape[0], pr->init == INIT_ZERO ? " zero" : "");
        }
    }
    for (int p = 0; p < g->np; p++) {
        const ir_param *pr = &g->params[p];
        if (pr->owner == IR_NONE) fprintf(out, "  param %s [%lld] zero\n", pr->name, (long long)pr->shape[0]);
    }
    fprintf(out, "  output %%%d\n", g->output);
    fprintf(out, "  parameters %lld\n", (long long)ir_param_count(g));
}
