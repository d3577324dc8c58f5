/* tests/unit/test_api.c: the public library API (include/nfc.h).
 * - compile errors come back as data with file, line, column; nothing is printed
 * - parameters: names, shapes, get/set; weights saved and loaded bit for bit; weights of
 *   another model, truncated or corrupt files are refused with a message
 * - JIT equals the f64 interpreter for every example and program, f32 (1e-5 relative) and
 *   f64 (1e-12), at vector width 1 and native width, at batch sizes that are not multiples
 *   of the width
 * - sampling is reproducible from the seed and independent of chunking
 * - no_fuse reaches the code generator (JIT programs, the gradient, AOT) and gives the same
 *   results within rounding */
#include "t.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "nfc.h"

static const char *examples[] = { "examples/moons.flow", "examples/maf.flow", "examples/glow_dense.flow",
                                  "examples/cmoons.flow", "examples/custom.flow" };
#define NEX 5

static int opt_level = 2;

static nfc_model *compile(const char *path, int backend, int dtype, int vw, double init_scale) {
    nfc_options o;
    nfc_options_default(&o);
    o.opt_level = opt_level;
    o.backend = backend;
    o.dtype = dtype;
    o.vector_width = vw;
    o.init_scale = init_scale;
    o.init_seed = 3;
    nfc_diagnostics *d = NULL;
    nfc_model *m = nfc_compile_file(path, &o, &d);
    if (!m) nfc_diagnostics_print(d, stdout, 0);
    nfc_diagnostics_free(d);
    return m;
}

TEST(errors_as_data) {
    nfc_diagnostics *d = NULL;
    nfc_model *m = nfc_compile_string("bad.flow", "flow f {\n  input x: f32[2]\n  actnrom\n}\n", NULL, &d);
    CHECK(m == NULL);
    CHECK(nfc_diagnostics_count(d) == 1, "%d diagnostics", nfc_diagnostics_count(d));
    const nfc_diagnostic *e = nfc_diagnostics_get(d, 0);
    CHECK(e && !strcmp(e->file, "bad.flow") && e->line == 3 && e->column == 3 && e->length == 7 && !e->is_note);
    CHECK(e && strstr(e->message, "did you mean 'actnorm'"), "%s", e ? e->message : "");
    CHECK(nfc_diagnostics_get(d, 1) == NULL);
    nfc_diagnostics_free(d);
    /* a missing file */
    m = nfc_compile_file("tests/no/such.flow", NULL, &d);
    CHECK(m == NULL && nfc_diagnostics_count(d) == 1);
    CHECK(d && strstr(nfc_diagnostics_get(d, 0)->message, "cannot open"));
    nfc_diagnostics_free(d);
    /* no diags pointer: still no crash, no leak */
    CHECK(nfc_compile_string("x", "garbage", NULL, NULL) == NULL);
}

TEST(parameters_and_weights) {
    nfc_model *m = compile("examples/moons.flow", NFC_BACKEND_INTERP, NFC_F64, 0, 0.5);
    CHECK(m != NULL);
    if (!m) return;
    CHECK(nfc_model_dim(m) == 2 && nfc_model_context_dim(m) == 0);
    CHECK_STR(nfc_model_input_name(m), "x");
    CHECK(nfc_param_total(m) == 35348);
    int i = nfc_param_find(m, "layer2.net.dense0.w");
    CHECK(i >= 0);
    int64_t shape[2];
    CHECK(nfc_param_shape(m, i, shape) == 2 && shape[0] == 1 && shape[1] == 64);
    double w[64];
    for (int k = 0; k < 64; k++) w[k] = k * 0.01;
    CHECK(nfc_param_set(m, i, w) == 0);
    double r[64];
    CHECK(nfc_param_get(m, i, r) == 0 && r[5] == 0.05);
    char dir[] = "/tmp/nfc_api_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    CHECK(nfc_save_weights(m, path) == 0, "%s", nfc_last_error(m));
    nfc_model *m2 = compile("examples/moons.flow", NFC_BACKEND_INTERP, NFC_F64, 0, 0.0);
    CHECK(m2 && nfc_load_weights(m2, path) == 0, "%s", m2 ? nfc_last_error(m2) : "");
    if (m2) CHECK(memcmp(nfc_params(m), nfc_params(m2), sizeof(double) * 35348) == 0, "weights differ after a round trip");
    /* weights of another model */
    nfc_model *m3 = compile("examples/cmoons.flow", NFC_BACKEND_INTERP, NFC_F64, 0, 0.0);
    CHECK(m3 && nfc_load_weights(m3, path) != 0);
    if (m3) CHECK(strstr(nfc_last_error(m3), "different model"), "%s", nfc_last_error(m3));
    /* truncated files: refused, and the model's parameters untouched */
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(1 << 20);
    size_t len = f ? fread(buf, 1, 1 << 20, f) : 0;
    if (f) fclose(f);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    for (size_t cut = 0; cut < len; cut += len / 37 + 1) {
        f = fopen(bad, "wb");
        fwrite(buf, 1, cut, f);
        fclose(f);
        CHECK(nfc_load_weights(m2, bad) != 0, "truncated at %zu accepted", cut);
        CHECK(strstr(nfc_last_error(m2), "bad.safetensors"), "message does not name the file: %s", nfc_last_error(m2));
    }
    CHECK(memcmp(nfc_params(m), nfc_params(m2), sizeof(double) * 35348) == 0, "a failed load changed the parameters");
    free(buf);
    unlink(path);
    unlink(bad);
    rmdir(dir);
    nfc_free(m);
    nfc_free(m2);
    nfc_free(m3);
}

