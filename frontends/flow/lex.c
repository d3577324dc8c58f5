/* frontends/flow/lex.c: bytes of a .flow file to tokens.
 * Input: a source file registered in a diag_ctx. Output: tokens with file:line:col, and
 * diagnostics for bytes that are not part of the language (reported once per run of bad
 * bytes, then skipped; UTF-8 characters by code point, with a hint for look-alikes of ASCII
 * such as U+2212 for '-'; one error per quoted string), malformed numbers and absurdly long
 * lines or identifiers.
 * '#' starts a comment to the end of the line. A newline ends a statement unless it is
 * inside ( ) or [ ]. */
#include "ast.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void lex_init(lexer *lx, diag_ctx *dc, int file) {
    lx->dc = dc;
    lx->file = file;
    lx->p = dc->files[file].text;
    lx->end = lx->p + dc->files[file].len;
    lx->line_start = lx->p;
    lx->line = 1;
    lx->depth = 0;
}

const char *tok_name(tok_kind k) {
    switch (k) {
    case TK_EOF: return "end of file";
    case TK_NEWLINE: return "end of line";
    case TK_IDENT: return "name";
    case TK_INT: return "integer";
    case TK_FLOAT: return "number";
    case TK_LBRACE: return "'{'";
    case TK_RBRACE: return "'}'";
    case TK_LPAREN: return "'('";
    case TK_RPAREN: return "')'";
    case TK_LBRACK: return "'['";
    case TK_RBRACK: return "']'";
    case TK_COMMA: return "','";
    case TK_COLON: return "':'";
    case TK_SEMI: return "';'";
    case TK_EQ: return "'='";
    case TK_PLUS: return "'+'";
    case TK_MINUS: return "'-'";
    case TK_STAR: return "'*'";
    case TK_SLASH: return "'/'";
    case TK_PERCENT: return "'%'";
    }
    return "token";
}

static loc_t here(lexer *lx, const char *start, int len) {
    loc_t l = { lx->file, lx->line, (int)(start - lx->line_start) + 1, len > 0 ? len : 1 };
    return l;
}

/* The code point of the UTF-8 sequence at s and its length in bytes, or 0 if it is not valid
 * UTF-8 (then the byte is reported as a byte). */
