/* runtime/rt_io.h: data and checkpoint I/O for the nfc runtime.
 *
 * Input:  data files (NPY v1/v2/v3 with '<f4'/'<f8', or CSV of numbers) and checkpoint files
 *         (safetensors with F32/F64 tensors plus string metadata), from disk or from memory.
 * Output: rt_array (a rows x cols matrix of doubles) and rt_tensorfile (named tensors of doubles
 *         plus metadata); and the same written back, atomically (temp file, fsync, rename).
 *
 * Every reader validates all of its input and never reads out of bounds, whatever the bytes.
 * Nothing here prints or exits: each function returns 0 on success or -1 on error, with a
 * message in the caller's buffer err (at most errlen bytes, NUL included) that starts with the
 * file name and says where the problem is, e.g. "data.csv:17: field 3 is not a number: 'abc'".
 * On error the output structure is left zeroed, with nothing to free.
 *
 * Implementation: npy.c (NPY, rt_read_data/rt_write_data, shared file helpers), csv.c (CSV),
 * safetensors.c (safetensors and its small JSON parser).
 */
#ifndef NFC_RT_IO_H
#define NFC_RT_IO_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { RT_F32 = 1, RT_F64 = 2 };

/* ---- data files: NPY and CSV ---- */

typedef struct {
    int     dtype;      /* RT_F32 or RT_F64 (CSV always gives RT_F64) */
    int     ndim;       /* 1 or 2 (CSV always gives 2) */
    int64_t shape[2];   /* rows, cols (for ndim 1: shape[0] = n, shape[1] = 1) */
    double *data;       /* always converted to double, row-major, malloc'ed; rows*cols values */
} rt_array;

void rt_array_free(rt_array *a);

/* Read a data file: NPY if the name ends in .npy, otherwise CSV. NaN and Inf values, empty
 * files and files with zero rows or zero columns are errors. */
int rt_read_data(const char *path, rt_array *out, char *err, size_t errlen);

/* The same parsers on a memory buffer (for fuzzing); name is used only in messages. */
int rt_npy_parse(const char *name, const unsigned char *buf, size_t len, rt_array *out,
                 char *err, size_t errlen);
int rt_csv_parse(const char *name, const char *buf, size_t len, rt_array *out,
                 char *err, size_t errlen);

/* Write rows x cols doubles (rows, cols >= 1): .npy -> NPY v1.0 '<f4' or '<f8' per dtype,
 * C order, always 2-d shape (rows, cols); anything else -> CSV with %.9g (f32) or %.17g (f64),
 * no header. Written atomically (temp file in the same directory, fsync, rename). */
int rt_write_data(const char *path, const double *data, int64_t rows, int64_t cols, int dtype,
                  char *err, size_t errlen);

/* ---- checkpoints: safetensors ---- */

typedef struct {
    char    *name;
    int      dtype;       /* RT_F32 or RT_F64 */
    int      ndim;        /* 0..4 */
    int64_t  shape[4];
    double  *data;        /* converted to double, malloc'ed (never NULL after a read) */
    int64_t  numel;       /* product of shape (1 for ndim 0) */
} rt_tensor;

typedef struct {
    rt_tensor *t; int n;                        /* tensors in file order of the header */
    char **meta_keys, **meta_vals; int nmeta;   /* __metadata__ */
} rt_tensorfile;

int  rt_st_read(const char *path, rt_tensorfile *out, char *err, size_t errlen);
int  rt_st_parse(const char *name, const unsigned char *buf, size_t len, rt_tensorfile *out,
                 char *err, size_t errlen);
void rt_st_free(rt_tensorfile *f);
const rt_tensor *rt_st_find(const rt_tensorfile *f, const char *name);   /* NULL if absent */
const char *rt_st_meta(const rt_tensorfile *f, const char *key);         /* NULL if absent */

/* Write tensors (each stored as its dtype, little endian) and metadata, atomically: write
 * PATH.tmp.<pid>, fflush + fsync, rename over PATH, fsync the directory. On failure the temp
 * file is removed and PATH is untouched. Names and metadata must be valid UTF-8, names unique
 * and not "__metadata__"; numel must equal the product of shape. */
int  rt_st_write(const char *path, const rt_tensor *t, int n, const char *const *meta_keys,
                 const char *const *meta_vals, int nmeta, char *err, size_t errlen);

/* ---- internal helpers shared by npy.c, csv.c and safetensors.c (in npy.c unless noted) ---- */

/* snprintf into err, if err and errlen allow. */
void rt_io_errf(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Copy bytes s[0..n) into dst as printable text (escapes for odd bytes), cut with "..." when
 * longer than about 40 characters; for quoting input in messages. Returns dst. */
char *rt_io_quote(char *dst, size_t dstlen, const char *s, size_t n);
/* Read a whole file into a malloc'ed buffer (with one extra NUL byte after len). */
int  rt_io_read_file(const char *path, unsigned char **buf, size_t *len, char *err, size_t errlen);
/* Write PATH atomically: emit(f, ctx) writes the contents and returns 0, or -1 with err set. */
typedef int (*rt_io_emit_fn)(FILE *f, void *ctx, char *err, size_t errlen);
int  rt_io_write_atomic(const char *path, rt_io_emit_fn emit, void *ctx, char *err, size_t errlen);
/* Write rows x cols values as CSV atomically (defined in csv.c; arguments already checked). */
int  rt_io_write_csv(const char *path, const double *data, int64_t rows, int64_t cols, int dtype,
                     char *err, size_t errlen);
/* Little-endian f32/f64 values <-> doubles. put returns 0, or -1 on a write error. */
void rt_io_get_values(const unsigned char *p, size_t n, int dtype, double *out);
int  rt_io_put_values(FILE *f, const double *v, size_t n, int dtype);

#endif