/* nfc_params_update_range: the callback gets the range's values and their float copies, and
 * what it writes is what the model computes with (an f32 JIT model after an update in place
 * gives the same log p as after nfc_params_set_range of the same values); refused ranges and
 * a NULL callback do not call it */
static int upd_calls;
static void upd_scale(void *ctx, int64_t at, double *p, float *pf, int64_t n) {
    (void)ctx;
    upd_calls++;
    for (int64_t i = 0; i < n; i++) {
        p[i] = p[i] * 1.5 + 1e-3 * (double)((at + i) % 7);
        pf[i] = (float)p[i];
    }
}
TEST(params_update_in_place) {
    nfc_model *a = compile("examples/moons.flow", NFC_BACKEND_JIT, NFC_F32, 0, 0.5);
    nfc_model *b = compile("examples/moons.flow", NFC_BACKEND_JIT, NFC_F32, 0, 0.5);
    CHECK(a && b);
    if (!a || !b) { nfc_free(a); nfc_free(b); return; }
    int64_t P = nfc_param_total(a), at = 1000, n = P - 2000;
    double *want = malloc(sizeof(double) * (size_t)P);
    memcpy(want, nfc_params(b), sizeof(double) * (size_t)P);
    for (int64_t i = at; i < at + n; i++) want[i] = want[i] * 1.5 + 1e-3 * (double)(i % 7);
    CHECK(nfc_params_set_range(b, at, n, want + at) == 0);
    upd_calls = 0;
    CHECK(nfc_params_update_range(a, at, n, upd_scale, NULL) == 0 && upd_calls == 1);
    CHECK(memcmp(nfc_params(a), nfc_params(b), sizeof(double) * (size_t)P) == 0, "updated values differ");
    double x[6] = { 0.3, -0.2, 1.1, 0.4, -0.9, 0.05 }, la[3], lb[3];
    CHECK(nfc_log_prob(a, 3, x, NULL, la) == 0 && nfc_log_prob(b, 3, x, NULL, lb) == 0);
    CHECK(memcmp(la, lb, sizeof la) == 0, "log p after the update in place: %.9g, after set_range: %.9g", la[0], lb[0]);
    CHECK(nfc_params_update_range(a, P - 5, 6, upd_scale, NULL) == -1 && nfc_params_update_range(a, -1, 2, upd_scale, NULL) == -1
          && nfc_params_update_range(a, 0, 2, NULL, NULL) == -1 && upd_calls == 1, "a refused range called the callback");
    free(want);
    nfc_free(a);
    nfc_free(b);
}

TEST(bad_calls_are_errors) {
    nfc_model *m = compile("examples/cmoons.flow", NFC_BACKEND_INTERP, NFC_F64, 0, 0.0);
    CHECK(m != NULL);
    if (!m) return;
    double x[4] = { 0 }, lp[2];
    CHECK(nfc_log_prob(m, 2, x, NULL, lp) != 0 && strstr(nfc_last_error(m), "context"));
    CHECK(nfc_log_prob(m, -1, x, x, lp) != 0);
    CHECK(nfc_sample(m, 2, 1, NAN, x, x, NULL) != 0 && strstr(nfc_last_error(m), "temperature"));
    CHECK(nfc_log_prob(m, 0, x, x, lp) == 0);
    nfc_free(m);
}

static double relerr(double a, double b) { return fabs(a - b) / (1.0 + fabs(b)); }

