/* tests/unit/test_aot.c: ahead-of-time libraries (nfc_aot_build, compiler/aot.c).
 * - for every example, f32 and f64: the .so built with embedded weights, loaded with
 *   dlopen, equals the JIT on log_prob, forward, inverse and sample (1e-6 relative)
 * - without embedded weights: every call fails with NFC_AOT_ENOWEIGHTS until
 *   load_weights(_file) succeeds; then the results equal the embedded library's bit for bit;
 *   truncated, corrupt, non-finite and other-model files are refused and change nothing
 * - argument checks: NULL or misaligned workspace, NULL pointers, n < 0, bad temperature
 * - the library needs no LLVM and no nfc library (its DT_NEEDED entries)
 * - --no-sleef (built-in polynomial math) matches the JIT within f32 tolerance */
#include "t.h"

#include <dlfcn.h>
#include <pthread.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nfc.h"

static const char *examples[] = { "examples/moons.flow", "examples/maf.flow", "examples/glow_dense.flow",
                                  "examples/cmoons.flow", "examples/custom.flow" };
#define NEX 5

static char dir[64];

static nfc_model *compile(const char *path, int dtype, double init_scale, uint64_t seed) {
    nfc_options o;
    nfc_options_default(&o);
    o.dtype = dtype;
    o.init_scale = init_scale;
    o.init_seed = seed;
    nfc_diagnostics *d = NULL;
    nfc_model *m = nfc_compile_file(path, &o, &d);
    if (!m) nfc_diagnostics_print(d, stdout, 0);
    nfc_diagnostics_free(d);
    return m;
}

typedef int64_t (*ws_fn)(void);
typedef int (*lp_fn)(int64_t, const void *, void *, void *);
typedef int (*lpc_fn)(int64_t, const void *, const void *, void *, void *);
typedef int (*fw_fn)(int64_t, const void *, void *, void *, void *);
typedef int (*fwc_fn)(int64_t, const void *, const void *, void *, void *, void *);
typedef int (*sa_fn)(int64_t, uint64_t, double, void *, void *, void *);
typedef int (*sac_fn)(int64_t, uint64_t, double, const void *, void *, void *, void *);
typedef int (*ld_fn)(const void *, size_t);
typedef int (*ldf_fn)(const char *);
typedef int (*ok_fn)(void);

typedef struct {
    void *h;
    int   C, f64;
    void *ws, *lp, *fw, *inv, *sa, *ld, *ldf, *ok;
} lib;

static void *sym(void *h, const char *pre, const char *what) {
    char name[128];
    snprintf(name, sizeof name, "%s_%s", pre, what);
    return dlsym(h, name);
}

static int lib_open(lib *L, const char *so, const char *pre, int C, int f64) {
    memset(L, 0, sizeof *L);
    L->h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!L->h) { printf("    dlopen %s: %s\n", so, dlerror()); return -1; }
    L->C = C;
    L->f64 = f64;
    L->ws = sym(L->h, pre, "workspace_size");
    L->lp = sym(L->h, pre, "log_prob");
    L->fw = sym(L->h, pre, "forward");
    L->inv = sym(L->h, pre, "inverse");
    L->sa = sym(L->h, pre, "sample");
    L->ld = sym(L->h, pre, "load_weights");
    L->ldf = sym(L->h, pre, "load_weights_file");
    L->ok = sym(L->h, pre, "weights_loaded");
    return L->ws && L->lp && L->fw && L->inv && L->sa && L->ok ? 0 : -1;
}

/* calls through the C ABI with doubles in and out (converting for f32 libraries) */
typedef struct { void *p; size_t n; int f64; } buf;
static buf bin(const double *v, size_t n, int f64) {
    buf b = { malloc((f64 ? 8 : 4) * (n ? n : 1)), n, f64 };
    for (size_t i = 0; i < n && v; i++) {
        if (f64) ((double *)b.p)[i] = v[i];
        else ((float *)b.p)[i] = (float)v[i];
    }
    return b;
}
static void bout(buf b, double *v) {
    for (size_t i = 0; i < b.n; i++) v[i] = b.f64 ? ((double *)b.p)[i] : ((float *)b.p)[i];
    free(b.p);
}

