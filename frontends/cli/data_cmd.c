/* frontends/cli/data_cmd.c: `nfc data NAME -n N -o X [--seed S] [--dim D] [--log-density LP]`
 * and `nfc data NAME --log-density-of X -o LP [--dim D]`.
 * Input: argv after the word "data". Output: N samples of the named toy data set (runtime/
 * datasets.h) as f64, NPY or CSV by the extension of X; with --log-density, each sample's exact
 * log-density as an [N, 1] file; with --log-density-of, the exact log-density of the data set
 * at the points of X (e.g. a model's samples) as an [N, 1] file; one summary line on stderr. Exit 0, 1 when a file cannot be
 * written or memory runs out, 2 for usage errors (with a did-you-mean for a misspelt name).
 * The log-density, the slow part for the curve sets, is computed on all online CPUs; the
 * result does not depend on their number. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "data_cmd.h"
#include "datasets.h"
#include "rt_io.h"

#define DATA_MAX_N 100000000LL

static void list_names(void) {
    int n;
    const char *const *names = rt_ds_names(&n);
    fprintf(stderr, "data sets:");
    for (int i = 0; i < n; i++) fprintf(stderr, "%s %s", i ? "," : "", names[i]);
    fprintf(stderr, "\n");
}

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "nfc data: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'nfc --help' for more information.\n");
    return 2;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
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

/* --key=value or --key value ("" when the value is missing) */
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

/* ---- the log-density on several threads ---- */

typedef struct {
    const char   *name;
    int           dim;
    int64_t       n;
    const double *x;
    double       *logp;
    int           rc;
    char          err[512];
} ld_job;

static void *ld_run(void *arg) {
    ld_job *j = arg;
    j->rc = rt_ds_log_density(j->name, j->dim, j->n, j->x, j->logp, j->err, sizeof j->err);
    return NULL;
}

static int log_density_parallel(const char *name, int dim, int64_t n, const double *x, double *logp, char *err,
                                size_t errlen) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int T = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;
    if (n < 4096 || !strcmp(name, "checkerboard")) T = 1;
    if (T > n) T = (int)n;
    ld_job jobs[64];
    pthread_t th[64];
    int started[64] = { 0 };
    for (int t = 0; t < T; t++) {
        int64_t a = n * t / T, b = n * (t + 1) / T;
        jobs[t] = (ld_job){ name, dim, b - a, x + a * dim, logp + a, 0, "" };
        if (t > 0 && pthread_create(&th[t], NULL, ld_run, &jobs[t]) == 0) started[t] = 1;
    }
    ld_run(&jobs[0]);
    for (int t = 1; t < T; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else ld_run(&jobs[t]);
    }
    for (int t = 0; t < T; t++)
        if (jobs[t].rc) {
            snprintf(err, errlen, "%s", jobs[t].err);
            return -1;
        }
    return 0;
}

/* the exact log-density at the points of file `in`, written to `out` */
static int density_of(const char *name, int D, const char *in, const char *out) {
    char err[1024];
    rt_array a;
    memset(&a, 0, sizeof a);
    if (rt_read_data(in, &a, err, sizeof err)) {
        fprintf(stderr, "nfc data: error: %s\n", err);
        return 1;
    }
    int rc = 0;
    double *lp = NULL;
    if (a.shape[1] != D) {
        fprintf(stderr, "nfc data: error: %s: %lld columns, but %s is %d-D\n", in, (long long)a.shape[1], name, D);
        rc = 1;
    } else if (!(lp = malloc(sizeof(double) * (size_t)a.shape[0]))) {
        fprintf(stderr, "nfc data: error: out of memory for %lld values\n", (long long)a.shape[0]);
        rc = 1;
    } else if (log_density_parallel(name, D, a.shape[0], a.data, lp, err, sizeof err) ||
               rt_write_data(out, lp, a.shape[0], 1, RT_F64, err, sizeof err)) {
        fprintf(stderr, "nfc data: error: %s\n", err);
        rc = 1;
    } else {
        fprintf(stderr, "nfc data: wrote the log-density of %s at %lld point%s of %s to %s\n", name,
                (long long)a.shape[0], a.shape[0] == 1 ? "" : "s", in, out);
    }
    free(lp);
    rt_array_free(&a);
    return rc;
}

