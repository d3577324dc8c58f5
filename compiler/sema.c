/* compiler/sema.c: semantic analysis, syntax tree to flow graph.
 * Input: the AST_FILE of one .flow file. Output: one ir_graph per flow, built from graph
 * primitives (layer sugar expanded here), with every width known and every parameter
 * created; or located diagnostics. Stages per flow: declarations; statements (layer form:
 * each layer transforms the running value; graph form: named values and `output`); width
 * inference (conditioner output widths come from their uses); conditioner nets expanded to
 * dense layers with parameters; the invertibility analysis (every value computed from the
 * input is used once by an invertible operation, and each operation's parameters are
 * computable when the inverse reaches it). */
#include "sema.h"

#include <stdlib.h>
#include <string.h>

#define MAX_NODES 200000
#define MAX_REPEAT_ITERS 1000000   /* iterations of all repeat loops of a flow together */
#define MAX_WIDTH (1 << 20)
/* the most values of one parameter tensor: its sizes are int (tensor IR, the kernels) */
#define MAX_TENSOR 2147483647

typedef struct { const char *name; ir_ref ref; loc_t loc; } binding;
typedef struct { const char *name; int64_t val; } intvar;

/* a conditioner net, resolved to its recipe when used and expanded once widths are known */
enum { RECIPE_MLP, RECIPE_MADE, RECIPE_USER };
typedef struct {
    int         kind;
    int         act;
    int64_t     hidden[64];
    int         nhidden;
    const ast  *def;        /* RECIPE_USER */
    int64_t     argv[16];
    int         argc;
    int         out;        /* explicit out=, else -1 */
    loc_t       loc;
    const char *desc;
    const char *prefix;     /* parameter name prefix */
    const char *text;       /* graph form: the whole application, e.g. mlp(8)(a), for messages */
    ir_ref      node;
} recipe;

typedef struct {
    diag_ctx   *dc;
    arena      *ar;
    const ast  *file;
    ir_graph   *g;
    binding    *vals;   int nvals, cap_vals;
    int        *vhash;  int vhcap;   /* open-addressing index of vals by name (index + 1; 0 empty) */
    intvar     *ivars;  int nivars, cap_ivars;
    recipe     *rec;    int nrec, cap_rec;
    ir_ref      cur;            /* running value (layer form) */
    int         nerr0;
    loc_t       first_layer, first_assign;
    int         has_layer, has_assign;
    const ast  *cmd;            /* statement being analysed (for "its own output") */
    const char *prefix;         /* parameter name prefix of the current layer */
    int         nets_here;      /* nets made by the current statement (for unique names) */
    int         too_big;
    int64_t     repeat_iters;   /* repeat iterations run in this flow (MAX_REPEAT_ITERS) */
    const char *first_layer_word;
    int         mixed;          /* a mix of layer and graph form was reported: do not repeat it */
    loc_t       output_loc;
    int         listed_words;   /* the list of layers was shown once in this file */
} sema;

static const char *const layer_words[] = {
    "actnorm", "affine_coupling", "additive_coupling", "maf", "linear", "reverse", "permute",
    "leaky_relu", "sigmoid", "logit", "glow_step",
};
#define NLAYER_WORDS ((int)(sizeof layer_words / sizeof layer_words[0]))
static const char *const graph_words[] = { "split", "chunk", "concat", "affine", "additive" };
static const char *const stmt_words[] = { "base", "repeat", "output" };

/* ---------------------------------------------------------------- helpers */

static int nerrors(sema *s) { return s->dc->nerrors; }

static char *expr_str(sema *s, const ast *e);

static void append_args(sema *s, char **buf, const ast *e) {
    for (int i = 0; i < e->nargs; i++)
        *buf = arena_printf(s->ar, "%s%s%s", *buf, i ? ", " : "", expr_str(s, e->args[i]));
    for (int i = 0; i < e->nopts; i++)
        *buf = arena_printf(s->ar, "%s%s%s=%s", *buf, (i || e->nargs) ? ", " : "", e->opts[i].key, expr_str(s, e->opts[i].val));
}

static char *expr_str(sema *s, const ast *e) {
    char *b = "";
    switch (e->kind) {
    case AST_NAME: return arena_strdup(s->ar, e->name);
    case AST_INT: return arena_printf(s->ar, "%lld", (long long)e->ival);
    case AST_FLOAT: return arena_printf(s->ar, "%g", e->fval);
    case AST_LIST: append_args(s, &b, e); return arena_printf(s->ar, "[%s]", b);
    case AST_CALL: append_args(s, &b, e); return arena_printf(s->ar, "%s(%s)", e->name, b);
    case AST_APPLY: append_args(s, &b, e); return arena_printf(s->ar, "%s(%s)", expr_str(s, e->callee), b);
    case AST_BINOP: {
        const char *l = expr_str(s, e->args[0]), *r = expr_str(s, e->args[1]);
        if (e->args[0]->kind == AST_BINOP) l = arena_printf(s->ar, "(%s)", l);
        if (e->args[1]->kind == AST_BINOP) r = arena_printf(s->ar, "(%s)", r);
        return arena_printf(s->ar, "%s%c%s", l, e->op, r);
    }
    case AST_NEG: return arena_printf(s->ar, "-%s", expr_str(s, e->args[0]));
    default: return "?";
    }
}

static char *cmd_str(sema *s, const ast *c) {
    if (c->callee) return expr_str(s, c->callee);
    char *b = arena_strdup(s->ar, c->name);
    for (int i = 0; i < c->nargs; i++) b = arena_printf(s->ar, "%s %s", b, expr_str(s, c->args[i]));
    for (int i = 0; i < c->nopts; i++) b = arena_printf(s->ar, "%s %s=%s", b, c->opts[i].key, expr_str(s, c->opts[i].val));
    return b;
}

static const ast_opt *get_opt(const ast *c, const char *key) {
    for (int i = 0; i < c->nopts; i++)
        if (!strcmp(c->opts[i].key, key)) return &c->opts[i];
    return NULL;
}

/* Every option of c must be one of allowed[]; report the others with a suggestion. */
static int check_opts(sema *s, const ast *c, const char *what, const char *const *allowed, int n) {
    int ok = 1;
    for (int i = 0; i < c->nopts; i++) {
        const char *k = c->opts[i].key;
        int found = 0;
        for (int j = 0; j < n; j++) if (!strcmp(k, allowed[j])) found = 1;
        for (int j = 0; j < i; j++)
            if (!strcmp(k, c->opts[j].key)) {
                diag_error(s->dc, c->opts[i].loc, "option '%s' is given twice", k);
                diag_note(s->dc, c->opts[j].loc, "first given here");
                ok = 0;
            }
        if (found) continue;
        ok = 0;
        const char *sug = closest_word(k, allowed, n);
        if (n == 0)
            diag_error(s->dc, c->opts[i].loc, "'%s' takes no options", what);
        else if (sug)
            diag_error(s->dc, c->opts[i].loc, "unknown option '%s' for '%s'; did you mean '%s'?", k, what, sug);
        else {
            char *list = "";
            for (int j = 0; j < n; j++) list = arena_printf(s->ar, "%s%s'%s'", list, j ? ", " : "", allowed[j]);
            diag_error(s->dc, c->opts[i].loc, "unknown option '%s' for '%s' (it takes %s)", k, what, list);
        }
    }
    return ok;
}

static int check_nargs(sema *s, const ast *c, int min, int max, const char *usage) {
    if (c->nargs < min || c->nargs > max) {
        loc_t l = c->nargs > max ? c->args[max]->loc : c->name_loc;
        diag_error(s->dc, l, "%s '%s': expected %s", c->nargs > max ? "too many arguments for" : "missing argument for",
                   c->name, usage);
        return 0;
    }
    return 1;
}

static const intvar *find_ivar(sema *s, const char *name) {
    for (int i = s->nivars - 1; i >= 0; i--)
        if (!strcmp(s->ivars[i].name, name)) return &s->ivars[i];
    return NULL;
}

static unsigned name_hash(const char *n) {
    unsigned h = 2166136261u;
    while (*n) h = (h ^ (unsigned char)*n++) * 16777619u;
    return h;
}

/* the slot of name in the index: where it is, or the empty slot where it would go */
static int *val_slot(sema *s, const char *name) {
    unsigned m = (unsigned)s->vhcap - 1, h = name_hash(name) & m;
    while (s->vhash[h] && strcmp(s->vals[s->vhash[h] - 1].name, name)) h = (h + 1) & m;
    return &s->vhash[h];
}

/* push a binding; the newest binding of a name is the one found (a graph of 100000 values
 * must not cost a scan of all of them per name) */
static void push_val(sema *s, binding b) {
    VEC_PUSH(s->ar, s->vals, s->nvals, s->cap_vals, b);
    if (2 * s->nvals > s->vhcap) {
        s->vhcap = s->vhcap ? 2 * s->vhcap : 64;
        while (2 * s->nvals > s->vhcap) s->vhcap *= 2;
        s->vhash = arena_alloc(s->ar, sizeof(int) * (size_t)s->vhcap);
        for (int i = 0; i < s->nvals; i++) *val_slot(s, s->vals[i].name) = i + 1;
    } else {
        *val_slot(s, b.name) = s->nvals;
    }
}

static const binding *find_val(sema *s, const char *name) {
    if (!s->vhcap) return NULL;
    int k = *val_slot(s, name);
    return k ? &s->vals[k - 1] : NULL;
}

/* integer expressions: literals, loop variables, net parameters, + - * / % */
static int eval_int(sema *s, const ast *e, int64_t *out) {
    switch (e->kind) {
    case AST_INT: *out = e->ival; return 1;
    case AST_NAME: {
        const intvar *v = find_ivar(s, e->name);
        if (v) { *out = v->val; return 1; }
        if (find_val(s, e->name))
            diag_error(s->dc, e->loc, "'%s' is a value, but a whole number is expected here", e->name);
        else
            diag_error(s->dc, e->loc, "unknown name '%s' (a whole number is expected here)", e->name);
        return 0;
    }
    case AST_NEG: {
        int64_t v;
        if (!eval_int(s, e->args[0], &v)) return 0;
        *out = -v;
        return 1;
    }
    case AST_BINOP: {
        int64_t a, b;
        if (!eval_int(s, e->args[0], &a) || !eval_int(s, e->args[1], &b)) return 0;
        if ((e->op == '/' || e->op == '%') && b == 0) {
            diag_error(s->dc, e->loc, "division by zero");
            return 0;
        }
        if (a > 1000000000 || a < -1000000000 || b > 1000000000 || b < -1000000000) {
            diag_error(s->dc, e->loc, "number out of range");
            return 0;
        }
        switch (e->op) {
        case '+': *out = a + b; break;
        case '-': *out = a - b; break;
        case '*': *out = a * b; break;
        case '/': *out = a / b - ((a % b != 0) && ((a < 0) != (b < 0))); break; /* floor, like % */
        default: *out = ((a % b) + b) % b; break;
        }
        return 1;
    }
    case AST_FLOAT:
        diag_error(s->dc, e->loc, "expected a whole number, found '%g'", e->fval);
        return 0;
    default:
        diag_error(s->dc, e->loc, "expected a whole number, found '%s'", expr_str(s, e));
        return 0;
    }
}

static int eval_num(sema *s, const ast *e, double *out) {
    if (e->kind == AST_FLOAT) { *out = e->fval; return 1; }
    int64_t v;
    if (!eval_int(s, e, &v)) return 0;
    *out = (double)v;
    return 1;
}

