/* frontends/cli/train_cmd.c: `nfc train MODEL --data X -o W.safetensors [options]`.
 * Input: argv after the word "train". Output: checkpoints at -o (every --save-every steps and
 * at the end), progress on stderr (a redrawn bar on a terminal, plain lines otherwise), a
 * summary line on stdout. Exit 0, 1 for bad input (model, data, checkpoint, a non-finite
 * loss), 2 for usage errors. The training itself is runtime/train.c. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nfc.h"
#include "rt_io.h"
#include "train.h"
#include "train_cmd.h"


typedef struct {
    const char *model, *data, *context, *valid, *valid_context, *out, *resume, *weights;
    double      valid_frac;
    int         has_valid_frac;
    rt_train_config cfg;
    nfc_options opt;
} targs;

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "nfc train: error: ");
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

static int parse_args(int argc, char **argv, targs *t) {
    memset(t, 0, sizeof *t);
    rt_train_config_default(&t->cfg);
    nfc_options_default(&t->opt);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        int64_t iv;
        if ((v = optval(argc, argv, &i, "--data"))) t->data = v;
        else if ((v = optval(argc, argv, &i, "--context"))) t->context = v;
        else if ((v = optval(argc, argv, &i, "--valid-context"))) t->valid_context = v;
        else if ((v = optval(argc, argv, &i, "--valid-fraction"))) {
            if (!parse_f(v, &t->valid_frac) || t->valid_frac < 0 || t->valid_frac >= 1)
                return usage("--valid-fraction takes a number in [0, 1), not '%s'", v);
            t->has_valid_frac = 1;
        } else if ((v = optval(argc, argv, &i, "--valid"))) t->valid = v;
        else if ((v = optval(argc, argv, &i, "--resume"))) t->resume = v;
        else if ((v = optval(argc, argv, &i, "--weights"))) t->weights = v;
        else if ((v = optval(argc, argv, &i, "-o"))) t->out = v;
        else if ((v = optval(argc, argv, &i, "--epochs"))) {
            if (!parse_i64(v, 1, 1000000000, &iv)) return usage("--epochs takes a count from 1 to 10^9, not '%s'", v);
            t->cfg.epochs = iv;
        } else if ((v = optval(argc, argv, &i, "--steps"))) {
            if (!parse_i64(v, 1, 1000000000000LL, &iv)) return usage("--steps takes a count from 1 to 10^12, not '%s'", v);
            t->cfg.steps = iv;
        } else if ((v = optval(argc, argv, &i, "--batch"))) {
            if (!parse_i64(v, 1, 1000000000, &iv)) return usage("--batch takes a size from 1 to 10^9, not '%s'", v);
            t->cfg.batch = iv;
        } else if ((v = optval(argc, argv, &i, "--lr"))) {
            if (!parse_f(v, &t->cfg.lr) || !(t->cfg.lr > 0)) return usage("--lr takes a number > 0, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--seed"))) {
            if (!parse_u64(v, &t->cfg.seed)) return usage("--seed takes a non-negative integer, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--threads"))) {
            if (!parse_i64(v, 1, 1024, &iv)) return usage("--threads takes a count from 1 to 1024, not '%s'", v);
            t->cfg.threads = (int)iv;
        } else if ((v = optval(argc, argv, &i, "--save-every"))) {
            if (!parse_i64(v, 1, 1000000000000LL, &iv)) return usage("--save-every takes a step count >= 1, not '%s'", v);
            t->cfg.save_every = iv;
        } else if ((v = optval(argc, argv, &i, "--weight-decay"))) {
            if (!parse_f(v, &t->cfg.weight_decay) || t->cfg.weight_decay < 0)
                return usage("--weight-decay takes a number >= 0, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--clip"))) {
            if (!parse_f(v, &t->cfg.clip_norm) || t->cfg.clip_norm < 0)
                return usage("--clip takes a gradient norm >= 0 (0: no clipping), not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--warmup"))) {
            if (!parse_i64(v, 0, 1000000000000LL, &iv)) return usage("--warmup takes a step count >= 0, not '%s'", v);
            t->cfg.warmup = iv;
        } else if ((v = optval(argc, argv, &i, "--flow"))) t->opt.flow = v;
        else if ((v = optval(argc, argv, &i, "--cpu"))) t->opt.cpu = v;
        else if ((v = optval(argc, argv, &i, "--init-seed"))) {
            if (!parse_u64(v, &t->opt.init_seed)) return usage("--init-seed takes a non-negative integer, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--init-scale"))) {
            if (!parse_f(v, &t->opt.init_scale) || t->opt.init_scale < 0) return usage("--init-scale takes a number >= 0, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--dtype"))) {
            if (!strcmp(v, "f32")) t->opt.dtype = NFC_F32;
            else if (!strcmp(v, "f64")) t->opt.dtype = NFC_F64;
            else return usage("--dtype is f32 or f64, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--backend"))) {
            if (!strcmp(v, "jit")) t->opt.backend = NFC_BACKEND_JIT;
            else if (!strcmp(v, "interp")) t->opt.backend = NFC_BACKEND_INTERP;
            else return usage("--backend is jit or interp, not '%s'", v);
        } else if ((v = optval(argc, argv, &i, "--vector-width"))) {
            if (!parse_i64(v, 0, 16, &iv) || (iv != 0 && iv != 1 && iv != 2 && iv != 4 && iv != 8 && iv != 16))
                return usage("--vector-width is 0 (native), 1, 2, 4, 8 or 16, not '%s'", v);
            t->opt.vector_width = (int)iv;
        } else if (!strcmp(a, "-O0") || !strcmp(a, "-O1") || !strcmp(a, "-O2") || !strcmp(a, "-O3")) {
            t->opt.opt_level = a[2] - '0';
        } else if (!strcmp(a, "--no-fuse")) {
            t->opt.no_fuse = 1;
        } else if ((v = optval(argc, argv, &i, "--recompute"))) {
            if (!strcmp(v, "inverse")) t->opt.recompute = NFC_RECOMPUTE_INVERSE;
            else if (!strcmp(v, "none")) t->opt.recompute = NFC_RECOMPUTE_NONE;
            else return usage("--recompute is inverse or none, not '%s'", v);
        } else if (!strncmp(a, "--color=", 8)) {
            /* handled by main */
        } else if (a[0] == '-' && a[1]) {
            return usage("unknown option '%s'", a);
        } else if (!t->model) {
            t->model = a;
        } else {
            return usage("unexpected argument '%s' (one model file)", a);
        }
        if (v && !*v) return usage("option '%s' needs a value", a);
    }
    if (!t->model) return usage("%s", "missing the model (.flow file)");
    if (!t->data) return usage("%s", "missing --data FILE (the training data)");
    if (!t->out) return usage("%s", "missing -o FILE.safetensors (where the checkpoint goes)");
    if (t->cfg.epochs && t->cfg.steps) return usage("%s", "give --epochs or --steps, not both");
    if (t->resume && t->weights)
        return usage("%s", "give --resume (continue a run) or --weights (start a new run from parameters), not both");
    if (t->valid_context && !t->valid) return usage("%s", "--valid-context goes with --valid");
    if (t->valid && t->has_valid_frac) return usage("%s", "give --valid or --valid-fraction, not both");
    if (t->has_valid_frac) t->cfg.valid_frac = t->valid_frac;
    return 0;
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