/* JIT (dtype, width) against the interpreter on every program */
static void compare(const char *path, int dtype, int vw) {
    double tol = dtype == NFC_F64 ? 1e-12 : 1e-5;
    nfc_model *ref = compile(path, NFC_BACKEND_INTERP, NFC_F64, 0, 0.4);
    nfc_model *jit = compile(path, NFC_BACKEND_JIT, dtype, vw, 0.4);
    CHECK(ref && jit, "%s", path);
    if (!ref || !jit) { nfc_free(ref); nfc_free(jit); return; }
    int D = nfc_model_dim(ref), C = nfc_model_context_dim(ref);
    static const int64_t sizes[] = { 1, 7, 16, 17, 33, 100 };
    for (int si = 0; si < 6; si++) {
        int64_t n = sizes[si];
        double *x = malloc(sizeof(double) * n * D), *c = malloc(sizeof(double) * n * (C + 1));
        double *z1 = malloc(sizeof(double) * n * D), *z2 = malloc(sizeof(double) * n * D);
        double *l1 = malloc(sizeof(double) * n), *l2 = malloc(sizeof(double) * n);
        uint64_t s = 1234 + (uint64_t)n;
        for (int64_t i = 0; i < n * D; i++) { s = s * 6364136223846793005ull + 1; x[i] = ((double)(s >> 11) * 0x1p-53) * 4 - 2; }
        for (int64_t i = 0; i < n * C; i++) c[i] = (i % 3) == 0;
        /* values rounded to f32 first, so both see the same inputs */
        if (dtype == NFC_F32) for (int64_t i = 0; i < n * D; i++) x[i] = (float)x[i];
        double worst = 0;
        nfc_log_prob(ref, n, x, C ? c : NULL, l1);
        CHECK(nfc_log_prob(jit, n, x, C ? c : NULL, l2) == 0, "%s", nfc_last_error(jit));
        for (int64_t i = 0; i < n; i++) worst = fmax(worst, relerr(l2[i], l1[i]));
        nfc_forward(ref, n, x, C ? c : NULL, z1, l1);
        nfc_forward(jit, n, x, C ? c : NULL, z2, l2);
        for (int64_t i = 0; i < n * D; i++) worst = fmax(worst, relerr(z2[i], z1[i]));
        for (int64_t i = 0; i < n; i++) worst = fmax(worst, relerr(l2[i], l1[i]));
        nfc_inverse(ref, n, x, C ? c : NULL, z1, l1);
        nfc_inverse(jit, n, x, C ? c : NULL, z2, l2);
        for (int64_t i = 0; i < n * D; i++) worst = fmax(worst, relerr(z2[i], z1[i]));
        for (int64_t i = 0; i < n; i++) worst = fmax(worst, relerr(l2[i], l1[i]));
        nfc_sample(ref, n, 77, 0.8, C ? c : NULL, z1, l1);
        nfc_sample(jit, n, 77, 0.8, C ? c : NULL, z2, l2);
        for (int64_t i = 0; i < n * D; i++) worst = fmax(worst, relerr(z2[i], z1[i]));
        for (int64_t i = 0; i < n; i++) worst = fmax(worst, relerr(l2[i], l1[i]));
        CHECK(worst <= tol, "%s %s width %d n=%lld: max relative difference %g", path, dtype == NFC_F64 ? "f64" : "f32", vw,
              (long long)n, worst);
        free(x); free(c); free(z1); free(z2); free(l1); free(l2);
    }
    nfc_free(ref);
    nfc_free(jit);
}

/* the default configuration (f32, native width) at -O2, the others at -O0 (compiling is
 * most of this test's time; the code paths per dtype and width are the same) */
TEST(jit_equals_interpreter) {
    for (int e = 0; e < NEX; e++) {
        opt_level = 2;
        compare(examples[e], NFC_F32, 0);
        opt_level = 0;
        compare(examples[e], NFC_F32, 1);
        compare(examples[e], NFC_F64, 0);
        compare(examples[e], NFC_F64, 1);
    }
    opt_level = 2;
}

/* The gradient program's large dense products take blocks of 16 outputs (cg.c, emit_matmul:
 * at least 128 inputs). Widths 130 -> 140 -> 24 give 16-blocks with remainders of 12 and 8
 * outputs; the JIT's loss and gradient equal the interpreter's (f64 1e-12, f32 2e-4 of the
 * largest gradient entry). */
TEST(wide_product_gradients) {
    static const char *src = "flow wide {\n  input x: f32[24]\n  base normal\n"
                             "  affine_coupling mask=alternate net=mlp(130, 140)\n  reverse\n"
                             "  affine_coupling mask=alternate net=mlp(130, 140)\n}\n";
    enum { N = 37 };
    double x[N * 24];
    for (int i = 0; i < N * 24; i++) x[i] = sin(0.7 * i) * 1.3;
    for (int dt = 0; dt < 2; dt++) {
        nfc_model *m[2];
        for (int k = 0; k < 2; k++) {
            nfc_options o;
            nfc_options_default(&o);
            o.backend = k ? NFC_BACKEND_INTERP : NFC_BACKEND_JIT;
            o.dtype = k || dt ? NFC_F64 : NFC_F32;
            o.init_scale = 0.5;
            o.init_seed = 5;
            m[k] = nfc_compile_string("wide.flow", src, &o, NULL);
            CHECK(m[k] != NULL);
        }
        if (!m[0] || !m[1]) { nfc_free(m[0]); nfc_free(m[1]); continue; }
        int64_t P = nfc_param_total(m[0]);
        double loss[2], *g[2] = { malloc(sizeof(double) * (size_t)P), malloc(sizeof(double) * (size_t)P) };
        for (int k = 0; k < 2; k++) CHECK(nfc_loss_grad(m[k], N, x, NULL, &loss[k], g[k]) == 0, "%s", nfc_last_error(m[k]));
        double gmax = 0, worst = 0;
        for (int64_t i = 0; i < P; i++) gmax = fmax(gmax, fabs(g[1][i]));
        for (int64_t i = 0; i < P; i++) worst = fmax(worst, fabs(g[0][i] - g[1][i]));
        double tol = dt ? 1e-12 : 2e-4;
        CHECK(gmax > 1e-3 && worst <= tol * gmax, "%s: gradients differ by %g of %g", dt ? "f64" : "f32", worst, gmax);
        CHECK(fabs(loss[0] - loss[1]) <= tol * fmax(1, fabs(loss[1])), "loss %.17g vs %.17g", loss[0], loss[1]);
        free(g[0]); free(g[1]);
        nfc_free(m[0]);
        nfc_free(m[1]);
    }
}

