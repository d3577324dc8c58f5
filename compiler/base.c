/* compiler/base.c: arena allocator, diagnostics list and clang-style rendering, edit distance.
 * Input: allocation requests, diagnostics reported by every stage. Output: memory freed at
 * once with the arena; diagnostics printed by diag_render() as file:line:col, line, caret. */
#include "base.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---- arena ---- */
struct arena_block {
    arena_block *next;
    size_t       size, used;
    _Alignas(16) unsigned char data[];
};

void arena_init(arena *a) { a->head = NULL; a->used_total = 0; }

void arena_free(arena *a) {
    arena_block *b = a->head;
    while (b) { arena_block *n = b->next; free(b); b = n; }
    a->head = NULL;
    a->used_total = 0;
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fputs("nfc: out of memory\n", stderr); abort(); }
    return p;
}

void *big_calloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) return NULL;
    size_t bytes = n * size, huge = (size_t)2 << 20;
#ifdef MADV_HUGEPAGE
    if (bytes >= huge && bytes <= SIZE_MAX - huge) {
        size_t rounded = (bytes + huge - 1) / huge * huge;
        void *p = aligned_alloc(huge, rounded);
        if (p) {
            madvise(p, rounded, MADV_HUGEPAGE);   /* a hint: 4 KiB pages if refused */
            memset(p, 0, bytes);
            return p;
        }
    }
#endif
    return calloc(n ? n : 1, size ? size : 1);
}

void *arena_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    arena_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t sz = n > 65536 - sizeof(arena_block) ? n : 65536 - sizeof(arena_block);
        b = malloc(sizeof(arena_block) + sz);
        if (!b) { fputs("nfc: out of memory\n", stderr); abort(); }
        b->size = sz;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->used_total += n;
    memset(p, 0, n);
    return p;
}

void *arena_grow(arena *a, void *old, size_t old_bytes, size_t new_bytes) {
    void *p = arena_alloc(a, new_bytes);
    if (old && old_bytes) memcpy(p, old, old_bytes < new_bytes ? old_bytes : new_bytes);
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *arena_strdup(arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_vprintf(arena *a, const char *fmt, va_list ap) {
    if (!fmt) fmt = ""; /* keeps gcc -fsanitize=undefined from warning about a null format */
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0) n = 0;
    char *p = arena_alloc(a, (size_t)n + 1);
    if ((size_t)n < sizeof small) memcpy(p, small, (size_t)n + 1);
    else vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *arena_printf(arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *p = arena_vprintf(a, fmt, ap);
    va_end(ap);
    return p;
}

/* ---- diagnostics ---- */
void diag_init(diag_ctx *dc, arena *ar) {
    memset(dc, 0, sizeof *dc);
    dc->ar = ar;
}

int diag_add_file(diag_ctx *dc, const char *name, const char *text, size_t len) {
    source_file f = { arena_strdup(dc->ar, name), text, len };
    VEC_PUSH(dc->ar, dc->files, dc->nfiles, dc->cap_files, f);
    return dc->nfiles - 1;
}

void diag_report(diag_ctx *dc, diag_kind kind, loc_t loc, const char *fmt, va_list ap) {
    if (kind == DIAG_NOTE) {
        /* a note belongs to the diagnostic before it; drop it if that one was dropped */
        if (dc->capped || dc->nd == 0) return;
    } else if (kind == DIAG_ERROR) {
        if (dc->nerrors >= DIAG_MAX_ERRORS) { dc->capped = 1; dc->nerrors++; return; }
        dc->nerrors++;
    } else if (dc->capped) {
        return;
    }
    diag d = { kind, loc, arena_vprintf(dc->ar, fmt, ap) };
    VEC_PUSH(dc->ar, dc->d, dc->nd, dc->cap_d, d);
}

void diag_error(diag_ctx *dc, loc_t loc, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); diag_report(dc, DIAG_ERROR, loc, fmt, ap); va_end(ap);
}
void diag_note(diag_ctx *dc, loc_t loc, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); diag_report(dc, DIAG_NOTE, loc, fmt, ap); va_end(ap);
}
void diag_warning(diag_ctx *dc, loc_t loc, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); diag_report(dc, DIAG_WARNING, loc, fmt, ap); va_end(ap);
}

