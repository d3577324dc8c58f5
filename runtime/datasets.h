/* runtime/datasets.h: the standard 2-D toy data sets and a Gaussian mixture in any dimension,
 * each with its EXACT log-density, for training and checking normalizing flows.
 *
 * Input:  a data set name, a count and a seed (sampling), or points (density).
 * Output: samples [n, dim] row-major and/or log p(x) per point (natural log), as doubles.
 *
 * Names: "moons", "circles", "8gaussians", "pinwheel", "2spirals", "checkerboard" (2-D) and
 * "gmm" (dimension gmm_dim, 2..1024). The exact definitions (formulas and constants) are in
 * the banner of datasets.c; the log-density is always the density of exactly the distribution
 * the sampler draws from.
 *
 * Sampling is counter-based: sample i depends only on (seed, i), so the first k samples of an
 * n-sample run equal a k-sample run, and the arithmetic is plain IEEE double with no
 * contraction (-std=c11), so results are reproducible wherever libm agrees.
 *
 * Nothing here prints or exits; functions return 0 on success or -1 with a message in err
 * (at most errlen bytes, NUL included). There is no global state: every function is safe to
 * call from several threads at once.
 */
#ifndef NFC_RT_DATASETS_H
#define NFC_RT_DATASETS_H
#include <stddef.h>
#include <stdint.h>

enum { RT_DS_GMM_K = 8, RT_DS_GMM_MIN_DIM = 2, RT_DS_GMM_MAX_DIM = 1024, RT_DS_GMM_DEFAULT_DIM = 8 };

/* The names, in a fixed order (7 of them); *count gets their number when count is not NULL. */
const char *const *rt_ds_names(int *count);

/* The dimension of a data set: 2 for the 2-D sets, gmm_dim for "gmm" (-1 when gmm_dim is
 * outside 2..1024); -1 for an unknown name. */
int rt_ds_dim(const char *name, int gmm_dim);

/* n >= 0 samples into x [n, dim]; logp (NULL or [n]) gets each sample's exact log-density.
 * gmm_dim is ignored for the 2-D sets. */
int rt_ds_sample(const char *name, int gmm_dim, int64_t n, uint64_t seed, double *x, double *logp,
                 char *err, size_t errlen);

/* The exact log-density at n points x [n, dim] into logp [n]. Points outside the support of
 * checkerboard get -INFINITY; coordinates that are NaN or infinite are an error. */
int rt_ds_log_density(const char *name, int gmm_dim, int64_t n, const double *x, double *logp,
                      char *err, size_t errlen);

/* The same with the quadrature of the curve sets (moons, circles, 2spirals) refined: each
 * level halves the base panels and tightens the error tolerance 100-fold (refine 0 is
 * rt_ds_log_density). For tests of the quadrature's convergence; refine is 0..4. */
int rt_ds_log_density_refined(const char *name, int gmm_dim, int64_t n, const double *x,
                              double *logp, int refine, char *err, size_t errlen);

/* The parameters of the "gmm" mixture in dimension dim: means and standard deviations, each
 * [RT_DS_GMM_K, dim] row-major (the weights are equal, 1/RT_DS_GMM_K). -1 for a bad dim. */
int rt_ds_gmm_params(int dim, double *means, double *scales);

#endif