static ir_node *N(sema *s, ir_ref r) { return &s->g->nodes[r]; }

static ir_ref add(sema *s, ir_op op, int width, const ir_ref *in, int nin, loc_t loc) {
    if (s->g->nn >= MAX_NODES) {
        if (!s->too_big) diag_error(s->dc, loc, "the flow is too large (more than %d operations)", MAX_NODES);
        s->too_big = 1;
        return IR_NONE;
    }
    return ir_add(s->g, op, width, in, nin, loc);
}

static void new_layer(sema *s, const char *desc, loc_t loc) {
    ir_layer l;
    memset(&l, 0, sizeof l);
    l.desc = desc;
    l.loc = loc;
    VEC_PUSH(s->ar, s->g->layers, s->g->nlayers, s->g->cap_layers, l);
}

/* SPLIT of x into parts given as index lists, returning GET refs in parts_out */
static ir_ref make_split(sema *s, ir_ref x, int width, int nparts, int32_t *const *idx, const int *len, loc_t loc,
                         ir_ref *parts_out) {
    ir_ref sp = add(s, IR_SPLIT, width, &x, 1, loc);
    if (sp == IR_NONE) return IR_NONE;
    int32_t hdr = nparts;
    N(s, sp)->aux = ir_add_ints(s->g, &hdr, 1);
    for (int k = 0; k < nparts; k++) {
        int32_t l = len[k];
        ir_add_ints(s->g, &l, 1);
        ir_add_ints(s->g, idx[k], len[k]);
    }
    N(s, sp)->naux = s->g->nints - N(s, sp)->aux;
    for (int k = 0; k < nparts; k++) {
        ir_ref g = add(s, IR_GET, len[k], &sp, 1, loc);
        if (g == IR_NONE) return IR_NONE;
        N(s, g)->iattr[0] = k;
        parts_out[k] = g;
    }
    return sp;
}

static ir_ref make_merge(sema *s, const ir_ref *parts, int nparts, int32_t *const *idx, const int *len, int width, loc_t loc) {
    ir_ref m = add(s, IR_MERGE, width, parts, nparts, loc);
    if (m == IR_NONE) return IR_NONE;
    int32_t hdr = nparts;
    N(s, m)->aux = ir_add_ints(s->g, &hdr, 1);
    for (int k = 0; k < nparts; k++) {
        int32_t l = len[k];
        ir_add_ints(s->g, &l, 1);
        if (idx[k]) ir_add_ints(s->g, idx[k], len[k]);
        else for (int j = 0; j < len[k]; j++) ir_add_ints(s->g, &l, 1); /* filled in later */
    }
    N(s, m)->naux = s->g->nints - N(s, m)->aux;
    return m;
}

/* ---------------------------------------------------------------- nets */

static const char *const act_words[] = { "relu", "tanh", "elu", "gelu", "sigmoid", "softplus", "leaky_relu" };
#define NACT 7

static int parse_act(sema *s, const ast *e) {
    if (e->kind != AST_NAME) {
        diag_error(s->dc, e->loc, "expected an activation such as 'relu' or 'tanh'");
        return -1;
    }
    for (int i = 0; i < NACT; i++) if (!strcmp(e->name, act_words[i])) return i + 1;
    const char *sug = closest_word(e->name, act_words, NACT);
    if (sug) diag_error(s->dc, e->loc, "unknown activation '%s'; did you mean '%s'?", e->name, sug);
    else diag_error(s->dc, e->loc, "unknown activation '%s' (one of relu, tanh, elu, gelu, sigmoid, softplus, leaky_relu)", e->name);
    return -1;
}

static const ast *find_netdef(sema *s, const char *name) {
    for (int i = 0; i < s->file->nbody; i++) {
        const ast *d = s->file->body[i];
        if (d->kind == AST_NETDEF && !strcmp(d->name, name)) return d;
    }
    return NULL;
}

/* Resolve a net expression (mlp(64, 64), made(128), resmlp(32), mynet, with optional out=)
 * into a recipe. want_made: the using layer needs an autoregressive (MADE) net. */
static int resolve_net(sema *s, const ast *e, int want_made, const char *user, recipe *r) {
    memset(r, 0, sizeof *r);
    r->out = -1;
    r->loc = e->loc;
    r->act = ACT_RELU;
    r->desc = expr_str(s, e);
    if (e->kind != AST_NAME && e->kind != AST_CALL) {
        diag_error(s->dc, e->loc, "expected a conditioner net such as 'mlp(64, 64)'");
        return 0;
    }
    const char *name = e->name;
    r->loc = e->name_loc;
    int is_mlp = !strcmp(name, "mlp"), is_made = !strcmp(name, "made");
    const ast *def = (!is_mlp && !is_made) ? find_netdef(s, name) : NULL;
    if (!is_mlp && !is_made && !def) {
        const char *cands[66];
        int nc = 0;
        cands[nc++] = "mlp";
        cands[nc++] = "made";
        for (int i = 0; i < s->file->nbody && nc < 66; i++)
            if (s->file->body[i]->kind == AST_NETDEF) cands[nc++] = s->file->body[i]->name;
        const char *sug = closest_word(name, cands, nc);
        if (sug) diag_error(s->dc, e->loc, "unknown net '%s'; did you mean '%s'?", name, sug);
        else diag_error(s->dc, e->loc, "unknown net '%s' (built in: mlp, made; or define one with 'net %s(...) { ... }')", name, name);
        return 0;
    }
    if (want_made && !is_made) {
        diag_error(s->dc, e->loc, "'%s' needs an autoregressive conditioner: use net=made(...), not '%s'", user, name);
        return 0;
    }
    if (!want_made && is_made) {
        diag_error(s->dc, e->loc, "'made' is the autoregressive conditioner of 'maf'; '%s' takes a net such as mlp(64, 64)", user);
        return 0;
    }
    int ok = 1;
    /* options: out= for every net, act= for the built-in ones */
    for (int i = 0; i < e->nopts; i++) {
        const ast_opt *o = &e->opts[i];
        if (!strcmp(o->key, "out")) {
            int64_t v;
            if (!eval_int(s, o->val, &v)) { ok = 0; continue; }
            if (v < 1 || v > MAX_WIDTH) { diag_error(s->dc, o->val->loc, "out must be between 1 and %d", MAX_WIDTH); ok = 0; continue; }
            r->out = (int)v;
        } else if (!strcmp(o->key, "act") && !def) {
            int a = parse_act(s, o->val);
            if (a < 0) ok = 0; else r->act = a;
        } else {
            static const char *const opts_builtin[] = { "act", "out" };
            static const char *const opts_user[] = { "out" };
            const char *sug = closest_word(o->key, def ? opts_user : opts_builtin, def ? 1 : 2);
            if (sug) diag_error(s->dc, o->loc, "unknown option '%s' for net '%s'; did you mean '%s'?", o->key, name, sug);
            else diag_error(s->dc, o->loc, "unknown option '%s' for net '%s' (it takes %s)", o->key, name, def ? "out" : "act and out");
            ok = 0;
        }
    }
    if (def) {
        r->kind = RECIPE_USER;
        r->def = def;
        if (e->nargs != def->nparams) {
            diag_error(s->dc, e->loc, "net '%s' takes %d argument%s, %d given", name, def->nparams, def->nparams == 1 ? "" : "s", e->nargs);
            diag_note(s->dc, def->name_loc, "'%s' is defined here", name);
            return 0;
        }
        if (e->nargs > 16) { diag_error(s->dc, e->loc, "too many net arguments (the limit is 16)"); return 0; }
        for (int i = 0; i < e->nargs; i++) {
            if (!eval_int(s, e->args[i], &r->argv[i])) { ok = 0; continue; }
            if (r->argv[i] < 1 || r->argv[i] > MAX_WIDTH) {
                diag_error(s->dc, e->args[i]->loc, "net argument must be between 1 and %d", MAX_WIDTH);
                ok = 0;
            }
        }
        r->argc = e->nargs;
        return ok;
    }
    r->kind = is_made ? RECIPE_MADE : RECIPE_MLP;
    if (e->kind == AST_NAME || e->nargs == 0) {
        diag_error(s->dc, e->loc, "'%s' needs its hidden widths, as in %s(64, 64)", name, name);
        return 0;
    }
    if (e->nargs > 64) { diag_error(s->dc, e->loc, "too many hidden layers (the limit is 64)"); return 0; }
    for (int i = 0; i < e->nargs; i++) {
        int64_t v;
        if (!eval_int(s, e->args[i], &v)) { ok = 0; continue; }
        if (v < 1 || v > 65536) {
            diag_error(s->dc, e->args[i]->loc, "hidden width must be between 1 and 65536, not %lld", (long long)v);
            ok = 0;
            continue;
        }
        r->hidden[r->nhidden++] = v;
    }
    return ok;
}

static void net_push(sema *s, ir_net *net, int kind, int width, int act) {
    ir_netlayer l;
    memset(&l, 0, sizeof l);
    l.kind = kind;
    l.width = width;
    l.act = act;
    l.param_w = l.param_b = -1;
    VEC_PUSH(s->ar, net->L, net->nl, net->cap_l, l);
}

/* Expand the body of a user net into layers; returns the width after it, or -1. */
static int expand_user_body(sema *s, ir_net *net, const ast *blk, int width, int out, int depth) {
    if (depth > 16) { diag_error(s->dc, blk->loc, "residual blocks are nested too deeply"); return -1; }
    for (int i = 0; i < blk->nbody; i++) {
        const ast *c = blk->body[i];
        if (c->kind != AST_CMD || c->ntargets) {
            diag_error(s->dc, c->loc, "a net body holds only 'dense', activations and 'residual { }'");
            return -1;
        }
        if (!strcmp(c->name, "dense")) {
            if (!check_opts(s, c, "dense", NULL, 0) || !check_nargs(s, c, 1, 2, "'dense WIDTH [activation]'")) return -1;
            int64_t w;
            if (c->args[0]->kind == AST_NAME && !strcmp(c->args[0]->name, "out") && !find_ivar(s, "out")) {
                w = out;
            } else if (!eval_int(s, c->args[0], &w)) {
                return -1;
            }
            if (w < 1 || w > 65536) { diag_error(s->dc, c->args[0]->loc, "dense width must be between 1 and 65536"); return -1; }
            net_push(s, net, NL_DENSE, (int)w, 0);
            width = (int)w;
            if (c->nargs == 2) {
                int a = parse_act(s, c->args[1]);
                if (a < 0) return -1;
                net_push(s, net, NL_ACT, width, a);
            }
        } else if (!strcmp(c->name, "residual")) {
            if (!check_opts(s, c, "residual", NULL, 0) || !check_nargs(s, c, 0, 0, "'residual { ... }'")) return -1;
            if (!c->has_block) { diag_error(s->dc, c->name_loc, "'residual' needs a block: residual { dense 64 relu; dense 64 }"); return -1; }
            net_push(s, net, NL_RES_BEGIN, width, 0);
            int w = expand_user_body(s, net, c, width, out, depth + 1);
            if (w < 0) return -1;
            if (w != width) {
                diag_error(s->dc, c->name_loc, "residual block changes the width from %d to %d; its output is added to its input, so they must match", width, w);
                return -1;
            }
            net_push(s, net, NL_RES_END, width, 0);
        } else {
            int a = -1;
            for (int k = 0; k < NACT; k++) if (!strcmp(c->name, act_words[k])) a = k + 1;
            if (a < 0) {
                static const char *const words[] = { "dense", "residual", "relu", "tanh", "elu", "gelu", "sigmoid", "softplus", "leaky_relu" };
                const char *sug = closest_word(c->name, words, 9);
                if (sug) diag_error(s->dc, c->name_loc, "unknown net layer '%s'; did you mean '%s'?", c->name, sug);
                else diag_error(s->dc, c->name_loc, "unknown net layer '%s' (a net body holds dense, residual and activations)", c->name);
                return -1;
            }
            if (!check_opts(s, c, c->name, NULL, 0) || !check_nargs(s, c, 0, 0, "no arguments")) return -1;
            net_push(s, net, NL_ACT, width, a);
        }
    }
    return width;
}

