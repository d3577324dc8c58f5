/* compiler/base.h: the small pieces every part of the compiler shares.
 *
 * - An arena: every allocation of one compilation comes from it and is freed at once.
 * - Growable arrays (VEC_PUSH) allocated from the arena.
 * - Source files and locations (file index, line, column, length of the range).
 * - Diagnostics as data: a list of errors and notes with their locations. Library code never
 *   prints or exits; the driver renders the list clang-style with diag_render().
 */
#ifndef NFC_BASE_H
#define NFC_BASE_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- arena ---- */
typedef struct arena_block arena_block;
typedef struct {
    arena_block *head;
    size_t       used_total;
} arena;

void  arena_init(arena *a);
void  arena_free(arena *a);
void *arena_alloc(arena *a, size_t n);          /* zeroed, 16-byte aligned */
/* malloc for the compiler's short-lived work arrays: like arena_alloc, it prints
 * "nfc: out of memory" and aborts rather than return NULL */
void *xmalloc(size_t n);
/* calloc for large arrays (parameters, optimizer state): from 2 MiB on, aligned to 2 MiB
 * and advised to use transparent huge pages, which are much cheaper to fault in (measured
 * on this project's VM: 7 MiB first touched in 4-17 ms instead of 21-26 ms) and to walk.
 * Freed with free(); NULL when out of memory. */
void *big_calloc(size_t n, size_t size);
char *arena_strdup(arena *a, const char *s);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *arena_vprintf(arena *a, const char *fmt, va_list ap);
void *arena_grow(arena *a, void *old, size_t old_bytes, size_t new_bytes);

/* A growable array in an arena: T *items; int n, cap. */
#define VEC_PUSH(ar, items, n, cap, value)                                                     \
    do {                                                                                        \
        if ((n) >= (cap)) {                                                                     \
            int nc_ = (cap) ? (cap) * 2 : 8;                                                    \
            (items) = arena_grow((ar), (items), sizeof(*(items)) * (size_t)(cap),               \
                                 sizeof(*(items)) * (size_t)nc_);                               \
            (cap) = nc_;                                                                        \
        }                                                                                       \
        (items)[(n)++] = (value);                                                               \
    } while (0)

/* ---- sources and locations ---- */
typedef struct {
    int file;   /* index into diag_ctx.files; -1 for "no location" */
    int line;   /* 1-based */
    int col;    /* 1-based byte column */
    int len;    /* length of the range in bytes (>= 1 for carets) */
} loc_t;

typedef struct {
    const char *name;   /* as the user gave it */
    const char *text;   /* contents; may contain NUL bytes */
    size_t      len;
} source_file;

/* ---- diagnostics ---- */
typedef enum { DIAG_ERROR, DIAG_WARNING, DIAG_NOTE } diag_kind;

typedef struct {
    diag_kind kind;
    loc_t     loc;
    char     *msg;
} diag;

#define DIAG_MAX_ERRORS 20

typedef struct {
    arena       *ar;
    source_file *files;
    int          nfiles, cap_files;
    diag        *d;
    int          nd, cap_d;
    int          nerrors;
    int          capped;     /* more errors than DIAG_MAX_ERRORS: the rest are dropped */
} diag_ctx;

void diag_init(diag_ctx *dc, arena *ar);
int  diag_add_file(diag_ctx *dc, const char *name, const char *text, size_t len);
/* Report an error (or note/warning). Notes attach to the error before them and are dropped
 * with it when the cap is reached. */
void diag_error(diag_ctx *dc, loc_t loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_note(diag_ctx *dc, loc_t loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_warning(diag_ctx *dc, loc_t loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_report(diag_ctx *dc, diag_kind kind, loc_t loc, const char *fmt, va_list ap);
/* Render every diagnostic clang-style: "file:line:col: error: msg", the source line, a caret. */
void diag_render(const diag_ctx *dc, FILE *out, int color);
void diag_render_one(const diag_ctx *dc, const diag *d, FILE *out, int color);

static inline loc_t loc_none(void) { loc_t l = { -1, 0, 0, 0 }; return l; }
/* The smallest range covering a and b (same file and line; else a). */
loc_t loc_span(loc_t a, loc_t b);

/* ---- misc ---- */
/* Damerau-free Levenshtein distance, for did-you-mean suggestions. */
int  edit_distance(const char *a, const char *b);
/* The candidate closest to word (distance <= max(1, len/3)), or NULL. */
const char *closest_word(const char *word, const char *const *cands, int ncand);

#endif
