/* runtime/threads.c: the thread pool that computes a batch's loss and gradient (train.h).
 * Input: a batch of rows. Output: the sum of -log p over the rows and its gradient.
 * The batch is cut into shards of a fixed size; T threads, each with its own nfc_worker,
 * take shards in increasing order, and the shard that is next in order adds its sums into
 * the total (others wait their turn), so the total is ((0 + s0) + s1) + ... whatever T and
 * whatever the timing: the same bits for any thread count. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

typedef struct {
    rt_pool    *p;
    nfc_worker *w;
    double     *g;
    pthread_t   th;
} pool_thread;

struct rt_pool {
    pthread_mutex_t mu;
    pthread_cond_t  work, turn, done;
    int             nt, started;
    pool_thread    *t;
    uint64_t        gen;       /* job generation */
    int             quit;
    /* the job */
    const double   *x, *ctx;
    int             D, C;
    int64_t         P, n, shard, nshards, next, next_add;
    int             active, failed;
    double         *gsum, lsum;
    char            err[1024];
};

static void *thread_main(void *arg) {
    pool_thread *me = arg;
    rt_pool *p = me->p;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->gen == seen) pthread_cond_wait(&p->work, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        while (!p->failed && p->next < p->nshards) {
            int64_t k = p->next++;
            int64_t r0 = k * p->shard, c = p->n - r0 < p->shard ? p->n - r0 : p->shard;
            const double *x = p->x + r0 * p->D, *ctx = p->ctx ? p->ctx + r0 * p->C : NULL;
            pthread_mutex_unlock(&p->mu);
            double ls = 0;
            int rc = nfc_worker_loss_grad(me->w, c, x, ctx, &ls, me->g);
            pthread_mutex_lock(&p->mu);
            while (p->next_add != k) pthread_cond_wait(&p->turn, &p->mu);
            /* our turn: nobody else touches the sums until next_add moves on */
            if (rc && !p->failed) {
                p->failed = 1;
                snprintf(p->err, sizeof p->err, "%s", nfc_worker_error(me->w));
            }
            if (!p->failed) {
                pthread_mutex_unlock(&p->mu);
                double *gs = p->gsum;
                for (int64_t i = 0; i < p->P; i++) gs[i] += me->g[i];
                p->lsum += ls;
                pthread_mutex_lock(&p->mu);
            }
            p->next_add++;
            pthread_cond_broadcast(&p->turn);
        }
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void rt_pool_free(rt_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) pthread_join(p->t[i].th, NULL);
    for (int i = 0; i < p->nt; i++) {
        nfc_worker_free(p->t[i].w);
        free(p->t[i].g);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->turn);
    pthread_cond_destroy(&p->done);
    free(p->t);
    free(p);
}

rt_pool *rt_pool_new(nfc_model *m, int threads, char *err, size_t errlen) {
    if (threads < 1) threads = 1;
    rt_pool *p = calloc(1, sizeof *p);
    if (!p) { snprintf(err, errlen, "out of memory"); return NULL; }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->turn, NULL);
    pthread_cond_init(&p->done, NULL);
    p->D = nfc_model_dim(m);
    p->C = nfc_model_context_dim(m);
    p->P = nfc_param_total(m);
    p->t = calloc((size_t)threads, sizeof *p->t);
    if (!p->t) { snprintf(err, errlen, "out of memory"); rt_pool_free(p); return NULL; }
    p->nt = threads;
    /* workers are made here, on one thread: the first builds the gradient program */
    for (int i = 0; i < threads; i++) {
        p->t[i].p = p;
        p->t[i].w = nfc_worker_new(m);
        if (!p->t[i].w) { snprintf(err, errlen, "%s", nfc_last_error(m)); rt_pool_free(p); return NULL; }
        p->t[i].g = malloc(sizeof(double) * (size_t)(p->P + 1));
        if (!p->t[i].g) { snprintf(err, errlen, "out of memory"); rt_pool_free(p); return NULL; }
    }
    for (int i = 0; i < threads; i++) {
        int e = pthread_create(&p->t[i].th, NULL, thread_main, &p->t[i]);
        if (e) {
            snprintf(err, errlen, "cannot start thread %d of %d: %s", i + 1, threads, strerror(e));
            rt_pool_free(p);
            return NULL;
        }
        p->started++;
    }
    return p;
}

int rt_pool_loss_grad(rt_pool *p, int64_t n, const double *x, const double *ctx, int64_t shard, double *loss_sum,
                      double *grad_sum, char *err, size_t errlen) {
    if (n < 1 || shard < 1) { snprintf(err, errlen, "empty batch"); return -1; }
    memset(grad_sum, 0, sizeof(double) * (size_t)p->P);
    pthread_mutex_lock(&p->mu);
    p->x = x;
    p->ctx = ctx;
    p->n = n;
    p->shard = shard;
    p->nshards = (n + shard - 1) / shard;
    p->next = 0;
    p->next_add = 0;
    p->failed = 0;
    p->gsum = grad_sum;
    p->lsum = 0;
    p->active = p->nt;
    p->gen++;
    pthread_cond_broadcast(&p->work);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
    int failed = p->failed;
    *loss_sum = p->lsum;
    if (failed) snprintf(err, errlen, "%s", p->err);
    pthread_mutex_unlock(&p->mu);
    return failed ? -1 : 0;
}