int cmd_data(int argc, char **argv) {
    const char *name = NULL, *out = NULL, *lpath = NULL, *of = NULL;
    int64_t n = -1, dim = 0;
    uint64_t seed = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs("usage: nfc data NAME -n N -o X [--seed S] [--dim D] [--log-density LP]\n"
                  "       nfc data NAME --log-density-of X -o LP [--dim D]\n" NFC_DATA_USAGE, stdout);
            return 0;
        }
        if ((v = optval(argc, argv, &i, "-o"))) out = v;
        else if ((v = optval(argc, argv, &i, "--log-density-of"))) of = v;
        else if ((v = optval(argc, argv, &i, "--log-density"))) lpath = v;
        else if ((v = optval(argc, argv, &i, "-n"))) {
            if (*v && !parse_i64(v, 1, DATA_MAX_N, &n)) return usage("-n takes a count from 1 to 10^8, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--seed"))) {
            if (*v && !parse_u64(v, &seed)) return usage("--seed takes a non-negative integer, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--dim"))) {
            if (*v && !parse_i64(v, RT_DS_GMM_MIN_DIM, RT_DS_GMM_MAX_DIM, &dim))
                return usage("--dim takes a dimension from 2 to 1024, not '%s'", v);
        } else if (!strncmp(a, "--color=", 8)) {
            /* handled by main */
        } else if (a[0] == '-' && a[1]) {
            return usage("unknown option '%s'", a);
        } else if (!name) {
            name = a;
        } else {
            return usage("unexpected argument '%s' (one data set name)", a);
        }
        if (v && !*v) return usage("option '%s' needs a value", a);
    }
    int count;
    const char *const *names = rt_ds_names(&count);
    if (!name) {
        fprintf(stderr, "nfc data: error: missing the data set name\n");
        list_names();
        fprintf(stderr, "Try 'nfc --help' for more information.\n");
        return 2;
    }
    if (rt_ds_dim(name, RT_DS_GMM_DEFAULT_DIM) < 0) {
        const char *sug = closest_word(name, names, count);
        fprintf(stderr, "nfc data: error: unknown data set '%s'", name);
        if (sug) fprintf(stderr, "; did you mean '%s'?", sug);
        fprintf(stderr, "\n");
        list_names();
        fprintf(stderr, "Try 'nfc --help' for more information.\n");
        return 2;
    }
    int is_gmm = !strcmp(name, "gmm");
    if (dim && !is_gmm) return usage("--dim is only for gmm ('%s' is 2-D)", name);
    if (of) {
        if (n >= 0 || lpath || seed) return usage("%s", "--log-density-of takes no -n, --seed or --log-density");
        if (!out) return usage("%s", "missing -o FILE, where to write the log-density (.npy or .csv)");
        if (!strcmp(of, out)) return usage("--log-density-of and -o name the same file '%s'", out);
        return density_of(name, rt_ds_dim(name, is_gmm ? (dim ? (int)dim : RT_DS_GMM_DEFAULT_DIM) : 0), of, out);
    }
    if (n < 0) return usage("%s", "missing -n N, the number of samples");
    if (!out) return usage("%s", "missing -o FILE, where to write the samples (.npy or .csv)");
    if (lpath && !strcmp(lpath, out)) return usage("--log-density and -o name the same file '%s'", out);
    int D = rt_ds_dim(name, is_gmm ? (dim ? (int)dim : RT_DS_GMM_DEFAULT_DIM) : 0);

    char err[1024];
    double *x = malloc(sizeof(double) * (size_t)n * (size_t)D);
    double *lp = lpath ? malloc(sizeof(double) * (size_t)n) : NULL;
    if (!x || (lpath && !lp)) {
        fprintf(stderr, "nfc data: error: out of memory for %lld x %d values\n", (long long)n, D);
        free(x);
        free(lp);
        return 1;
    }
    int rc = 0;
    if (rt_ds_sample(name, D, n, seed, x, NULL, err, sizeof err) ||
        (lpath && log_density_parallel(name, D, n, x, lp, err, sizeof err))) {
        fprintf(stderr, "nfc data: error: %s\n", err);
        rc = 1;
    } else if (rt_write_data(out, x, n, D, RT_F64, err, sizeof err) ||
               (lpath && rt_write_data(lpath, lp, n, 1, RT_F64, err, sizeof err))) {
        fprintf(stderr, "nfc data: error: %s\n", err);
        rc = 1;
    } else {
        fprintf(stderr, "nfc data: wrote %lld sample%s of %s (%d-D) to %s", (long long)n, n == 1 ? "" : "s", name, D,
                out);
        if (lpath) fprintf(stderr, " and their log-density to %s", lpath);
        fprintf(stderr, "\n");
    }
    free(x);
    free(lp);
    return rc;
}
