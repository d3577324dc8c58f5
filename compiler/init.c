/* compiler/init.c: the parameter initializer (see init.h). */
#include "init.h"

#include <math.h>

#include "interp.h"
#include "tir.h"

void init_params(const ir_graph *g, double *params, uint64_t seed, double init_scale) {
    int64_t at = 0;
    for (int p = 0; p < g->np; p++) {
        const ir_param *pr = &g->params[p];
        int64_t n = ir_param_numel(pr);
        for (int64_t e = 0; e < n; e++) {
            uint64_t h = tir_mix64(seed ^ tir_mix64(((uint64_t)p << 40) ^ (uint64_t)e ^ 0x5bd1e995ull));
            double u = ((double)(h >> 11) * 0x1p-53) * 2.0 - 1.0;
            double v;
            if (pr->init == INIT_UNIFORM_FANIN) v = u / sqrt(pr->fan_in > 0 ? pr->fan_in : 1);
            else if (init_scale > 0) /* matrices: scaled by 1/sqrt(rows), as fan-in schemes do, to stay well conditioned */
                v = init_scale * u / (pr->rank > 1 ? sqrt((double)pr->shape[0]) : 1.0);
            else v = 0.0;
            params[at + e] = v;
        }
        at += n;
    }
}