static int utf8_decode(const char *s, const char *end, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    int n = u[0] >= 0xf0 && u[0] < 0xf5 ? 4 : u[0] >= 0xe0 ? 3 : u[0] >= 0xc2 && u[0] < 0xe0 ? 2 : 0;
    if (u[0] >= 0xf5 || n == 0 || end - s < n) return 0;
    uint32_t v = u[0] & (0x7f >> n);
    for (int i = 1; i < n; i++) {
        if ((u[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (u[i] & 0x3f);
    }
    if ((n == 3 && v < 0x800) || (n == 4 && (v < 0x10000 || v > 0x10ffff)) || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return n;
}

/* characters that word processors and web pages put in place of ASCII ones */
static const char *lookalike(uint32_t cp) {
    switch (cp) {
    case 0x2212: case 0x2010: case 0x2011: case 0x2012: case 0x2013: case 0x2014: return "did you mean '-'?";
    case 0x00d7: case 0x2217: return "did you mean '*'?";
    case 0x2018: case 0x2019: case 0x201c: case 0x201d: return "a typographic quote; .flow files have no strings, write the value without quotes";
    case 0xff1d: return "did you mean '='?";
    case 0xff1a: return "did you mean ':'?";
    case 0xff0c: return "did you mean ','?";
    }
    return NULL;
}

/* invisible characters: their name and what to do, or NULL */
static const char *invisible(uint32_t cp, const char **todo) {
    *todo = "delete it";
    switch (cp) {
    case 0xfeff: *todo = "save the file without it"; return "byte order mark";
    case 0x200b: return "zero-width space";
    case 0x00a0: case 0x202f: *todo = "use an ordinary space"; return "non-breaking space";
    case 0x2002: case 0x2003: case 0x2009: *todo = "use an ordinary space"; return "typographic space";
    }
    return NULL;
}

/* Whether the quote at s closes one opened earlier on its line (already reported). */
static int closes_quote(const lexer *lx, const char *s) {
    /* bounded: on very long lines, or once errors are no longer shown, each quote is its own */
    if (lx->dc->capped || s - lx->line_start > 4096) return 0;
    int n = 0;
    for (const char *q = lx->line_start; q < s; q++) n += *q == *s;
    return n % 2 == 1;
}

static int is_ident_start(int c) { return isalpha(c) || c == '_'; }
static int is_ident_char(int c) { return isalnum(c) || c == '_'; }

token lex_next(lexer *lx) {
    for (;;) {
        /* skip blanks and comments */
        while (lx->p < lx->end) {
            char c = *lx->p;
            if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
                lx->p++;
            } else if (c == '#') {
                while (lx->p < lx->end && *lx->p != '\n') lx->p++;
            } else if (c == '\n' && lx->depth > 0) {
                lx->p++;
                lx->line++;
                lx->line_start = lx->p;
            } else {
                break;
            }
        }
        token t;
        memset(&t, 0, sizeof t);
        t.start = lx->p;
        if (lx->p >= lx->end) {
            t.kind = TK_EOF;
            t.loc = here(lx, lx->p, 1);
            return t;
        }
        const char *s = lx->p;
        unsigned char c = (unsigned char)*s;
        if (c == '\n') {
            t.kind = TK_NEWLINE;
            t.loc = here(lx, s, 1);
            lx->p++;
            lx->line++;
            lx->line_start = lx->p;
            return t;
        }
        if (is_ident_start(c)) {
            while (lx->p < lx->end && is_ident_char((unsigned char)*lx->p)) lx->p++;
            int len = (int)(lx->p - s);
            t.kind = TK_IDENT;
            t.loc = here(lx, s, len);
            if (len > 128) {
                diag_error(lx->dc, t.loc, "name is too long (%d characters; the limit is 128)", len);
                t.loc.len = 128;
            }
            return t;
        }
        if (isdigit(c) || (c == '.' && lx->p + 1 < lx->end && isdigit((unsigned char)lx->p[1]))) {
            /* number: digits [. digits] [e [+-] digits], then no identifier character */
            int is_float = 0;
            while (lx->p < lx->end && isdigit((unsigned char)*lx->p)) lx->p++;
            if (lx->p < lx->end && *lx->p == '.') {
                is_float = 1;
                lx->p++;
                while (lx->p < lx->end && isdigit((unsigned char)*lx->p)) lx->p++;
            }
            if (lx->p < lx->end && (*lx->p == 'e' || *lx->p == 'E')) {
                const char *q = lx->p + 1;
                if (q < lx->end && (*q == '+' || *q == '-')) q++;
                if (q < lx->end && isdigit((unsigned char)*q)) {
                    is_float = 1;
                    lx->p = q;
                    while (lx->p < lx->end && isdigit((unsigned char)*lx->p)) lx->p++;
                }
            }
            int bad = 0;
            while (lx->p < lx->end && (is_ident_char((unsigned char)*lx->p) || *lx->p == '.')) {
                lx->p++;
                bad = 1;
            }
            int len = (int)(lx->p - s);
            t.loc = here(lx, s, len);
            char buf[80];
            if (bad || len >= (int)sizeof buf) {
                diag_error(lx->dc, t.loc, "invalid number '%.*s'", len > 40 ? 40 : len, s);
                t.kind = TK_INT;
                t.ival = 0;
                return t;
            }
            memcpy(buf, s, (size_t)len);
            buf[len] = 0;
            errno = 0;
            if (is_float) {
                t.kind = TK_FLOAT;
                t.fval = strtod(buf, NULL);
                if (errno == ERANGE && isinf(t.fval))
                    diag_error(lx->dc, t.loc, "number '%s' is too large", buf);
            } else {
                t.kind = TK_INT;
                long long v = strtoll(buf, NULL, 10);
                if (errno == ERANGE || v > 1000000000LL) {
                    diag_error(lx->dc, t.loc, "integer '%s' is too large (the limit is 1000000000)", buf);
                    v = 0;
                }
                t.ival = v;
                t.fval = (double)v;
            }
            return t;
        }
        lx->p++;
        t.loc = here(lx, s, 1);
        switch (c) {
        case '{': t.kind = TK_LBRACE; return t;
        case '}': t.kind = TK_RBRACE; return t;
        case '(': t.kind = TK_LPAREN; lx->depth++; return t;
        case ')': t.kind = TK_RPAREN; if (lx->depth > 0) lx->depth--; return t;
        case '[': t.kind = TK_LBRACK; lx->depth++; return t;
        case ']': t.kind = TK_RBRACK; if (lx->depth > 0) lx->depth--; return t;
        case ',': t.kind = TK_COMMA; return t;
        case ':': t.kind = TK_COLON; return t;
        case ';': t.kind = TK_SEMI; return t;
        case '=': t.kind = TK_EQ; return t;
        case '+': t.kind = TK_PLUS; return t;
        case '-': t.kind = TK_MINUS; return t;
        case '*': t.kind = TK_STAR; return t;
        case '/': t.kind = TK_SLASH; return t;
        case '%': t.kind = TK_PERCENT; return t;
        default: break;
        }
        /* a run of bytes that are not part of the language: one error, then skip the run */
        while (lx->p < lx->end) {
            unsigned char d = (unsigned char)*lx->p;
            if (d == '\n' || d == ' ' || d == '\t' || d == '#' || is_ident_char(d) || strchr("{}()[],:;=+-*/%", d))
                break;
            lx->p++;
        }
        loc_t l = here(lx, s, (int)(lx->p - s));
        uint32_t cp;
        int n;
        if (c == '"' || c == '\'') {
            /* quoted text: one error for the pair, none for its closing quote */
            if (closes_quote(lx, s)) continue;
            const char *q = memchr(s + 1, c, (size_t)(lx->end - s - 1));
            if (q && q - s < 4096 && !memchr(s + 1, '\n', (size_t)(q - s - 1))) l.len = (int)(q - s) + 1;
            diag_error(lx->dc, l, "unexpected %s: .flow files have no strings; write the value without quotes",
                       c == '"' ? "'\"'" : "\"'\"");
        } else if (c >= 32 && c < 127) {
            diag_error(lx->dc, l, "unexpected character '%c'", c);
        } else if (c == 0) {
            diag_error(lx->dc, l, "unexpected NUL byte; is this a text file?");
        } else if ((n = utf8_decode(s, lx->end, &cp)) > 0) {
            const char *hint = lookalike(cp), *todo, *what = invisible(cp, &todo);
            l.len = n;
            if (cp == 0x201c || cp == 0x2018) {
                /* “quoted”: one error for the pair, the closing quote is skipped below */
                const char *close = cp == 0x201c ? "\xe2\x80\x9d" : "\xe2\x80\x99";
                for (const char *q = s + n; q + 3 <= lx->end && *q != '\n' && q - s < 4096; q++)
                    if (!memcmp(q, close, 3)) { l.len = (int)(q - s) + 3; break; }
            } else if ((cp == 0x201d || cp == 0x2019) && !lx->dc->capped) {
                const char *open = cp == 0x201d ? "\xe2\x80\x9c" : "\xe2\x80\x98";
                int opened = 0;
                for (const char *q = s - 1; q >= lx->line_start && s - q < 4096 && !opened; q--)
                    if (q + 3 <= s && !memcmp(q, open, 3)) opened = 1;
                if (opened) continue;
            }
            if (what && cp == 0xfeff && s != lx->dc->files[lx->file].text) todo = "delete it";
            if (what)
                diag_error(lx->dc, l, "unexpected %s (U+%04X); %s", what, (unsigned)cp, todo);
            else if (hint)
                diag_error(lx->dc, l, "unexpected character '%.*s' (U+%04X); %s", n, s, (unsigned)cp, hint);
            else
                diag_error(lx->dc, l, "unexpected character '%.*s' (U+%04X); only ASCII is allowed outside comments", n, s,
                           (unsigned)cp);
        } else {
            diag_error(lx->dc, l, "unexpected byte 0x%02x (only ASCII is allowed outside comments)", c);
        }
    }
}
