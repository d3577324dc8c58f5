/* examples/embed/main.c: a C program that links a model compiled ahead of time and samples
 * from it. No LLVM and no nfc library at run time: only moons.o (built by
 *   nfc examples/moons.flow -c -o build/embed/moons.o
 * which also writes build/embed/moons.h), libsleef and libm.
 *
 * Usage: moons_sample WEIGHTS.safetensors [N [SEED [TEMPERATURE]]]
 * Prints N samples (default 10) as CSV rows "x0,x1,log_p" (log p in nats).
 * The weights come from `nfc train examples/moons.flow ... -o WEIGHTS.safetensors`; `ninja
 * demo` trains them and runs this program. */
#include <stdio.h>
#include <stdlib.h>

#include "moons.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s WEIGHTS.safetensors [N [SEED [TEMPERATURE]]]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 10;
    unsigned long long seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 0;
    double temperature = argc > 4 ? strtod(argv[4], NULL) : 1.0;
    if (n < 1 || n > 100000000) {
        fprintf(stderr, "%s: N must be between 1 and 10^8\n", argv[0]);
        return 2;
    }
    int rc = moons_load_weights_file(argv[1]);
    if (rc != NFC_AOT_OK) {
        fprintf(stderr, "%s: %s: cannot load the weights (error %d%s)\n", argv[0], argv[1], rc,
                rc == NFC_AOT_EIO ? ": cannot read the file" : rc == NFC_AOT_EMODEL ? ": not weights of this model" : "");
        return 1;
    }
    /* the workspace: 64-byte aligned, its size independent of n; sample in chunks so memory
     * stays bounded (sample i depends only on (seed, i); chunks get their own seeds here) */
    void *ws = aligned_alloc(64, (size_t)moons_workspace_size());
    enum { CHUNK = 1024 };
    static float x[CHUNK * MOONS_DIM], lp[CHUNK];
    if (!ws) return 1;
    for (long done = 0, k = 0; done < n; k++) {
        long c = n - done < CHUNK ? n - done : CHUNK;
        rc = moons_sample(c, seed + (unsigned long long)k, temperature, x, lp, ws);
        if (rc != NFC_AOT_OK) {
            fprintf(stderr, "%s: moons_sample failed (error %d)\n", argv[0], rc);
            free(ws);
            return 1;
        }
        for (long i = 0; i < c; i++) printf("%.6g,%.6g,%.6g\n", x[2 * i], x[2 * i + 1], lp[i]);
        done += c;
    }
    free(ws);
    return 0;
}
