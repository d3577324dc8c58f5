/* runtime/csv.c: CSV reader and writer for data files.
 *
 * Input:  comma-separated numbers, one record per line. The first record may be a header (it
 *         is one if any of its fields is a non-empty non-number); blank lines and lines starting
 *         with '#' are skipped; CRLF line ends, a UTF-8 byte order mark, and spaces or tabs
 *         around fields are accepted. Every record must have as many fields as the first one.
 * Output: an rt_array (dtype RT_F64, ndim 2, rows x cols), or an error message such as
 *         "data.csv:17: field 3 is not a number: 'abc'" (lines and fields counted from 1).
 *         NaN, Inf and out-of-range values are errors. The writer prints %.17g (f64) or %.9g
 *         (f32) values, no header, through the atomic writer in npy.c.
 *
 * Numbers are parsed with strtod, which follows the C locale's decimal point: a program that
 * calls setlocale(LC_NUMERIC, ...) with a comma locale would break CSV files everywhere.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt_io.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NUM_OK, NUM_EMPTY, NUM_BAD, NUM_LONG, NUM_RANGE };

/* Parse the field s[0..n) (already trimmed) as a whole number. */
static int parse_num(const char *s, size_t n, double *v) {
    char tmp[512];
    char *end;
    double x;
    if (n == 0)
        return NUM_EMPTY;
    if (n >= sizeof tmp)
        return NUM_LONG;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    x = strtod(tmp, &end);
    if (end != tmp + n)
        return NUM_BAD;
    if (errno == ERANGE && isinf(x))
        return NUM_RANGE;
    *v = x;
    return NUM_OK;
}

static int is_blank(char c) {
    return c == ' ' || c == '\t';
}

/* The next field of the record [*p, end): trimmed into [*fs, *fe); *p moves past the comma.
 * Returns 0 after the last field. */
static int next_field(const char **p, const char *end, const char **fs, const char **fe, int *more) {
    const char *s = *p, *e;
    if (!*more)
        return 0;
    e = memchr(s, ',', (size_t)(end - s));
    if (e) {
        *p = e + 1;
    } else {
        e = end;
        *p = end;
        *more = 0;
    }
    while (s < e && is_blank(*s))
        s++;
    while (e > s && is_blank(e[-1]))
        e--;
    *fs = s;
    *fe = e;
    return 1;
}

static int64_t count_fields(const char *s, const char *e) {
    int64_t n = 1;
    while ((s = memchr(s, ',', (size_t)(e - s))) != NULL)
        n++, s++;
    return n;
}

/* A header is a first record with at least one non-empty field that is not a number. */
static int is_header(const char *s, const char *e) {
    const char *fs, *fe;
    int more = 1;
    double v;
    while (next_field(&s, e, &fs, &fe, &more)) {
        int r = parse_num(fs, (size_t)(fe - fs), &v);
        if (r == NUM_BAD || r == NUM_LONG)
            return 1;
    }
    return 0;
}

/* A line with no field that is a number: probably a misplaced header. */
static int looks_like_header(const char *s, const char *e) {
    const char *fs, *fe;
    int more = 1;
    double v;
    while (next_field(&s, e, &fs, &fe, &more)) {
        int r = parse_num(fs, (size_t)(fe - fs), &v);
        if (r == NUM_OK || r == NUM_RANGE)
            return 0;
    }
    return 1;
}

typedef struct {
    double *v;
    size_t n, cap;
} Vec;

