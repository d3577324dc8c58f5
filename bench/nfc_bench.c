/* bench/nfc_bench.c: the nfc side of `ninja bench` (bench/run drives it; bench/torch_bench.py
 * is the PyTorch side). One model per process, so the peak RSS is the model's.
 *
 *   nfc_bench MODEL.flow [--batch B] [--threads T] [--time S] [--reps R] [--tmp DIR] [--shard N] [--no-fuse] [--recompute] [--vector-width V] [--train-only]
 *
 * (--shard: rows per shard of a training batch; default automatic as in nfc train; for analysis.
 * --no-fuse: nfc_options.no_fuse, every program compiled without fusion, to compare in one
 * binary. --recompute: nfc_options.recompute = NFC_RECOMPUTE_INVERSE, the training program
 * rebuilding each layer's input by its inverse, as `nfc train --recompute=inverse`.
 * --train-only: compile, then training only (no AOT build, log_prob, sampling or big-shard
 * run), so maxrss_kb is the training's peak; bench/run's memory-vs-depth table.)
 *
 * Prints "key value" lines on stdout:
 *   rss0_kb          RSS before compiling (libraries loaded, nothing else)
 *   compile_ms       nfc_compile_file: .flow -> parameters initialized, log_prob JIT'ed (the
 *                    other programs are compiled on their first use, before timing)
 *   grad_compile_ms  rt_train_run from its call to its first progress event: the gradient
 *                    program's JIT compile plus the thread pool (T workers)
 *   aot_ms           nfc_aot_build of a .so (embedded weights; includes the `cc -shared` link)
 *   flops_fwd        2*in*out summed over the model's dense weights (*.dense*.w), per sample
 *   param_*          checksums of the initial parameters (bench/run compares with PyTorch's)
 *   train_sps        training samples/s: rt_train_run (what `nfc train` runs: T threads,
 *                    automatic shards, deterministic reduction, clipping, AdamW), timed
 *                    between its per-step progress callbacks
 *   train_bigshard_sps  the same with shards of B / T rows (one per thread), for analysis
 *   logprob_api_sps  nfc_log_prob (doubles in and out, converted in chunks; one thread)
 *   logprob_aot1_sps the AOT library's <prefix>_log_prob (float in and out), one thread
 *   logprob_aot_sps  the same on T threads, each a contiguous part of the batch with its own
 *                    workspace (the library documents concurrent calls as safe), the parts
 *                    run by nfc's runtime thread pool (rt_pool_for, as `nfc train` uses it:
 *                    its threads spin briefly between calls before they sleep)
 *   sample_*_sps     the same three for sampling (x and log p(x) of each sample)
 *   rss_compiled_kb  the RSS after nfc_compile_file (the parameters, log_prob's code)
 *   rss_train_kb     the RSS while training (read after the warm-up steps: the parameters,
 *                    the optimizer's state, the workers' buffers and workspaces, the code)
 *   maxrss_kb        getrusage ru_maxrss at the end (the peak: compiling may reach it)
 *   train_ws_kb      the training program's workspace, per thread (nfc_worker_workspace_bytes)
 *   train_act_kb     its part that a tile of rows keeps for the backward pass (the rest: the
 *                    gradients' accumulators); flat in depth with --recompute
 * Each throughput is the best of R repetitions of a timed loop of about S seconds. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "nfc.h"
#include "train.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void die(const char *what, const char *msg) {
    fprintf(stderr, "nfc_bench: %s: %s\n", what, msg);
    exit(1);
}

/* standard normal data from a counter-based hash (no libc RNG state) */
static uint64_t mix64(uint64_t z) {
    z ^= z >> 30;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 27;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z;
}
static double normal(uint64_t k) {
    double u1 = ((double)(mix64(2 * k + 1) >> 11) + 0.5) * 0x1p-53, u2 = (double)(mix64(2 * k + 2) >> 11) * 0x1p-53;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* ---- timing: best of reps, each a loop of about target seconds ---- */
typedef void (*bench_fn)(void *ctx);
static double g_target = 0.3;
static int g_reps = 3;

static double best_time(bench_fn f, void *ctx) {
    double t0 = now_s();
    f(ctx); /* warm-up */
    double one = now_s() - t0;
    int warm = 1;
    while (now_s() - t0 < 0.05 && warm < 1000) { f(ctx); warm++; }
    one = (now_s() - t0) / warm;
    long iters = one > 0 ? (long)(g_target / one) : 1000;
    if (iters < 1) iters = 1;
    double best = INFINITY;
    for (int r = 0; r < g_reps; r++) {
        double a = now_s();
        for (long i = 0; i < iters; i++) f(ctx);
        double per = (now_s() - a) / (double)iters;
        if (per < best) best = per;
    }
    return best;
}

/* ---- the AOT library, called on T threads ---- */
typedef int (*aot_logprob_fn)(int64_t n, const float *x, float *lp, void *ws);
typedef int (*aot_sample_fn)(int64_t n, uint64_t seed, double temperature, float *x, float *lp, void *ws);

typedef struct {
    aot_logprob_fn lpf;
    aot_sample_fn  smf;
    int            D, T;
    int64_t        n;
    float         *x, *lp, *xs, *lps;
    void         **ws;
    int            job; /* 0 log_prob, 1 sample */
    rt_pool       *pool;
} aot_ctx;

/* part i of T of the batch: a contiguous range of rows, with workspace i */
static void aot_part(void *p, int64_t i) {
    aot_ctx *a = p;
    int64_t r0 = a->n * i / a->T, r1 = a->n * (i + 1) / a->T;
    int rc;
    if (a->job == 0) rc = a->lpf(r1 - r0, a->x + r0 * a->D, a->lp + r0, a->ws[i]);
    else rc = a->smf(r1 - r0, 1000 + (uint64_t)i, 1.0, a->xs + r0 * a->D, a->lps + r0, a->ws[i]);
    if (rc) { fprintf(stderr, "nfc_bench: AOT call failed: %d\n", rc); exit(1); }
}

/* one call on T threads: the T parts spread over the threads of nfc's runtime pool (the
 * caller's and T - 1 that spin briefly between jobs, as in `nfc train`) */
static void aot_run(void *p) {
    aot_ctx *a = p;
    if (a->T == 1) aot_part(a, 0);
    else rt_pool_for(a->pool, a->T, aot_part, a);
}

/* ---- the API ---- */
typedef struct {
    nfc_model *m;
    int64_t    n;
    double    *x, *lp, *xs;
    int        job;
} api_ctx;
static void api_run(void *p) {
    api_ctx *a = p;
    int rc = a->job == 0 ? nfc_log_prob(a->m, a->n, a->x, NULL, a->lp) : nfc_sample(a->m, a->n, 7, 1.0, NULL, a->xs, a->lp);
    if (rc) die("API", nfc_last_error(a->m));
}

/* ---- training: timed between rt_train_run's per-step progress callbacks ---- */
typedef struct {
    double  t_call, grad_compile_s;
    int     warm;       /* steps to skip */
    int     rep, reps;
    int64_t steps_in_rep, min_steps;
    double  rep_t0, best_step_s, est_step_s, target;
    long    rss_train_kb;  /* the RSS while training (read once, before the timing starts) */
} train_ctx;

static int train_progress(const rt_train_progress *p, void *user) {
    train_ctx *c = user;
    double t = now_s();
    if (p->event == RT_TRAIN_BEGIN) { c->grad_compile_s = t - c->t_call; return 0; }
    if (p->event != RT_TRAIN_STEP) return 0;
    if (!isfinite(p->loss)) return 1;
    if (p->step <= c->warm) {
        if (p->step == c->warm) {
            if (!c->rss_train_kb) c->rss_train_kb = rss_kb();
            c->rep_t0 = now_s();
            c->steps_in_rep = 0;
            c->min_steps = 2;
        }
        return 0;
    }
    c->steps_in_rep++;
    double el = t - c->rep_t0;
    if (c->steps_in_rep >= c->min_steps && el >= c->target) {
        double per = el / (double)c->steps_in_rep;
        if (per < c->best_step_s) c->best_step_s = per;
        c->rep++;
        if (c->rep >= c->reps) return 1;
        c->rep_t0 = now_s();
        c->steps_in_rep = 0;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL, *tmp = "/tmp";
    int64_t B = 1024;
    int T = 2;
    int64_t shard = 0;
    int vw = 0;
    int no_fuse = 0, recompute = 0, train_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--time") && i + 1 < argc) g_target = atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) g_reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tmp") && i + 1 < argc) tmp = argv[++i];
        else if (!strcmp(argv[i], "--shard") && i + 1 < argc) shard = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--vector-width") && i + 1 < argc) vw = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-fuse")) no_fuse = 1;
        else if (!strcmp(argv[i], "--recompute")) recompute = 1;
        else if (!strcmp(argv[i], "--train-only")) train_only = 1;
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else {
            fprintf(stderr, "usage: nfc_bench MODEL.flow [--batch B] [--threads T] [--time S] [--reps R] [--tmp DIR] [--shard N] [--no-fuse] [--recompute] [--vector-width V] [--train-only]\n");
            return 2;
        }
    }
    if (!path || B < 1 || T < 1 || g_reps < 1) { fprintf(stderr, "nfc_bench: bad arguments\n"); return 2; }
    printf("rss0_kb %ld\n", rss_kb());

    /* compile */
    nfc_options opt;
    nfc_options_default(&opt);
    opt.vector_width = vw;
    opt.no_fuse = no_fuse;
    opt.recompute = recompute ? NFC_RECOMPUTE_INVERSE : NFC_RECOMPUTE_NONE;
    nfc_diagnostics *diags = NULL;
    double t0 = now_s();
    nfc_model *m = nfc_compile_file(path, &opt, &diags);
    double compile_s = now_s() - t0;
    if (!m) { nfc_diagnostics_print(diags, stderr, 0); return 1; }
    nfc_diagnostics_free(diags);
    printf("compile_ms %.2f\nrss_compiled_kb %ld\n", 1e3 * compile_s, rss_kb());
    const int D = nfc_model_dim(m);
    if (nfc_model_context_dim(m)) die(path, "conditional flows are not benchmarked");
    printf("dim %d\nparams %lld\n", D, (long long)nfc_param_total(m));

    /* dense FLOPs and parameter checksums, in nfc's parameter order */
    double flops = 0, s1 = 0, s2 = 0, sk = 0;
    {
        const double *p = nfc_params(m);
        int64_t P = nfc_param_total(m);
        for (int64_t k = 0; k < P; k++) { s1 += p[k]; s2 += p[k] * p[k]; sk += p[k] * (double)(k % 1000); }
        for (int i = 0; i < nfc_param_count(m); i++) {
            const char *nm = nfc_param_name(m, i);
            int64_t sh[2];
            if (strstr(nm, ".dense") && nfc_param_shape(m, i, sh) == 2 && strlen(nm) > 2 && !strcmp(nm + strlen(nm) - 2, ".w"))
                flops += 2.0 * (double)sh[0] * (double)sh[1];
        }
    }
    if (getenv("NFC_BENCH_LIST_PARAMS"))
        for (int i = 0; i < nfc_param_count(m); i++) fprintf(stderr, "param %d %s\n", i, nfc_param_name(m, i));
    printf("flops_fwd %.0f\nparam_sum %.10e\nparam_sumsq %.10e\nparam_sumk %.10e\n", flops, s1, s2, sk);

    /* data: N(0, 1) */
    double *x = malloc(sizeof(double) * (size_t)(B * D)), *lp = malloc(sizeof(double) * (size_t)B);
    double *xs = malloc(sizeof(double) * (size_t)(B * D));
    float *xf = malloc(sizeof(float) * (size_t)(B * D)), *lpf = malloc(sizeof(float) * (size_t)B);
    float *xsf = malloc(sizeof(float) * (size_t)(B * D)), *lpsf = malloc(sizeof(float) * (size_t)B);
    for (int64_t i = 0; i < B * D; i++) { x[i] = normal((uint64_t)i); xf[i] = (float)x[i]; }

    if (train_only) goto training;
    /* the AOT library */
    char so[4096];
    snprintf(so, sizeof so, "%s/nfc_bench_%ld.so", tmp, (long)getpid());
    nfc_aot_options ao;
    nfc_aot_options_default(&ao);
    ao.kind = NFC_EMIT_SO;
    ao.prefix = "bm";
    ao.embed_weights = 1;
    t0 = now_s();
    if (nfc_aot_build(m, so, &ao)) die("nfc_aot_build", nfc_last_error(m));
    printf("aot_ms %.2f\n", 1e3 * (now_s() - t0));
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h) die("dlopen", dlerror());
    unlink(so);
    int64_t (*wsz)(void) = (int64_t(*)(void))dlsym(h, "bm_workspace_size");
    aot_ctx a;
    memset(&a, 0, sizeof a);
    a.lpf = (aot_logprob_fn)dlsym(h, "bm_log_prob");
    a.smf = (aot_sample_fn)dlsym(h, "bm_sample");
    if (!wsz || !a.lpf || !a.smf) die("dlsym", "bm_log_prob, bm_sample or bm_workspace_size missing");
    a.D = D;
    a.n = B;
    a.x = xf;
    a.lp = lpf;
    a.xs = xsf;
    a.lps = lpsf;
    a.ws = calloc((size_t)T, sizeof(void *));
    size_t wb = (size_t)((wsz() + 63) / 64 * 64);
    for (int i = 0; i < T; i++) a.ws[i] = aligned_alloc(64, wb ? wb : 64);
    char perr[1024];
    if (T > 1 && !(a.pool = rt_pool_new(NULL, T, perr, sizeof perr))) die("rt_pool_new", perr);   /* threads only */

    api_ctx ap = { m, B, x, lp, xs, 0 };
    /* log_prob */
    printf("logprob_api_sps %.1f\n", (double)B / best_time(api_run, &ap));
    a.job = 0;
    a.T = 1;
    printf("logprob_aot1_sps %.1f\n", (double)B / best_time(aot_run, &a));
    a.T = T;
    printf("logprob_aot_sps %.1f\n", (double)B / best_time(aot_run, &a));
    /* sample */
    ap.job = 1;
    printf("sample_api_sps %.1f\n", (double)B / best_time(api_run, &ap));
    a.job = 1;
    a.T = 1;
    printf("sample_aot1_sps %.1f\n", (double)B / best_time(aot_run, &a));
    a.T = T;
    printf("sample_aot_sps %.1f\n", (double)B / best_time(aot_run, &a));
    /* sanity: the JIT and the library agree on log p */
    nfc_log_prob(m, B, x, NULL, lp);
    a.job = 0;
    aot_run(&a);
    double maxd = 0;
    for (int64_t i = 0; i < B; i++) {
        double d = fabs(lp[i] - (double)lpf[i]) / (1 + fabs(lp[i]));
        if (d > maxd) maxd = d;
    }
    printf("aot_vs_jit_maxrel %.3g\n", maxd);
    rt_pool_free(a.pool);