/* inverse(forward(x)) = x through the JIT: 1e-5 in f32, 1e-10 in f64, on inputs from the
 * data range (samples of the model itself, so each example is inside its domain) */
TEST(jit_round_trip) {
    for (int e = 0; e < NEX; e++) {
        for (int dt = NFC_F32; dt <= NFC_F64; dt++) {
            nfc_model *m = compile(examples[e], NFC_BACKEND_JIT, dt, 0, 0.4);
            CHECK(m != NULL, "%s", examples[e]);
            if (!m) continue;
            enum { N = 500 };
            int D = nfc_model_dim(m), C = nfc_model_context_dim(m);
            double *x = malloc(sizeof(double) * N * D), *z = malloc(sizeof(double) * N * D), *x2 = malloc(sizeof(double) * N * D);
            double *c = malloc(sizeof(double) * N * (C + 1)), *l1 = malloc(sizeof(double) * N), *l2 = malloc(sizeof(double) * N);
            for (int i = 0; i < N * C; i++) c[i] = (i % 2);
            CHECK(nfc_sample(m, N, 9, 1.0, C ? c : NULL, x, NULL) == 0);
            if (dt == NFC_F32) for (int i = 0; i < N * D; i++) x[i] = (float)x[i];
            CHECK(nfc_forward(m, N, x, C ? c : NULL, z, l1) == 0);
            CHECK(nfc_inverse(m, N, z, C ? c : NULL, x2, l2) == 0);
            double worst = 0, ldw = 0;
            for (int i = 0; i < N * D; i++) worst = fmax(worst, fabs(x2[i] - x[i]));
            for (int i = 0; i < N; i++) ldw = fmax(ldw, fabs(l1[i] + l2[i]) / (1 + fabs(l1[i])));
            CHECK(worst <= (dt == NFC_F32 ? 1e-5 : 1e-10), "%s %s: max |inverse(forward(x)) - x| = %g", examples[e],
                  dt == NFC_F32 ? "f32" : "f64", worst);
            CHECK(ldw <= (dt == NFC_F32 ? 1e-5 : 1e-12), "%s: inverse logdet is not minus forward logdet (%g)", examples[e], ldw);
            free(x); free(z); free(x2); free(c); free(l1); free(l2);
            nfc_free(m);
        }
    }
}

TEST(sampling_is_reproducible) {
    nfc_model *m = compile("examples/moons.flow", NFC_BACKEND_JIT, NFC_F32, 0, 0.3);
    CHECK(m != NULL);
    if (!m) return;
    enum { N = 9000 };
    double *a = malloc(sizeof(double) * N * 2), *b = malloc(sizeof(double) * N * 2);
    CHECK(nfc_sample(m, N, 5, 1.0, NULL, a, NULL) == 0);
    CHECK(nfc_sample(m, N, 5, 1.0, NULL, b, NULL) == 0);
    CHECK(memcmp(a, b, sizeof(double) * N * 2) == 0, "same seed, different samples");
    CHECK(nfc_sample(m, N, 6, 1.0, NULL, b, NULL) == 0);
    CHECK(memcmp(a, b, sizeof(double) * N * 2) != 0, "different seeds, same samples");
    /* temperature 0 gives the image of the base's mode */
    CHECK(nfc_sample(m, 3, 5, 0.0, NULL, b, NULL) == 0);
    CHECK(b[0] == b[2] && b[1] == b[3]);
    free(a);
    free(b);
    nfc_free(m);
}

/* threads split a batch into row ranges: the results are the same bits for any count, for
 * every program, f32 and f64, including a context and outputs not asked for */
