/* compiler/init.h: the parameter initializer.
 * Scheme (documented in docs/language.md): element e of parameter p gets a uniform
 * u in [-1, 1) from the counter-based hash of (seed, p, e);
 *   INIT_UNIFORM_FANIN (hidden dense weights): u / sqrt(fan_in)
 *   INIT_ZERO (last dense layer, biases, actnorm, LU, learned base): 0, or init_scale * u
 *     when init_scale > 0 (so that untrained models are non-trivial, for tests), divided by
 *     sqrt(rows) for matrices (so an LU matrix stays well conditioned).
 * The values depend only on (seed, p, e), not on the order of initialization. */
#ifndef NFC_INIT_H
#define NFC_INIT_H
#include "ir.h"

void init_params(const ir_graph *g, double *params, uint64_t seed, double init_scale);

#endif