static int push(Vec *a, double x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        double *nv;
        if (cap > SIZE_MAX / sizeof(double) || !(nv = realloc(a->v, cap * sizeof(double))))
            return -1;
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

int rt_csv_parse(const char *name, const char *buf, size_t len, rt_array *out, char *err, size_t errlen) {
    const char *p = buf, *end = buf + len;
    long long line = 0, first_line = 0, header_line = 0;
    int64_t cols = 0, rows = 0;
    Vec vals = {NULL, 0, 0};
    char q[64];

    memset(out, 0, sizeof *out);
    if (!name)
        name = "(buffer)";
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    if (p == end) {
        rt_io_errf(err, errlen, "%s: file is empty", name);
        return -1;
    }
    while (p < end) {
        const char *ls = p, *le = memchr(p, '\n', (size_t)(end - p)), *s, *fs, *fe;
        int64_t nf, field = 0;
        int more = 1;

        p = le ? le + 1 : end;
        if (!le)
            le = end;
        line++;
        if (le > ls && le[-1] == '\r')
            le--;
        for (s = ls; s < le && is_blank(*s); s++)
            ;
        if (s == le || *s == '#')
            continue;

        nf = count_fields(ls, le);
        if (!first_line) {
            first_line = line;
            cols = nf;
            if (is_header(ls, le)) {
                header_line = line;
                continue;
            }
        } else if (nf != cols) {
            rt_io_errf(err, errlen, "%s:%lld: expected %lld fields (as on line %lld), found %lld",
                       name, line, (long long)cols, first_line, (long long)nf);
            goto fail;
        }
        s = ls;
        while (next_field(&s, le, &fs, &fe, &more)) {
            size_t n = (size_t)(fe - fs);
            double v = 0;
            int r = parse_num(fs, n, &v);
            field++;
            if (r == NUM_EMPTY) {
                rt_io_errf(err, errlen, "%s:%lld: field %lld is empty", name, line, (long long)field);
                goto fail;
            }
            if (r == NUM_LONG) {
                rt_io_errf(err, errlen, "%s:%lld: field %lld is not a number (%zu characters long): '%s'",
                           name, line, (long long)field, n, rt_io_quote(q, sizeof q, fs, n));
                goto fail;
            }
            if (r == NUM_BAD) {
                rt_io_errf(err, errlen, "%s:%lld: field %lld is not a number: '%s'%s", name, line,
                           (long long)field, rt_io_quote(q, sizeof q, fs, n),
                           looks_like_header(ls, le) ? " (a header is only allowed on the first line)" : "");
                goto fail;
            }
            if (r == NUM_RANGE) {
                rt_io_errf(err, errlen, "%s:%lld: field %lld is out of range for a double: '%s'",
                           name, line, (long long)field, rt_io_quote(q, sizeof q, fs, n));
                goto fail;
            }
            if (isnan(v) || isinf(v)) {
                rt_io_errf(err, errlen, "%s:%lld: field %lld is %s", name, line, (long long)field,
                           isnan(v) ? "NaN" : v > 0 ? "Inf" : "-Inf");
                goto fail;
            }
            if (push(&vals, v)) {
                rt_io_errf(err, errlen, "%s:%lld: out of memory", name, line);
                goto fail;
            }
        }
        rows++;
    }
    if (rows == 0) {
        if (header_line)
            rt_io_errf(err, errlen, "%s: no data rows (only a header on line %lld)", name, header_line);
        else
            rt_io_errf(err, errlen, "%s: no data rows (only blank lines and comments)", name);
        goto fail;
    }
    out->dtype = RT_F64;
    out->ndim = 2;
    out->shape[0] = rows;
    out->shape[1] = cols;
    out->data = vals.v;
    return 0;

fail:
    free(vals.v);
    return -1;
}

/* ---- writer ---- */

typedef struct {
    const double *data;
    int64_t rows, cols;
    int dtype;
    const char *path;
} CsvOut;

static int csv_emit(FILE *f, void *ctx, char *err, size_t errlen) {
    CsvOut *o = ctx;
    int64_t i, j;
    for (i = 0; i < o->rows; i++) {
        const double *row = o->data + i * o->cols;
        for (j = 0; j < o->cols; j++) {
            int r;
            if (o->dtype == RT_F32)
                r = fprintf(f, "%s%.9g", j ? "," : "", (double)(float)row[j]);
            else
                r = fprintf(f, "%s%.17g", j ? "," : "", row[j]);
            if (r < 0)
                goto fail;
        }
        if (fputc('\n', f) == EOF)
            goto fail;
    }
    return 0;
fail:
    rt_io_errf(err, errlen, "%s: write error: %s", o->path, strerror(errno));
    return -1;
}

int rt_io_write_csv(const char *path, const double *data, int64_t rows, int64_t cols, int dtype,
                    char *err, size_t errlen) {
    CsvOut o;
    o.data = data;
    o.rows = rows;
    o.cols = cols;
    o.dtype = dtype;
    o.path = path;
    return rt_io_write_atomic(path, csv_emit, &o, err, errlen);
}