TEST(threads_do_not_change_results) {
    enum { N = 9001 };
    for (int dt = NFC_F32; dt <= NFC_F64; dt++) {
        for (int e = 0; e < 2; e++) {
            const char *path = e ? "examples/cmoons.flow" : "examples/maf.flow";
            nfc_model *m[3];
            static const int threads[3] = { 1, 2, 3 };
            for (int k = 0; k < 3; k++) {
                nfc_options o;
                nfc_options_default(&o);
                o.dtype = dt;
                o.init_scale = 0.3;
                o.threads = threads[k];
                m[k] = nfc_compile_file(path, &o, NULL);
                CHECK(m[k] != NULL, "%s", path);
            }
            if (!m[0] || !m[1] || !m[2]) { for (int k = 0; k < 3; k++) nfc_free(m[k]); continue; }
            int D = nfc_model_dim(m[0]), C = nfc_model_context_dim(m[0]);
            double *x = malloc(sizeof(double) * N * D), *c = malloc(sizeof(double) * N * (C + 1));
            double *o[3], *l[3];
            for (int i = 0; i < N * D; i++) x[i] = sin(0.1 * i);
            for (int i = 0; i < N * C; i++) c[i] = i % 2;
            for (int k = 0; k < 3; k++) {
                o[k] = malloc(sizeof(double) * N * D);
                l[k] = malloc(sizeof(double) * N);
            }
            for (int prog = 0; prog < 3; prog++) {
                for (int k = 0; k < 3; k++) {
                    int rc = prog == 0 ? nfc_forward(m[k], N, x, C ? c : NULL, o[k], NULL)
                           : prog == 1 ? nfc_inverse(m[k], N, x, C ? c : NULL, o[k], l[k])
                                       : nfc_sample(m[k], N, 11, 0.9, C ? c : NULL, o[k], l[k]);
                    CHECK(rc == 0, "%s", nfc_last_error(m[k]));
                }
                for (int k = 1; k < 3; k++) {
                    CHECK(!memcmp(o[0], o[k], sizeof(double) * N * D), "%s program %d: %d threads differ from 1", path, prog, threads[k]);
                    if (prog > 0) CHECK(!memcmp(l[0], l[k], sizeof(double) * N), "%s program %d: %d threads (lp)", path, prog, threads[k]);
                }
            }
            for (int k = 0; k < 3; k++) { free(o[k]); free(l[k]); nfc_free(m[k]); }
            free(x);
            free(c);
        }
    }
}

static int count_in_file(const char *path, const char *s) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, s)) n++;
    fclose(f);
    return n;
}

/* nfc_options.no_fuse: log p and the loss gradient agree with the fused code (f64, 1e-12
 * relative: only FMA contraction differs), and the AOT build honors it (its IR has more
 * stores: every intermediate value goes through the workspace) */
TEST(no_fuse_option) {
    for (int e = 0; e < 2; e++) {
        const char *path = e ? "examples/maf.flow" : "examples/moons.flow";
        nfc_model *m[2];
        for (int k = 0; k < 2; k++) {
            nfc_options o;
            nfc_options_default(&o);
            o.dtype = NFC_F64;
            o.init_scale = 0.3;
            o.no_fuse = k;
            m[k] = nfc_compile_file(path, &o, NULL);
            CHECK(m[k] != NULL, "%s", path);
        }
        if (!m[0] || !m[1]) { nfc_free(m[0]); nfc_free(m[1]); continue; }
        enum { N = 333 };
        int D = nfc_model_dim(m[0]);
        int64_t P = nfc_param_total(m[0]);
        double *x = malloc(sizeof(double) * N * D), lp[2][N], loss[2], *g[2];
        for (int i = 0; i < N * D; i++) x[i] = sin(0.37 * i + e);
        for (int k = 0; k < 2; k++) {
            g[k] = malloc(sizeof(double) * (size_t)P);
            CHECK(nfc_log_prob(m[k], N, x, NULL, lp[k]) == 0, "%s", nfc_last_error(m[k]));
            CHECK(nfc_loss_grad(m[k], N, x, NULL, &loss[k], g[k]) == 0, "%s", nfc_last_error(m[k]));
        }
        double worst = 0;
        for (int i = 0; i < N; i++) worst = fmax(worst, fabs(lp[0][i] - lp[1][i]) / fmax(1, fabs(lp[1][i])));
        CHECK(worst <= 1e-12, "%s: log p fused and not differ by %g", path, worst);
        CHECK(fabs(loss[0] - loss[1]) <= 1e-12 * fmax(1, fabs(loss[1])), "%s: loss %.17g vs %.17g", path, loss[0], loss[1]);
        worst = 0;
        for (int64_t i = 0; i < P; i++) worst = fmax(worst, fabs(g[0][i] - g[1][i]) / fmax(1, fabs(g[1][i])));
        CHECK(worst <= 1e-11, "%s: gradients fused and not differ by %g", path, worst);
        char ll[2][64];
        int stores[2];
        for (int k = 0; k < 2; k++) {
            snprintf(ll[k], sizeof ll[k], "/tmp/nfc_api_fuse_%d_%d.ll", (int)getpid(), k);
            CHECK(nfc_emit(m[k], ll[k], NFC_EMIT_LLVM) == 0, "%s", nfc_last_error(m[k]));
            stores[k] = count_in_file(ll[k], " store ");
            unlink(ll[k]);
        }
        CHECK(stores[0] > 0 && stores[0] < stores[1], "%s: %d stores in the fused IR, %d without fusion", path, stores[0],
              stores[1]);
        free(x); free(g[0]); free(g[1]);
        nfc_free(m[0]);
        nfc_free(m[1]);
    }
}

/* --recompute=inverse (nfc_options.recompute): the JIT's training program with each layer's
 * input rebuilt by its inverse gives the loss and gradient of the one that keeps the forward
 * values: f64 to rounding, f32 to float accuracy; and the interpreter agrees */
/* nfc_worker_workspace_bytes: the part a tile keeps for the backward pass is the same at 5
 * and 20 layers with NFC_RECOMPUTE_INVERSE and grows with depth without it; the rest (the
 * gradients' accumulators) grows with the parameters either way; the interpreter has none. */
