/* fuzz/fuzz_weights.c: bytes as a safetensors checkpoint, through the parser (rt_st_parse on
 * a buffer of exactly the input's size) and through nfc's loader (nfc_load_weights) for a
 * fixed model, given the bytes as a file (a memfd, opened by its /proc/self/fd path).
 *
 * Aborts (a finding) when:
 *   - a rejection has no message naming the file, or leaves the output non-zeroed;
 *   - an accepted file breaks the contract of rt_io.h: each tensor named, F32/F64, ndim 0..4,
 *     numel = the product of its shape, data present, found by name, its values stored in the
 *     file (numel * element size <= file size); metadata keys and values present;
 *   - nfc_load_weights accepts bytes the parser rejects, changes the parameters when it fails
 *     or fails without a message, or loads values other than the file's tensors;
 *   - a crash, leak, out-of-bounds read or sanitizer report. See docs/fuzzing.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nfc.h"
#include "rt_io.h"

/* The model whose checkpoints the corpus holds (fuzz/corpus/fuzz_weights/valid_*). */
static const char *model_text =
    "flow w {\n"
    "  input x: f64[3]\n"
    "  base normal(learned)\n"
    "  actnorm\n"
    "  affine_coupling mask=alternate net=mlp(4)\n"
    "  linear lu\n"
    "}\n";

static nfc_model *model;
static double *saved, *now;
static int64_t total;
static int fd = -1;
static char path[64];

static void setup(void) {
    nfc_options o;
    nfc_options_default(&o);
    o.dtype = NFC_F64;
    o.backend = NFC_BACKEND_INTERP;
    o.init_scale = 0.5;
    o.init_seed = 3;
    model = nfc_compile_string("w.flow", model_text, &o, NULL);
    if (!model) { fprintf(stderr, "fuzz_weights: the fixed model does not compile\n"); abort(); }
    total = nfc_param_total(model);
    saved = malloc(sizeof(double) * (size_t)total);
    now = malloc(sizeof(double) * (size_t)total);
    memcpy(saved, nfc_params(model), sizeof(double) * (size_t)total);
    fd = memfd_create("fuzz_weights", 0);
    if (fd < 0) { perror("memfd_create"); abort(); }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
}

static int all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) if (b[i]) return 0;
    return 1;
}

#define BUG(...) do { fprintf(stderr, "fuzz_weights: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model) setup();
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);

    /* 1. the parser */
    rt_tensorfile tf;
    memset(&tf, 0xab, sizeof tf);
    char err[512];
    err[0] = 0;
    int prc = rt_st_parse("fuzz.safetensors", buf, size, &tf, err, sizeof err);
    free(buf);
    if (prc != 0) {
        if (prc != -1) BUG("rt_st_parse returned %d", prc);
        if (strncmp(err, "fuzz.safetensors", 16) != 0) BUG("message without the file name: '%s'", err);
        if (!all_zero(&tf, sizeof tf)) BUG("a rejection left the output non-zeroed");
    } else {
        for (int i = 0; i < tf.n; i++) {
            const rt_tensor *t = &tf.t[i];
            if (!t->name || !t->data) BUG("tensor %d without a name or data", i);
            if (t->dtype != RT_F32 && t->dtype != RT_F64) BUG("tensor '%s' has dtype %d", t->name, t->dtype);
            if (t->ndim < 0 || t->ndim > 4) BUG("tensor '%s' has ndim %d", t->name, t->ndim);
            int64_t numel = 1;
            for (int k = 0; k < t->ndim; k++) {
                if (t->shape[k] < 0) BUG("tensor '%s' has a negative dimension", t->name);
                numel *= t->shape[k];
            }
            if (numel != t->numel) BUG("tensor '%s': numel %lld, shape product %lld", t->name, (long long)t->numel, (long long)numel);
            if ((uint64_t)t->numel * (t->dtype == RT_F32 ? 4u : 8u) > size) BUG("tensor '%s': %lld values from %zu bytes", t->name, (long long)t->numel, size);
            if (rt_st_find(&tf, t->name) == NULL || strcmp(rt_st_find(&tf, t->name)->name, t->name)) BUG("tensor '%s' is not found by name", t->name);
        }
        for (int i = 0; i < tf.nmeta; i++)
            if (!tf.meta_keys[i] || !tf.meta_vals[i]) BUG("metadata %d without key or value", i);
    }

    /* 2. the loader of a fixed model, on the same bytes as a file */
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) BUG("cannot write the memfd");
    int lrc = nfc_load_weights(model, path);
    memcpy(now, nfc_params(model), sizeof(double) * (size_t)total);
    if (lrc != 0) {
        if (!nfc_last_error(model)[0]) BUG("nfc_load_weights failed without a message");
        if (memcmp(now, saved, sizeof(double) * (size_t)total)) BUG("a failed load changed the parameters (%s)", nfc_last_error(model));
    } else {
        if (prc != 0) BUG("nfc_load_weights accepted a file the parser rejects (%s)", err);
        for (int i = 0; i < nfc_param_count(model); i++) {
            const rt_tensor *t = rt_st_find(&tf, nfc_param_name(model, i));
            if (!t || t->numel != nfc_param_numel(model, i)) BUG("loaded '%s' from a tensor of another size", nfc_param_name(model, i));
            double v[64];
            if (t->numel > 64 || nfc_param_get(model, i, v)) BUG("parameter '%s' is larger than expected", nfc_param_name(model, i));
            if (memcmp(v, t->data, sizeof(double) * (size_t)t->numel)) BUG("parameter '%s' differs from the file", nfc_param_name(model, i));
        }
        nfc_params_set(model, saved);
    }
    if (prc == 0) rt_st_free(&tf);
    return 0;
}
