/* fuzz/fuzz_npy.c: bytes as a data file through the readers of runtime/rt_io.h. The first
 * byte chooses the reader (even: NPY, odd: CSV); the rest is the file, in a buffer of exactly
 * its size (so ASan sees a read past the end).
 *
 * Aborts (a finding) when:
 *   - a rejection has no message naming the file, or leaves the output non-zeroed;
 *   - an accepted file gives an array that breaks the contract of rt_io.h: ndim 1 or 2,
 *     rows and cols >= 1 (ndim 1: cols = 1), data present, every value finite, CSV always
 *     2-d f64;
 *   - a crash, leak, out-of-bounds read or sanitizer report. See docs/fuzzing.md. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_io.h"

static int all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) if (b[i]) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int csv = data[0] & 1;
    size_t len = size - 1;
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) return 0;
    memcpy(buf, data + 1, len);
    rt_array a;
    memset(&a, 0xab, sizeof a);
    char err[512];
    err[0] = 0;
    const char *name = csv ? "fuzz.csv" : "fuzz.npy";
    int rc = csv ? rt_csv_parse(name, (const char *)buf, len, &a, err, sizeof err)
                 : rt_npy_parse(name, buf, len, &a, err, sizeof err);
    if (rc != 0) {
        if (rc != -1) { fprintf(stderr, "fuzz_npy: reader returned %d\n", rc); abort(); }
        if (strncmp(err, name, strlen(name)) != 0) { fprintf(stderr, "fuzz_npy: message without the file name: '%s'\n", err); abort(); }
        if (!all_zero(&a, sizeof a)) { fprintf(stderr, "fuzz_npy: a rejection left the output non-zeroed\n"); abort(); }
    } else {
        int ok = (a.ndim == 1 || a.ndim == 2) && a.shape[0] >= 1 && a.shape[1] >= 1 && a.data &&
                 (a.ndim == 2 || a.shape[1] == 1) && (a.dtype == RT_F32 || a.dtype == RT_F64) &&
                 (!csv || (a.ndim == 2 && a.dtype == RT_F64));
        if (!ok) {
            fprintf(stderr, "fuzz_npy: accepted array breaks the contract: ndim %d shape %lld x %lld dtype %d data %p\n",
                    a.ndim, (long long)a.shape[0], (long long)a.shape[1], a.dtype, (void *)a.data);
            abort();
        }
        /* the values must fit in the file: f32 NPY needs 4 bytes a value, CSV at least 2 */
        if ((uint64_t)a.shape[0] > len || (uint64_t)a.shape[1] > len || (uint64_t)(a.shape[0] * a.shape[1]) > len) {
            fprintf(stderr, "fuzz_npy: %lld x %lld values from %zu bytes\n", (long long)a.shape[0], (long long)a.shape[1], len);
            abort();
        }
        for (int64_t i = 0; i < a.shape[0] * a.shape[1]; i++)
            if (!isfinite(a.data[i])) { fprintf(stderr, "fuzz_npy: accepted a non-finite value at %lld\n", (long long)i); abort(); }
        rt_array_free(&a);
    }
    free(buf);
    return 0;
}
