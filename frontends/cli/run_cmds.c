/* frontends/cli/run_cmds.c: the commands that compile a model and run it:
 *   nfc forward | inverse | logprob | eval | sample MODEL [options]
 *   nfc MODEL --emit=llvm|asm -o FILE
 * Input: argv after the command word. Output: NPY or CSV files (by extension), a summary
 * line for eval, diagnostics on stderr. Exit 0, 1 for bad input (model, data, weights),
 * 2 for usage errors. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nfc.h"
#include "rt_io.h"
#include "run_cmds.h"

typedef struct {
    const char *model, *weights, *data, *context, *out, *logdet, *flow, *cpu, *emit;
    const char *target, *header, *name, *cc;   /* ahead-of-time builds */
    int         no_sleef, embed, compile_only, aot;
    int64_t     n;
    uint64_t    seed;
    double      temperature;
    nfc_options opt;
    int         color;
} cli;

static int usage(const char *cmd, const char *fmt, const char *arg) {
    fprintf(stderr, "nfc %s: error: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'nfc --help' for more information.\n");
    return 2;
}

static int parse_i64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') return 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

static int parse_f(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

/* --key=value or --key value */
static const char *optval(int argc, char **argv, int *i, const char *key) {
    size_t kl = strlen(key);
    const char *a = argv[*i];
    if (strncmp(a, key, kl)) return NULL;
    if (a[kl] == '=') return a + kl + 1;
    if (a[kl] == 0) {
        if (*i + 1 >= argc) return "";
        return argv[++*i];
    }
    return NULL;
}

int cli_parse(const char *cmd, int argc, char **argv, cli *c) {
    int aot = c->aot;
    memset(c, 0, sizeof *c);
    c->aot = aot;
    nfc_options_default(&c->opt);
    c->n = -1;
    c->temperature = 1.0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        if ((v = optval(argc, argv, &i, "--weights"))) c->weights = v;
        else if ((v = optval(argc, argv, &i, "--data"))) c->data = v;
        else if ((v = optval(argc, argv, &i, "--context"))) c->context = v;
        else if ((v = optval(argc, argv, &i, "--logdet"))) c->logdet = v;
        else if ((v = optval(argc, argv, &i, "--flow"))) c->opt.flow = v;
        else if ((v = optval(argc, argv, &i, "--cpu"))) c->opt.cpu = v;
        else if (c->aot && (v = optval(argc, argv, &i, "--emit"))) c->emit = v;
        else if (c->aot && (v = optval(argc, argv, &i, "--target"))) c->target = v;
        else if (c->aot && (v = optval(argc, argv, &i, "--header"))) c->header = v;
        else if (c->aot && (v = optval(argc, argv, &i, "--name"))) c->name = v;
        else if (c->aot && (v = optval(argc, argv, &i, "--cc"))) c->cc = v;
        else if (c->aot && !strcmp(a, "--no-sleef")) c->no_sleef = 1;
        else if (c->aot && !strcmp(a, "--embed")) c->embed = 1;
        else if (c->aot && !strcmp(a, "-c")) c->compile_only = 1;
        else if ((v = optval(argc, argv, &i, "-o"))) c->out = v;
        else if ((v = optval(argc, argv, &i, "-n"))) {
            if (!parse_i64(v, &c->n) || c->n < 1 || c->n > 1000000000) return usage(cmd, "-n takes a count from 1 to 10^9, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--seed"))) {
            if (!parse_u64(v, &c->seed)) return usage(cmd, "--seed takes a non-negative integer, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--init-seed"))) {
            if (!parse_u64(v, &c->opt.init_seed)) return usage(cmd, "--init-seed takes a non-negative integer, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--temperature"))) {
            if (!parse_f(v, &c->temperature) || c->temperature < 0) return usage(cmd, "--temperature takes a number >= 0, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--init-scale"))) {
            if (!parse_f(v, &c->opt.init_scale) || c->opt.init_scale < 0) return usage(cmd, "--init-scale takes a number >= 0, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--dtype"))) {
            if (!strcmp(v, "f32")) c->opt.dtype = NFC_F32;
            else if (!strcmp(v, "f64")) c->opt.dtype = NFC_F64;
            else return usage(cmd, "--dtype is f32 or f64, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--backend"))) {
            if (!strcmp(v, "jit")) c->opt.backend = NFC_BACKEND_JIT;
            else if (!strcmp(v, "interp")) c->opt.backend = NFC_BACKEND_INTERP;
            else return usage(cmd, "--backend is jit or interp, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--threads"))) {
            int64_t t;
            if (!parse_i64(v, &t) || t < 1 || t > 256) return usage(cmd, "--threads takes a count from 1 to 256, not '%s'", v);
            c->opt.threads = (int)t;
        } else if ((v = optval(argc, argv, &i, "--vector-width"))) {
            int64_t w;
            if (!parse_i64(v, &w) || (w != 0 && w != 1 && w != 2 && w != 4 && w != 8 && w != 16))
                return usage(cmd, "--vector-width is 0 (native), 1, 2, 4, 8 or 16, not '%s'", v);
            c->opt.vector_width = (int)w;
        } else if (!strcmp(a, "-O0") || !strcmp(a, "-O1") || !strcmp(a, "-O2") || !strcmp(a, "-O3")) {
            c->opt.opt_level = a[2] - '0';
        } else if (!strcmp(a, "--no-fuse")) {
            c->opt.no_fuse = 1;
        } else if (!strncmp(a, "--color=", 8)) {
            /* handled by main */
        } else if (a[0] == '-' && a[1]) {
            return usage(cmd, "unknown option '%s'", a);
        } else if (!c->model) {
            c->model = a;
        } else {
            return usage(cmd, "unexpected argument '%s' (one model file)", a);
        }
        if (v && !*v) return usage(cmd, "option '%s' needs a value", a);
    }
    if (!c->model) return usage(cmd, "%s", "missing the model (.flow file)");
    return 0;
}