TEST(worker_workspace_bytes) {
    int64_t tot[2][2], act[2][2], P[2];
    for (int d = 0; d < 2; d++)
        for (int rec = 0; rec < 2; rec++) {
            char src[512];
            snprintf(src, sizeof src,
                     "flow deep {\n  input x: f32[8]\n  base normal\n  repeat %d {\n"
                     "    affine_coupling mask=alternate net=mlp(64, 64)\n    reverse\n  }\n}\n", d ? 20 : 5);
            nfc_options o;
            nfc_options_default(&o);
            o.recompute = rec ? NFC_RECOMPUTE_INVERSE : NFC_RECOMPUTE_NONE;
            nfc_model *m = nfc_compile_string("deep.flow", src, &o, NULL);
            CHECK(m != NULL, "compile");
            if (!m) return;
            P[d] = nfc_param_total(m);
            nfc_worker *w = nfc_worker_new(m);
            CHECK(w != NULL, "%s", nfc_last_error(m));
            tot[d][rec] = nfc_worker_workspace_bytes(w, &act[d][rec]);
            CHECK(act[d][rec] > 0 && tot[d][rec] > act[d][rec], "depth %d, recompute %d: %lld of %lld", d ? 20 : 5, rec,
                  (long long)act[d][rec], (long long)tot[d][rec]);
            nfc_worker_free(w);
            nfc_free(m);
        }
    printf("    worker workspace, activations (total) at 5 / 20 layers: kept %lld (%lld) / %lld (%lld), "
           "recomputed %lld (%lld) / %lld (%lld) bytes\n", (long long)act[0][0], (long long)tot[0][0], (long long)act[1][0],
           (long long)tot[1][0], (long long)act[0][1], (long long)tot[0][1], (long long)act[1][1], (long long)tot[1][1]);
    CHECK(act[1][1] == act[0][1], "recomputed: %lld at 5 layers, %lld at 20", (long long)act[0][1], (long long)act[1][1]);
    /* kept: at least one 64-wide f32 activation per added layer and row of a tile */
    CHECK(act[1][0] - act[0][0] >= 15 * 64 * 4, "kept: %lld at 5 layers, %lld at 20", (long long)act[0][0], (long long)act[1][0]);
    for (int rec = 0; rec < 2; rec++)
        CHECK((tot[1][rec] - act[1][rec]) - (tot[0][rec] - act[0][rec]) >= 4 * (P[1] - P[0]),
              "accumulators: %lld -> %lld bytes for %lld -> %lld parameters", (long long)(tot[0][rec] - act[0][rec]),
              (long long)(tot[1][rec] - act[1][rec]), (long long)P[0], (long long)P[1]);
    nfc_options o;
    nfc_options_default(&o);
    o.backend = NFC_BACKEND_INTERP;
    nfc_model *m = nfc_compile_file("examples/moons.flow", &o, NULL);
    CHECK(m != NULL, "moons");
    if (!m) return;
    nfc_worker *w = nfc_worker_new(m);
    int64_t a = -1;
    CHECK(w && nfc_worker_workspace_bytes(w, &a) == 0 && a == 0, "interpreter: %lld", (long long)a);
    CHECK(nfc_worker_workspace_bytes(NULL, NULL) == -1, "NULL worker");
    nfc_worker_free(w);
    nfc_free(m);
}

TEST(recompute_option) {
    static const char *const paths[] = { "examples/moons.flow", "examples/maf.flow", "examples/glow_dense.flow", "examples/custom.flow" };
    for (int e = 0; e < 4; e++) {
        for (int f32 = 0; f32 < 2; f32++) {
            nfc_model *m[3];
            for (int k = 0; k < 3; k++) {
                nfc_options o;
                nfc_options_default(&o);
                o.dtype = f32 ? NFC_F32 : NFC_F64;
                o.init_scale = 0.3;
                o.recompute = k ? NFC_RECOMPUTE_INVERSE : NFC_RECOMPUTE_NONE;
                if (k == 2) o.backend = NFC_BACKEND_INTERP;
                m[k] = nfc_compile_file(paths[e], &o, NULL);
                CHECK(m[k] != NULL, "%s", paths[e]);
            }
            if (!m[0] || !m[1] || !m[2]) { for (int k = 0; k < 3; k++) nfc_free(m[k]); continue; }
            enum { N = 300 };
            int D = nfc_model_dim(m[0]);
            int64_t P = nfc_param_total(m[0]);
            double *x = malloc(sizeof(double) * N * D), loss[3], *g[3];
            for (int i = 0; i < N * D; i++) x[i] = sin(0.37 * i + e);
            for (int k = 0; k < 3; k++) {
                g[k] = malloc(sizeof(double) * (size_t)P);
                CHECK(nfc_loss_grad(m[k], N, x, NULL, &loss[k], g[k]) == 0, "%s", nfc_last_error(m[k]));
            }
            /* relative to the gradient's largest entry (entries near 0 have no relative
             * accuracy in f32); measured: f64 below 1e-15, f32 below 4e-7 */
            double tol = f32 ? 4e-6 : 1e-12, scale = 0;
            for (int64_t i = 0; i < P; i++) scale = fmax(scale, fabs(g[0][i]));
            for (int k = 1; k < 3; k++) {
                CHECK(fabs(loss[k] - loss[0]) <= tol * fmax(1, fabs(loss[0])), "%s %s: loss %.17g vs %.17g", paths[e], f32 ? "f32" : "f64",
                      loss[k], loss[0]);
                double worst = 0;
                for (int64_t i = 0; i < P; i++) worst = fmax(worst, fabs(g[k][i] - g[k == 2 ? 1 : 0][i]) / fmax(1, scale));
                CHECK(worst <= tol, "%s %s: %s gradients differ by %g (largest entry %g)", paths[e], f32 ? "f32" : "f64",
                      k == 2 ? "interpreter and JIT, recomputed," : "recomputed and kept", worst, scale);
            }
            free(x);
            for (int k = 0; k < 3; k++) { free(g[k]); nfc_free(m[k]); }
        }
    }
}

