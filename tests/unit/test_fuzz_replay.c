/* tests/unit/test_fuzz_replay.c: replay the fuzz corpora without libFuzzer.
 *
 * Each fuzz target (fuzz/fuzz_*.c) is compiled a second time by tools/variant.ninja with
 * LLVMFuzzerTestOneInput renamed (-DLLVMFuzzerTestOneInput=NAME_one) and linked here. This
 * runs every file of fuzz/corpus/NAME/ through NAME_one, in the normal and the ASan+UBSan
 * builds of `ninja test`: the seeds and every past finding (regression files) stay fixed.
 * A target aborts on a finding, so a regression fails this binary; otherwise one
 * "PASS fuzz_NAME" line per target that replayed at least one file. */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"

int fuzz_parse_one(const uint8_t *data, size_t size);
int fuzz_flow_one(const uint8_t *data, size_t size);
int fuzz_weights_one(const uint8_t *data, size_t size);
int fuzz_npy_one(const uint8_t *data, size_t size);

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Run fn over every regular file of dir, in name order; returns the number of files. */
static int replay(const char *dir, int (*fn)(const uint8_t *, size_t)) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) { cap = cap ? 2 * cap : 64; names = realloc(names, sizeof *names * (size_t)cap); }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp);
    int files = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        free(names[i]);
        if (!f) continue;
        unsigned char *buf = NULL;
        size_t len = 0, cap2 = 0, k;
        unsigned char chunk[65536];
        while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
            if (len + k > cap2) { cap2 = (len + k) * 2; buf = realloc(buf, cap2); }
            memcpy(buf + len, chunk, k);
            len += k;
        }
        fclose(f);
        /* an exact-size copy, as libFuzzer gives it, so ASan sees reads past the end */
        unsigned char *exact = malloc(len ? len : 1);
        if (len) memcpy(exact, buf, len);
        free(buf);
        fn(exact, len);
        free(exact);
        files++;
    }
    free(names);
    return files;
}

#define REPLAY(name)                                                                           \
    TEST(name) {                                                                               \
        int k = replay("fuzz/corpus/" #name, name##_one);                                      \
        CHECK(k > 0, "no corpus files in fuzz/corpus/" #name);                                 \
    }

REPLAY(fuzz_parse)
REPLAY(fuzz_npy)
REPLAY(fuzz_weights)
REPLAY(fuzz_flow)

int main(void) {
    RUN(fuzz_parse);
    RUN(fuzz_npy);
    RUN(fuzz_weights);
    RUN(fuzz_flow);
    return t_done();
}