/* prog 0 log_prob, 1 forward, 2 inverse, 3 sample */
static int lib_call(lib *L, int prog, int64_t n, int D, const double *x, const double *c, double *o0, double *o1,
                    void *ws) {
    buf bx = bin(x, (size_t)(n * D), L->f64), bc = bin(c, c ? (size_t)(n * L->C) : 0, L->f64);
    buf b0 = bin(NULL, (size_t)(n * (prog == 0 ? 1 : D)), L->f64), b1 = bin(NULL, (size_t)n, L->f64);
    int rc;
    if (prog == 0) rc = L->C ? ((lpc_fn)L->lp)(n, bx.p, bc.p, b0.p, ws) : ((lp_fn)L->lp)(n, bx.p, b0.p, ws);
    else if (prog < 3) {
        void *f = prog == 1 ? L->fw : L->inv;
        rc = L->C ? ((fwc_fn)f)(n, bx.p, bc.p, b0.p, b1.p, ws) : ((fw_fn)f)(n, bx.p, b0.p, b1.p, ws);
    } else {
        rc = L->C ? ((sac_fn)L->sa)(n, 77, 0.8, bc.p, b0.p, b1.p, ws) : ((sa_fn)L->sa)(n, 77, 0.8, b0.p, b1.p, ws);
    }
    free(bx.p);
    free(bc.p);
    bout(b0, o0);
    bout(b1, o1);
    return rc;
}

static double relerr(double a, double b) { return fabs(a - b) / (1.0 + fabs(b)); }

static void inputs(int64_t n, int D, int C, double *x, double *c) {
    uint64_t s = 99;
    for (int64_t i = 0; i < n * D; i++) { s = s * 6364136223846793005ull + 1; x[i] = (float)(((double)(s >> 11) * 0x1p-53) * 4 - 2); }
    for (int64_t i = 0; i < n * C; i++) c[i] = (i % 3) == 0;
}

/* max relative difference between the library and the model over all four programs */
static double lib_vs_model(lib *L, nfc_model *m, int64_t n, int *rc_out) {
    int D = nfc_model_dim(m), C = nfc_model_context_dim(m);
    double *x = malloc(sizeof(double) * n * D), *c = malloc(sizeof(double) * n * (C + 1));
    double *a0 = malloc(sizeof(double) * n * D), *a1 = malloc(sizeof(double) * n);
    double *b0 = malloc(sizeof(double) * n * D), *b1 = malloc(sizeof(double) * n);
    inputs(n, D, C, x, c);
    int64_t wsz = ((ws_fn)L->ws)();
    void *ws = aligned_alloc(64, (size_t)wsz);
    double worst = 0;
    int rc = 0;
    for (int prog = 0; prog < 4; prog++) {
        rc |= lib_call(L, prog, n, D, x, C ? c : NULL, a0, a1, ws);
        if (prog == 0) nfc_log_prob(m, n, x, C ? c : NULL, b0);
        if (prog == 1) nfc_forward(m, n, x, C ? c : NULL, b0, b1);
        if (prog == 2) nfc_inverse(m, n, x, C ? c : NULL, b0, b1);
        if (prog == 3) nfc_sample(m, n, 77, 0.8, C ? c : NULL, b0, b1);
        int64_t n0 = prog == 0 ? n : n * D;
        for (int64_t i = 0; i < n0; i++) worst = fmax(worst, relerr(a0[i], b0[i]));
        for (int64_t i = 0; prog > 0 && i < n; i++) worst = fmax(worst, relerr(a1[i], b1[i]));
    }
    free(ws);
    free(x); free(c); free(a0); free(a1); free(b0); free(b1);
    *rc_out = rc;
    return worst;
}

static int build(nfc_model *m, const char *so, int embed, int no_sleef, const char *prefix) {
    nfc_aot_options o;
    nfc_aot_options_default(&o);
    o.embed_weights = embed;
    o.no_sleef = no_sleef;
    o.prefix = prefix;
    int rc = nfc_aot_build(m, so, &o);
    if (rc) printf("    %s\n", nfc_last_error(m));
    return rc;
}

