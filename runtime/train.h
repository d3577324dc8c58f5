/* runtime/train.h: training normalizing flows by maximum likelihood (the runtime of `nfc train`).
 *
 * Input:  a compiled model (include/nfc.h), training rows x [n, D] (and a context [n, C] for
 *         conditional flows), optionally a separate validation set, a configuration, and
 *         optionally a checkpoint to resume from.
 * Output: the trained parameters in the model, checkpoints through a callback, progress
 *         through a callback, and a result summary. Nothing here prints or exits: errors come
 *         back as -1 with a message in the caller's buffer.
 *
 * The optimizer is AdamW (decoupled weight decay, as torch.optim.AdamW) on the mean negative
 * log-likelihood of a minibatch, with global gradient-norm clipping and a learning rate that
 * rises linearly for `warmup` updates and then follows a cosine from lr down to
 * lr * final_lr_frac at the last update.
 *
 * Determinism. Every result is a pure function of the data, the configuration and the
 * seed, never of timing or of the number of threads:
 *   - the validation split (when no separate validation set is given) is a permutation of
 *     all rows from a counter-based hash of the seed, chosen before training;
 *   - epoch e's order of the training rows is a Fisher-Yates shuffle driven by a
 *     counter-based hash of (seed, e); update k (0-based) takes rows
 *     [(k mod S) * B, (k mod S) * B + B) of epoch k / S's order, where S is the number of
 *     whole batches per epoch (the last incomplete batch is dropped);
 *   - a batch is cut into shards of a fixed size (`shard`: by default a quarter of the batch,
 *     32 to 256 rows) whatever the thread
 *     count; threads take shards and their loss and gradient sums are added in shard order.
 * So a run that stops and resumes from a checkpoint (which records the step and every
 * setting) ends with bit-identical parameters and optimizer state, given the same backend
 * and dtype (which the model hash does not cover, so they are not checked).
 *
 * Checkpoints are safetensors files: the parameters under their own names, F64 (so
 * nfc_load_weights and `--weights` read a checkpoint directly), "adam.m.NAME" and
 * "adam.v.NAME" (F64), and metadata nfc.model_hash, nfc.flow, nfc.version, nfc.format,
 * nfc.optimizer, nfc.step, nfc.rng_state (the key of the next update's epoch order, a
 * function of seed and step), every setting of rt_train_settings (nfc.seed, nfc.batch,
 * nfc.shard, nfc.lr, nfc.total_steps, nfc.train_rows, nfc.valid_rows, nfc.data_hash, ...)
 * and nfc.checksum (of the step, the settings and every value). No time or thread count is
 * recorded, so equal states give equal files. Written atomically (temp file, fsync,
 * rename); loading validates everything and changes nothing unless all of it is valid.
 */
#ifndef NFC_RT_TRAIN_H
#define NFC_RT_TRAIN_H
#include <stddef.h>
#include <stdint.h>

#include "nfc.h"

/* ---- configuration ---- */

typedef struct {
    int64_t  batch;          /* rows per update; default 256 (clamped to the training rows) */
    double   lr;             /* peak learning rate; default 1e-3 */
    double   beta1, beta2;   /* AdamW moment decays; default 0.9, 0.999 */
    double   eps;            /* AdamW epsilon; default 1e-8 */
    double   weight_decay;   /* decoupled weight decay, on every parameter; default 0 */
    double   clip_norm;      /* clip the global gradient norm to this; default 10; 0: off */
    int64_t  warmup;         /* updates of linear warm-up (lr * t / warmup); default 100 */
    double   final_lr_frac;  /* the cosine decays to lr * this at the last update; default 0.05 */
    int64_t  epochs;         /* passes over the training rows; 0: 20 unless steps is set */
    int64_t  steps;          /* total updates from the start of training; 0: from epochs */
    double   valid_frac;     /* fraction of the rows held out for validation when no separate
                                validation set is given; default 0.1; 0: no validation */
    int64_t  valid_every;    /* validate every this many updates; 0 (default): at the end of
                                each epoch, or every max(1, total/10) when total < one epoch;
                                always also after the last update */
    uint64_t seed;           /* batches and validation split; default 0 */
    int      threads;        /* worker threads; 0 (default): the number of online CPUs */
    int64_t  shard;          /* rows per shard of a batch; 0 (default): a quarter of the batch,
                                a multiple of 16 from 32 to 256 rows (part of the result: a
                                resumed run must use the same) */
    int64_t  save_every;     /* call the checkpoint callback every this many updates (and
                                always at the end); default 0: only at the end */
    int      actnorm_init;   /* 1 (default): data-dependent actnorm initialization on the first
                                batch of a run that does not resume */
    int      verify_bound;   /* for tests, default 0: run AdamW's check pass even where the
                                bound (rt_adam_bound_finite) makes it unnecessary, and fail
                                the run if the bound claimed a finite update that was not, or
                                if the per-block maxima it reads are below the state's */
} rt_train_config;