training:;
    /* training: rt_train_run, as `nfc train` runs it */
    int64_t ntrain = 8 * B;
    double *tx = malloc(sizeof(double) * (size_t)(ntrain * D));
    for (int64_t i = 0; i < ntrain * D; i++) tx[i] = normal((uint64_t)i + 12345678);
    rt_train_config cfg;
    rt_train_config_default(&cfg);
    cfg.batch = B;
    cfg.threads = T;
    cfg.valid_frac = 0;
    cfg.steps = 1000000000;
    cfg.actnorm_init = 0; /* PyTorch's side has no data-dependent init either */
    if (shard > 0) cfg.shard = shard; /* default automatic, as nfc train; other sizes only for analysis */
    rt_train_data data = { tx, NULL, ntrain, NULL, NULL, 0 };
    train_ctx tc;
    memset(&tc, 0, sizeof tc);
    tc.warm = 2;
    tc.reps = g_reps;
    tc.target = g_target;
    tc.best_step_s = INFINITY;
    rt_train_callbacks cb = { train_progress, NULL, &tc };
    rt_train_result res;
    char err[2048];
    tc.t_call = now_s();
    int rc = rt_train_run(m, &cfg, &data, NULL, &cb, &res, err, sizeof err);
    if (rc < 0) die("rt_train_run", err);
    if (!isfinite(tc.best_step_s)) die("rt_train_run", "stopped before the timing finished (non-finite loss?)");
    printf("grad_compile_ms %.2f\n", 1e3 * tc.grad_compile_s);
    printf("train_sps %.1f\n", (double)B / tc.best_step_s);
    printf("train_loss %.6g\n", res.train_loss);
    printf("rss_train_kb %ld\n", tc.rss_train_kb);
    /* for analysis: the same with one shard per thread (shard = B / T), which cuts the per-shard
     * cost (the gradient program's epilogue and the f64 sum, each O(parameters)) 16-fold at
     * B = 1024, T = 2. Not what nfc train does by default. */
    if (!train_only && shard <= 0 && B / T > cfg.shard) {
        cfg.shard = (B + T - 1) / T;
        memset(&tc, 0, sizeof tc);
        tc.warm = 2;
        tc.reps = g_reps;
        tc.target = g_target;
        tc.best_step_s = INFINITY;
        tc.t_call = now_s();
        rc = rt_train_run(m, &cfg, &data, NULL, &cb, &res, err, sizeof err);
        if (rc < 0) die("rt_train_run", err);
        printf("train_bigshard %lld\ntrain_bigshard_sps %.1f\n", (long long)cfg.shard, (double)B / tc.best_step_s);
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("maxrss_kb %ld\n", ru.ru_maxrss);
    /* after the RSS: a worker allocates (but does not touch) a workspace of its own */
    nfc_worker *w = nfc_worker_new(m);
    if (!w) die("nfc_worker_new", nfc_last_error(m));
    int64_t act = 0, ws = nfc_worker_workspace_bytes(w, &act);
    printf("train_ws_kb %.1f\ntrain_act_kb %.1f\n", (double)ws / 1024, (double)act / 1024);
    nfc_worker_free(w);
    nfc_free(m);
    return 0;
}
