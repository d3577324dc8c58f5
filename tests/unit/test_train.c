/* tests/unit/test_train.c: the training runtime (runtime/train.h), on the interpreter
 * backend with tiny models so it runs in seconds under ASan.
 * - AdamW against a hand computation; clipping; the learning-rate schedule at key steps
 * - the thread pool's sums and means equal a worker's sums added in shard order (also on the
 *   JIT, in f32 and f64, and for shards of several program calls)
 * - batches a pure function of (seed, step); the validation split deterministic
 * - 30 steps straight = 12 steps + checkpoint + load into a fresh model + 18 steps, bit for
 *   bit (parameters and Adam state, and the checkpoint files byte for byte)
 * - 1 thread and 3 threads bit-identical; the loss decreases on Gaussian-like data
 * - the NaN guard names the step and the layer and keeps the last good checkpoint
 * - checkpoints of another model, truncated, with a corrupt header or a resume with other
 *   settings are refused with messages naming the file, and nothing changes */
#include "t.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "nfc.h"
#include "rt_io.h"
#include "train.h"

static const char *tiny_src =
    "flow tiny {\n"
    "  input x: f32[2]\n"
    "  base normal\n"
    "  actnorm\n"
    "  affine_coupling mask=alternate net=mlp(16)\n"
    "  reverse\n"
    "  affine_coupling mask=alternate net=mlp(16)\n"
    "}\n";

static const char *ctx_src =
    "flow ctiny {\n"
    "  input x: f32[2]\n"
    "  context c: f32[1]\n"
    "  base normal\n"
    "  affine_coupling mask=alternate net=mlp(8)\n"
    "  reverse\n"
    "  affine_coupling mask=alternate net=mlp(8)\n"
    "}\n";

static const char *logit_src =
    "flow lg {\n"
    "  input x: f32[2]\n"
    "  base normal\n"
    "  logit\n"
    "  affine_coupling mask=alternate net=mlp(8)\n"
    "}\n";

static nfc_model *compile_src(const char *src, uint64_t init_seed) {
    nfc_options o;
    nfc_options_default(&o);
    o.backend = NFC_BACKEND_INTERP;
    o.dtype = NFC_F64;
    o.init_seed = init_seed;
    o.init_scale = 0.05;
    nfc_diagnostics *d = NULL;
    nfc_model *m = nfc_compile_string("test.flow", src, &o, &d);
    if (!m) nfc_diagnostics_print(d, stdout, 0);
    nfc_diagnostics_free(d);
    return m;
}

