/* compiler/ir.h: the flow graph.
 *
 * A flow graph is an array of nodes; each node computes one value (a vector per batch row,
 * of `width` features) from earlier nodes, referred to by 32-bit index, so index order is a
 * topological order. The op table is compiler/ops.def. Index lists (split parts,
 * permutations) live in one int array; parameters and conditioner nets in side tables.
 * Semantic analysis (sema.c) builds one ir_graph per `flow`; ir_dump() prints it stably.
 */
#ifndef NFC_IR_H
#define NFC_IR_H
#include "base.h"

typedef enum {
#define X(e, name, flags) IR_##e,
#include "ops.def"
#undef X
    IR_NUM_OPS
} ir_op;

enum { OPF_SOURCE = 1, OPF_BIJ = 2, OPF_MERGE = 4, OPF_TUPLE = 8, OPF_PROJ = 16, OPF_COND = 32 };

typedef struct { const char *name; int flags; } ir_opinfo;
extern const ir_opinfo ir_ops[IR_NUM_OPS];

typedef int32_t ir_ref;
#define IR_NONE (-1)
#define IR_MAX_IN 8

enum { DT_F32 = 1, DT_F64 = 2 };
/* scale parameterizations of affine transforms: log-scale as a function of the raw value r */
enum { SCALE_EXP = 0,     /* log s = r                          (unbounded) */
       SCALE_TANH = 1,    /* log s = clamp * tanh(r / clamp)    (soft-clamped, default) */
       SCALE_SIGMOID = 2  /* s = sigmoid(r + 2)  (Glow)         (scale in (0, 1)) */ };
enum { BASE_NORMAL = 0, BASE_NORMAL_LEARNED = 1, BASE_LOGISTIC = 2 };
enum { ACT_NONE = 0, ACT_RELU, ACT_TANH, ACT_ELU, ACT_GELU, ACT_SIGMOID, ACT_SOFTPLUS, ACT_LEAKY_RELU, ACT_NUM };
extern const char *const ir_act_names[ACT_NUM];

typedef struct {
    uint16_t op;
    int16_t  nin;
    int32_t  width;          /* features per row; -1 while unknown during inference */
    ir_ref   in[IR_MAX_IN];  /* operands; IR_NONE for an absent optional operand */
    int32_t  iattr[4];       /* op-specific: GET part, AFFINE scaling, NET/MAF net index */
    double   fattr[2];       /* op-specific: clamp, slope */
    int32_t  aux, naux;      /* index list in ir_graph.ints */
    int32_t  param0, nparam; /* parameters owned: params[param0 .. param0+nparam) */
    int32_t  layer;          /* user-level layer this node came from (-1 for input/context) */
    loc_t    loc;
    const char *name;        /* user name of the value, if any */
} ir_node;

enum { INIT_ZERO = 0, INIT_UNIFORM_FANIN = 1 };
typedef struct {
    const char *name;        /* stable, used in checkpoints: e.g. "layer3.net.dense0.w" */
    int         rank;
    int64_t     shape[2];
    int         init;        /* INIT_* */
    int         fan_in;      /* for INIT_UNIFORM_FANIN: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    ir_ref      owner;
} ir_param;

/* a conditioner net, flattened: dense layers, activations, residual begin/end */
enum { NL_DENSE = 0, NL_ACT, NL_RES_BEGIN, NL_RES_END };
typedef struct {
    int kind;
    int width;               /* NL_DENSE: output width */
    int act;                 /* NL_ACT */
    int param_w, param_b;    /* NL_DENSE: parameter indices */
    int zero_init;           /* the last dense layer starts at zero */
} ir_netlayer;
typedef struct {
    const char  *desc;       /* as written, e.g. "mlp(64, 64)" */
    int          made;       /* masked autoregressive (MADE) */
    int          in_width;   /* including context */
    int          ctx_width;
    int          out_width;
    ir_netlayer *L;
    int          nl, cap_l;
    ir_ref       owner;
} ir_net;

/* a user-level layer, for the summary of `nfc check` */
typedef struct {
    const char *desc;
    loc_t       loc;
    int         width_after;  /* layer form: width of the running value after it */
    int64_t     nparams;
    ir_ref      outs[4];      /* graph form: the values it assigns (first four) */
    int         nouts;
} ir_layer;

typedef struct {
    arena      *ar;
    const char *name;
    loc_t       loc;
    const char *file;
    int         dtype;
    ir_node    *nodes;  int nn, cap_n;
    int32_t    *ints;   int nints, cap_ints;
    ir_param   *params; int np, cap_p;
    ir_net     *nets;   int nnets, cap_nets;
    ir_layer   *layers; int nlayers, cap_layers;
    ir_ref      input, context, output;
    const char *input_name, *context_name;
    int         base;
    int         graph_form;
} ir_graph;

ir_graph *ir_new(arena *ar, const char *name, loc_t loc);
ir_ref    ir_add(ir_graph *g, ir_op op, int width, const ir_ref *in, int nin, loc_t loc);
int32_t   ir_add_ints(ir_graph *g, const int32_t *v, int n);
int       ir_add_param(ir_graph *g, ir_ref owner, const char *name, int rank, int64_t d0, int64_t d1,
                       int init, int fan_in);
int64_t   ir_param_count(const ir_graph *g);
int64_t   ir_param_numel(const ir_param *p);
/* Number of parts of a SPLIT/MERGE node, and part k's index list. */
int       ir_nparts(const ir_graph *g, const ir_node *n);
const int32_t *ir_part(const ir_graph *g, const ir_node *n, int k, int *len);
/* Print the graph in a stable text form (used by `nfc check --dump=graph` and tests). */
void      ir_dump(const ir_graph *g, FILE *out);

#endif