/* Once in/out widths are known: build the net's layers and parameters. */
static void expand_net(sema *s, recipe *r, int in_width, int ctx_width, int out_width) {
    ir_graph *g = s->g;
    ir_net net;
    memset(&net, 0, sizeof net);
    net.desc = r->desc;
    net.made = r->kind == RECIPE_MADE;
    net.in_width = in_width;
    net.ctx_width = ctx_width;
    net.out_width = out_width;
    net.owner = r->node;
    if (r->kind == RECIPE_USER) {
        int save = s->nivars;
        for (int i = 0; i < r->argc; i++) {
            intvar v = { r->def->params[i]->name, r->argv[i] };
            VEC_PUSH(s->ar, s->ivars, s->nivars, s->cap_ivars, v);
        }
        int w = expand_user_body(s, &net, r->def, in_width, out_width, 0);
        s->nivars = save;
        if (w < 0) {
            diag_note(s->dc, r->loc, "in the net used here");
            return;
        }
        int last = -1;
        for (int i = 0; i < net.nl; i++) if (net.L[i].kind == NL_DENSE) last = i;
        if (w != out_width || last < 0 || last != net.nl - 1) {
            const ast *end = r->def->nbody ? r->def->body[r->def->nbody - 1] : NULL;
            diag_error(s->dc, end ? end->name_loc : r->def->name_loc, "net '%s' must end with 'dense out' (the width the using layer needs, %d here)",
                       r->def->name, out_width);
            diag_note(s->dc, r->loc, "used here");
            return;
        }
    } else {
        for (int i = 0; i < r->nhidden; i++) {
            net_push(s, &net, NL_DENSE, (int)r->hidden[i], 0);
            net_push(s, &net, NL_ACT, (int)r->hidden[i], r->act);
        }
        net_push(s, &net, NL_DENSE, out_width, 0);
    }
    net.L[net.nl - 1].zero_init = 1;
    /* parameters */
    ir_node *n = N(s, r->node);
    n->param0 = g->np;
    int w = in_width, k = 0;
    for (int i = 0; i < net.nl; i++) {
        ir_netlayer *l = &net.L[i];
        if (l->kind != NL_DENSE) continue;
        if ((int64_t)w * l->width > MAX_TENSOR) {
            diag_error(s->dc, r->loc, "dense layer %d of this net has a %d x %d weight matrix: %lld values, more than the %d "
                       "that one tensor may hold", k + 1, w, l->width, (long long)w * l->width, MAX_TENSOR);
            return;
        }
        l->param_w = ir_add_param(g, r->node, arena_printf(s->ar, "%s.dense%d.w", r->prefix, k), 2, w, l->width,
                                  l->zero_init ? INIT_ZERO : INIT_UNIFORM_FANIN, w);
        l->param_b = ir_add_param(g, r->node, arena_printf(s->ar, "%s.dense%d.b", r->prefix, k), 1, l->width, 1, INIT_ZERO, w);
        w = l->width;
        k++;
    }
    n->nparam = g->np - n->param0;
    n->iattr[1] = g->nnets;
    VEC_PUSH(s->ar, g->nets, g->nnets, g->cap_nets, net);
}

/* ---------------------------------------------------------------- masks and permutations */