/* deterministic Gaussian-like rows: x0 ~ 2 + 0.5 n0, x1 = -1 + 1.5 n1 + 0.8 x0 */
static uint64_t lcg_state;
static double uni(void) {
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(lcg_state >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(void) { return sqrt(-2 * log(uni())) * cos(2 * M_PI * uni()); }
static double *make_data(int64_t n, uint64_t seed) {
    lcg_state = seed;
    double *x = malloc(sizeof(double) * (size_t)(2 * n));
    for (int64_t i = 0; i < n; i++) {
        x[2 * i] = 2 + 0.5 * gauss();
        x[2 * i + 1] = -1 + 1.5 * gauss() + 0.8 * x[2 * i];
    }
    return x;
}

static char tmpdir[64];
static const char *tpath(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int read_all(const char *path, unsigned char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc((size_t)n + 1);
    *len = fread(*buf, 1, (size_t)n, f);
    fclose(f);
    return 0;
}
static void write_all(const char *path, const unsigned char *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(buf, 1, len, f);
    fclose(f);
}
static int same_file(const char *a, const char *b) {
    unsigned char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok = read_all(a, &x, &nx) == 0 && read_all(b, &y, &ny) == 0 && nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return ok;
}

/* ---- callbacks ---- */
typedef struct {
    const char *path;      /* save here (NULL: no file) */
    int64_t     stop_at;   /* ask to stop after this step (0: never) */
    int64_t     saves, last_saved;
    int         nvalid;
    double      first_loss, last_avg;
    double     *m, *v;     /* copies of the last saved Adam state */
    int64_t     n;
} cbstate;

static int cb_progress(const rt_train_progress *p, void *user) {
    cbstate *s = user;
    if (p->event == RT_TRAIN_STEP) {
        if (p->step == p->start_step + 1) s->first_loss = p->loss;
        s->last_avg = p->loss_avg;
        return s->stop_at && p->step >= s->stop_at;
    }
    if (p->event == RT_TRAIN_VALID) s->nvalid++;
    return 0;
}
static int cb_ckpt(const nfc_model *m, const rt_train_ckpt *c, void *user, char *err, size_t errlen) {
    cbstate *s = user;
    s->saves++;
    s->last_saved = c->step;
    s->n = c->nparams;
    free(s->m);
    free(s->v);
    s->m = malloc(sizeof(double) * (size_t)c->nparams);
    s->v = malloc(sizeof(double) * (size_t)c->nparams);
    memcpy(s->m, c->adam_m, sizeof(double) * (size_t)c->nparams);
    memcpy(s->v, c->adam_v, sizeof(double) * (size_t)c->nparams);
    if (s->path) return rt_train_save_checkpoint(m, c, s->path, err, errlen);
    return 0;
}
static void cb_free(cbstate *s) {
    free(s->m);
    free(s->v);
    s->m = s->v = NULL;
}

static void small_config(rt_train_config *c) {
    rt_train_config_default(c);
    c->batch = 40;
    c->shard = 16;   /* 3 shards, the last partial */
    c->lr = 5e-3;
    c->warmup = 5;
    c->steps = 30;
    c->seed = 7;
    c->threads = 2;
    c->weight_decay = 1e-3;
    c->clip_norm = 5;
}

/* ---- the pieces ---- */

TEST(adamw_by_hand) {
    double p[2] = { 1.0, -2.0 }, m[2] = { 0, 0 }, v[2] = { 0, 0 }, g[2] = { 0.5, -3.0 };
    double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
    rt_adam_step(2, p, m, v, g, 1, lr, b1, b2, eps, wd);
    /* t = 1: m = 0.1 g, v = 0.001 g^2, mhat = g, vhat = g^2: p = p (1 - lr wd) - lr g / (|g| + eps) */
    CHECK_NEAR(m[0], 0.05, 1e-15);
    CHECK_NEAR(v[1], 0.009, 1e-15);
    CHECK_NEAR(p[0], 1.0 * (1 - 0.001) - 0.1 * 0.5 / (0.5 + 1e-8), 1e-14);
    CHECK_NEAR(p[1], -2.0 * (1 - 0.001) - 0.1 * -3.0 / (3.0 + 1e-8), 1e-14);
    /* t = 2 with g = (1, 1) */
    double g2[2] = { 1.0, 1.0 }, p0 = p[0];
    rt_adam_step(2, p, m, v, g2, 2, lr, b1, b2, eps, wd);
    double m0 = 0.9 * 0.05 + 0.1 * 1.0, v0 = 0.999 * 0.00025 + 0.001 * 1.0;
    double mh = m0 / (1 - 0.81), vh = v0 / (1 - 0.998001);
    CHECK_NEAR(m[0], m0, 1e-15);
    CHECK_NEAR(v[0], v0, 1e-15);
    CHECK_NEAR(p[0], p0 * (1 - 0.001) - 0.1 * mh / (sqrt(vh) + 1e-8), 1e-14);
}

/* The bound that lets a training step skip its check pass (opt_bound in train.c): whenever it
 * says no update can be non-finite, the updates at the extremes it was given (every sign
 * and 0 of the largest |p|, |m|, v and |g|) are finite, over random magnitudes from 1e-300
 * to 1e308 and random settings; and it does say so for ordinary training states. */
static uint64_t bound_rng = 12345;
static double bound_u(void) {
    bound_rng = bound_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(bound_rng >> 11) / 9007199254740992.0;
}
static double log_uniform(double lo, double hi) { return exp(log(lo) + (log(hi) - log(lo)) * bound_u()); }

TEST(adam_bound_finite) {
    CHECK(rt_adam_bound_finite(3.0, 0.1, 0.01, 10.0, 1.0, 500, 1e-3, 0.9, 0.999, 1e-8, 0.01),
          "an ordinary state is not shown finite: the check pass would run every step");
    CHECK(!rt_adam_bound_finite(3.0, 0.1, 0.01, 10.0, 1.0, 500, 1e-3, 0.9, 0.999, 0.0, 0.01), "eps = 0 accepted");
    CHECK(!rt_adam_bound_finite(3.0, 0.1, 0.01, INFINITY, 1.0, 500, 1e-3, 0.9, 0.999, 1e-8, 0.01), "an infinite norm accepted");
    int shown = 0, refused = 0;
    for (int trial = 0; trial < 20000; trial++) {
        double P = bound_u() < 0.1 ? 0 : log_uniform(1e-300, 1e308), M = bound_u() < 0.1 ? 0 : log_uniform(1e-300, 1e308);
        double V = bound_u() < 0.1 ? 0 : log_uniform(1e-300, 1e308), G = bound_u() < 0.1 ? 0 : log_uniform(1e-300, 1e308);
        double lr = log_uniform(1e-12, 1e300), eps = log_uniform(1e-300, 1.0), wd = bound_u() < 0.3 ? 0 : log_uniform(1e-12, 1e300);
        double b1 = bound_u() < 0.5 ? 0.9 : bound_u() * 0.999999, b2 = bound_u() < 0.5 ? 0.999 : bound_u() * 0.999999;
        double gs = bound_u() < 0.5 ? 1.0 : bound_u();
        int64_t t = 1 + (int64_t)(log_uniform(1, 1e7));
        if (!rt_adam_bound_finite(P, M, V, G, gs, t, lr, b1, b2, eps, wd)) { refused++; continue; }
        shown++;
        double ps[3] = { P, -P, 0 }, ms[3] = { M, -M, 0 }, vs[2] = { V, 0 }, gv[2] = { G, -G };
        double p[36], m[36], v[36], g[36], po[36], mo[36], vo[36];
        int n = 0;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 2; c++)
                    for (int d = 0; d < 2; d++) { p[n] = ps[a]; m[n] = ms[b]; v[n] = vs[c]; g[n] = gv[d]; n++; }
        rt_adam_step_to(n, p, m, v, g, gs, po, mo, vo, t, lr, b1, b2, eps, wd);
        for (int k = 0; k < n; k++)
            if (!isfinite(po[k]) || !isfinite(mo[k]) || !isfinite(vo[k])) {
                CHECK(0, "shown finite but not: p %g m %g v %g g %g (x %g) t %lld lr %g b1 %g b2 %g eps %g wd %g -> %g %g %g",
                      p[k], m[k], v[k], g[k], gs, (long long)t, lr, b1, b2, eps, wd, po[k], mo[k], vo[k]);
                trial = 20000;
                break;
            }
    }
    printf("    bound: %d of 20000 random states shown finite, %d left to the check pass\n", shown, refused);
    CHECK(shown > 1000 && refused > 1000, "shown %d, refused %d: the random states miss one side", shown, refused);
}

TEST(clipping) {
    double g[2] = { 3, 4 };
    CHECK_NEAR(rt_train_clip(2, g, 1.0), 5.0, 1e-15);
    CHECK_NEAR(g[0], 0.6, 1e-15);
    CHECK_NEAR(g[1], 0.8, 1e-15);
    double h[2] = { 3, 4 };
    CHECK_NEAR(rt_train_clip(2, h, 10.0), 5.0, 1e-15);
    CHECK(h[0] == 3 && h[1] == 4, "clipped below the limit");
    CHECK_NEAR(rt_train_clip(2, h, 0.0), 5.0, 1e-15);
    CHECK(h[0] == 3 && h[1] == 4, "clipped with clipping off");
}

TEST(lr_schedule) {
    rt_train_config c;
    rt_train_config_default(&c);
    CHECK(c.batch == 256 && c.lr == 1e-3 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8);
    CHECK(c.weight_decay == 0 && c.clip_norm == 10 && c.warmup == 100 && c.final_lr_frac == 0.05);
    CHECK(c.valid_frac == 0.1 && c.shard == 0 && c.epochs == 0 && c.steps == 0);
    c.warmup = 10;
    int64_t T = 110;
    CHECK_NEAR(rt_train_lr(&c, 1, T), 1e-4, 1e-18);
    CHECK_NEAR(rt_train_lr(&c, 5, T), 5e-4, 1e-18);
    CHECK_NEAR(rt_train_lr(&c, 10, T), 1e-3, 1e-18);
    CHECK_NEAR(rt_train_lr(&c, 60, T), (1e-3 + 5e-5) / 2, 1e-15);
    CHECK_NEAR(rt_train_lr(&c, 110, T), 5e-5, 1e-18);
    CHECK(rt_train_lr(&c, 11, T) < 1e-3 && rt_train_lr(&c, 11, T) > 0.999e-3);
    for (int64_t t = 11; t < T; t++) CHECK(rt_train_lr(&c, t + 1, T) < rt_train_lr(&c, t, T), "not decreasing at %lld", (long long)t);
    c.warmup = 0;
    CHECK_NEAR(rt_train_lr(&c, 1, 100), 5e-5 + (1e-3 - 5e-5) * 0.5 * (1 + cos(M_PI * 0.01)), 1e-18);
}

TEST(batches_pure_and_split) {
    int64_t n = 103, B = 10, spe = n / B;
    int64_t a[10], b[10];
    int *seen = calloc((size_t)n, sizeof(int));
    for (int64_t k = 0; k < 3 * spe; k++) {
        rt_train_batch_rows(42, n, B, k, a);
        rt_train_batch_rows(42, n, B, k, b);
        CHECK(memcmp(a, b, sizeof a) == 0, "batch %lld differs between calls", (long long)k);
        for (int i = 0; i < B; i++) {
            CHECK(a[i] >= 0 && a[i] < n);
            if (a[i] >= 0 && a[i] < n) seen[a[i]]++;
        }
        if (k % spe == spe - 1) { /* one epoch: every row at most once */
            int dup = 0;
            for (int64_t r = 0; r < n; r++) dup += seen[r] > 1;
            CHECK(dup == 0, "rows repeated within epoch %lld", (long long)(k / spe));
            memset(seen, 0, sizeof(int) * (size_t)n);
        }
    }
    free(seen);
    /* the order of epoch e is the same as rt_train_epoch_order */
    int64_t *ord = malloc(sizeof(int64_t) * (size_t)n);
    rt_train_epoch_order(42, 2, n, ord);
    rt_train_batch_rows(42, n, B, 2 * spe + 3, a);
    CHECK(memcmp(a, ord + 3 * B, sizeof a) == 0);
    /* epochs and seeds differ */
    rt_train_batch_rows(42, n, B, 0, a);
    rt_train_batch_rows(42, n, B, spe, b);
    CHECK(memcmp(a, b, sizeof a) != 0, "epoch 0 and 1 start alike");
    rt_train_batch_rows(43, n, B, 0, b);
    CHECK(memcmp(a, b, sizeof a) != 0, "seeds 42 and 43 give the same batch");
    free(ord);
    /* the split */
    int64_t nv, nv2, tr[103], va[103], tr2[103], va2[103];
    rt_train_split(5, n, 0.1, &nv, tr, va);
    rt_train_split(5, n, 0.1, &nv2, tr2, va2);
    CHECK(nv == 10 && nv2 == 10);
    CHECK(memcmp(tr, tr2, sizeof(int64_t) * (size_t)(n - nv)) == 0 && memcmp(va, va2, sizeof(int64_t) * (size_t)nv) == 0);
    int64_t i = 0, j = 0, bad = 0;
    for (int64_t r = 0; r < n; r++) {
        if (j < nv && va[j] == r) j++;
        else if (i < n - nv && tr[i] == r) i++;
        else bad++;
    }
    CHECK(bad == 0 && i == n - nv && j == nv, "the split is not a sorted partition");
    rt_train_split(6, n, 0.1, &nv2, tr2, va2);
    CHECK(memcmp(va, va2, sizeof(int64_t) * (size_t)nv) != 0, "seeds 5 and 6 hold out the same rows");
    rt_train_split(5, n, 0.0, &nv, NULL, NULL);
    CHECK(nv == 0);
}

/* ---- training runs ---- */

/* The training step's parallel parts (shards in rounds, the ordered reduction, the
 * optimizer's passes in blocks of 16384 values on the pool) against the serial pieces:
 * nfc_loss_grad on the whole batch, rt_train_clip, rt_adam_step. The model has 34052
 * parameters, so the optimizer's blocks are three and the last is partial; clipping is
 * active. Only summation orders differ (the gradient over shards, the norm over blocks). */
static const char *const wide_src =
    "flow wide {\n  input x: f32[2]\n  base normal\n  affine_coupling mask=alternate net=mlp(128, 128)\n"
    "  reverse\n  affine_coupling mask=alternate net=mlp(128, 128)\n}\n";

TEST(steps_equal_serial_reference) {
    int64_t n = 48;
    double *x = make_data(n, 5);
    rt_train_data data = { x, NULL, n, NULL, NULL, 0 };
    rt_train_config cfg;
    small_config(&cfg);
    cfg.batch = n;     /* one batch per epoch: every step's gradient is over all rows */
    cfg.shard = 16;    /* 3 shards on 2 threads: 2 rounds */
    cfg.steps = 3;
    cfg.valid_frac = 0;
    cfg.clip_norm = 0.05;
    char err[1024];
    nfc_model *m = compile_src(wide_src, 4), *ref = compile_src(wide_src, 4);
    if (!m || !ref) { CHECK(0, "wide flow does not compile"); nfc_free(m); nfc_free(ref); free(x); return; }
    int64_t P = nfc_param_total(m);
    CHECK(P > 2 * 16384, "the model has %lld parameters, fewer than 3 optimizer blocks", (long long)P);
    double *p0 = malloc(sizeof(double) * (size_t)P), *p = malloc(sizeof(double) * (size_t)P);
    double *am = calloc((size_t)P, sizeof(double)), *av = calloc((size_t)P, sizeof(double)), *g = malloc(sizeof(double) * (size_t)P);
    memcpy(p0, nfc_params(m), sizeof(double) * (size_t)P);
    rt_train_result r;
    CHECK(rt_train_run(m, &cfg, &data, NULL, NULL, &r, err, sizeof err) == 0, "%s", err);
    /* the reference, serially */
    memcpy(p, p0, sizeof(double) * (size_t)P);
    int clipped = 0;
    for (int64_t t = 1; t <= cfg.steps; t++) {
        double loss;
        CHECK(nfc_loss_grad(ref, n, x, NULL, &loss, g) == 0, "%s", nfc_last_error(ref));
        clipped += rt_train_clip(P, g, cfg.clip_norm) > cfg.clip_norm;
        rt_adam_step(P, p, am, av, g, t, rt_train_lr(&cfg, t, cfg.steps), cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay);
        nfc_params_set(ref, p);
    }
    CHECK(clipped == cfg.steps, "clipping was active in %d of %lld steps", clipped, (long long)cfg.steps);
    const double *pt = nfc_params(m);
    double worst = 0, moved[3] = { 0, 0, 0 };
    for (int64_t i = 0; i < P; i++) {
        double d = fabs(pt[i] - p[i]), mv = fabs(pt[i] - p0[i]);
        if (d > worst) worst = d;
        if (mv > moved[i / 16384]) moved[i / 16384] = mv;
    }
    CHECK(worst <= 1e-10, "trained parameters differ from the serial reference by %.3g", worst);
    CHECK(moved[0] > 1e-5 && moved[1] > 1e-5 && moved[2] > 1e-5, "a block of parameters did not move: %.3g %.3g %.3g",
          moved[0], moved[1], moved[2]);
    free(p0); free(p); free(am); free(av); free(g); free(x);
    nfc_free(m);
    nfc_free(ref);
}

/* The plumbing of the check pass's skip (opt_bound): with verify_bound the run checks, after
 * every update, each of the three optimizer blocks' recorded maxima against the state, and
 * runs the check pass anyway, failing if the bound claimed a finite update that was not.
 * Every update but the first (no maxima yet) is bounded here, the state is the same bits as
 * a run without verification, and a tiny eps turns the skip off. */
TEST(opt_bound_plumbing) {
    int64_t n = 48;
    double *x = make_data(n, 5);
    rt_train_data data = { x, NULL, n, NULL, NULL, 0 };
    nfc_model *m[3] = { compile_src(wide_src, 4), compile_src(wide_src, 4), compile_src(wide_src, 4) };
    if (!m[0] || !m[1] || !m[2]) {
        CHECK(0, "wide flow does not compile");
        for (int k = 0; k < 3; k++) nfc_free(m[k]);
        free(x);
        return;
    }
    rt_train_result r[3];
    for (int k = 0; k < 3; k++) {
        rt_train_config cfg;
        small_config(&cfg);
        cfg.batch = n;
        cfg.steps = 8;
        cfg.valid_frac = 0;
        cfg.verify_bound = k != 1;
        if (k == 2) cfg.eps = 1e-305;   /* m / eps may overflow: the bound cannot answer */
        char err[1024];
        CHECK(rt_train_run(m[k], &cfg, &data, NULL, NULL, &r[k], err, sizeof err) == 0, "run %d: %s", k, err);
    }
    CHECK(r[0].opt_checks_skipped == 7 && r[1].opt_checks_skipped == 7, "skipped %lld and %lld of 8 check passes",
          (long long)r[0].opt_checks_skipped, (long long)r[1].opt_checks_skipped);
    CHECK(r[2].opt_checks_skipped == 0, "eps = 1e-305: skipped %lld check passes", (long long)r[2].opt_checks_skipped);
    int64_t P = nfc_param_total(m[0]);
    CHECK(P > 2 * 16384, "%lld parameters: fewer than 3 optimizer blocks", (long long)P);
    CHECK(memcmp(nfc_params(m[0]), nfc_params(m[1]), sizeof(double) * (size_t)P) == 0, "verify_bound changed the state");
    for (int k = 0; k < 3; k++) nfc_free(m[k]);
    free(x);
}

/* rt_pool_loss_grad against nfc_worker_loss_grad shard by shard, added in shard order in f64:
 * the same bits on the interpreter and on the JIT in f64 and f32 (where the pool adds the
 * program's float output itself), for shards of one program call and of several (the
 * worker's own f64 sums). With a block size: the mean, each block's sum of squares in the
 * documented order (eight partial sums), and the non-finite flags. */
TEST(pool_sums_equal_worker_sums) {
    struct { int backend, dtype; int64_t n, shard; } cases[] = {
        { NFC_BACKEND_INTERP, NFC_F64, 50, 16 },
        { NFC_BACKEND_JIT, NFC_F64, 50, 16 },
        { NFC_BACKEND_JIT, NFC_F32, 50, 16 },
        { NFC_BACKEND_JIT, NFC_F32, 2 * nfc_worker_rows_max() + 10, nfc_worker_rows_max() + 5 },
    };
    const int64_t block = 64;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nfc_options o;
        nfc_options_default(&o);
        o.backend = cases[c].backend;
        o.dtype = cases[c].dtype;
        o.init_seed = 3;
        o.init_scale = 0.05;
        nfc_model *m = nfc_compile_string("test.flow", tiny_src, &o, NULL);
        CHECK(m != NULL, "case %zu does not compile", c);
        if (!m) continue;
        int64_t n = cases[c].n, shard = cases[c].shard, P = nfc_param_total(m), nb = (P + block - 1) / block;
        CHECK(nb >= 3, "only %lld blocks", (long long)nb);
        double *x = make_data(n, 11), *g = malloc(sizeof(double) * (size_t)P), *ref = malloc(sizeof(double) * (size_t)P);
        double *tmp = malloc(sizeof(double) * (size_t)P), *sumsq = malloc(sizeof(double) * (size_t)nb);
        char *bad = malloc((size_t)nb), err[1024];
        rt_pool *pool = rt_pool_new(m, 2, err, sizeof err);
        nfc_worker *w = nfc_worker_new(m);
        CHECK(pool && w, "case %zu: %s", c, pool ? nfc_last_error(m) : err);
        if (!pool || !w) goto next;
        double ls, lref = 0;
        for (int64_t r0 = 0, s = 0; r0 < n; r0 += shard, s++) {
            double l;
            int64_t rows = n - r0 < shard ? n - r0 : shard;
            CHECK(nfc_worker_loss_grad(w, rows, x + r0 * 2, NULL, &l, tmp) == 0, "%s", nfc_worker_error(w));
            lref += l;
            for (int64_t i = 0; i < P; i++) ref[i] = s == 0 ? 0.0 + tmp[i] : ref[i] + tmp[i];
        }
        CHECK(rt_pool_loss_grad(pool, n, x, NULL, shard, &ls, g, 0, NULL, NULL, err, sizeof err) == 0, "%s", err);
        CHECK(ls == lref && memcmp(g, ref, sizeof(double) * (size_t)P) == 0, "case %zu: the pool's sums differ", c);
        CHECK(rt_pool_loss_grad(pool, n, x, NULL, shard, &ls, g, block, sumsq, bad, err, sizeof err) == 0, "%s", err);
        int same = 1;
        for (int64_t b = 0; b < nb; b++) {
            double l8[8] = { 0 };
            for (int64_t i = b * block; i < P && i < (b + 1) * block; i++) {
                double v = ref[i] / (double)n;
                same &= g[i] == v;
                l8[(i - b * block) & 7] += v * v;
            }
            double want = ((l8[0] + l8[1]) + (l8[2] + l8[3])) + ((l8[4] + l8[5]) + (l8[6] + l8[7]));
            same &= sumsq[b] == want && bad[b] == 0;
        }
        CHECK(same, "case %zu: the mean or a block's sum of squares or flag differs", c);
        x[2 * (n - 1)] = NAN;   /* the last shard's last row */
        CHECK(rt_pool_loss_grad(pool, n, x, NULL, shard, &ls, g, block, sumsq, bad, err, sizeof err) == 0, "%s", err);
        int nbad = 0;
        for (int64_t b = 0; b < nb; b++) nbad += bad[b];
        CHECK(nbad > 0 && isnan(ls), "case %zu: a NaN row gives %d non-finite blocks, loss %g", c, nbad, ls);
    next:
        rt_pool_free(pool);
        nfc_worker_free(w);
        nfc_free(m);
        free(x); free(g); free(ref); free(tmp); free(sumsq); free(bad);
    }
}

TEST(resume_is_bit_identical) {
    int64_t n = 300;
    double *x = make_data(n, 1);
    rt_train_data data = { x, NULL, n, NULL, NULL, 0 };
    rt_train_config cfg;
    small_config(&cfg);
    char err[1024];
    /* straight */
    nfc_model *a = compile_src(tiny_src, 1);
    cbstate sa = { tpath("straight.st"), 0, 0, 0, 0, 0, 0, NULL, NULL, 0 };
    rt_train_callbacks cba = { cb_progress, cb_ckpt, &sa };
    rt_train_result ra;
    int rc = rt_train_run(a, &cfg, &data, NULL, &cba, &ra, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    CHECK(ra.step == 30 && sa.saves == 1 && sa.last_saved == 30);
    CHECK(ra.train_rows == 270 && ra.valid_rows == 30 && ra.steps_per_epoch == 6);
    CHECK(sa.nvalid == 5, "%d validations (every epoch of 6 steps)", sa.nvalid);
    /* 12 steps, stopped */
    nfc_model *b = compile_src(tiny_src, 1);
    cbstate sb = { tpath("part.st"), 12, 0, 0, 0, 0, 0, NULL, NULL, 0 };
    rt_train_callbacks cbb = { cb_progress, cb_ckpt, &sb };
    rt_train_result rb;
    rc = rt_train_run(b, &cfg, &data, NULL, &cbb, &rb, err, sizeof err);
    CHECK(rc == 1 && rb.step == 12 && sb.last_saved == 12, "rc %d step %lld: %s", rc, (long long)rb.step, err);
    /* a fresh model (another initialization) resumes from the file */
    nfc_model *c = compile_src(tiny_src, 99);
    rt_train_ckpt ck;
    rc = rt_train_load_checkpoint(c, tpath("part.st"), &ck, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    CHECK(ck.step == 12 && ck.s.seed == 7 && ck.s.batch == 40 && ck.s.total_steps == 30 && ck.s.train_rows == 270);
    CHECK(memcmp(nfc_params(b), nfc_params(c), sizeof(double) * (size_t)nfc_param_total(b)) == 0, "loaded parameters differ");
    CHECK(memcmp(ck.adam_m, sb.m, sizeof(double) * (size_t)ck.nparams) == 0, "loaded Adam m differs");
    cfg.threads = 3; /* the thread count is not part of the result */
    cbstate sc = { tpath("resumed.st"), 0, 0, 0, 0, 0, 0, NULL, NULL, 0 };
    rt_train_callbacks cbc = { cb_progress, cb_ckpt, &sc };
    rt_train_result rc3;
    rc = rt_train_run(c, &cfg, &data, &ck, &cbc, &rc3, err, sizeof err);
    CHECK(rc == 0 && rc3.step == 30, "%s", err);
    int64_t P = nfc_param_total(a);
    CHECK(memcmp(nfc_params(a), nfc_params(c), sizeof(double) * (size_t)P) == 0, "parameters differ after resuming");
    CHECK(sa.m && sc.m && memcmp(sa.m, sc.m, sizeof(double) * (size_t)P) == 0, "Adam m differs after resuming");
    CHECK(sa.v && sc.v && memcmp(sa.v, sc.v, sizeof(double) * (size_t)P) == 0, "Adam v differs after resuming");
    CHECK(same_file(tpath("straight.st"), tpath("resumed.st")), "final checkpoints differ byte for byte");
    CHECK(ra.valid_nll == rc3.valid_nll, "%.17g vs %.17g", ra.valid_nll, rc3.valid_nll);
    /* --weights compatibility: nfc_load_weights reads a checkpoint */
    nfc_model *d = compile_src(tiny_src, 5);
    CHECK(nfc_load_weights(d, tpath("straight.st")) == 0, "%s", nfc_last_error(d));
    CHECK(memcmp(nfc_params(a), nfc_params(d), sizeof(double) * (size_t)P) == 0);
    rt_train_ckpt_free(&ck);
    cb_free(&sa); cb_free(&sb); cb_free(&sc);
    nfc_free(a); nfc_free(b); nfc_free(c); nfc_free(d);
    free(x);
}

TEST(save_every_and_threads) {
    int64_t n = 260;
    double *x = make_data(n, 2);
    rt_train_data data = { x, NULL, n, NULL, NULL, 0 };
    rt_train_config cfg;
    small_config(&cfg);
    cfg.batch = 100;   /* 7 shards of 16, the last of 4 */
    cfg.steps = 6;
    cfg.valid_frac = 0;
    cfg.save_every = 4;
    char err[1024];
    double *params[2];
    int64_t P = 0;
    for (int k = 0; k < 2; k++) {
        cfg.threads = k == 0 ? 1 : 3;
        nfc_model *m = compile_src(tiny_src, 1);
        cbstate s = { NULL, 0, 0, 0, 0, 0, 0, NULL, NULL, 0 };
        rt_train_callbacks cb = { cb_progress, cb_ckpt, &s };
        rt_train_result r;
        CHECK(rt_train_run(m, &cfg, &data, NULL, &cb, &r, err, sizeof err) == 0, "%s", err);
        CHECK(s.saves == 2 && s.last_saved == 6, "saves %lld, last %lld (expected steps 4 and 6)", (long long)s.saves,
              (long long)s.last_saved);
        CHECK(r.valid_rows == 0 && isnan(r.valid_nll));
        CHECK(s.nvalid == 3, "%d evaluations, expected one per epoch of 2 steps", s.nvalid);
        P = nfc_param_total(m);
        params[k] = malloc(sizeof(double) * (size_t)P);
        memcpy(params[k], nfc_params(m), sizeof(double) * (size_t)P);
        cb_free(&s);
        nfc_free(m);
    }
    CHECK(memcmp(params[0], params[1], sizeof(double) * (size_t)P) == 0, "1 and 3 threads differ");
    /* less than one epoch (26 steps): validation every max(1, 20/10) steps */
    cfg.batch = 10;
    cfg.steps = 20;
    cfg.save_every = 0;
    cfg.valid_frac = 0.1;
    nfc_model *m = compile_src(tiny_src, 1);
    cbstate s = { NULL, 0, 0, 0, 0, 0, 0, NULL, NULL, 0 };
    rt_train_callbacks cb = { cb_progress, cb_ckpt, &s };
    rt_train_result r;
    CHECK(rt_train_run(m, &cfg, &data, NULL, &cb, &r, err, sizeof err) == 0, "%s", err);
    CHECK(s.nvalid == 10 && s.saves == 1 && r.steps_per_epoch == 23 && isfinite(r.valid_nll), "%d validations, %lld saves",
          s.nvalid, (long long)s.saves);
    cb_free(&s);
    nfc_free(m);
    free(params[0]);
    free(params[1]);
    free(x);
}

TEST(loss_decreases_with_context) {
    int64_t n = 400;
    double *x = make_data(n, 3);
    double *c = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        c[i] = i % 2;
        x[2 * i] += 3 * c[i];   /* the context shifts the data */
    }
    rt_train_data data = { x, c, n, NULL, NULL, 0 };
    rt_train_config cfg;
    small_config(&cfg);
    cfg.steps = 80;
    cfg.lr = 2e-2;
    cfg.batch = 64;
    nfc_model *m = compile_src(ctx_src, 1);
    char err[1024];
    double lp0[400];
    CHECK(nfc_log_prob(m, n, x, c, lp0) == 0);
    double nll0 = 0;
    for (int64_t i = 0; i < n; i++) nll0 -= lp0[i] / n;
    cbstate s = { NULL, 0, 0, 0, 0, 0, 0, NULL, NULL, 0 };
    rt_train_callbacks cb = { cb_progress, cb_ckpt, &s };
    rt_train_result r;
    CHECK(rt_train_run(m, &cfg, &data, NULL, &cb, &r, err, sizeof err) == 0, "%s", err);
    CHECK(r.valid_nll < nll0 - 1.0, "validation NLL %g, initial %g", r.valid_nll, nll0);
    CHECK(s.last_avg < s.first_loss - 1.0, "final loss %g, first %g", s.last_avg, s.first_loss);
    CHECK_NEAR(r.valid_bpd, r.valid_nll / (2 * log(2.0)), 1e-12);
    /* without the context: an error, not a crash */
    rt_train_data nd = { x, NULL, n, NULL, NULL, 0 };
    CHECK(rt_train_run(m, &cfg, &nd, NULL, NULL, NULL, err, sizeof err) == -1 && strstr(err, "context"), "%s", err);
    cb_free(&s);
    nfc_free(m);
    free(x);
    free(c);
}

TEST(nan_guard) {
    int64_t n = 200;
    double *x = malloc(sizeof(double) * (size_t)(2 * n));
    lcg_state = 11;
    for (int64_t i = 0; i < 2 * n; i++) x[i] = 0.05 + 0.9 * uni();
    rt_train_config cfg;
    small_config(&cfg);
    cfg.valid_frac = 0;
    cfg.save_every = 1;
    cfg.steps = 20;
    /* a row outside (0, 1), placed where the 4th update first meets it */
    int64_t rows[40], spe = n / cfg.batch;
    rt_train_batch_rows(cfg.seed, n, cfg.batch, 3, rows);
    int64_t bad = rows[17];
    for (int64_t k = 0; k < 3; k++) {
        rt_train_batch_rows(cfg.seed, n, cfg.batch, k, rows);
        for (int i = 0; i < 40; i++) CHECK(rows[i] != bad, "the chosen row is in batch %lld already", (long long)k);
    }
    x[2 * bad + 1] = 1.5;
    (void)spe;
    rt_train_data data = { x, NULL, n, NULL, NULL, 0 };
    nfc_model *m = compile_src(logit_src, 1);
    char err[1024];
    cbstate s = { tpath("nan.st"), 0, 0, 0, 0, 0, 0, NULL, NULL, 0 };
    rt_train_callbacks cb = { cb_progress, cb_ckpt, &s };
    rt_train_result r;
    int rc = rt_train_run(m, &cfg, &data, NULL, &cb, &r, err, sizeof err);
    CHECK(rc == -1);
    CHECK(strstr(err, "non-finite loss at step 4 (epoch 1)") != NULL, "%s", err);
    CHECK(strstr(err, "layer 1 (logit") != NULL, "%s", err);
    CHECK(r.bad_step == 4 && r.bad_layer == 1 && r.step == 3 && s.last_saved == 3);
    /* the checkpoint on disk is the last good one, and the model holds its parameters */
    nfc_model *m2 = compile_src(logit_src, 2);
    rt_train_ckpt ck;
    CHECK(rt_train_load_checkpoint(m2, tpath("nan.st"), &ck, err, sizeof err) == 0, "%s", err);
    CHECK(ck.step == 3);
    int64_t P = nfc_param_total(m);
    CHECK(memcmp(nfc_params(m), nfc_params(m2), sizeof(double) * (size_t)P) == 0, "the model lost its last good parameters");
    rt_train_ckpt_free(&ck);
    cb_free(&s);
    nfc_free(m2);
    nfc_free(m);

    /* a huge parameter: the forward pass overflows in the actnorm layer */
    nfc_model *t = compile_src(tiny_src, 1);
    double *y = make_data(100, 4);
    rt_train_data d2 = { y, NULL, 100, NULL, NULL, 0 };
    int an = nfc_param_find(t, "layer1.log_scale");
    CHECK(an >= 0 && nfc_param_numel(t, an) == 2);
    if (an >= 0 && nfc_param_numel(t, an) == 2) {
        double big[2] = { 800, 800 };
        nfc_param_set(t, an, big);
    }
    cfg.actnorm_init = 0;
    cfg.valid_frac = 0.1;
    rc = rt_train_run(t, &cfg, &d2, NULL, NULL, &r, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "at step 1 (epoch 1): first non-finite value in layer 1 (actnorm"), "%s", err);
    /* a learning rate so large that the parameters overflow after an update */
    nfc_model *u = compile_src(tiny_src, 1);
    cfg.actnorm_init = 1;
    cfg.lr = 1e308;
    cfg.warmup = 0;
    cfg.clip_norm = 0;
    rc = rt_train_run(u, &cfg, &d2, NULL, NULL, &r, err, sizeof err);
    CHECK(rc == -1 && (strstr(err, "non-finite parameter") || strstr(err, "non-finite loss at step 2") ||
                       strstr(err, "non-finite gradient at step 2")), "%s", err);
    for (int64_t i = 0; i < nfc_param_total(u); i++)
        if (!isfinite(nfc_params(u)[i])) { CHECK(0, "a non-finite parameter was kept"); break; }
    nfc_free(u);
    /* a weight decay so large that the first update overflows while the loss and gradient are
     * finite: the update is refused before any value of it is stored (it is made in place) */
    nfc_model *w = compile_src(tiny_src, 1);
    int64_t PW = nfc_param_total(w);
    double *before = malloc(sizeof(double) * (size_t)PW);
    memcpy(before, nfc_params(w), sizeof(double) * (size_t)PW);
    cfg.actnorm_init = 0;
    cfg.lr = 1e300;
    cfg.weight_decay = 1e10;
    rc = rt_train_run(w, &cfg, &d2, NULL, NULL, &r, err, sizeof err);
    char want[256];
    snprintf(want, sizeof want, "non-finite parameter '%s' after the update of step 1 (epoch 1); the parameters of step 0 are kept",
             nfc_param_name(w, 0));
    CHECK(rc == -1 && strstr(err, want) && r.bad_step == 1 && r.step == 0, "%s", err);
    CHECK(memcmp(before, nfc_params(w), sizeof(double) * (size_t)PW) == 0, "a refused update changed the parameters");
    free(before);
    nfc_free(w);
    nfc_free(t);
    free(y);
    free(x);
}

TEST(bad_checkpoints_refused) {
    int64_t n = 120;
    double *x = make_data(n, 5);
    rt_train_data data = { x, NULL, n, NULL, NULL, 0 };
    rt_train_config cfg;
    small_config(&cfg);
    cfg.steps = 3;
    char err[1024];
    nfc_model *m = compile_src(tiny_src, 1);
    cbstate s = { tpath("good.st"), 0, 0, 0, 0, 0, 0, NULL, NULL, 0 };
    rt_train_callbacks cb = { NULL, cb_ckpt, &s };
    CHECK(rt_train_run(m, &cfg, &data, NULL, &cb, NULL, err, sizeof err) == 0, "%s", err);
    nfc_model *f = compile_src(tiny_src, 77);
    int64_t P = nfc_param_total(f);
    double *before = malloc(sizeof(double) * (size_t)P);
    memcpy(before, nfc_params(f), sizeof(double) * (size_t)P);
    rt_train_ckpt ck;
    /* another model */
    nfc_model *o = compile_src(ctx_src, 1);
    CHECK(rt_train_load_checkpoint(o, tpath("good.st"), &ck, err, sizeof err) == -1);
    CHECK(strstr(err, tpath("good.st")) == err && strstr(err, "different model") && strstr(err, "'tiny'"), "%s", err);
    CHECK(ck.adam_m == NULL && ck.step == 0);
    nfc_free(o);
    /* a plain weights file */
    CHECK(nfc_save_weights(m, tpath("w.st")) == 0);
    CHECK(rt_train_load_checkpoint(f, tpath("w.st"), &ck, err, sizeof err) == -1 && strstr(err, "weights file"), "%s", err);
    /* truncated at many lengths */
    unsigned char *buf = NULL;
    size_t len = 0;
    CHECK(read_all(tpath("good.st"), &buf, &len) == 0 && len > 100);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    int accepted = 0, unnamed = 0;
    for (size_t cut = 0; cut < len; cut += cut < hlen + 16 ? 1 : 13) {
        write_all(tpath("cut.st"), buf, cut);
        if (rt_train_load_checkpoint(f, tpath("cut.st"), &ck, err, sizeof err) == 0) { accepted++; rt_train_ckpt_free(&ck); }
        else if (strstr(err, tpath("cut.st")) != err) unnamed++;
    }
    CHECK(accepted == 0, "%d truncated files accepted", accepted);
    CHECK(unnamed == 0, "%d messages without the file name (last: %s)", unnamed, err);
    /* corrupt headers and values */
    struct { const char *from, *to, *want; } edits[] = {
        { "\"nfc.step\":\"3\"", "\"nfc.step\":\"x\"", "nfc.step" },
        { "\"nfc.step\":\"3\"", "\"nfc.step\":\"2\"", "checksum" },
        { "\"nfc.lr\":\"0.0050000000000000001\"", "\"nfc.lr\":\"0.0060000000000000001\"", "checksum" },
        { "\"nfc.seed\":\"7\"", "\"nfc.seed\":\"8\"", "RNG state" },
        { "\"nfc.total_steps\":\"3\"", "\"nfc.total_steps\":\"x\"", "nfc.total_steps" },
        { "\"nfc.format\":\"nfc-train-1\"", "\"nfc.format\":\"nfc-train-9\"", "format" },
        { "\"dtype\":\"F64\"", "\"dtype\":\"F6!\"", "" },
        { "{\"__metadata__\"", "[\"__metadata__\"", "" },
        { "adam.m.", "adam.q.", "no tensor 'adam.m." },
    };
    for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
        unsigned char *c = malloc(len);
        memcpy(c, buf, len);
        size_t fl = strlen(edits[e].from);
        int found = 0;
        for (size_t i = 8; i + fl <= 8 + hlen && i + fl <= len; i++)
            if (!memcmp(c + i, edits[e].from, fl)) { memcpy(c + i, edits[e].to, fl); found = 1; break; }
        CHECK(found, "edit %zu: '%s' not in the header", e, edits[e].from);
        if (!found) { free(c); continue; }
        write_all(tpath("edit.st"), c, len);
        int rc = rt_train_load_checkpoint(f, tpath("edit.st"), &ck, err, sizeof err);
        CHECK(rc == -1 && strstr(err, tpath("edit.st")) == err && strstr(err, edits[e].want), "edit %zu: rc %d: %s", e, rc, err);
        if (rc == 0) rt_train_ckpt_free(&ck);
        free(c);
    }
    /* a flipped bit in the values: the checksum */
    unsigned char *c = malloc(len);
    memcpy(c, buf, len);
    c[len - 3] ^= 0x10;
    write_all(tpath("flip.st"), c, len);
    CHECK(rt_train_load_checkpoint(f, tpath("flip.st"), &ck, err, sizeof err) == -1 && strstr(err, "checksum"), "%s", err);
    free(c);
    CHECK(memcmp(before, nfc_params(f), sizeof(double) * (size_t)P) == 0, "a refused checkpoint changed the parameters");
    /* a missing file */
    CHECK(rt_train_load_checkpoint(f, tpath("nope.st"), &ck, err, sizeof err) == -1 && strstr(err, "nope.st"), "%s", err);
    /* resuming with other settings names the setting */
    CHECK(rt_train_load_checkpoint(f, tpath("good.st"), &ck, err, sizeof err) == 0, "%s", err);
    struct { int what; const char *want; } mism[] = { { 0, "seed" }, { 1, "batch size" }, { 2, "learning rate" },
                                                       { 3, "rows" }, { 4, "total of 3 steps" }, { 5, "different values" },
                                                       { 6, "weight decay" } };
    for (size_t k = 0; k < sizeof mism / sizeof mism[0]; k++) {
        rt_train_config c2 = cfg;
        rt_train_data d2 = data;
        double *x2 = NULL;
        switch (mism[k].what) {
        case 0: c2.seed = 8; break;
        case 1: c2.batch = 41; break;
        case 2: c2.lr = 1e-3; break;
        case 3: d2.n = n - 10; break;
        case 4: c2.steps = 4; break;
        case 5: x2 = malloc(sizeof(double) * (size_t)(2 * n)); memcpy(x2, x, sizeof(double) * (size_t)(2 * n)); x2[5] += 1; d2.x = x2; break;
        case 6: c2.weight_decay = 0; break;
        }
        memcpy(before, nfc_params(f), sizeof(double) * (size_t)P);
        int rc = rt_train_run(f, &c2, &d2, &ck, NULL, NULL, err, sizeof err);
        CHECK(rc == -1 && strstr(err, mism[k].want), "mismatch %zu: rc %d: %s", k, rc, err);
        CHECK(memcmp(before, nfc_params(f), sizeof(double) * (size_t)P) == 0);
        free(x2);
    }
    /* the same settings: a run already complete just validates and saves */
    cbstate s2 = { tpath("again.st"), 0, 0, 0, 0, 0, 0, NULL, NULL, 0 };
    rt_train_callbacks cb2 = { NULL, cb_ckpt, &s2 };
    CHECK(rt_train_run(f, &cfg, &data, &ck, &cb2, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(s2.saves == 1 && same_file(tpath("good.st"), tpath("again.st")));
    rt_train_ckpt_free(&ck);
    cb_free(&s);
    cb_free(&s2);
    free(buf);
    free(before);
    nfc_free(f);
    nfc_free(m);
    free(x);
}

/* rt_pool_for on a pool made without a model (threads only; what nfc_bench uses to run the
 * AOT library's calls on T threads): every block runs exactly once, a job after a job reuses
 * the threads, and the gradient job is refused with a message instead of a crash. */
typedef struct { _Atomic int hits[1000]; _Atomic int calls; } for_ctx;
static void for_block(void *c, int64_t b) {
    for_ctx *f = c;
    atomic_fetch_add(&f->hits[b], 1);
    atomic_fetch_add(&f->calls, 1);
}
TEST(pool_for_without_model) {
    char err[256] = "";
    for (int T = 1; T <= 3; T++) {
        rt_pool *p = rt_pool_new(NULL, T, err, sizeof err);
        CHECK(p != NULL, "rt_pool_new(NULL, %d): %s", T, err);
        if (!p) continue;
        CHECK(rt_pool_threads(p) == T, "%d threads", rt_pool_threads(p));
        static for_ctx f;
        for (int job = 0; job < 50; job++) {
            int64_t nb = 1 + (job * 37) % 1000;
            memset(&f, 0, sizeof f);
            rt_pool_for(p, nb, for_block, &f);
            int bad = 0;
            for (int64_t b = 0; b < 1000; b++) bad += atomic_load(&f.hits[b]) != (b < nb);
            CHECK(bad == 0 && atomic_load(&f.calls) == nb, "T=%d job %d: %d blocks run other than once", T, job, bad);
        }
        double x[2] = { 0, 0 }, loss = 0, g[1];
        CHECK(rt_pool_loss_grad(p, 1, x, NULL, 1, &loss, g, 0, NULL, NULL, err, sizeof err) < 0 && strstr(err, "without a model"),
              "loss_grad on a pool without a model: %s", err);
        rt_pool_free(p);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nfc_train_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    RUN(pool_for_without_model);
    RUN(adamw_by_hand);
    RUN(adam_bound_finite);
    RUN(clipping);
    RUN(lr_schedule);
    RUN(batches_pure_and_split);
    RUN(resume_is_bit_identical);
    RUN(save_every_and_threads);
    RUN(steps_equal_serial_reference);
    RUN(opt_bound_plumbing);
    RUN(pool_sums_equal_worker_sums);
    RUN(loss_decreases_with_context);
    RUN(nan_guard);
    RUN(bad_checkpoints_refused);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) {}
    return t_done();
}