static void print_diags(nfc_diagnostics *d, int color) {
    nfc_diagnostics_print(d, stderr, color);
    nfc_diagnostics_free(d);
}

static nfc_model *open_model(cli *c) {
    nfc_diagnostics *d = NULL;
    nfc_model *m = nfc_compile_file(c->model, &c->opt, &d);
    if (!m) {
        print_diags(d, c->color);
        return NULL;
    }
    nfc_diagnostics_free(d);
    if (c->weights && nfc_load_weights(m, c->weights)) {
        fprintf(stderr, "nfc: error: %s\n", nfc_last_error(m));
        nfc_free(m);
        return NULL;
    }
    return m;
}

/* read a data file and check its columns */
static int read_cols(const char *path, int want, const char *what, const nfc_model *m, rt_array *a) {
    char err[1024];
    if (rt_read_data(path, a, err, sizeof err)) {
        fprintf(stderr, "nfc: error: %s\n", err);
        return -1;
    }
    if (a->shape[1] != want) {
        fprintf(stderr, "nfc: error: %s: expected %d column%s (%s of flow '%s' is %s[%d]), found %lld\n", path, want,
                want == 1 ? "" : "s", what, nfc_model_name(m), nfc_model_dtype(m) == NFC_F64 ? "f64" : "f32", want,
                (long long)a->shape[1]);
        rt_array_free(a);
        return -1;
    }
    return 0;
}

/* the context for n rows: a file of n rows, or of one row used for every sample */
static double *read_context(cli *c, const nfc_model *m, int64_t n, rt_array *ca) {
    int C = nfc_model_context_dim(m);
    memset(ca, 0, sizeof *ca);
    if (!C) {
        if (c->context) fprintf(stderr, "nfc: error: flow '%s' has no context input, but --context was given\n", nfc_model_name(m));
        return c->context ? NULL : (double *)ca; /* non-NULL marker: fine, no context */
    }
    if (!c->context) {
        fprintf(stderr, "nfc: error: flow '%s' has a context input '%s' of %d values per sample: give it with --context FILE\n",
                nfc_model_name(m), nfc_model_context_name(m), C);
        return NULL;
    }
    char what[128];
    snprintf(what, sizeof what, "the context '%s'", nfc_model_context_name(m));
    if (read_cols(c->context, C, what, m, ca)) return NULL;
    if (ca->shape[0] == n) return ca->data;
    if (ca->shape[0] == 1) {
        double *rep = malloc(sizeof(double) * (size_t)(n * C));
        if (!rep) { fprintf(stderr, "nfc: error: out of memory\n"); return NULL; }
        for (int64_t r = 0; r < n; r++) memcpy(rep + r * C, ca->data, sizeof(double) * (size_t)C);
        free(ca->data);
        ca->data = rep;
        ca->shape[0] = n;
        return rep;
    }
    fprintf(stderr, "nfc: error: %s: %lld rows, but there are %lld samples (give one context row per sample, or a single row for all)\n",
            c->context, (long long)ca->shape[0], (long long)n);
    return NULL;
}