/* NFC_PERF_MAP and NFC_SEGMENT_NODES (docs/codegen.md, "Profiling compiled code"): one
 * node per segment, and every segment function in /tmp/perf-<pid>.map with the address the
 * JIT gave it, named after its node */
TEST(perf_map) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", (int)getpid());
    unlink(path);
    setenv("NFC_PERF_MAP", "1", 1);
    setenv("NFC_SEGMENT_NODES", "1", 1);
    nfc_model *m = compile("examples/moons.flow", NFC_BACKEND_JIT, NFC_F32, 0, 0.05);
    unsetenv("NFC_PERF_MAP");
    unsetenv("NFC_SEGMENT_NODES");
    CHECK(m != NULL);
    double x[4] = { 0.1, 0.2, -0.3, 0.4 }, lp[2];
    CHECK(m && nfc_log_prob(m, 2, x, NULL, lp) == 0 && isfinite(lp[0]) && isfinite(lp[1]));
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "no %s", path);
    int lines = 0, seg1 = 0, matmul = 0, bad = 0;
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long a, sz;
        char name[400];
        if (sscanf(line, "%llx %llx %399s", &a, &sz, name) != 3 || a == 0 || sz == 0) { bad++; continue; }
        lines++;
        seg1 += strstr(name, "_log_prob.seg1.n") != NULL;
        matmul += strstr(name, ".matmul") != NULL || strstr(name, ".add") != NULL;
    }
    if (f) fclose(f);
    unlink(path);
    CHECK(bad == 0 && lines >= 10 && seg1 == 1 && matmul > 0, "%d lines (%d bad), seg1 %d, products %d", lines, bad, seg1,
          matmul);
    nfc_free(m);
}

/* MADE products skip the input rows a block of outputs has no mask entry for (cg.c,
 * mm_mask_runs): at D = 32 they are taken (the IR has their run tables), and every pass,
 * sampling's loops and the gradient's transposed products included, equals the interpreter's
 * dense products */
/* The MAF inverse by degree (derive.c, maf_inverse_steps: unbatched gathers of weight
 * columns, scatters of each step's units) through the JIT against the interpreter, with a
 * context, narrow and wide hidden layers, sigmoid scaling, f64 and f32, vector widths. */
/* A tile's rows moved between the user's row-major buffers and feature vectors: with all V
 * rows present and D >= V, contiguous row loads/stores and a transpose in registers (the
 * last block overlapping when V does not divide D); else masked gathers/scatters. A flow
 * that only permutes makes every value exact: forward must give the reversed rows and
 * inverse the rows back, bit for bit, for widths around the vector width and row counts
 * around a tile (and a tile pair), f32 and f64, native width and 4. */
