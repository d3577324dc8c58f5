/* compiler/aot_rt.c: support code linked into ahead-of-time libraries that do not embed
 * their weights: the safetensors loader behind NAME_load_weights.
 *
 * Built by build.ninja with clang-19 into LLVM bitcode, once per supported architecture
 * (x86_64, aarch64), freestanding: no headers, no globals, only the few libc functions
 * declared below (file reading in nfc_aot_load_file). aot.c links the bitcode into each
 * module it finishes and makes these functions internal, so they are never exported.
 *
 * nfc_aot_load validates the whole file before it writes anything: the 8-byte header
 * length, the JSON header (every tensor's dtype, shape and data_offsets; the optional
 * "nfc.model_hash" metadata), that every tensor the model needs is present with its shape,
 * lies inside the file and holds only finite values; only then are the parameters
 * converted and copied. Any byte sequence is safe: every read is bounds-checked.
 * Return codes: aot.h (AOT_*).
 */
typedef unsigned long size_t;
typedef long int64_t;
typedef unsigned long uint64_t;
typedef int int32_t;
typedef unsigned int uint32_t;

void *fopen(const char *path, const char *mode);
int fclose(void *f);
size_t fread(void *p, size_t sz, size_t n, void *f);
int fseek(void *f, long off, int whence);
long ftell(void *f);
void *malloc(size_t n);
void free(void *p);

enum { OK = 0, EFORMAT = -4, EMODEL = -5, EVALUE = -6, EIO = -7 };
enum { DT_BAD = 0, DT_F32 = 4, DT_F64 = 8 };

typedef struct {
    const unsigned char *s;
    size_t i, n;
} cur;

static void ws(cur *c) {
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r')) c->i++;
}
static int eat(cur *c, unsigned char ch) {
    ws(c);
    if (c->i < c->n && c->s[c->i] == ch) { c->i++; return 1; }
    return 0;
}

/* A JSON string: *b, *e delimit its raw bytes (escapes left in); 0 on malformed input. */
static int str(cur *c, size_t *b, size_t *e) {
    if (!eat(c, '"')) return 0;
    *b = c->i;
    while (c->i < c->n && c->s[c->i] != '"') {
        if (c->s[c->i] < 0x20) return 0;
        if (c->s[c->i] == '\\') c->i++;
        c->i++;
    }
    if (c->i >= c->n) return 0;
    *e = c->i++;
    return 1;
}

static int streq(const cur *c, size_t b, size_t e, const char *z) {
    size_t k = 0;
    for (; b + k < e; k++)
        if (!z[k] || z[k] != (char)c->s[b + k]) return 0;
    return z[k] == 0;
}

/* a non-negative integer below 2^53 */
static int uint(cur *c, int64_t *v) {
    ws(c);
    if (c->i >= c->n || c->s[c->i] < '0' || c->s[c->i] > '9') return 0;
    int64_t x = 0;
    while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9') {
        x = x * 10 + (c->s[c->i++] - '0');
        if (x > ((int64_t)1 << 53)) return 0;
    }
    *v = x;
    return 1;
}

/* Skips any JSON value (depth-limited). */
static int skip(cur *c, int depth) {
    if (depth > 64) return 0;
    ws(c);
    if (c->i >= c->n) return 0;
    unsigned char ch = c->s[c->i];
    size_t b, e;
    if (ch == '"') return str(c, &b, &e);
    if (ch == '{' || ch == '[') {
        unsigned char close = ch == '{' ? '}' : ']';
        c->i++;
        if (eat(c, close)) return 1;
        for (;;) {
            if (ch == '{') {
                if (!str(c, &b, &e) || !eat(c, ':')) return 0;
            }
            if (!skip(c, depth + 1)) return 0;
            if (eat(c, close)) return 1;
            if (!eat(c, ',')) return 0;
        }
    }
    /* number, true, false, null */
    size_t start = c->i;
    while (c->i < c->n) {
        ch = c->s[c->i];
        if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || ch == '-' || ch == '+' || ch == '.' || ch == 'E') c->i++;
        else break;
    }
    return c->i > start;
}

typedef struct {
    int     dtype, ndim;
    int64_t shape[8], beg, end;
} tinfo;

/* {"dtype": "F32", "shape": [..], "data_offsets": [b, e]} in any order */
static int tensor(cur *c, tinfo *t) {
    t->dtype = DT_BAD;
    t->ndim = -1;
    t->beg = t->end = -1;
    if (!eat(c, '{')) return 0;
    if (eat(c, '}')) return 0;
    for (;;) {
        size_t b, e;
        if (!str(c, &b, &e) || !eat(c, ':')) return 0;
        if (streq(c, b, e, "dtype")) {
            size_t vb, ve;
            if (!str(c, &vb, &ve)) return 0;
            t->dtype = streq(c, vb, ve, "F32") ? DT_F32 : streq(c, vb, ve, "F64") ? DT_F64 : DT_BAD;
            if (t->dtype == DT_BAD) t->dtype = -1; /* present but unsupported */
        } else if (streq(c, b, e, "shape")) {
            if (!eat(c, '[')) return 0;
            t->ndim = 0;
            if (!eat(c, ']')) {
                for (;;) {
                    int64_t v;
                    if (t->ndim == 8 || !uint(c, &v)) return 0;
                    t->shape[t->ndim++] = v;
                    if (eat(c, ']')) break;
                    if (!eat(c, ',')) return 0;
                }
            }
        } else if (streq(c, b, e, "data_offsets")) {
            if (!eat(c, '[') || !uint(c, &t->beg) || !eat(c, ',') || !uint(c, &t->end) || !eat(c, ']')) return 0;
        } else if (!skip(c, 1)) {
            return 0;
        }
        if (eat(c, '}')) break;
        if (!eat(c, ',')) return 0;
    }
    return t->ndim >= 0 && t->beg >= 0 && t->end >= t->beg && t->dtype != DT_BAD;
}