void rt_train_config_default(rt_train_config *c);

/* ---- data ---- */

typedef struct {
    const double *x;     /* [n, D] training rows (before the validation split) */
    const double *ctx;   /* [n, C] or NULL for flows without context */
    int64_t       n;
    const double *vx;    /* [vn, D] a separate validation set, or NULL: split x by valid_frac */
    const double *vctx;  /* [vn, C] or NULL */
    int64_t       vn;
} rt_train_data;

/* ---- checkpoints ---- */

/* Everything the result of a run depends on besides the model and the data values: a
 * resumed run must match these exactly. */
typedef struct {
    uint64_t seed;
    int64_t  batch, shard, warmup, total_steps, train_rows, valid_rows;
    double   lr, beta1, beta2, eps, weight_decay, clip_norm, final_lr_frac;
    uint64_t data_hash;      /* of the training and validation values */
} rt_train_settings;

typedef struct {
    int64_t           step;     /* updates done */
    rt_train_settings s;
    int64_t           nparams;  /* nfc_param_total of the model */
    double           *adam_m;   /* [nparams] first moments (malloc'ed by load) */
    double           *adam_v;   /* [nparams] second moments */
    char             *path;     /* the file it was loaded from (malloc'ed; NULL: none) */
} rt_train_ckpt;

/* Write the model's parameters and c's optimizer state to path, atomically. */
int  rt_train_save_checkpoint(const nfc_model *m, const rt_train_ckpt *c, const char *path, char *err, size_t errlen);
/* Read a checkpoint written by rt_train_save_checkpoint: checks the model hash, every tensor's
 * presence, shape and finiteness, and the metadata; then sets the model's parameters and fills
 * *out (free with rt_train_ckpt_free). On error (message starting with path) neither the model
 * nor *out (zeroed) holds anything from the file. */
int  rt_train_load_checkpoint(nfc_model *m, const char *path, rt_train_ckpt *out, char *err, size_t errlen);
void rt_train_ckpt_free(rt_train_ckpt *c);

/* ---- progress ---- */

enum {
    RT_TRAIN_BEGIN = 0,  /* before the first update of this run: the plan is known */
    RT_TRAIN_STEP,       /* after each update */
    RT_TRAIN_VALID,      /* after a validation (epoch end, every valid_every, the end) */
};

typedef struct {
    int      event;
    int64_t  step;             /* updates done */
    int64_t  start_step;       /* where this run started (0, or the resumed step) */
    int64_t  total_steps;
    int64_t  steps_per_epoch;
    int64_t  epoch;            /* 1-based epoch of the last update (0 at BEGIN of a fresh run) */
    int64_t  epochs;           /* ceil(total_steps / steps_per_epoch) */
    int64_t  batch;            /* effective batch size */
    int64_t  train_rows, valid_rows;
    int      threads;
    double   loss;             /* mean NLL (nats) of this update's batch */
    double   loss_avg;         /* mean of the update losses since the previous validation */
    double   lr;               /* learning rate of this update */
    double   grad_norm;        /* before clipping */
    double   valid_nll;        /* mean validation NLL (nats); NaN before the first / without */
    double   valid_bpd;        /* valid_nll / (D ln 2) */
    double   elapsed_s;        /* since this run started */
    double   samples_per_s;    /* training rows per second in this run */
} rt_train_progress;

/* Return nonzero to stop: the run then hands the current (consistent) state to the
 * checkpoint callback and returns 1. */
typedef int (*rt_train_progress_fn)(const rt_train_progress *p, void *user);
/* Save c (state after c->step updates; the model holds the parameters). Return 0, or -1 with
 * a message in err: the run stops with that error. */
typedef int (*rt_train_checkpoint_fn)(const nfc_model *m, const rt_train_ckpt *c, void *user, char *err, size_t errlen);

typedef struct {
    rt_train_progress_fn   progress;     /* may be NULL */
    rt_train_checkpoint_fn checkpoint;   /* may be NULL */
    void                  *user;
} rt_train_callbacks;

typedef struct {
    int64_t step;                 /* updates done when the run returned */
    int64_t total_steps, steps_per_epoch, batch, train_rows, valid_rows;
    double  train_loss;           /* mean update loss over the last validation interval
                                     (the last epoch, usually) */
    double  valid_nll, valid_bpd; /* of the last validation; NaN without */
    double  elapsed_s;
    int64_t bad_step;             /* NaN guard: the update (1-based) that failed, else 0 */
    int     bad_layer;            /* its first non-finite layer (1-based), 0: gradient only */
    int64_t opt_checks_skipped;   /* updates whose check pass the bound made unnecessary */
} rt_train_result;

/* Train m on data for the configured number of updates (from resume->step when resume is
 * not NULL; its settings must equal this run's, else an error names the setting). Returns 0
 * when done, 1 when the progress callback asked to stop, -1 on error (message in err; on a
 * non-finite loss, gradient or parameter the model keeps the last good parameters and no
 * checkpoint of the bad state is written). res may be NULL. */
