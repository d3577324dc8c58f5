/* tests/aot_driver.c: a C program against one generated header, used by tests/aot.sh on the
 * host and, cross-compiled, under qemu-aarch64. Compiled with -Wall -Wextra -Werror and
 *   -DPFX=<prefix> -DUP=<PREFIX in capitals> -include <prefix>.h
 * it calls every exported function, checks that inverse(forward(x)) = x and that the two
 * log-determinants cancel, and prints one CSV row per sample: x, then log p(x) (%.9g).
 * Usage: driver [WEIGHTS.safetensors]   (the weights when they are not embedded)
 * Exit status: 0, or 1 with a message on stderr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define F(name) CAT(PFX, CAT(_, name))
#define M(name) CAT(UP, CAT(_, name))
#define N 61
#if M(CONTEXT_DIM) > 0
#define C_ARG ctx,
#else
#define C_ARG
#endif
typedef F(real) real;

static int fail(const char *what, int rc) {
    fprintf(stderr, "aot_driver: %s returned %d\n", what, rc);
    return 1;
}

int main(int argc, char **argv) {
    enum { D = M(DIM), C = M(CONTEXT_DIM) };
    static real x[N * D], z[N * D], x2[N * D], ld[N], ld2[N], lp[N], s[N * D], slp[N];
    static real ctx[N * (C > 0 ? C : 1)];
    unsigned long long st = 12345;
    for (int i = 0; i < N * D; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (real)(((double)(st >> 11) * 0x1p-53) * 4 - 2);
    }
    for (int i = 0; i < N * C; i++) ctx[i] = (real)((i % 3) == 0);
    (void)ctx;
    int64_t wsz = F(workspace_size)();
    if (wsz != M(WORKSPACE_SIZE) || wsz % 64) return fail("workspace_size", (int)wsz);
    void *ws = aligned_alloc(64, (size_t)wsz);
    if (!ws) return fail("aligned_alloc", 0);
#if M(WEIGHTS_EMBEDDED)
    (void)argc; (void)argv;
#else
    if (F(weights_loaded)() != 0) return fail("weights_loaded before loading", 1);
    if (F(log_prob)(N, x, C_ARG lp, ws) != NFC_AOT_ENOWEIGHTS) return fail("log_prob before loading", 0);
    int lrc = F(load_weights_file)(argc > 1 ? argv[1] : "");
    if (lrc) return fail("load_weights_file", lrc);
#endif
    if (F(weights_loaded)() != 1) return fail("weights_loaded", 0);
    int rc;
    if ((rc = F(log_prob)(N, x, C_ARG lp, ws))) return fail("log_prob", rc);
    if ((rc = F(forward)(N, x, C_ARG z, ld, ws))) return fail("forward", rc);
    if ((rc = F(inverse)(N, z, C_ARG x2, ld2, ws))) return fail("inverse", rc);
    if ((rc = F(sample)(N, 7, 1.0, C_ARG s, slp, ws))) return fail("sample", rc);
    double tol = sizeof(real) == 4 ? 2e-3 : 1e-9;
    for (int i = 0; i < N * D; i++)
        if (!(fabs((double)x2[i] - (double)x[i]) <= tol * (1 + fabs((double)x[i])))) {
            fprintf(stderr, "aot_driver: inverse(forward(x)) differs at %d: %g vs %g\n", i, (double)x2[i], (double)x[i]);
            return 1;
        }
    for (int i = 0; i < N; i++)
        if (!(fabs((double)ld[i] + (double)ld2[i]) <= tol * (1 + fabs((double)ld[i])))) {
            fprintf(stderr, "aot_driver: logdets do not cancel at %d: %g, %g\n", i, (double)ld[i], (double)ld2[i]);
            return 1;
        }
    for (int i = 0; i < N; i++)
        if (!isfinite((double)slp[i])) { fprintf(stderr, "aot_driver: sample %d has log p %g\n", i, (double)slp[i]); return 1; }
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < D; k++) printf("%.9g,", (double)x[i * D + k]);
        printf("%.9g\n", (double)lp[i]);
    }
    free(ws);
    return 0;
}