static int write_out(const char *path, const double *v, int64_t rows, int64_t cols, const nfc_model *m) {
    char err[1024];
    if (rt_write_data(path, v, rows, cols, nfc_model_dtype(m) == NFC_F64 ? RT_F64 : RT_F32, err, sizeof err)) {
        fprintf(stderr, "nfc: error: %s\n", err);
        return -1;
    }
    return 0;
}

static int count_nonfinite(const double *v, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += !isfinite(v[i]);
    return (int)(k > 2000000000 ? 2000000000 : k);
}

int cmd_run(const char *cmd, int argc, char **argv, int color) {
    cli c;
    memset(&c, 0, sizeof c);
    int rc = cli_parse(cmd, argc, argv, &c);
    if (rc) return rc;
    c.color = color;
    int is_fwd = !strcmp(cmd, "forward"), is_inv = !strcmp(cmd, "inverse"), is_lp = !strcmp(cmd, "logprob");
    int is_eval = !strcmp(cmd, "eval"), is_sample = !strcmp(cmd, "sample");
    if (is_sample) {
        if (c.n < 0) return usage(cmd, "%s", "missing -n N (how many samples)");
        if (c.data) return usage(cmd, "%s", "sample takes no --data");
    } else if (!c.data) {
        return usage(cmd, "%s", "missing --data FILE");
    }
    if (!is_eval && !c.out) return usage(cmd, "%s", "missing -o FILE (.npy or .csv)");
    if (is_eval && c.out) return usage(cmd, "%s", "eval prints its result; it takes no -o");
    if (c.logdet && !(is_fwd || is_inv)) return usage(cmd, "%s", "--logdet goes with forward and inverse");
    if (c.n >= 0 && !is_sample) return usage(cmd, "%s", "-n goes with sample");
    nfc_model *m = open_model(&c);
    if (!m) return 1;
    int D = nfc_model_dim(m);
    rt_array xa = { 0 }, ca = { 0 };
    double *out = NULL, *out2 = NULL;
    rc = 1;
    int64_t n = c.n;
    if (!is_sample) {
        char what[128];
        snprintf(what, sizeof what, "the %s '%s'", is_inv ? "latent of" : "input", nfc_model_input_name(m));
        if (is_inv) snprintf(what, sizeof what, "the latent z");
        if (read_cols(c.data, D, what, m, &xa)) goto done;
        n = xa.shape[0];
    }
    const double *ctx = read_context(&c, m, n, &ca);
    if (!ctx) goto done;
    if (!nfc_model_context_dim(m)) ctx = NULL;
    out = malloc(sizeof(double) * (size_t)(n * D + 1));
    out2 = malloc(sizeof(double) * (size_t)(n + 1));
    if (!out || !out2) { fprintf(stderr, "nfc: error: out of memory\n"); goto done; }
    int r;
    if (is_fwd) r = nfc_forward(m, n, xa.data, ctx, out, out2);
    else if (is_inv) r = nfc_inverse(m, n, xa.data, ctx, out, out2);
    else if (is_sample) r = nfc_sample(m, n, c.seed, c.temperature, ctx, out, out2);
    else r = nfc_log_prob(m, n, xa.data, ctx, out2);
    if (r) { fprintf(stderr, "nfc: error: %s\n", nfc_last_error(m)); goto done; }
    if (is_eval) {
        double sum = 0, sq = 0;
        int bad = count_nonfinite(out2, n);
        if (bad) {
            fprintf(stderr, "nfc: error: %s: the log-density is not finite for %d of %lld samples (outside the flow's domain?)\n",
                    c.data, bad, (long long)n);
            goto done;
        }
        for (int64_t i = 0; i < n; i++) { sum += out2[i]; sq += out2[i] * out2[i]; }
        double mean = sum / n, var = n > 1 ? (sq - n * mean * mean) / (n - 1) : 0;
        double se = n > 1 && var > 0 ? sqrt(var / n) : 0;
        printf("flow %s: %lld samples from %s\n", nfc_model_name(m), (long long)n, c.data);
        printf("  mean log-likelihood  %.6f nats  (standard error %.6f)\n", mean, se);
        printf("  negative log-likelihood  %.6f nats\n", -mean);
        printf("  bits per dimension   %.6f\n", -mean / (D * log(2.0)));
        rc = 0;
        goto done;
    }
    if (is_lp) {
        if (write_out(c.out, out2, n, 1, m)) goto done;
    } else {
        if (write_out(c.out, out, n, D, m)) goto done;
        if (c.logdet && write_out(c.logdet, out2, n, 1, m)) goto done;
    }
    rc = 0;
done:
    rt_array_free(&xa);
    rt_array_free(&ca);
    free(out);
    free(out2);
    nfc_free(m);
    return rc;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* nfc MODEL -o OUT [options]: an ahead-of-time build (NFC_AOT_USAGE in run_cmds.h) */
int cmd_emit(int argc, char **argv, int color) {
    cli c;
    memset(&c, 0, sizeof c);
    c.aot = 1;
    int rc = cli_parse("build", argc, argv, &c);
    if (rc) return rc;
    c.color = color;
    if (!c.out) return usage("build", "%s", "missing -o OUTPUT (e.g. -o moons.so)");
    nfc_aot_options o;
    nfc_aot_options_default(&o);
    if (c.emit) {
        static const char *const kinds[] = { "llvm", "asm", "obj", "so", "header" };
        int k = -1;
        for (int i = 0; i < 5; i++) if (!strcmp(c.emit, kinds[i])) k = i;
        if (k < 0) return usage("build", "--emit is obj, so, header, asm or llvm, not '%s'", c.emit);
        o.kind = k;
        if (c.compile_only && k != NFC_EMIT_OBJ) return usage("build", "-c writes an object file; it contradicts --emit=%s", c.emit);
    } else if (c.compile_only || ends_with(c.out, ".o")) {
        o.kind = NFC_EMIT_OBJ;
    } else if (ends_with(c.out, ".s")) {
        o.kind = NFC_EMIT_ASM;
    } else if (ends_with(c.out, ".ll")) {
        o.kind = NFC_EMIT_LLVM;
    } else if (ends_with(c.out, ".h")) {
        o.kind = NFC_EMIT_HEADER;
    } else {
        o.kind = NFC_EMIT_SO;
    }
    /* the header beside a library or an object: OUT with its extension replaced by .h */
    char hdr[4096];
    if (c.header) {
        o.header = c.header;
    } else if (o.kind == NFC_EMIT_SO || o.kind == NFC_EMIT_OBJ) {
        const char *slash = strrchr(c.out, '/');
        const char *dot = strrchr(slash ? slash : c.out, '.');
        size_t stem = dot && dot != (slash ? slash + 1 : c.out) ? (size_t)(dot - c.out) : strlen(c.out);
        if (stem + 3 > sizeof hdr) return usage("build", "output path too long: '%s'", c.out);
        snprintf(hdr, sizeof hdr, "%.*s.h", (int)stem, c.out);
        if (!strcmp(hdr, c.out)) return usage("build", "the header would overwrite the output '%s'; give --header", c.out);
        o.header = hdr;
    }
    o.prefix = c.name;
    o.triple = c.target;
    o.cpu = c.opt.cpu;
    o.no_sleef = c.no_sleef;
    o.embed_weights = c.weights || c.embed;
    o.cc = c.cc;
    o.source_name = c.model;
    c.opt.backend = NFC_BACKEND_INTERP; /* the model is compiled for the target below, not JIT-ed */
    nfc_model *m = open_model(&c);
    if (!m) return 1;
    rc = 0;
    if (nfc_aot_build(m, c.out, &o)) {
        fprintf(stderr, "nfc: error: %s\n", nfc_last_error(m));
        rc = 1;
    }
    nfc_free(m);
    return rc;
}