static double rd(const unsigned char *p, int dt) {
    if (dt == DT_F32) {
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        __builtin_memcpy(&f, &u, 4);
        return f;
    }
    uint64_t u = 0;
    for (int k = 7; k >= 0; k--) u = u << 8 | p[k];
    double d;
    __builtin_memcpy(&d, &u, 8);
    return d;
}

/* The model's table: np parameters; names[k] NUL-terminated; shape[2k], shape[2k+1] (0 for
 * rank 1); off[k] into params (elements of 4 bytes when f64 == 0, else 8). hash: 16 hex
 * digits, or NULL. Two passes: validate everything (pass 0), then write (pass 1). */
int nfc_aot_load(const unsigned char *buf, uint64_t len, int32_t np, const char *const *names, const int64_t *shape,
                 const int64_t *off, int32_t f64, void *params, const char *hash) {
    if (!buf || len < 10) return EFORMAT;
    uint64_t hl = 0;
    for (int k = 7; k >= 0; k--) hl = hl << 8 | buf[k];
    if (hl < 2 || hl > len - 8) return EFORMAT;
    cur hc = { buf + 8, 0, (size_t)hl };
    const unsigned char *data = buf + 8 + hl;
    uint64_t dlen = len - 8 - hl;
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t q = -1; q < np; q++) {   /* q = -1: the metadata check and syntax */
            cur c = hc;
            int found = 0;
            if (!eat(&c, '{')) return EFORMAT;
            if (!eat(&c, '}')) {
                for (;;) {
                    size_t b, e;
                    if (!str(&c, &b, &e) || !eat(&c, ':')) return EFORMAT;
                    if (streq(&c, b, e, "__metadata__")) {
                        if (q == -1 && hash) {
                            if (!eat(&c, '{')) return EFORMAT;
                            if (!eat(&c, '}')) {
                                for (;;) {
                                    size_t kb, ke, vb, ve;
                                    if (!str(&c, &kb, &ke) || !eat(&c, ':') || !str(&c, &vb, &ve)) return EFORMAT;
                                    if (streq(&c, kb, ke, "nfc.model_hash") && !streq(&c, vb, ve, hash)) return EMODEL;
                                    if (eat(&c, '}')) break;
                                    if (!eat(&c, ',')) return EFORMAT;
                                }
                            }
                        } else if (!skip(&c, 1)) {
                            return EFORMAT;
                        }
                    } else if (q >= 0 && streq(&c, b, e, names[q])) {
                        tinfo t;
                        if (!tensor(&c, &t)) return EFORMAT;
                        if (t.dtype < 0) return EVALUE;
                        int rank = shape[2 * q + 1] > 0 ? 2 : 1;
                        if (t.ndim != rank || t.shape[0] != shape[2 * q] || (rank == 2 && t.shape[1] != shape[2 * q + 1]))
                            return EMODEL;
                        int64_t numel = rank == 2 ? shape[2 * q] * shape[2 * q + 1] : shape[2 * q];
                        if ((uint64_t)t.end > dlen || t.end - t.beg != numel * t.dtype) return EFORMAT;
                        for (int64_t i = 0; i < numel; i++) {
                            double v = rd(data + t.beg + i * t.dtype, t.dtype);
                            if (pass == 0 && !(v - v == 0)) return EVALUE;   /* NaN or inf */
                            if (pass == 1) {
                                if (f64) ((double *)params)[off[q] + i] = v;
                                else ((float *)params)[off[q] + i] = (float)v;
                            }
                        }
                        found = 1;
                    } else if (!skip(&c, 1)) {
                        return EFORMAT;
                    }
                    if (eat(&c, '}')) break;
                    if (!eat(&c, ',')) return EFORMAT;
                }
            }
            if (q >= 0 && !found) return EMODEL;
        }
    }
    return OK;
}

/* Reads the whole file into memory (not on the inference path) and loads it. */
int nfc_aot_load_file(const char *path, int32_t np, const char *const *names, const int64_t *shape,
                      const int64_t *off, int32_t f64, void *params, const char *hash) {
    if (!path) return EIO;
    void *f = fopen(path, "rb");
    if (!f) return EIO;
    long size = -1;
    if (fseek(f, 0, 2) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, 0) != 0) { fclose(f); return EIO; }
    unsigned char *buf = malloc((size_t)size + 1);
    if (!buf) { fclose(f); return EIO; }
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    int rc = got == (size_t)size ? nfc_aot_load(buf, (uint64_t)size, np, names, shape, off, f64, params, hash) : EIO;
    free(buf);
    return rc;
}