loc_t loc_span(loc_t a, loc_t b) {
    if (a.file != b.file || a.line != b.line || b.col < a.col) return a;
    int end = b.col + b.len;
    if (a.col + a.len > end) end = a.col + a.len;
    a.len = end - a.col;
    return a;
}

/* Find the start and length of line `line` (1-based) in f. */
static int find_line(const source_file *f, int line, const char **start, size_t *len) {
    const char *p = f->text, *end = f->text + f->len;
    for (int l = 1; l < line; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return 0;
        p = nl + 1;
    }
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end;
    if (e > p && e[-1] == '\r') e--;
    *start = p;
    *len = (size_t)(e - p);
    return 1;
}

static void render_one(const diag_ctx *dc, const diag *d, FILE *out, int color) {
    static const char *kind_name[] = { "error", "warning", "note" };
    static const char *kind_color[] = { "\033[1;31m", "\033[1;35m", "\033[1;36m" };
    const char *bold = color ? "\033[1m" : "", *reset = color ? "\033[0m" : "";
    const source_file *f = (d->loc.file >= 0 && d->loc.file < dc->nfiles) ? &dc->files[d->loc.file] : NULL;
    if (f && d->loc.line > 0)
        fprintf(out, "%s%s:%d:%d: %s", bold, f->name, d->loc.line, d->loc.col, reset);
    else if (f)
        fprintf(out, "%s%s: %s", bold, f->name, reset);
    else
        fprintf(out, "%snfc: %s", bold, reset);
    fprintf(out, "%s%s:%s %s%s%s\n", color ? kind_color[d->kind] : "", kind_name[d->kind], reset,
            bold, d->msg, reset);
    const char *ls;
    size_t ll;
    if (!f || d->loc.line <= 0 || !find_line(f, d->loc.line, &ls, &ll)) return;
    /* the source line, with unprintable bytes shown as '?' so the caret stays aligned */
    fprintf(out, "%5d | ", d->loc.line);
    for (size_t i = 0; i < ll; i++) {
        unsigned char c = (unsigned char)ls[i];
        fputc(c == '\t' || (c >= 32 && c < 127) ? c : '?', out);
    }
    fputs("\n      | ", out);
    int col = d->loc.col < 1 ? 1 : d->loc.col;
    for (int i = 1; i < col && (size_t)(i - 1) < ll; i++) fputc(ls[i - 1] == '\t' ? '\t' : ' ', out);
    fputs(color ? "\033[1;32m" : "", out);
    fputc('^', out);
    int len = d->loc.len;
    if ((size_t)(col - 1) + (size_t)len > ll) len = (int)ll - (col - 1);
    for (int i = 1; i < len; i++) fputc('~', out);
    fprintf(out, "%s\n", reset);
}

void diag_render_one(const diag_ctx *dc, const diag *d, FILE *out, int color) {
    /* stderr is unbuffered, and the source line goes out byte by byte: compose the diagnostic
     * in memory and write it at once (a long line would otherwise cost a write per byte) */
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    if (!m) { render_one(dc, d, out, color); return; }
    render_one(dc, d, m, color);
    fclose(m);
    fwrite(buf, 1, n, out);
    free(buf);
}

void diag_render(const diag_ctx *dc, FILE *out, int color) {
    for (int i = 0; i < dc->nd; i++) diag_render_one(dc, &dc->d[i], out, color);
    if (dc->capped)
        fprintf(out, "nfc: fatal error: too many errors (more than %d), stopping now\n", DIAG_MAX_ERRORS);
}

/* ---- edit distance ---- */
/* Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
 * neighbouring characters each cost 1 ("mpl" is one edit from "mlp"). */
int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 1000;
    int d[65][65];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

const char *closest_word(const char *word, const char *const *cands, int ncand) {
    const char *best = NULL;
    int bestd = 1000;
    int limit = (int)strlen(word) / 3;
    if (limit < 1) limit = 1;
    for (int i = 0; i < ncand; i++) {
        int d = edit_distance(word, cands[i]);
        if (d < bestd) { bestd = d; best = cands[i]; }
    }
    return bestd <= limit ? best : NULL;
}