static uint64_t splitmix64(uint64_t *st) {
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Coupling mask: flags[j] = 1 when dimension j is transformed, 0 when it conditions. */
static int eval_mask(sema *s, const ast *e, int D, int *flags, const char *user) {
    static const char *const masks[] = { "half", "alternate" };
    if (e->kind == AST_LIST) {
        if (e->nargs != D) {
            diag_error(s->dc, e->loc, "mask has %d entries but the layer's input has %d dimensions", e->nargs, D);
            return 0;
        }
        for (int j = 0; j < D; j++) {
            int64_t v;
            if (!eval_int(s, e->args[j], &v)) return 0;
            if (v != 0 && v != 1) { diag_error(s->dc, e->args[j]->loc, "mask entries are 0 (condition on it) or 1 (transform it)"); return 0; }
            flags[j] = (int)v;
        }
    } else if ((e->kind == AST_NAME || e->kind == AST_CALL) && !strcmp(e->name, "half")) {
        if (e->kind == AST_CALL) { diag_error(s->dc, e->loc, "mask 'half' takes no arguments"); return 0; }
        for (int j = 0; j < D; j++) flags[j] = j >= D / 2;
    } else if ((e->kind == AST_NAME || e->kind == AST_CALL) && !strcmp(e->name, "alternate")) {
        int64_t off = 0;
        if (e->kind == AST_CALL) {
            if (e->nargs != 1 || e->nopts) { diag_error(s->dc, e->loc, "expected 'alternate' or 'alternate(K)'"); return 0; }
            if (!eval_int(s, e->args[0], &off)) return 0;
        }
        for (int j = 0; j < D; j++) flags[j] = (int)(((j + off) % 2 + 2) % 2);
    } else {
        const char *nm = (e->kind == AST_NAME || e->kind == AST_CALL) ? e->name : NULL;
        const char *sug = nm ? closest_word(nm, masks, 2) : NULL;
        if (sug) diag_error(s->dc, e->loc, "unknown mask '%s'; did you mean '%s'?", nm, sug);
        else diag_error(s->dc, e->loc, "unknown mask '%s' (one of half, alternate, alternate(K), or a list such as [0, 1, 0, 1])",
                        nm ? nm : expr_str(s, e));
        return 0;
    }
    int nt = 0;
    for (int j = 0; j < D; j++) nt += flags[j];
    if (nt == 0 || nt == D) {
        diag_error(s->dc, e->loc, "mask %s leaves %s for '%s' on %d dimensions", expr_str(s, e),
                   nt == 0 ? "nothing to transform" : "nothing to condition on", user, D);
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- layers */

static int want_vector(sema *s, ir_ref x, const ast *c, int min) {
    int D = N(s, x)->width;
    if (D < min) {
        diag_error(s->dc, c->name_loc, "'%s' needs at least %d dimensions, but its input has %d", c->name, min, D);
        return 0;
    }
    return 1;
}

static int get_scaling(sema *s, const ast *c, int *mode, double *clamp) {
    *mode = SCALE_TANH;
    *clamp = 2.0;
    const ast_opt *o = get_opt(c, "scaling");
    if (o) {
        static const char *const modes[] = { "exp", "tanh", "sigmoid" };
        const char *w = o->val->kind == AST_NAME ? o->val->name : NULL;
        int m = -1;
        for (int i = 0; w && i < 3; i++) if (!strcmp(w, modes[i])) m = i;
        if (m < 0) {
            const char *sug = w ? closest_word(w, modes, 3) : NULL;
            if (sug) diag_error(s->dc, o->val->loc, "unknown scaling '%s'; did you mean '%s'?", w, sug);
            else diag_error(s->dc, o->val->loc, "unknown scaling '%s' (one of exp, tanh, sigmoid)", w ? w : expr_str(s, o->val));
            return 0;
        }
        *mode = m;
    }
    o = get_opt(c, "clamp");
    if (o) {
        if (*mode != SCALE_TANH) { diag_error(s->dc, o->loc, "clamp= goes with scaling=tanh"); return 0; }
        if (!eval_num(s, o->val, clamp)) return 0;
        if (!(*clamp > 0 && *clamp <= 100)) { diag_error(s->dc, o->val->loc, "clamp must be in (0, 100]"); return 0; }
    }
    return 1;
}

static ir_ref add_net_node(sema *s, const recipe *r, const ir_ref *ins, int nin, int width, loc_t loc) {
    ir_ref in[IR_MAX_IN];
    int k = 0;
    int has_ctx = 0;
    for (int i = 0; i < nin && k < IR_MAX_IN - 1; i++) {
        in[k++] = ins[i];
        if (ins[i] == s->g->context) has_ctx = 1;
    }
    if (s->g->context != IR_NONE && !has_ctx) in[k++] = s->g->context;
    ir_ref n = add(s, IR_NET, width, in, k, loc);
    if (n == IR_NONE) return IR_NONE;
    recipe rr = *r;
    rr.node = n;
    rr.prefix = s->nets_here ? arena_printf(s->ar, "%s.net%d", s->prefix, s->nets_here) : arena_printf(s->ar, "%s.net", s->prefix);
    s->nets_here++;
    VEC_PUSH(s->ar, s->rec, s->nrec, s->cap_rec, rr);
    return n;
}

/* a coupling layer: split by mask, net of the kept part (and context), affine/additive, merge */
static ir_ref coupling(sema *s, const ast *c, ir_ref x, int additive) {
    static const char *const aff_opts[] = { "mask", "net", "scaling", "clamp" };
    static const char *const add_opts[] = { "mask", "net" };
    int opts_ok = check_opts(s, c, c->name, additive ? add_opts : aff_opts, additive ? 2 : 4);
    if (!want_vector(s, x, c, 2)) return IR_NONE;
    const ast_opt *mo = get_opt(c, "mask"), *no = get_opt(c, "net");
    if (!no) {
        /* unless an unknown option such as `nett=` was just reported */
        static const char *const net_word[] = { "net" };
        int misspelled = 0;
        for (int i = 0; i < c->nopts; i++)
            if (strcmp(c->opts[i].key, "net") && closest_word(c->opts[i].key, net_word, 1)) misspelled = 1;
        if (!misspelled || opts_ok)
            diag_error(s->dc, c->name_loc, "'%s' needs a conditioner: add net=mlp(64, 64)", c->name);
        return IR_NONE;
    }
    int D = N(s, x)->width;
    int *flags = arena_alloc(s->ar, sizeof(int) * (size_t)D);
    if (mo) { if (!eval_mask(s, mo->val, D, flags, c->name)) return IR_NONE; }
    else for (int j = 0; j < D; j++) flags[j] = j >= D / 2;
    int mode = SCALE_EXP;
    double clamp = 0;
    if (!additive && !get_scaling(s, c, &mode, &clamp)) return IR_NONE;
    recipe r;
    if (!resolve_net(s, no->val, 0, c->name, &r) || !opts_ok) return IR_NONE;
    int32_t *idx[2];
    int len[2] = { 0, 0 };
    idx[0] = arena_alloc(s->ar, sizeof(int32_t) * (size_t)D);
    idx[1] = arena_alloc(s->ar, sizeof(int32_t) * (size_t)D);
    for (int j = 0; j < D; j++) idx[flags[j]][len[flags[j]]++] = j;
    ir_ref parts[2];
    if (make_split(s, x, D, 2, idx, len, c->name_loc, parts) == IR_NONE) return IR_NONE;
    int nb = len[1];
    int out = additive ? nb : 2 * nb;
    if (r.out >= 0 && r.out != out) {
        diag_error(s->dc, r.loc, "net out=%d, but '%s' needs %d outputs here", r.out, c->name, out);
        return IR_NONE;
    }
    ir_ref net = add_net_node(s, &r, &parts[0], 1, out, no->val->loc);
    if (net == IR_NONE) return IR_NONE;
    ir_ref y;
    if (additive) {
        ir_ref in[3] = { parts[1], IR_NONE, net };
        y = add(s, IR_AFFINE, nb, in, 3, c->name_loc);
    } else {
        int32_t *hidx[2];
        int hlen[2] = { nb, nb };
        hidx[0] = arena_alloc(s->ar, sizeof(int32_t) * (size_t)nb);
        hidx[1] = arena_alloc(s->ar, sizeof(int32_t) * (size_t)nb);
        for (int j = 0; j < nb; j++) { hidx[0][j] = j; hidx[1][j] = nb + j; }
        ir_ref st[2];
        if (make_split(s, net, out, 2, hidx, hlen, no->val->loc, st) == IR_NONE) return IR_NONE;
        ir_ref in[3] = { parts[1], st[0], st[1] };
        y = add(s, IR_AFFINE, nb, in, 3, c->name_loc);
    }
    if (y == IR_NONE) return IR_NONE;
    N(s, y)->iattr[0] = mode;
    N(s, y)->fattr[0] = clamp;
    ir_ref mparts[2] = { parts[0], y };
    return make_merge(s, mparts, 2, idx, len, D, c->name_loc);
}

static ir_ref permutation(sema *s, const ast *c, ir_ref x, int reverse) {
    static const char *const popts[] = { "seed" };
    if (!check_opts(s, c, c->name, popts, reverse ? 0 : 1)) return IR_NONE;
    int D = N(s, x)->width;
    int32_t *perm = arena_alloc(s->ar, sizeof(int32_t) * (size_t)D);
    for (int j = 0; j < D; j++) perm[j] = reverse ? D - 1 - j : j;
    if (!reverse) {
        int64_t seed = s->g->nlayers - 1;
        const ast_opt *o = get_opt(c, "seed");
        if (o && !eval_int(s, o->val, &seed)) return IR_NONE;
        uint64_t st = (uint64_t)seed * 0x2545F4914F6CDD1Dull + 1;
        for (int j = D - 1; j > 0; j--) {
            int k = (int)(splitmix64(&st) % (uint64_t)(j + 1));
            int32_t t = perm[j]; perm[j] = perm[k]; perm[k] = t;
        }
    }
    ir_ref y = add(s, IR_PERMUTE, D, &x, 1, c->name_loc);
    if (y == IR_NONE) return IR_NONE;
    N(s, y)->aux = ir_add_ints(s->g, perm, D);
    N(s, y)->naux = D;
    return y;
}

static ir_ref simple_param_layer(sema *s, const ast *c, ir_ref x, ir_op op) {
    int D = N(s, x)->width;
    ir_ref y = add(s, op, D, &x, 1, c->name_loc);
    if (y == IR_NONE) return IR_NONE;
    ir_node *n = N(s, y);
    n->param0 = s->g->np;
    if (op == IR_ACTNORM) {
        ir_add_param(s->g, y, arena_printf(s->ar, "%s.log_scale", s->prefix), 1, D, 1, INIT_ZERO, 0);
        ir_add_param(s->g, y, arena_printf(s->ar, "%s.bias", s->prefix), 1, D, 1, INIT_ZERO, 0);
    } else if (op == IR_LINEAR_LU) {
        if ((int64_t)D * D > MAX_TENSOR) {
            diag_error(s->dc, c->name_loc, "a %d x %d LU matrix has %lld values, more than the %d that one tensor may hold",
                       D, D, (long long)D * D, MAX_TENSOR);
            return IR_NONE;
        }
        ir_add_param(s->g, y, arena_printf(s->ar, "%s.lu", s->prefix), 2, D, D, INIT_ZERO, 0);
        ir_add_param(s->g, y, arena_printf(s->ar, "%s.bias", s->prefix), 1, D, 1, INIT_ZERO, 0);
    }
    n->nparam = s->g->np - n->param0;
    return y;
}

/* Apply the layer of command c to x. The positional arguments of c after `skip` are the
 * layer's own (graph form passes the value as the first argument). */
static ir_ref apply_layer(sema *s, const ast *c, ir_ref x, int skip) {
    const char *w = c->name;
    int extra = c->nargs - skip;
    if (strcmp(w, "linear") && extra > 0) {
        diag_error(s->dc, c->args[skip]->loc, "'%s' takes no positional arguments here; options are written key=value", w);
        return IR_NONE;
    }
    if (!strcmp(w, "actnorm")) {
        if (!check_opts(s, c, w, NULL, 0)) return IR_NONE;
        return simple_param_layer(s, c, x, IR_ACTNORM);
    }
    if (!strcmp(w, "linear")) {
        if (!check_opts(s, c, w, NULL, 0)) return IR_NONE;
        if (extra > 1 || (extra == 1 && (c->args[skip]->kind != AST_NAME || strcmp(c->args[skip]->name, "lu")))) {
            diag_error(s->dc, c->args[skip]->loc, "expected 'linear lu' (an LU-parametrized invertible matrix)");
            return IR_NONE;
        }
        return simple_param_layer(s, c, x, IR_LINEAR_LU);
    }
    if (!strcmp(w, "reverse")) return permutation(s, c, x, 1);
    if (!strcmp(w, "permute")) return permutation(s, c, x, 0);
    if (!strcmp(w, "affine_coupling")) return coupling(s, c, x, 0);
    if (!strcmp(w, "additive_coupling")) return coupling(s, c, x, 1);
    if (!strcmp(w, "sigmoid") || !strcmp(w, "logit")) {
        if (!check_opts(s, c, w, NULL, 0)) return IR_NONE;
        return add(s, !strcmp(w, "sigmoid") ? IR_SIGMOID : IR_LOGIT, N(s, x)->width, &x, 1, c->name_loc);
    }
    if (!strcmp(w, "leaky_relu")) {
        static const char *const o[] = { "slope" };
        if (!check_opts(s, c, w, o, 1)) return IR_NONE;
        double slope = 0.01;
        const ast_opt *so = get_opt(c, "slope");
        if (so && !eval_num(s, so->val, &slope)) return IR_NONE;
        if (!(slope > 0 && slope <= 1)) {
            diag_error(s->dc, so->val->loc, "slope must be in (0, 1] for leaky_relu to be invertible");
            return IR_NONE;
        }
        ir_ref y = add(s, IR_LEAKY_RELU, N(s, x)->width, &x, 1, c->name_loc);
        if (y != IR_NONE) N(s, y)->fattr[0] = slope;
        return y;
    }
    if (!strcmp(w, "maf")) {
        static const char *const o[] = { "net", "scaling", "clamp" };
        if (!check_opts(s, c, w, o, 3)) return IR_NONE;
        const ast_opt *no = get_opt(c, "net");
        if (!no) { diag_error(s->dc, c->name_loc, "'maf' needs a conditioner: add net=made(64, 64)"); return IR_NONE; }
        int mode;
        double clamp;
        if (!get_scaling(s, c, &mode, &clamp)) return IR_NONE;
        recipe r;
        if (!resolve_net(s, no->val, 1, w, &r)) return IR_NONE;
        int D = N(s, x)->width;
        if (r.out >= 0 && r.out != 2 * D) {
            diag_error(s->dc, r.loc, "net out=%d, but 'maf' needs %d outputs here", r.out, 2 * D);
            return IR_NONE;
        }
        ir_ref in[2] = { x, s->g->context };
        ir_ref y = add(s, IR_MAF, D, in, s->g->context != IR_NONE ? 2 : 1, c->name_loc);
        if (y == IR_NONE) return IR_NONE;
        N(s, y)->iattr[0] = mode;
        N(s, y)->fattr[0] = clamp;
        r.node = y;
        r.prefix = arena_printf(s->ar, "%s.made", s->prefix);
        VEC_PUSH(s->ar, s->rec, s->nrec, s->cap_rec, r);
        return y;
    }
    if (!strcmp(w, "glow_step")) {
        static const char *const o[] = { "net", "scaling", "clamp" };
        if (!check_opts(s, c, w, o, 3)) return IR_NONE;
        if (!get_opt(c, "net")) {
            diag_error(s->dc, c->name_loc, "'glow_step' needs a conditioner for its coupling: add net=mlp(64, 64)");
            return IR_NONE;
        }
        ir_ref a = simple_param_layer(s, c, x, IR_ACTNORM);
        if (a == IR_NONE) return IR_NONE;
        const char *save = s->prefix;
        s->prefix = arena_printf(s->ar, "%s.linear", save);
        ir_ref l = simple_param_layer(s, c, a, IR_LINEAR_LU);
        s->prefix = save;
        if (l == IR_NONE) return IR_NONE;
        /* the coupling: same options, mask half */
        ast cc = *c;
        cc.name = "affine_coupling";
        s->prefix = arena_printf(s->ar, "%s.coupling", save);
        /* rename the actnorm params made above to sit under .actnorm */
        for (int p = N(s, a)->param0; p < N(s, a)->param0 + N(s, a)->nparam; p++) {
            const char *dot = strrchr(s->g->params[p].name, '.');
            s->g->params[p].name = arena_printf(s->ar, "%s.actnorm%s", save, dot);
        }
        ir_ref y = coupling(s, &cc, l, 0);
        s->prefix = save;
        return y;
    }
    return IR_NONE;
}

static int is_layer_word(const char *w) {
    for (int i = 0; i < NLAYER_WORDS; i++) if (!strcmp(w, layer_words[i])) return 1;
    return 0;
}

static void unknown_word(sema *s, const ast *c, int graph) {
    const char *cands[32];
    int n = 0;
    for (int i = 0; i < NLAYER_WORDS; i++) cands[n++] = layer_words[i];
    for (int i = 0; i < 3; i++) cands[n++] = stmt_words[i];
    if (graph) for (int i = 0; i < 5; i++) cands[n++] = graph_words[i];
    const char *sug = closest_word(c->name, cands, n);
    if (sug) {
        diag_error(s->dc, c->name_loc, "unknown %s '%s'; did you mean '%s'?", graph ? "operation" : "layer", c->name, sug);
        return;
    }
    diag_error(s->dc, c->name_loc, "unknown %s '%s'", graph ? "operation" : "layer", c->name);
    if (s->listed_words) return;
    s->listed_words = 1;
    char *list = graph ? "operations: split, chunk, concat, affine, additive; layers: " : "layers: ";
    for (int i = 0; i < NLAYER_WORDS; i++) list = arena_printf(s->ar, "%s%s%s", list, i ? ", " : "", layer_words[i]);
    loc_t l = { c->name_loc.file, 0, 0, 0 };   /* the file, no source line: the list is long */
    diag_note(s->dc, l, "%s; other statements: base, repeat, output", list);
}

/* ---------------------------------------------------------------- graph form */

static ir_ref value_arg(sema *s, const ast *e);

static ir_ref net_apply(sema *s, const ast *e) {
    recipe r;
    if (!resolve_net(s, e->callee, 0, "a conditioner", &r)) return IR_NONE;
    if (e->nargs == 0) { diag_error(s->dc, e->loc, "a net needs its inputs: %s(VALUE)", expr_str(s, e->callee)); return IR_NONE; }
    ir_ref ins[IR_MAX_IN];
    int n = 0;
    for (int i = 0; i < e->nargs; i++) {
        if (n >= IR_MAX_IN - 1) { diag_error(s->dc, e->args[i]->loc, "too many net inputs (the limit is %d)", IR_MAX_IN - 1); return IR_NONE; }
        ir_ref v = value_arg(s, e->args[i]);
        if (v == IR_NONE) return IR_NONE;
        ins[n++] = v;
    }
    ir_ref node = add_net_node(s, &r, ins, n, r.out, e->callee->name_loc);
    if (node != IR_NONE) s->rec[s->nrec - 1].text = expr_str(s, e);
    return node;
}

static ir_ref value_arg(sema *s, const ast *e) {
    if (e->kind == AST_APPLY) return net_apply(s, e);
    if (e->kind != AST_NAME) {
        diag_error(s->dc, e->loc, "expected a value, found '%s'", expr_str(s, e));
        return IR_NONE;
    }
    for (int i = 0; s->cmd && i < s->cmd->ntargets; i++) {
        if (!strcmp(s->cmd->targets[i]->name, e->name) && !find_val(s, e->name)) {
            if (is_layer_word(s->cmd->name) || !strcmp(s->cmd->name, "affine") || !strcmp(s->cmd->name, "additive"))
                diag_error(s->dc, e->loc, "'%s' cannot be inverted: it depends on '%s', its own output", s->cmd->name, e->name);
            else
                diag_error(s->dc, e->loc, "'%s' is used in its own definition", e->name);
            return IR_NONE;
        }
    }
    const binding *b = find_val(s, e->name);
    if (b) return b->ref; /* IR_NONE for a value whose definition failed: already reported */
    if (find_ivar(s, e->name)) {
        diag_error(s->dc, e->loc, "'%s' is a number, but a value is expected here", e->name);
        return IR_NONE;
    }
    const char *cands[64];
    int n = 0;
    for (int i = s->nvals - 1; i >= 0 && n < 64; i--) cands[n++] = s->vals[i].name;
    const char *sug = closest_word(e->name, cands, n);
    if (sug) diag_error(s->dc, e->loc, "unknown value '%s'; did you mean '%s'?", e->name, sug);
    else diag_error(s->dc, e->loc, "unknown value '%s'", e->name);
    return IR_NONE;
}

static void bind(sema *s, const ast *target, ir_ref r) {
    const binding *old = find_val(s, target->name);
    if (old) {
        diag_error(s->dc, target->loc, "'%s' is already defined", target->name);
        diag_note(s->dc, old->loc, "previous definition is here");
        return;
    }
    if (find_ivar(s, target->name)) {
        diag_error(s->dc, target->loc, "'%s' is a loop variable and cannot be assigned", target->name);
        return;
    }
    binding b = { target->name, r, target->loc };
    push_val(s, b);
    if (r != IR_NONE && !N(s, r)->name) N(s, r)->name = target->name;
}

static void assign_(sema *s, const ast *c);

/* Analyse an assignment; if it fails, bind its names to nothing so that later uses of them
 * are not reported again. */
static void assign(sema *s, const ast *c) {
    assign_(s, c);
    for (int i = 0; i < c->ntargets; i++) {
        if (find_val(s, c->targets[i]->name)) continue;
        binding b = { c->targets[i]->name, IR_NONE, c->targets[i]->loc };
        push_val(s, b);
    }
}

static void assign_(sema *s, const ast *c) {
    const char *w = c->name;
    int nt = c->ntargets;
    s->prefix = c->targets[0]->name;
    ir_ref outs[64];
    int nouts = 0;
    if (c->callee) {
        /* h = mlp(32)(a): a conditioner value */
        if (c->nargs || c->nopts) {
            diag_error(s->dc, c->nargs ? c->args[0]->loc : c->opts[0].loc, "unexpected argument after the net application");
            return;
        }
        if (c->callee->kind != AST_APPLY && c->callee->kind != AST_CALL) {
            /* an expression such as 'sp(a) / 2': no name to look at */
            diag_error(s->dc, c->callee->loc, "expected an operation or a net application such as mlp(32)(VALUE), not '%s'",
                       expr_str(s, c->callee));
            return;
        }
        if (c->callee->kind != AST_APPLY) {
            int is_op = is_layer_word(c->callee->name);
            for (int i = 0; i < 5; i++) if (!strcmp(c->callee->name, graph_words[i])) is_op = 1;
            if (is_op) {
                char *lhs = arena_strdup(s->ar, c->targets[0]->name), *args = "";
                for (int i = 1; i < nt; i++) lhs = arena_printf(s->ar, "%s, %s", lhs, c->targets[i]->name);
                for (int i = 0; i < c->callee->nargs; i++) args = arena_printf(s->ar, "%s %s", args, expr_str(s, c->callee->args[i]));
                diag_error(s->dc, c->callee->loc, "'%s' takes its arguments without parentheses: %s = %s%s", c->callee->name,
                           lhs, c->callee->name, args);
            } else {
                diag_error(s->dc, c->callee->loc, "'%s' needs its input: %s(VALUE)", expr_str(s, c->callee), expr_str(s, c->callee));
            }
            return;
        }
        ir_ref v = net_apply(s, c->callee);
        if (v == IR_NONE) return;
        outs[nouts++] = v;
    } else if (!strcmp(w, "split") || !strcmp(w, "chunk")) {
        int is_chunk = w[0] == 'c';
        if (!check_opts(s, c, w, NULL, 0)) return;
        if (!check_nargs(s, c, is_chunk ? 2 : 1, 2, is_chunk ? "'chunk VALUE PARTS'" : "'split VALUE [SIZES]'")) return;
        if (nt > 64) { diag_error(s->dc, c->targets[64]->loc, "too many parts (the limit is 64)"); return; }
        ir_ref x = value_arg(s, c->args[0]);
        if (x == IR_NONE) return;
        int W = N(s, x)->width;
        int64_t sizes[64];
        int np = nt;
        if (!is_chunk && c->nargs == 2) {
            const ast *l = c->args[1];
            if (l->kind != AST_LIST) { diag_error(s->dc, l->loc, "expected the part sizes as a list, as in [2, 2]"); return; }
            if (l->nargs != nt) {
                diag_error(s->dc, l->loc, "split into %d parts, but %d name%s assigned", l->nargs, nt, nt == 1 ? " is" : "s are");
                return;
            }
            int64_t sum = 0;
            for (int i = 0; i < l->nargs; i++) {
                if (!eval_int(s, l->args[i], &sizes[i])) return;
                if (sizes[i] < 1 || sizes[i] > MAX_WIDTH) { diag_error(s->dc, l->args[i]->loc, "part size must be at least 1"); return; }
                sum += sizes[i];
            }
            if (W >= 0 && sum != W) {
                diag_error(s->dc, l->loc, "part sizes add up to %lld, but '%s' has width %d", (long long)sum, expr_str(s, c->args[0]), W);
                return;
            }
            W = (int)sum;
        } else {
            int64_t k = nt;
            if (is_chunk) {
                if (!eval_int(s, c->args[1], &k)) return;
                if (k != nt) {
                    diag_error(s->dc, c->args[1]->loc, "chunk into %lld parts, but %d name%s assigned", (long long)k, nt, nt == 1 ? " is" : "s are");
                    return;
                }
            }
            if (nt < 2) { diag_error(s->dc, c->targets[0]->loc, "'%s' needs at least two names to assign, as in 'a, b = %s ...'", w, w); return; }
            if (W >= 0 && W % nt) {
                if (is_chunk || nt > 8) {
                    diag_error(s->dc, c->args[0]->loc, "cannot %s width %d into %d equal parts", w, W, nt);
                } else {
                    /* suggest sizes: equal parts, the remainder in the last */
                    char *sz = "";
                    for (int i = 0; i < nt; i++) sz = arena_printf(s->ar, "%s%s%d", sz, i ? ", " : "", W / nt + (i == nt - 1 ? W % nt : 0));
                    diag_error(s->dc, c->args[0]->loc, "cannot split width %d into %d equal parts; give the sizes, as in 'split %s [%s]'", W,
                               nt, expr_str(s, c->args[0]), sz);
                }
                return;
            }
            for (int i = 0; i < nt; i++) sizes[i] = W >= 0 ? W / nt : -1;
        }
        /* build; unknown widths get index lists later */
        ir_ref sp = add(s, IR_SPLIT, W, &x, 1, c->name_loc);
        if (sp == IR_NONE) return;
        N(s, sp)->iattr[2] = np; /* equal parts to fill in when the width becomes known */
        if (W >= 0) {
            int32_t hdr = np;
            N(s, sp)->aux = ir_add_ints(s->g, &hdr, 1);
            int at = 0;
            for (int k = 0; k < np; k++) {
                int32_t l = (int32_t)sizes[k];
                ir_add_ints(s->g, &l, 1);
                for (int j = 0; j < l; j++) { int32_t v = at++; ir_add_ints(s->g, &v, 1); }
            }
            N(s, sp)->naux = s->g->nints - N(s, sp)->aux;
            N(s, sp)->iattr[2] = 0;
        }
        for (int k = 0; k < np; k++) {
            ir_ref gk = add(s, IR_GET, (int)sizes[k], &sp, 1, c->targets[k]->loc);
            if (gk == IR_NONE) return;
            N(s, gk)->iattr[0] = k;
            outs[nouts++] = gk;
        }
    } else if (!strcmp(w, "concat")) {
        if (!check_opts(s, c, w, NULL, 0)) return;
        if (c->nargs < 2) { diag_error(s->dc, c->name_loc, "'concat' needs at least two values"); return; }
        if (c->nargs > IR_MAX_IN) { diag_error(s->dc, c->args[IR_MAX_IN]->loc, "too many values to concat (the limit is %d)", IR_MAX_IN); return; }
        ir_ref parts[IR_MAX_IN];
        int len[IR_MAX_IN];
        int32_t *idx[IR_MAX_IN];
        int W = 0;
        for (int i = 0; i < c->nargs; i++) {
            parts[i] = value_arg(s, c->args[i]);
            if (parts[i] == IR_NONE) return;
            len[i] = N(s, parts[i])->width;
            if (len[i] < 0) {
                diag_error(s->dc, c->args[i]->loc, "the width of '%s' is not known here; give its net an explicit out=N", expr_str(s, c->args[i]));
                return;
            }
            idx[i] = arena_alloc(s->ar, sizeof(int32_t) * (size_t)len[i]);
            for (int j = 0; j < len[i]; j++) idx[i][j] = W + j;
            W += len[i];
        }
        ir_ref m = make_merge(s, parts, c->nargs, idx, len, W, c->name_loc);
        if (m == IR_NONE) return;
        outs[nouts++] = m;
    } else if (!strcmp(w, "affine") || !strcmp(w, "additive")) {
        int add_only = w[1] == 'd';
        static const char *const ao[] = { "scale", "shift", "scaling", "clamp" };
        static const char *const do_[] = { "shift" };
        if (!check_opts(s, c, w, add_only ? do_ : ao, add_only ? 1 : 4)) return;
        if (!check_nargs(s, c, 1, 1, add_only ? "'additive VALUE shift=T'" : "'affine VALUE scale=S shift=T'")) return;
        ir_ref x = value_arg(s, c->args[0]);
        if (x == IR_NONE) return;
        const ast_opt *so = get_opt(c, "scale"), *to = get_opt(c, "shift");
        if (!so && !to) { diag_error(s->dc, c->name_loc, "'%s' needs %s", w, add_only ? "shift=T" : "scale=S, shift=T or both"); return; }
        if (add_only && !to) { diag_error(s->dc, c->name_loc, "'additive' needs shift=T"); return; }
        int mode = SCALE_EXP;
        double clamp = 0;
        if (!add_only && !get_scaling(s, c, &mode, &clamp)) return;
        ir_ref sv = so ? value_arg(s, so->val) : IR_NONE;
        if (so && sv == IR_NONE) return;
        ir_ref tv = to ? value_arg(s, to->val) : IR_NONE;
        if (to && tv == IR_NONE) return;
        ir_ref in[3] = { x, sv, tv };
        ir_ref y = add(s, IR_AFFINE, N(s, x)->width, in, 3, c->name_loc);
        if (y == IR_NONE) return;
        N(s, y)->iattr[0] = mode;
        N(s, y)->fattr[0] = clamp;
        outs[nouts++] = y;
    } else if (is_layer_word(w)) {
        if (c->nargs < 1) {
            diag_error(s->dc, c->name_loc, "'%s' in graph form needs the value to transform: %s = %s VALUE ...", w, c->targets[0]->name, w);
            return;
        }
        ir_ref x = value_arg(s, c->args[0]);
        if (x == IR_NONE) return;
        if (N(s, x)->width < 0) {
            diag_error(s->dc, c->args[0]->loc, "the width of '%s' is not known here", expr_str(s, c->args[0]));
            return;
        }
        ir_ref y = apply_layer(s, c, x, 1);
        if (y == IR_NONE) return;
        outs[nouts++] = y;
    } else if (c->nargs == 0 && c->nopts == 0 && find_val(s, w)) {
        diag_error(s->dc, c->name_loc, "'%s = %s' only renames a value; use '%s' directly", c->targets[0]->name, w, w);
        return;
    } else {
        unknown_word(s, c, 1);
        return;
    }
    if (nouts != nt) {
        diag_error(s->dc, c->targets[nouts < nt ? nouts : 0]->loc, "'%s' gives %d value%s, but %d name%s assigned", w, nouts,
                   nouts == 1 ? "" : "s", nt, nt == 1 ? " is" : "s are");
        return;
    }
    for (int i = 0; i < nt; i++) bind(s, c->targets[i], outs[i]);
    ir_layer *l = &s->g->layers[s->g->nlayers - 1];
    for (int i = 0; i < nt && i < 4; i++) l->outs[l->nouts++] = outs[i];
}

/* ---------------------------------------------------------------- statements */

static void block(sema *s, const ast *blk, int depth);

static void base_stmt(sema *s, const ast *c) {
    if (!check_opts(s, c, "base", NULL, 0)) return;
    if (c->nargs != 1) { diag_error(s->dc, c->name_loc, "expected 'base normal', 'base normal(learned)' or 'base logistic'"); return; }
    const ast *e = c->args[0];
    static const char *const bases[] = { "normal", "logistic" };
    const char *nm = (e->kind == AST_NAME || e->kind == AST_CALL) ? e->name : NULL;
    if (nm && !strcmp(nm, "normal")) {
        if (e->kind == AST_NAME) { s->g->base = BASE_NORMAL; return; }
        if (e->nargs == 1 && !e->nopts && e->args[0]->kind == AST_NAME && !strcmp(e->args[0]->name, "learned")) {
            s->g->base = BASE_NORMAL_LEARNED;
            return;
        }
        static const char *const learned[] = { "learned" };
        if (e->nargs == 1 && !e->nopts && e->args[0]->kind == AST_NAME && closest_word(e->args[0]->name, learned, 1)) {
            diag_error(s->dc, e->args[0]->loc, "unknown argument '%s' of 'normal'; did you mean 'learned'?", e->args[0]->name);
            return;
        }
        diag_error(s->dc, e->loc, "expected 'normal' or 'normal(learned)'");
        return;
    }
    if (nm && !strcmp(nm, "logistic") && e->kind == AST_NAME) { s->g->base = BASE_LOGISTIC; return; }
    const char *sug = nm ? closest_word(nm, bases, 2) : NULL;
    if (sug) diag_error(s->dc, e->loc, "unknown base distribution '%s'; did you mean '%s'?", nm, sug);
    else diag_error(s->dc, e->loc, "unknown base distribution '%s' (one of normal, normal(learned), logistic)", expr_str(s, e));
}

static void repeat_stmt(sema *s, const ast *c, int depth) {
    if (!check_opts(s, c, "repeat", NULL, 0)) return;
    const char *var = "i";
    if (!(c->nargs == 1 || (c->nargs == 3 && c->args[1]->kind == AST_NAME && !strcmp(c->args[1]->name, "as") &&
                            c->args[2]->kind == AST_NAME))) {
        diag_error(s->dc, c->name_loc, "expected 'repeat N { ... }' or 'repeat N as NAME { ... }'");
        return;
    }
    if (c->nargs == 3) var = c->args[2]->name;
    int64_t n;
    if (!eval_int(s, c->args[0], &n)) return;
    if (n < 1 || n > 10000) { diag_error(s->dc, c->args[0]->loc, "repeat count must be between 1 and 10000, not %lld", (long long)n); return; }
    if (!c->has_block) { diag_error(s->dc, c->name_loc, "'repeat' needs a block: repeat %lld { ... }", (long long)n); return; }
    if (depth > 16) { diag_error(s->dc, c->name_loc, "repeat blocks are nested too deeply"); return; }
    for (int64_t i = 0; i < n && !s->too_big; i++) {
        /* nested repeats with (nearly) empty bodies add no operations, so MAX_NODES does not
         * stop them: 10000^3 empty iterations would take hours */
        if (++s->repeat_iters > MAX_REPEAT_ITERS) {
            diag_error(s->dc, c->name_loc, "the flow is too large (its repeat loops run more than %d iterations)", MAX_REPEAT_ITERS);
            s->too_big = 1;
            break;
        }
        int e0 = nerrors(s);
        intvar v = { var, i };
        VEC_PUSH(s->ar, s->ivars, s->nivars, s->cap_ivars, v);
        block(s, c, depth + 1);
        s->nivars--;
        if (nerrors(s) > e0) break; /* the same error would repeat n times */
    }
}

static void stmt(sema *s, const ast *c, int depth) {
    if (c->kind == AST_DECL) {
        diag_error(s->dc, c->loc, "'%s' must be declared at the top of the flow, not inside a block", c->name);
        return;
    }
    s->cmd = c;
    s->nets_here = 0;
    const char *w = c->name;
    if (c->has_block && strcmp(w, "repeat")) {
        diag_error(s->dc, c->name_loc, "'%s' does not take a block", w);
        return;
    }
    if (c->ntargets) {
        if (s->has_layer) {
            if (!s->mixed) {
                diag_error(s->dc, c->targets[0]->loc, "this flow mixes layer statements and assignments");
                diag_note(s->dc, s->first_layer, "layer statement here; in graph form apply it to a value: 'y = %s %s'",
                          s->first_layer_word, s->g->input_name);
            }
            s->mixed = 1;
            return;
        }
        if (!s->has_assign) { s->has_assign = 1; s->first_assign = c->targets[0]->loc; }
        char *lhs = arena_strdup(s->ar, c->targets[0]->name);
        for (int i = 1; i < c->ntargets; i++) lhs = arena_printf(s->ar, "%s, %s", lhs, c->targets[i]->name);
        new_layer(s, arena_printf(s->ar, "%s = %s", lhs, cmd_str(s, c)), c->name_loc);
        assign(s, c);
        return;
    }
    if (c->callee) {
        diag_error(s->dc, c->name_loc, "a net application gives a value: assign it, as in 'h = %s'", expr_str(s, c->callee));
        return;
    }
    if (!strcmp(w, "repeat")) { repeat_stmt(s, c, depth); return; }
    if (!strcmp(w, "base")) {
        diag_error(s->dc, c->name_loc, "'base' must be given at the top of the flow, not inside a block");
        return;
    }
    if (!strcmp(w, "output")) {
        if (!check_opts(s, c, w, NULL, 0) || !check_nargs(s, c, 1, 1, "'output VALUE'")) return;
        if (s->has_layer) {
            if (!s->mixed) {
                diag_error(s->dc, c->name_loc, "'output' belongs to graph form, but this flow uses layer statements");
                diag_note(s->dc, s->first_layer, "first layer statement here");
            }
            s->mixed = 1;
            return;
        }
        if (s->output_loc.line > 0) {
            diag_error(s->dc, c->name_loc, "the flow already has an output");
            diag_note(s->dc, s->output_loc, "first output here");
            return;
        }
        s->output_loc = c->name_loc;
        /* `output` makes the flow graph form even without assignments (`output c` must not
         * fall back to the layer form's running value) */
        s->g->graph_form = 1;
        if (!s->has_assign) { s->has_assign = 1; s->first_assign = c->name_loc; }
        ir_ref v = value_arg(s, c->args[0]);
        s->g->output = v;   /* IR_NONE for a value whose definition failed: already reported */
        return;
    }
    if (!is_layer_word(w)) {
        if (find_val(s, w) || (c->nargs > 0 && c->args[0]->kind == AST_NAME && !strcmp(c->args[0]->name, "=")))
            diag_error(s->dc, c->name_loc, "expected a layer, found the value '%s'", w);
        else
            unknown_word(s, c, s->has_assign);
        return;
    }
    if (s->has_assign) {
        if (!s->mixed) {
            diag_error(s->dc, c->name_loc, "layer statement in a flow written in graph form; apply it to a value: 'y = %s x'", w);
            if (s->first_assign.line == s->output_loc.line && s->first_assign.col == s->output_loc.col)
                diag_note(s->dc, s->first_assign, "graph form: the flow's 'output' is here");
            else
                diag_note(s->dc, s->first_assign, "first assignment here");
        }
        s->mixed = 1;
        return;
    }
    if (!s->has_layer) { s->has_layer = 1; s->first_layer = c->name_loc; s->first_layer_word = w; }
    new_layer(s, cmd_str(s, c), c->name_loc);
    s->prefix = arena_printf(s->ar, "layer%d", s->g->nlayers); /* numbered from 1, as `nfc check` shows */
    ir_ref y = apply_layer(s, c, s->cur, 0);
    if (y != IR_NONE) s->cur = y;
}

static void block(sema *s, const ast *blk, int depth) {
    for (int i = 0; i < blk->nbody && !s->too_big; i++) {
        if (s->dc->capped) return;
        stmt(s, blk->body[i], depth);
    }
}

/* input/context declarations */
static int decl(sema *s, const ast *d, int is_ctx) {
    static const char *const dtypes[] = { "f32", "f64" };
    const char *nm = d->targets[0]->name;
    int ok = 1;
    if (!check_opts(s, d, d->name, NULL, 0)) ok = 0;
    int dt = 0;
    if (!strcmp(d->dtype, "f32")) dt = DT_F32;
    else if (!strcmp(d->dtype, "f64")) dt = DT_F64;
    else {
        const char *sug = closest_word(d->dtype, dtypes, 2);
        if (!strcmp(d->dtype, "u8") || !strcmp(d->dtype, "i32") || !strcmp(d->dtype, "i64") || !strcmp(d->dtype, "f16"))
            diag_error(s->dc, d->dtype_loc, "dtype '%s' is not supported; flows take f32 or f64", d->dtype);
        else if (sug)
            diag_error(s->dc, d->dtype_loc, "unknown dtype '%s'; did you mean '%s'?", d->dtype, sug);
        else
            diag_error(s->dc, d->dtype_loc, "unknown dtype '%s' (f32 or f64)", d->dtype);
        ok = 0;
    }
    int64_t width = 0;
    if (d->shape->nargs == 0) {
        diag_error(s->dc, d->shape->loc, "the shape needs at least one dimension, as in %s[2]", d->dtype);
        return 0;
    }
    if (d->shape->nargs > 1) {
        diag_error(s->dc, d->shape->loc, "%s '%s' has %d dimensions; only vectors (one dimension, as in f32[784]) are supported so far",
                   d->name, nm, d->shape->nargs);
        return 0;
    }
    if (!eval_int(s, d->shape->args[0], &width)) return 0;
    if (width < 1 || width > MAX_WIDTH) {
        diag_error(s->dc, d->shape->args[0]->loc, "dimension must be between 1 and %d, not %lld", MAX_WIDTH, (long long)width);
        return 0;
    }
    if (!ok) return 0;
    if (is_ctx && dt != s->g->dtype && s->g->input != IR_NONE) {
        diag_error(s->dc, d->dtype_loc, "context '%s' is %s but the input is %s; they must have the same dtype", nm, d->dtype,
                   s->g->dtype == DT_F64 ? "f64" : "f32");
        return 0;
    }
    s->g->dtype = dt;
    ir_ref r = ir_add(s->g, is_ctx ? IR_CONTEXT : IR_INPUT, (int)width, NULL, 0, d->targets[0]->loc);
    s->g->nodes[r].name = nm;
    s->g->nodes[r].layer = -1;
    if (is_ctx) { s->g->context = r; s->g->context_name = nm; }
    else { s->g->input = r; s->g->input_name = nm; }
    bind(s, d->targets[0], r);
    return 1;
}

/* ---------------------------------------------------------------- width inference */

static void infer_widths(sema *s) {
    ir_graph *g = s->g;
    int changed = 1;
    for (int iter = 0; changed && iter < 1000; iter++) {
        changed = 0;
        for (int i = 0; i < g->nn; i++) {
            ir_node *n = &g->nodes[i];
            switch ((ir_op)n->op) {
            case IR_AFFINE:
                for (int k = 1; k < 3; k++)
                    if (n->in[k] != IR_NONE && g->nodes[n->in[k]].width < 0) { g->nodes[n->in[k]].width = n->width; changed = 1; }
                break;
            case IR_SPLIT: {
                ir_node *x = &g->nodes[n->in[0]];
                if (n->width < 0 && x->width >= 0) { n->width = x->width; changed = 1; }
                if (x->width < 0 && n->width >= 0) { x->width = n->width; changed = 1; }
                break;
            }
            case IR_GET: {
                ir_node *sp = &g->nodes[n->in[0]];
                int k = sp->iattr[2];
                if (k > 0) {
                    if (n->width >= 0 && sp->width < 0) { sp->width = n->width * k; changed = 1; }
                    if (n->width < 0 && sp->width >= 0 && sp->width % k == 0) { n->width = sp->width / k; changed = 1; }
                }
                break;
            }
            default:
                break;
            }
        }
    }
}

/* ---------------------------------------------------------------- checks */

static const char *vname(sema *s, ir_ref r) {
    const ir_node *n = N(s, r);
    if (n->name) return n->name;
    for (int i = 0; i < s->nrec; i++)
        if (s->rec[i].node == r && s->rec[i].text) return s->rec[i].text;
    return arena_printf(s->ar, "%%%d", r);
}

/* the word the user wrote for an operation (the source text at its location, e.g. `additive`
 * for an affine node), else the operation's name */
static const char *op_word(sema *s, ir_ref r) {
    const ir_node *n = N(s, r);
    loc_t l = n->loc;
    if (l.file >= 0 && l.file < s->dc->nfiles && l.line >= 1 && l.col >= 1 && l.len >= 1 && l.len <= 64) {
        const source_file *f = &s->dc->files[l.file];
        const char *p = f->text, *end = f->text + f->len;
        for (int line = 1; line < l.line && p < end; line++) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            p = nl ? nl + 1 : end;
        }
        if (end - p >= l.col - 1 + l.len) {
            p += l.col - 1;
            int ok = 1;
            for (int i = 0; i < l.len; i++)
                if (!(p[i] == '_' || (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9'))) ok = 0;
            if (ok) return arena_strndup(s->ar, p, (size_t)l.len);
        }
    }
    return ir_ops[n->op].name;
}

/* scratch of find_unknown: a visit stamp per node and a stack (no recursion: a chain of
 * 100000 nets must not overflow the C stack) */
typedef struct { int *seen; int stamp; ir_ref *stack; } walk;

/* a spine value used as a parameter depends on: find the first unknown spine value, depth
 * first in input order */
static ir_ref find_unknown(sema *s, ir_ref r, const char *spine, const char *known, walk *w) {
    int sp = 0;
    w->stamp++;
    w->stack[sp++] = r;
    while (sp > 0) {
        ir_ref v = w->stack[--sp];
        if (v == IR_NONE || w->seen[v] == w->stamp) continue;
        w->seen[v] = w->stamp;
        if (spine[v]) {
            if (!known[v]) return v;
            continue;
        }
        const ir_node *n = N(s, v);
        for (int k = n->nin - 1; k >= 0; k--) w->stack[sp++] = n->in[k];
    }
    return IR_NONE;
}

static void check_invertible(sema *s) {
    ir_graph *g = s->g;
    int nn = g->nn;
    char *spine = arena_alloc(s->ar, (size_t)nn + 1);
    int *uses = arena_alloc(s->ar, sizeof(int) * ((size_t)nn + 1));
    ir_ref *first_use = arena_alloc(s->ar, sizeof(ir_ref) * ((size_t)nn + 1));
    for (int i = 0; i < nn; i++) {
        const ir_node *n = &g->nodes[i];
        int f = ir_ops[n->op].flags;
        if (n->op == IR_INPUT) spine[i] = 1;
        else if (f & (OPF_BIJ | OPF_TUPLE | OPF_PROJ)) spine[i] = spine[n->in[0]];
        else if (f & OPF_MERGE) for (int k = 0; k < n->nin; k++) spine[i] |= spine[n->in[k]];
    }
    for (int i = 0; i < nn; i++) {
        const ir_node *n = &g->nodes[i];
        int f = ir_ops[n->op].flags;
        if ((f & OPF_BIJ) && !spine[n->in[0]]) {
            diag_error(s->dc, n->loc, "'%s' transforms '%s', which is not computed from the input '%s' by invertible operations",
                       op_word(s, i), vname(s, n->in[0]), g->input_name);
            return;
        }
        if (f & OPF_MERGE) {
            for (int k = 0; k < n->nin; k++)
                if (!spine[n->in[k]] && spine[i]) {
                    diag_error(s->dc, n->loc, "'%s' is computed by a conditioner, not from the input by invertible operations, so it cannot be part of the flow",
                               vname(s, n->in[k]));
                    return;
                }
        }
        int nsp = (f & OPF_MERGE) ? n->nin : (f & (OPF_BIJ | OPF_TUPLE)) ? 1 : 0;
        for (int k = 0; k < nsp; k++) {
            ir_ref u = n->in[k];
            if (!spine[u]) continue;
            if (uses[u]++ == 0) { first_use[u] = i; continue; }
            if (first_use[u] == i) {
                diag_error(s->dc, n->loc, "'%s' is used twice by this '%s'; each value computed from the input must be used once by an invertible operation (conditioners may read it any number of times)",
                           vname(s, u), op_word(s, i));
                return;
            }
            diag_error(s->dc, n->loc, "'%s' is transformed twice; each value computed from the input must be used once by an invertible operation (conditioners may read it any number of times)",
                       vname(s, u));
            diag_note(s->dc, g->nodes[first_use[u]].loc, "first used here");
            return;
        }
    }
    if (g->output == IR_NONE) return;
    if (!spine[g->output]) {
        diag_error(s->dc, s->output_loc.line > 0 ? s->output_loc : g->nodes[g->output].loc,
                   "the output '%s' is not computed from the input '%s' by invertible operations", vname(s, g->output), g->input_name);
        if (s->output_loc.line > 0) diag_note(s->dc, g->nodes[g->output].loc, "'%s' is defined here", vname(s, g->output));
        return;
    }
    for (int i = 0; i < nn; i++) {
        const ir_node *n = &g->nodes[i];
        if (!spine[i] || i == g->output || n->op == IR_SPLIT) continue;
        if (uses[i] == 0) {
            diag_error(s->dc, n->loc, "'%s' does not reach the output; its values would be lost and the flow could not be inverted",
                       vname(s, i));
            return;
        }
    }
    /* simulate the inverse: from the output back to the input */
    char *known = arena_alloc(s->ar, (size_t)nn + 1);
    char *done = arena_alloc(s->ar, (size_t)nn + 1);
    walk wk = { arena_alloc(s->ar, sizeof(int) * ((size_t)nn + 1)), 0,
                arena_alloc(s->ar, sizeof(ir_ref) * ((size_t)nn * IR_MAX_IN + 1)) };
    /* the parts (GET nodes) of each split, to know when all of them are known */
    int *gstart = arena_alloc(s->ar, sizeof(int) * ((size_t)nn + 2));
    ir_ref *gets = arena_alloc(s->ar, sizeof(ir_ref) * ((size_t)nn + 1));
    for (int j = 0; j < nn; j++)
        if (g->nodes[j].op == IR_GET) gstart[g->nodes[j].in[0] + 1]++;
    for (int j = 0; j < nn; j++) gstart[j + 1] += gstart[j];
    int *gfill = arena_alloc(s->ar, sizeof(int) * ((size_t)nn + 1));
    for (int j = 0; j < nn; j++)
        if (g->nodes[j].op == IR_GET) { ir_ref sp = g->nodes[j].in[0]; gets[gstart[sp] + gfill[sp]++] = j; }
    known[g->output] = 1;
    for (int progress = 1; progress;) {
        progress = 0;
        for (int i = nn - 1; i >= 0; i--) {
            const ir_node *n = &g->nodes[i];
            int f = ir_ops[n->op].flags;
            if (!spine[i] || done[i] || !(f & (OPF_BIJ | OPF_MERGE | OPF_TUPLE | OPF_PROJ))) continue;
            if (f & OPF_TUPLE) {
                /* all parts known */
                int all = 1;
                for (int j = gstart[i]; j < gstart[i + 1]; j++)
                    if (!known[gets[j]]) all = 0;
                if (!all) continue;
                known[n->in[0]] = 1;
            } else {
                if (!known[i]) continue;
                if (f & OPF_BIJ) {
                    for (int k = 1; k < n->nin; k++) {
                        if (find_unknown(s, n->in[k], spine, known, &wk) != IR_NONE) goto next;
                    }
                    known[n->in[0]] = 1;
                } else if (f & OPF_PROJ) {
                    known[i] = 1;
                } else {
                    for (int k = 0; k < n->nin; k++) known[n->in[k]] = 1;
                }
            }
            done[i] = 1;
            progress = 1;
        next:;
        }
    }
    for (int i = nn - 1; i >= 0; i--) {
        const ir_node *n = &g->nodes[i];
        if (!spine[i] || done[i] || !known[i] || !(ir_ops[n->op].flags & OPF_BIJ)) continue;
        for (int k = 1; k < n->nin; k++) {
            ir_ref u = find_unknown(s, n->in[k], spine, known, &wk);
            if (u == IR_NONE) continue;
            const char *what = n->op == IR_AFFINE ? (k == 1 ? "scale" : "shift") : "parameter";
            if (u == n->in[0])
                diag_error(s->dc, n->loc, "'%s' cannot be inverted: its %s depends on '%s', its own input", op_word(s, i), what, vname(s, u));
            else
                diag_error(s->dc, n->loc, "'%s' cannot be inverted: its %s depends on '%s', which the inverse computes only after this operation",
                           op_word(s, i), what, vname(s, u));
            diag_note(s->dc, g->nodes[n->in[k]].loc, "the %s is computed here", what);
            return;
        }
    }
    if (!known[g->input]) {
        diag_error(s->dc, g->nodes[g->output].loc, "the input '%s' cannot be recovered from the output '%s'", g->input_name, vname(s, g->output));
    }
}

/* ---------------------------------------------------------------- flows */

static const ir_param *sort_params;
static int cmp_param_name(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    int c = strcmp(sort_params[x].name, sort_params[y].name);
    return c ? c : x - y;
}

/* Parameter names are checkpoint keys: make them unique. Two names can only clash in graph
 * form (a value named like a layer prefix, or `base`); the later one gets ".2", ".3", ... */
static void unique_param_names(sema *s) {
    ir_graph *g = s->g;
    int *ord = arena_alloc(s->ar, sizeof(int) * (size_t)(g->np + 1));
    for (int pass = 0; pass < 4; pass++) {
        for (int i = 0; i < g->np; i++) ord[i] = i;
        sort_params = g->params;
        qsort(ord, (size_t)g->np, sizeof(int), cmp_param_name);
        int renamed = 0;
        for (int i = 1, k = 2; i < g->np; i++) {
            if (strcmp(g->params[ord[i]].name, g->params[ord[i - 1]].name)) { k = 2; continue; }
            g->params[ord[i]].name = arena_printf(s->ar, "%s.%d", g->params[ord[i]].name, k++);
            renamed = 1;
        }
        if (!renamed) break;
    }
}

static ir_graph *flow(sema *s, const ast *f, const char *filename) {
    s->g = ir_new(s->ar, f->name, f->name_loc);
    s->g->file = filename;
    s->nvals = s->nivars = s->nrec = 0;
    s->vhash = NULL;
    s->vhcap = 0;
    s->has_layer = s->has_assign = 0;
    s->too_big = 0;
    s->repeat_iters = 0;
    s->mixed = 0;
    s->output_loc = loc_none();
    s->cmd = NULL;
    int e0 = nerrors(s);
    /* declarations first, wherever they are in the body */
    const ast *input = NULL, *context = NULL, *base = NULL;
    for (int i = 0; i < f->nbody; i++) {
        const ast *c = f->body[i];
        if (c->kind == AST_DECL) {
            int ctx = !strcmp(c->name, "context");
            const ast **slot = ctx ? &context : &input;
            if (*slot) {
                diag_error(s->dc, c->loc, "the flow already has %s", ctx ? "a context" : "an input");
                diag_note(s->dc, (*slot)->loc, "declared here");
                continue;
            }
            *slot = c;
        } else if (c->kind == AST_CMD && !strcmp(c->name, "base") && !c->ntargets) {
            if (base) {
                diag_error(s->dc, c->name_loc, "the flow already has a base distribution");
                diag_note(s->dc, base->name_loc, "given here");
                continue;
            }
            base = c;
        }
    }
    if (!input) {
        diag_error(s->dc, f->name_loc, "flow '%s' has no input; declare one such as 'input x: f32[2]'", f->name);
        return NULL;
    }
    if (!decl(s, input, 0)) return NULL;
    if (context && !decl(s, context, 1)) return NULL;
    if (base) base_stmt(s, base);
    s->cur = s->g->input;
    for (int i = 0; i < f->nbody && !s->too_big; i++) {
        const ast *c = f->body[i];
        if (c->kind == AST_DECL || (c->kind == AST_CMD && !strcmp(c->name, "base") && !c->ntargets)) continue;
        if (s->dc->capped) break;
        stmt(s, c, 0);
    }
    if (nerrors(s) > e0) return NULL;
    if (s->has_assign && s->g->output == IR_NONE) {
        if (s->nvals > 0)
            diag_error(s->dc, f->name_loc, "flow '%s' is written in graph form but has no 'output' statement; end it with one, such as 'output %s'",
                       f->name, s->vals[s->nvals - 1].name);
        else
            diag_error(s->dc, f->name_loc, "flow '%s' is written in graph form but has no 'output' statement", f->name);
        return NULL;
    }
    if (!s->has_assign) s->g->output = s->cur;
    infer_widths(s);
    int uninferred = 0;
    for (int i = 0; i < s->nrec; i++)
        if (N(s, s->rec[i].node)->op != IR_MAF && N(s, s->rec[i].node)->width < 0) uninferred = 1;
    for (int i = 0; i < s->nrec; i++) {
        recipe *r = &s->rec[i];
        ir_node *n = N(s, r->node);
        if (n->op == IR_MAF) {
            int D = n->width, C = s->g->context != IR_NONE ? N(s, s->g->context)->width : 0;
            expand_net(s, r, D + C, C, 2 * D);
            continue;
        }
        if (n->width < 0) {
            /* the net expression with out=N added: mlp(16) -> mlp(16, out=N), small -> small(out=N) */
            size_t dl = strlen(r->desc);
            const char *with_out = dl > 2 && r->desc[dl - 1] == ')' && r->desc[dl - 2] != '('
                                       ? arena_printf(s->ar, "%.*s, out=N)", (int)dl - 1, r->desc)
                                       : arena_printf(s->ar, "%.*s(out=N)", (int)(dl > 2 && r->desc[dl - 1] == ')' ? dl - 2 : dl), r->desc);
            diag_error(s->dc, r->loc, "cannot infer the output width of '%s' from its uses; give it explicitly, as in %s", r->desc,
                       with_out);
            continue;
        }
        int in = 0, C = 0;
        for (int k = 0; k < n->nin; k++) {
            int w = N(s, n->in[k])->width;
            if (w < 0) {
                /* it comes from a net whose width could not be inferred, reported above */
                if (!uninferred)
                    diag_error(s->dc, r->loc, "the width of input '%s' of '%s' is not known; give its net an explicit out=N", vname(s, n->in[k]), r->desc);
                in = -1;
                break;
            }
            in += w;
            if (n->in[k] == s->g->context) C = w;
        }
        if (in >= 0) expand_net(s, r, in, C, n->width);
    }
    if (nerrors(s) > e0) return NULL;
    /* fill in the index lists of equal chunks, then check operand widths */
    for (int i = 0; i < s->g->nn; i++) {
        ir_node *n = N(s, i);
        if (n->op == IR_SPLIT && n->iattr[2] > 0) {
            int k = n->iattr[2], W = n->width, at = 0;
            if (W < 0 || W % k) {
                diag_error(s->dc, n->loc, "cannot split width %d into %d equal parts", W, k);
                continue;
            }
            int32_t hdr = k;
            n->aux = ir_add_ints(s->g, &hdr, 1);
            for (int p = 0; p < k; p++) {
                int32_t l = W / k;
                ir_add_ints(s->g, &l, 1);
                for (int j = 0; j < l; j++) { int32_t v = at++; ir_add_ints(s->g, &v, 1); }
            }
            n = N(s, i);
            n->naux = s->g->nints - n->aux;
            n->iattr[2] = 0;
        }
        if (n->op == IR_AFFINE) {
            for (int k = 1; k < 3; k++) {
                if (n->in[k] == IR_NONE) continue;
                int w = N(s, n->in[k])->width;
                if (w != n->width) {
                    diag_error(s->dc, N(s, n->in[k])->loc, "the %s '%s' has width %d, but '%s' has width %d", k == 1 ? "scale" : "shift",
                               vname(s, n->in[k]), w, vname(s, n->in[0]), n->width);
                    diag_note(s->dc, n->loc, "used as the %s of this '%s'", k == 1 ? "scale" : "shift", op_word(s, i));
                }
            }
        }
        if (n->op == IR_MERGE) {
            int W = 0;
            for (int k = 0; k < n->nin; k++) W += N(s, n->in[k])->width;
            n->width = W;
        }
    }
    if (nerrors(s) > e0) return NULL;
    check_invertible(s);
    if (s->g->output != IR_NONE && N(s, s->g->output)->width != N(s, s->g->input)->width && nerrors(s) == e0)
        diag_error(s->dc, N(s, s->g->output)->loc, "the output has width %d but the input has width %d", N(s, s->g->output)->width,
                   N(s, s->g->input)->width);
    if (nerrors(s) > e0) return NULL;
    if (s->g->base == BASE_NORMAL_LEARNED) {
        int D = N(s, s->g->input)->width;
        ir_add_param(s->g, IR_NONE, "base.mean", 1, D, 1, INIT_ZERO, 0);
        ir_add_param(s->g, IR_NONE, "base.log_scale", 1, D, 1, INIT_ZERO, 0);
    }
    unique_param_names(s);
    /* per-layer parameter counts and widths */
    for (int p = 0; p < s->g->np; p++) {
        ir_ref o = s->g->params[p].owner;
        if (o != IR_NONE && N(s, o)->layer >= 0) s->g->layers[N(s, o)->layer].nparams += ir_param_numel(&s->g->params[p]);
    }
    for (int i = 0; i < s->g->nn; i++) {
        const ir_node *n = N(s, i);
        if (n->layer >= 0 && (ir_ops[n->op].flags & (OPF_BIJ | OPF_MERGE)) && n->width >= 0)
            s->g->layers[n->layer].width_after = n->width;
    }
    return s->g;
}

void sema_file(diag_ctx *dc, ast *file, sema_result *out) {
    sema s;
    memset(&s, 0, sizeof s);
    s.dc = dc;
    s.ar = dc->ar;
    s.file = file;
    const char *fname = dc->nfiles ? dc->files[file->loc.file].name : "";
    static const char *const builtin_nets[] = { "mlp", "made" };
    /* net definitions: unique names, not shadowing built-ins, unique parameters */
    for (int i = 0; i < file->nbody; i++) {
        const ast *d = file->body[i];
        if (d->kind != AST_NETDEF) continue;
        for (int b = 0; b < 2; b++)
            if (!strcmp(d->name, builtin_nets[b])) diag_error(dc, d->name_loc, "net '%s' redefines a built-in net", d->name);
        for (int j = 0; j < i; j++) {
            const ast *e = file->body[j];
            if (e->kind == AST_NETDEF && !strcmp(e->name, d->name)) {
                diag_error(dc, d->name_loc, "net '%s' is defined twice", d->name);
                diag_note(dc, e->name_loc, "first defined here");
            }
        }
        for (int p = 0; p < d->nparams; p++)
            for (int q = 0; q < p; q++)
                if (!strcmp(d->params[p]->name, d->params[q]->name))
                    diag_error(dc, d->params[p]->loc, "parameter '%s' is listed twice", d->params[p]->name);
    }
    int nflows = 0;
    for (int i = 0; i < file->nbody; i++) {
        const ast *f = file->body[i];
        if (f->kind != AST_FLOW) continue;
        nflows++;
        for (int j = 0; j < i; j++) {
            const ast *e = file->body[j];
            if (e->kind == AST_FLOW && !strcmp(e->name, f->name)) {
                diag_error(dc, f->name_loc, "flow '%s' is defined twice", f->name);
                diag_note(dc, e->name_loc, "first defined here");
            }
        }
        if (dc->capped) break;
        ir_graph *g = flow(&s, f, fname);
        if (g) VEC_PUSH(dc->ar, out->flows, out->nflows, out->cap, g);
    }
    if (nflows == 0 && dc->nerrors == 0) {
        loc_t l = file->loc;
        if (file->loc.file >= 0 && file->loc.file < dc->nfiles && dc->files[file->loc.file].len == 0)
            diag_error(dc, l, "the file is empty; a .flow file holds at least one 'flow NAME { ... }'");
        else
            diag_error(dc, l, "no flow defined; a file holds at least one 'flow NAME { ... }'");
    }
}