/* the context of n rows: a file of n rows, or of one row used for every row */
static int read_context(const char *path, const char *flag, const char *rows_from, const nfc_model *m, int64_t n, rt_array *ca) {
    int C = nfc_model_context_dim(m);
    memset(ca, 0, sizeof *ca);
    if (!C) {
        if (path) {
            fprintf(stderr, "nfc: error: flow '%s' has no context input, but %s was given\n", nfc_model_name(m), flag);
            return -1;
        }
        return 0;
    }
    if (!path) {
        fprintf(stderr, "nfc: error: flow '%s' has a context input '%s' of %d values per sample: give it for %s with %s FILE\n",
                nfc_model_name(m), nfc_model_context_name(m), C, rows_from, flag);
        return -1;
    }
    char what[128];
    snprintf(what, sizeof what, "the context '%s'", nfc_model_context_name(m));
    if (read_cols(path, C, what, m, ca)) return -1;
    if (ca->shape[0] == n) return 0;
    if (ca->shape[0] == 1) {
        double *rep = malloc(sizeof(double) * (size_t)(n * C));
        if (!rep) { fprintf(stderr, "nfc: error: out of memory\n"); rt_array_free(ca); return -1; }
        for (int64_t r = 0; r < n; r++) memcpy(rep + r * C, ca->data, sizeof(double) * (size_t)C);
        free(ca->data);
        ca->data = rep;
        ca->shape[0] = n;
        return 0;
    }
    fprintf(stderr, "nfc: error: %s: %lld rows, but %s has %lld (give one context row per sample, or a single row for all)\n",
            path, (long long)ca->shape[0], rows_from, (long long)n);
    rt_array_free(ca);
    return -1;
}

