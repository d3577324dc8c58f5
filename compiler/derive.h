/* compiler/derive.h: from a flow graph, the tensor-IR programs of a model.
 *
 *   forward   args: x [D], ctx [C]        outs: z [D], logdet [1]      z = f(x), log|det df/dx|
 *   inverse   args: z [D], ctx [C]        outs: x [D], logdet [1]      x = f^-1(z), log|det df^-1/dz|
 *   log_prob  args: x [D], ctx [C]        outs: lp [1]                 log p_base(f(x)) + log|det df/dx|
 *   sample    args: ctx [C]; scalars: temperature
 *                                         outs: x [D], lp [1]          z ~ base (scaled by temperature),
 *                                                                      x = f^-1(z), lp = log p(x)
 * (ctx only when the flow has a context.) Each flow-graph op has its forward rule and its
 * inverse rule side by side in derive.c. The flow graph must have passed sema (invertible). */
#ifndef NFC_DERIVE_H
#define NFC_DERIVE_H
#include "tir.h"

enum { PROG_FORWARD, PROG_INVERSE, PROG_LOG_PROB, PROG_SAMPLE, PROG_COUNT };
extern const char *const prog_names[PROG_COUNT];

typedef struct {
    tprog *p[PROG_COUNT];
} derived;

/* Emit the log_prob program's nodes into p (args x, ctx as above); returns the lp value, or
 * -1 with a message. Used by grad.c to differentiate it. */
tref derive_log_prob_into(const ir_graph *g, tprog *p, char *err, size_t errlen);

/* Emit the inverse program's nodes into p (args z, ctx as above); sets *x and *logdet (the
 * inverse's log|det df^-1/dz|, [n, 1]). Returns 0, or -1 with a message. Used by grad.c. */
int derive_inverse_into(const ir_graph *g, tprog *p, tref *x, tref *logdet, char *err, size_t errlen);

/* Emit the forward computation up to flow-graph node `node` into p; returns its value. */
tref derive_value_into(const ir_graph *g, tprog *p, ir_ref node, char *err, size_t errlen);

/* The training program (grad.h's loss_grad: output lp, gradients of -sum lp) with
 * recomputation: the forward pass keeps only z; the backward pass visits the flow's
 * bijections last first, rebuilds each one's input from its output with the inverse rule
 * (a MAF layer's input, whose inverse is a D-trip loop, is kept from the forward pass
 * instead), re-derives the forward rule from that input and applies the vector-Jacobian
 * rules to those fresh nodes only. Returns 0, or -1 with a message. */
int derive_grad_recompute_into(const ir_graph *g, tprog *p, char *err, size_t errlen);

/* Returns 0, or -1 with a message (an internal error: sema accepted a graph derive cannot handle). */
int derive_all(const ir_graph *g, arena *ar, derived *out, char *err, size_t errlen);

#endif