TEST(aot_equals_jit) {
    for (int e = 0; e < NEX; e++) {
        for (int dt = NFC_F32; dt <= NFC_F64; dt++) {
            nfc_model *m = compile(examples[e], dt, 0.4, 5);
            CHECK(m != NULL, "%s", examples[e]);
            if (!m) continue;
            char so[128];
            snprintf(so, sizeof so, "%s/e%d_%d.so", dir, e, dt);
            CHECK(build(m, so, 1, 0, "model") == 0, "%s", examples[e]);
            lib L;
            if (lib_open(&L, so, "model", nfc_model_context_dim(m), dt == NFC_F64) == 0) {
                CHECK(((ok_fn)L.ok)() == 1);
                CHECK(L.ld == NULL, "embedded weights: no load_weights");
                static const int64_t sizes[] = { 1, 17, 100 };
                for (int k = 0; k < 3; k++) {
                    int rc;
                    double w = lib_vs_model(&L, m, sizes[k], &rc);
                    CHECK(rc == 0);
                    CHECK(w <= 1e-6, "%s %s n=%lld: AOT vs JIT max relative difference %g", examples[e],
                          dt == NFC_F64 ? "f64" : "f32", (long long)sizes[k], w);
                }
                dlclose(L.h);
            } else {
                CHECK(0, "%s: cannot open the library", so);
            }
            nfc_free(m);
        }
    }
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

TEST(load_weights) {
    for (int dt = NFC_F32; dt <= NFC_F64; dt++) {
        nfc_model *m = compile("examples/moons.flow", dt, 0.4, 8);
        nfc_model *other = compile("examples/maf.flow", dt, 0.4, 8);
        CHECK(m && other);
        if (!m || !other) { nfc_free(m); nfc_free(other); return; }
        char so[128], w[128], wo[128], bad[128];
        snprintf(so, sizeof so, "%s/lw%d.so", dir, dt);
        snprintf(w, sizeof w, "%s/w%d.safetensors", dir, dt);
        snprintf(wo, sizeof wo, "%s/wo%d.safetensors", dir, dt);
        snprintf(bad, sizeof bad, "%s/bad%d.safetensors", dir, dt);
        CHECK(build(m, so, 0, 0, NULL) == 0);
        CHECK(nfc_save_weights(m, w) == 0 && nfc_save_weights(other, wo) == 0);
        lib L;
        if (lib_open(&L, so, "moons", 0, dt == NFC_F64) || !L.ld || !L.ldf) {
            CHECK(0, "cannot open %s with its loader", so);
            nfc_free(m); nfc_free(other);
            return;
        }
        void *ws = aligned_alloc(64, (size_t)((ws_fn)L.ws)());
        double x[4] = { 0.1, 0.2, -0.3, 0.4 }, lp[2], z[4], ld[2];
        CHECK(((ok_fn)L.ok)() == 0);
        CHECK(lib_call(&L, 0, 2, 2, x, NULL, lp, ld, ws) == -3, "calls before loading: NFC_AOT_ENOWEIGHTS");
        CHECK(lib_call(&L, 3, 2, 2, x, NULL, z, ld, ws) == -3);
        /* bad files: refused, and nothing is loaded */
        CHECK(((ldf_fn)L.ldf)("/no/such/file") == -7);
        CHECK(((ldf_fn)L.ldf)(wo) == -5, "another model's weights");
        size_t len = 0;
        unsigned char *b = slurp(w, &len);
        CHECK(b && len > 100);
        CHECK(((ld_fn)L.ld)(b, 5) == -4, "truncated header");
        CHECK(((ld_fn)L.ld)(b, len - 1) == -4, "truncated data");
        unsigned char *c = malloc(len);
        memcpy(c, b, len);
        c[8] = (unsigned char)'[';   /* corrupt JSON: the header is no longer an object */
        CHECK(((ld_fn)L.ld)(c, len) == -4, "corrupt header");
        /* a NaN in the last tensor's data: refused */
        memcpy(c, b, len);
        if (dt == NFC_F64) { double nan = NAN; memcpy(c + len - 8, &nan, 8); }
        else { float nan = NAN; memcpy(c + len - 4, &nan, 4); }
        CHECK(((ld_fn)L.ld)(c, len) == -6, "non-finite value");
        /* every truncation and a sweep of byte flips: never a crash, never a success on a
         * truncation */
        for (size_t k = 0; k < len; k += len / 97 + 1) CHECK(((ld_fn)L.ld)(b, k) < 0, "truncated to %zu", k);
        for (size_t k = 8; k < len && k < 600; k += 7) {
            memcpy(c, b, len);
            c[k] ^= 0x5a;
            (void)((ld_fn)L.ld)(c, len);
        }
        free(c);
        /* the flips may have loaded something valid; load the real weights and compare */
        CHECK(((ld_fn)L.ld)(b, len) == 0);
        CHECK(((ok_fn)L.ok)() == 1);
        int rc;
        double worst = lib_vs_model(&L, m, 33, &rc);
        CHECK(rc == 0 && worst <= 1e-6, "after load_weights: max relative difference %g", worst);
        CHECK(((ldf_fn)L.ldf)(w) == 0);
        worst = lib_vs_model(&L, m, 33, &rc);
        CHECK(rc == 0 && worst <= 1e-6, "after load_weights_file: max relative difference %g", worst);
        free(b);
        free(ws);
        dlclose(L.h);
        nfc_free(m);
        nfc_free(other);
    }
}

TEST(argument_checks) {
    nfc_model *m = compile("examples/moons.flow", NFC_F32, 0.4, 1);
    CHECK(m != NULL);
    if (!m) return;
    char so[128];
    snprintf(so, sizeof so, "%s/args.so", dir);
    CHECK(build(m, so, 1, 0, NULL) == 0);
    lib L;
    if (lib_open(&L, so, "moons", 0, 0)) { CHECK(0, "dlopen"); nfc_free(m); return; }
    int64_t wsz = ((ws_fn)L.ws)();
    CHECK(wsz >= 64 && wsz % 64 == 0, "workspace size %lld", (long long)wsz);
    unsigned char *ws = aligned_alloc(64, (size_t)wsz + 64);
    float x[4] = { 0.1f, 0.2f, 0.3f, 0.4f }, o[4], l[2];
    lp_fn lp = (lp_fn)L.lp;
    sa_fn sa = (sa_fn)L.sa;
    CHECK(lp(2, x, l, ws) == 0);
    CHECK(lp(2, x, l, NULL) == -2, "NULL workspace");
    CHECK(lp(2, x, l, ws + 4) == -2, "misaligned workspace");
    CHECK(lp(2, NULL, l, ws) == -1 && lp(2, x, NULL, ws) == -1, "NULL arrays");
    CHECK(lp(-1, x, l, ws) == -1, "n < 0");
    CHECK(lp(0, NULL, NULL, ws) == 0, "n = 0 does nothing");
    CHECK(sa(2, 1, -1.0, o, l, ws) == -1 && sa(2, 1, NAN, o, l, ws) == -1 && sa(2, 1, INFINITY, o, l, ws) == -1,
          "bad temperatures");
    CHECK(sa(2, 1, 0.0, o, l, ws) == 0, "temperature 0 is allowed");
    free(ws);
    dlclose(L.h);
    nfc_free(m);
}

/* concurrent calls with separate workspaces give the serial results bit for bit */
typedef struct { lib *L; int64_t n; float *x, *lp; int rc; } job;
static void *worker(void *arg) {
    job *j = arg;
    void *ws = aligned_alloc(64, (size_t)((ws_fn)j->L->ws)());
    j->rc = 0;
    for (int rep = 0; rep < 20; rep++) j->rc |= ((lp_fn)j->L->lp)(j->n, j->x, j->lp, ws);
    free(ws);
    return NULL;
}

TEST(thread_safety) {
    nfc_model *m = compile("examples/maf.flow", NFC_F32, 0.4, 2);
    CHECK(m != NULL);
    if (!m) return;
    char so[128];
    snprintf(so, sizeof so, "%s/threads.so", dir);
    CHECK(build(m, so, 1, 0, NULL) == 0);
    lib L;
    if (lib_open(&L, so, nfc_model_name(m), 0, 0)) { CHECK(0, "dlopen"); nfc_free(m); return; }
    enum { T = 4, n = 300, D = 8 };
    static float x[T][n * D], lp[T][n], ref[T][n];
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n * D; i++) x[t][i] = (float)sin(0.37 * i + t);
    void *ws = aligned_alloc(64, (size_t)((ws_fn)L.ws)());
    for (int t = 0; t < T; t++) CHECK(((lp_fn)L.lp)(n, x[t], ref[t], ws) == 0);
    free(ws);
    pthread_t th[T];
    job jobs[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (job){ &L, n, x[t], lp[t], -1 };
        pthread_create(&th[t], NULL, worker, &jobs[t]);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++) {
        CHECK(jobs[t].rc == 0);
        CHECK(!memcmp(lp[t], ref[t], sizeof ref[t]), "thread %d differs from the serial result", t);
    }
    dlclose(L.h);
    nfc_free(m);
}