TEST(rows_transposed) {
    static const int Ds[] = { 3, 8, 15, 16, 17, 35, 64 }, Ns[] = { 1, 15, 16, 17, 33, 100 };
    for (size_t a = 0; a < sizeof Ds / sizeof Ds[0]; a++) {
        int D = Ds[a];
        char src[160];
        snprintf(src, sizeof src, "flow perm {\n  input x: f32[%d]\n  base normal\n  reverse\n  permute seed=5\n}\n", D);
        for (int dt = 0; dt < 2; dt++)
            for (int vw = 0; vw <= 4; vw += 4) {
                nfc_options o;
                nfc_options_default(&o);
                o.dtype = dt ? NFC_F64 : NFC_F32;
                o.vector_width = vw;
                o.threads = 1;
                nfc_diagnostics *d = NULL;
                nfc_model *m = nfc_compile_string("perm.flow", src, &o, &d);
                nfc_model *r = nfc_compile_string("perm.flow", src, &(nfc_options){ .dtype = NFC_F64, .backend = NFC_BACKEND_INTERP,
                                                                                  .opt_level = 2, .threads = 1 }, NULL);
                if (!m) nfc_diagnostics_print(d, stdout, 0);
                nfc_diagnostics_free(d);
                CHECK(m && r);
                if (!m || !r) { nfc_free(m); nfc_free(r); continue; }
                for (size_t b = 0; b < sizeof Ns / sizeof Ns[0]; b++) {
                    int n = Ns[b];
                    double *x = malloc(sizeof(double) * (size_t)(n * D)), *z = malloc(sizeof(double) * (size_t)(n * D));
                    double *zr = malloc(sizeof(double) * (size_t)(n * D)), *xb = malloc(sizeof(double) * (size_t)(n * D));
                    double ld[100], ldr[100];
                    for (int i = 0; i < n * D; i++) x[i] = (double)(i % 1000) + 0.25 * (i / 1000) - 7;   /* exact in f32 */
                    CHECK(nfc_forward(m, n, x, NULL, z, ld) == 0, "%s", nfc_last_error(m));
                    CHECK(nfc_forward(r, n, x, NULL, zr, ldr) == 0, "%s", nfc_last_error(r));
                    CHECK(nfc_inverse(m, n, z, NULL, xb, ld) == 0, "%s", nfc_last_error(m));
                    int bad = 0, badi = 0;
                    for (int i = 0; i < n * D; i++) { bad += z[i] != zr[i]; badi += xb[i] != x[i]; }
                    CHECK(bad == 0 && badi == 0, "D=%d n=%d %s width %d: %d forward values differ from the interpreter's, %d "
                          "inverse values from x", D, n, dt ? "f64" : "f32", vw, bad, badi);
                    free(x); free(z); free(zr); free(xb);
                }
                nfc_free(m);
                nfc_free(r);
            }
    }
}

TEST(maf_steps_jit) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/nfc_api_cmaf_%d.flow", (int)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("flow cmaf {\n  input x: f32[6]\n  context c: f32[3]\n  maf net=made(40, 3, act=elu)\n  reverse\n"
          "  maf net=made(24) scaling=sigmoid\n}\n", f);
    fclose(f);
    compare(path, NFC_F64, 0);
    compare(path, NFC_F32, 0);
    compare(path, NFC_F32, 4);
    compare(path, NFC_F64, 1);
    unlink(path);
}

TEST(masked_products) {
    char path[128], ll[128];
    snprintf(path, sizeof path, "/tmp/nfc_api_maf32_%d.flow", (int)getpid());
    snprintf(ll, sizeof ll, "/tmp/nfc_api_maf32_%d.ll", (int)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("flow maf32 {\n  input x: f32[32]\n  maf net=made(64, 64)\n  reverse\n  maf net=made(48, act=tanh) scaling=exp\n}\n", f);
    fclose(f);
    compare(path, NFC_F64, 0);
    compare(path, NFC_F32, 0);
    nfc_model *m[2] = { compile(path, NFC_BACKEND_JIT, NFC_F64, 0, 0.4), compile(path, NFC_BACKEND_INTERP, NFC_F64, 0, 0.4) };
    CHECK(m[0] && m[1]);
    if (m[0] && m[1]) {
        CHECK(nfc_emit(m[0], ll, NFC_EMIT_LLVM) == 0, "%s", nfc_last_error(m[0]));
        int tables = count_in_file(ll, "@mm_runs");
        CHECK(tables >= 6, "%d run tables in the IR: the masked products were not taken", tables);
        unlink(ll);
        enum { N = 40 };
        int64_t P = nfc_param_total(m[0]);
        double x[N * 32], loss[2], *g[2] = { malloc(sizeof(double) * (size_t)P), malloc(sizeof(double) * (size_t)P) };
        for (int i = 0; i < N * 32; i++) x[i] = sin(0.71 * i);
        for (int k = 0; k < 2; k++) CHECK(nfc_loss_grad(m[k], N, x, NULL, &loss[k], g[k]) == 0, "%s", nfc_last_error(m[k]));
        double worst = 0, scale = 0;
        for (int64_t i = 0; i < P; i++) scale = fmax(scale, fabs(g[1][i]));
        for (int64_t i = 0; i < P; i++) worst = fmax(worst, fabs(g[0][i] - g[1][i]) / fmax(1, scale));
        CHECK(fabs(loss[0] - loss[1]) <= 1e-12 * fmax(1, fabs(loss[1])) && worst <= 1e-12, "loss %.17g vs %.17g, gradients differ by %g",
              loss[0], loss[1], worst);
        free(g[0]); free(g[1]);
    }
    nfc_free(m[0]);
    nfc_free(m[1]);
    unlink(path);
}

int main(void) {
    RUN(errors_as_data);
    RUN(parameters_and_weights);
    RUN(params_update_in_place);
    RUN(bad_calls_are_errors);
    RUN(jit_equals_interpreter);
    RUN(wide_product_gradients);
    RUN(jit_round_trip);
    RUN(sampling_is_reproducible);
    RUN(threads_do_not_change_results);
    RUN(no_fuse_option);
    RUN(recompute_option);
    RUN(worker_workspace_bytes);
    RUN(masked_products);
    RUN(rows_transposed);
    RUN(maf_steps_jit);
    RUN(perf_map);
    return t_done();
}