/* ---- progress ---- */

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    const char *out;
    int         tty;
    int64_t     log_every;
    int64_t     saved_step;    /* last step written to out, -1: none in this run */
    double      last_draw;
    double      win_sum;       /* losses since the last plain line */
    int64_t     win_n;
    int         bar_shown;
    int64_t     line_step;     /* step of the last permanent validation line on a terminal */
} progress_state;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *dur(char *buf, size_t len, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long long t = (long long)(s + 0.5);
    if (s < 60) snprintf(buf, len, "%.1fs", s);
    else if (t < 3600) snprintf(buf, len, "%lld:%02lld", t / 60, t % 60);
    else snprintf(buf, len, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
    return buf;
}

static void clear_bar(progress_state *ps) {
    if (ps->tty && ps->bar_shown) {
        fputs("\r\033[K", stderr);
        ps->bar_shown = 0;
    }
}

static int on_progress(const rt_train_progress *p, void *user) {
    progress_state *ps = user;
    char b1[32], b2[32];
    if (p->event == RT_TRAIN_BEGIN) {
        ps->log_every = p->total_steps / 20 > 1 ? p->total_steps / 20 : 1;
        ps->line_step = p->start_step;
        fprintf(stderr, "training: %lld rows, %lld for validation, batch %lld (%lld steps per epoch), %lld steps (%lld epoch%s), %d thread%s\n",
                (long long)p->train_rows, (long long)p->valid_rows, (long long)p->batch, (long long)p->steps_per_epoch,
                (long long)p->total_steps, (long long)p->epochs, p->epochs == 1 ? "" : "s", p->threads, p->threads == 1 ? "" : "s");
        if (p->start_step > 0)
            fprintf(stderr, "resuming at step %lld of %lld\n", (long long)p->start_step, (long long)p->total_steps);
        fflush(stderr);
        return interrupted;
    }
    double left = p->step > p->start_step ? p->elapsed_s / (double)(p->step - p->start_step) * (double)(p->total_steps - p->step) : 0;
    if (p->event == RT_TRAIN_STEP) {
        ps->win_sum += p->loss;
        ps->win_n++;
        if (ps->tty) {
            double t = mono_s();
            if (t - ps->last_draw >= 0.1 || p->step == p->total_steps) {
                ps->last_draw = t;
                char vb[48] = "";
                if (!isnan(p->valid_nll)) snprintf(vb, sizeof vb, "  valid %.4f", p->valid_nll);
                int width = 20, fill = (int)((double)width * (double)p->step / (double)p->total_steps);
                char bar[32];
                for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
                bar[width] = 0;
                fprintf(stderr, "\r\033[Kstep %lld/%lld [%s] loss %.4f%s  %.0f samples/s  %s left", (long long)p->step,
                        (long long)p->total_steps, bar, p->loss, vb, p->samples_per_s, dur(b1, sizeof b1, left));
                fflush(stderr);
                ps->bar_shown = 1;
            }
        } else if (p->step % ps->log_every == 0 || p->step == p->total_steps) {
            fprintf(stderr, "step %lld/%lld  epoch %lld/%lld  loss %.6f  lr %.3g  %.0f samples/s  elapsed %s  left %s\n",
                    (long long)p->step, (long long)p->total_steps, (long long)p->epoch, (long long)p->epochs,
                    ps->win_sum / (double)ps->win_n, p->lr, p->samples_per_s, dur(b1, sizeof b1, p->elapsed_s),
                    dur(b2, sizeof b2, left));
            fflush(stderr);
            ps->win_sum = 0;
            ps->win_n = 0;
        }
    } else if (p->event == RT_TRAIN_VALID) {
        /* on a terminal the bar shows the last validation; a line stays about every 5% */
        if (ps->tty && p->step - ps->line_step < ps->log_every && p->step != p->total_steps) return interrupted;
        ps->line_step = p->step;
        clear_bar(ps);
        if (isnan(p->valid_nll))
            fprintf(stderr, "epoch %lld/%lld  step %lld/%lld  train loss %.6f\n", (long long)p->epoch, (long long)p->epochs,
                    (long long)p->step, (long long)p->total_steps, p->loss_avg);
        else
            fprintf(stderr, "epoch %lld/%lld  step %lld/%lld  train loss %.6f  valid NLL %.6f nats  %.4f bits/dim\n",
                    (long long)p->epoch, (long long)p->epochs, (long long)p->step, (long long)p->total_steps, p->loss_avg,
                    p->valid_nll, p->valid_bpd);
        fflush(stderr);
    }
    return interrupted;
}

static int on_checkpoint(const nfc_model *m, const rt_train_ckpt *c, void *user, char *err, size_t errlen) {
    progress_state *ps = user;
    if (rt_train_save_checkpoint(m, c, ps->out, err, errlen)) return -1;
    ps->saved_step = c->step;
    return 0;
}

/* the directory of path must exist and be writable, or training would fail at the first save */
static int check_out_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (access(dir, W_OK | X_OK)) {
        fprintf(stderr, "nfc: error: %s: cannot write the checkpoint in '%s': %s\n", path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

int cmd_train(int argc, char **argv, int color) {
    targs t;
    int rc = parse_args(argc, argv, &t);
    if (rc) return rc;
    nfc_diagnostics *d = NULL;
    nfc_model *m = nfc_compile_file(t.model, &t.opt, &d);
    if (!m) {
        nfc_diagnostics_print(d, stderr, color);
        nfc_diagnostics_free(d);
        return 1;
    }
    nfc_diagnostics_free(d);
    rt_array xa = { 0 }, ca = { 0 }, va = { 0 }, vca = { 0 };
    rt_train_ckpt ck;
    memset(&ck, 0, sizeof ck);
    char err[2048];
    rc = 1;
    if (check_out_dir(t.out)) goto done;
    if (t.weights && nfc_load_weights(m, t.weights)) {
        fprintf(stderr, "nfc: error: %s\n", nfc_last_error(m));
        goto done;
    }
    int D = nfc_model_dim(m);
    char what[160];
    snprintf(what, sizeof what, "the input '%s'", nfc_model_input_name(m));
    if (read_cols(t.data, D, what, m, &xa)) goto done;
    if (read_context(t.context, "--context", t.data, m, xa.shape[0], &ca)) goto done;
    if (t.valid) {
        if (read_cols(t.valid, D, what, m, &va)) goto done;
        if (read_context(t.valid_context, "--valid-context", t.valid, m, va.shape[0], &vca)) goto done;
    }
    if (t.resume && rt_train_load_checkpoint(m, t.resume, &ck, err, sizeof err)) {
        fprintf(stderr, "nfc: error: %s\n", err);
        goto done;
    }
    rt_train_data data = { xa.data, ca.data, xa.shape[0], va.data, vca.data, va.data ? va.shape[0] : 0 };
    if (t.weights) t.cfg.actnorm_init = 0; /* keep the given parameters */
    progress_state ps;
    memset(&ps, 0, sizeof ps);
    ps.out = t.out;
    ps.tty = isatty(2);
    ps.saved_step = -1;
    rt_train_callbacks cb = { on_progress, on_checkpoint, &ps };
    /* Ctrl-C: stop after the current step and save it (unless SIGINT is ignored, as in
     * background jobs of scripts); a second Ctrl-C kills */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    sigaction(SIGINT, NULL, &old);
    if (old.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, NULL);
    rt_train_result res;
    int r = rt_train_run(m, &t.cfg, &data, t.resume ? &ck : NULL, &cb, &res, err, sizeof err);
    sigaction(SIGINT, &old, NULL);
    clear_bar(&ps);
    if (r < 0) {
        fprintf(stderr, "nfc: error: %s\n", err);
        if (ps.saved_step >= 0)
            fprintf(stderr, "nfc: note: %s holds the last good checkpoint (step %lld)\n", t.out, (long long)ps.saved_step);
        else if (t.resume && !strcmp(t.resume, t.out))
            fprintf(stderr, "nfc: note: %s still holds the checkpoint of step %lld\n", t.out, (long long)ck.step);
        else if (res.bad_step)
            fprintf(stderr, "nfc: note: no checkpoint was written (give --save-every N to keep intermediate ones)\n");
        goto done;
    }
    if (r == 1) {
        if (ps.saved_step >= 0)
            fprintf(stderr, "nfc: interrupted at step %lld of %lld; %s holds that step (continue with --resume %s)\n",
                    (long long)res.step, (long long)res.total_steps, t.out, t.out);
        else
            fprintf(stderr, "nfc: interrupted before the first step; nothing was written\n");
        goto done;
    }
    char b[32];
    printf("flow %s: step %lld/%lld, train loss %.6f, ", nfc_model_name(m), (long long)res.step, (long long)res.total_steps,
           res.train_loss);
    if (isnan(res.valid_nll)) printf("no validation, ");
    else printf("validation NLL %.6f nats, %.4f bits/dim, ", res.valid_nll, res.valid_bpd);
    printf("%s; checkpoint %s\n", dur(b, sizeof b, res.elapsed_s), t.out);
    rc = 0;
done:
    rt_train_ckpt_free(&ck);
    rt_array_free(&xa);
    rt_array_free(&ca);
    rt_array_free(&va);
    rt_array_free(&vca);
    nfc_free(m);
    return rc;
}