/* nfc's own vector math instead of Sleef: the same results to f32 accuracy */
TEST(no_sleef) {
    for (int e = 0; e < NEX; e++) {
        nfc_model *m = compile(examples[e], NFC_F32, 0.4, 5);
        if (!m) { CHECK(0, "%s", examples[e]); continue; }
        char so[128];
        snprintf(so, sizeof so, "%s/ns%d.so", dir, e);
        CHECK(build(m, so, 1, 1, NULL) == 0);
        lib L;
        if (lib_open(&L, so, nfc_model_name(m), nfc_model_context_dim(m), 0) == 0) {
            int rc;
            double w = lib_vs_model(&L, m, 40, &rc);
            CHECK(rc == 0 && w <= 1e-5, "%s without Sleef: max relative difference %g", examples[e], w);
            dlclose(L.h);
        } else {
            CHECK(0, "dlopen %s", so);
        }
        nfc_free(m);
    }
}

/* DT_NEEDED of a generated library: libc, libm, libsleef only */
TEST(dependencies) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "readelf -d %s/args.so", dir);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    char line[512];
    int needed = 0, ok = 1;
    while (fgets(line, sizeof line, p)) {
        char *s = strstr(line, "Shared library: [");
        if (!s) continue;
        needed++;
        s += 17;
        if (strncmp(s, "libc.so", 7) && strncmp(s, "libm.so", 7) && strncmp(s, "libsleef.so", 11)) {
            ok = 0;
            printf("    unexpected dependency: %s", s);
        }
    }
    CHECK(pclose(p) == 0, "readelf failed");
    CHECK(needed >= 1 && ok);
}