int rt_train_run(nfc_model *m, const rt_train_config *cfg, const rt_train_data *data, const rt_train_ckpt *resume,
                 const rt_train_callbacks *cb, rt_train_result *res, char *err, size_t errlen);

/* ---- the pieces, for tests ---- */

/* One AdamW update of n values at update number t (1-based):
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p = p (1 - lr wd) - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) */
void    rt_adam_step(int64_t n, double *p, double *m, double *v, const double *g, int64_t t, double lr, double beta1,
                     double beta2, double eps, double weight_decay);
/* The same update written to po, mo, vo (which may be p, m, v), from g * gscale. */
void    rt_adam_step_to(int64_t n, const double *p, const double *m, const double *v, const double *g, double gscale,
                        double *po, double *mo, double *vo, int64_t t, double lr, double beta1, double beta2, double eps,
                        double weight_decay);
/* 1 if no AdamW update of rt_adam_step_to can give a non-finite value when every |p| <= pmax,
 * |m| <= mmax, 0 <= v <= vmax and the gradient's Euclidean norm is gnorm (so every |g| <=
 * gnorm), scaled by gscale: then the training step's check pass is not needed (train.c,
 * opt_bound). 0 when the bound does not show it (which says nothing about the update). */
int     rt_adam_bound_finite(double pmax, double mmax, double vmax, double gnorm, double gscale, int64_t t, double lr,
                             double beta1, double beta2, double eps, double weight_decay);
/* Scale g so its Euclidean norm is at most max_norm (0: no clipping); returns the norm before. */
double  rt_train_clip(int64_t n, double *g, double max_norm);
/* The learning rate of update t (1-based) of total. */
double  rt_train_lr(const rt_train_config *c, int64_t t, int64_t total);
/* The validation split of n rows: *nvalid = floor(valid_frac * n) rows (at most n - 1; sorted
 * indices in valid, which may be NULL) and the rest (sorted, in train, which may be NULL).
 * *nvalid is -1 when out of memory. */
void    rt_train_split(uint64_t seed, int64_t n, double valid_frac, int64_t *nvalid, int64_t *train, int64_t *valid);
/* Epoch e's order of ntrain rows (a permutation of 0..ntrain-1). */
void    rt_train_epoch_order(uint64_t seed, int64_t epoch, int64_t ntrain, int64_t *order);
/* The batch of update k (0-based): batch positions into the training rows. */
void    rt_train_batch_rows(uint64_t seed, int64_t ntrain, int64_t batch, int64_t k, int64_t *rows);
/* The hash of the data values that checkpoints record. */
uint64_t rt_train_data_hash(const rt_train_data *d, int D, int C);

/* The runtime's loops over all parameters (the optimizer, the shards' sums) are compiled
 * for AVX-512 and AVX2 too, chosen when the program starts (GCC's and clang's target_clones).
 * Each value's arithmetic is the same IEEE operations in every version (C11 mode: no FMA
 * contraction), so the results are the same bits on every machine. */
/* Not under the sanitizers: the clones' ifunc resolvers run while the program is being
 * loaded, before a sanitizer's runtime is set up, and their instrumentation crashes there. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define RT_NO_CLONES 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RT_NO_CLONES 1
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(RT_NO_CLONES)
#define RT_PARAM_LOOP __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RT_PARAM_LOOP
#endif

/* ---- the thread pool (runtime/threads.c) ---- */

/* T threads, each with its own nfc_worker of m (m NULL: no workers, for rt_pool_for only).
 * Returns NULL with a message in err. */
typedef struct rt_pool rt_pool;
rt_pool *rt_pool_new(nfc_model *m, int threads, char *err, size_t errlen);
/* The loss and gradient sums of n rows: cut into shards of `shard` rows, computed T at a
 * time; the shards' sums are added in shard order (the additions split over the threads by
 * parameter), so the result does not depend on the thread count or on timing. m's
 * parameters must not change during the call.
 * block == 0: grad gets the sums. block > 0: grad gets the mean gradient (the sums / n), and
 * for each block b of `block` parameters, sumsq[b] its sum of squares (in a fixed order) and
 * bad[b] = 1 if one of its values is not finite, 0 if not. */
int      rt_pool_loss_grad(rt_pool *p, int64_t n, const double *x, const double *ctx, int64_t shard, double *loss_sum,
                           double *grad, int64_t block, double *sumsq, char *bad, char *err, size_t errlen);
/* fn(ctx, b) for every b in [0, nblocks), spread over the threads; returns when all are done. */
void     rt_pool_for(rt_pool *p, int64_t nblocks, void (*fn)(void *ctx, int64_t b), void *ctx);
int      rt_pool_threads(const rt_pool *p);
void     rt_pool_free(rt_pool *p);

#endif