/* The library exports its API and nothing else: the segments (each compiled to an object
 * of its own, nfc_aot_build) are hidden; and the build leaves no temporary file behind */
TEST(exports) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "nm -D --defined-only %s/args.so", dir);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    char line[512];
    int api = 0, other = 0;
    while (fgets(line, sizeof line, p)) {
        char addr[64], type[8], name[400];
        if (sscanf(line, "%63s %7s %399s", addr, type, name) != 3 || strcmp(type, "T")) continue;
        if (!strncmp(name, "moons_", 6) && strncmp(name, "moons__", 7)) api++;
        else {
            other++;
            printf("    exported: %s\n", name);
        }
    }
    CHECK(pclose(p) == 0, "nm failed");
    /* embedded weights: log_prob, forward, inverse, sample, workspace_size, weights_loaded */
    CHECK(api == 6 && other == 0, "%d API functions (6 expected), %d others", api, other);
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '\\.tmp\\.'", dir);
    p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    int left = -1;
    CHECK(fscanf(p, "%d", &left) == 1 && left == 0, "%d temporary files left in %s", left, dir);
    pclose(p);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/nfc_aot.XXXXXX");
    if (!mkdtemp(dir)) { printf("FAIL mkdtemp\n"); return 1; }
    RUN(aot_equals_jit);
    RUN(load_weights);
    RUN(argument_checks);
    RUN(thread_safety);
    RUN(no_sleef);
    RUN(dependencies);
    RUN(exports);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) printf("    could not remove %s\n", dir);
    return t_done();
}
