/* frontends/flow/lex.c: bytes of a .flow file to tokens.
 * Input: a source file registered in a diag_ctx. Output: tokens with file:line:col, and
 * diagnostics for bytes that are not part of the language (reported once per run of bad
 * bytes, then skipped), malformed numbers and absurdly long lines or identifiers.
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
        if (c >= 32 && c < 127)
            diag_error(lx->dc, l, "unexpected character '%c'", c);
        else if (c == 0)
            diag_error(lx->dc, l, "unexpected NUL byte; is this a text file?");
        else
            diag_error(lx->dc, l, "unexpected byte 0x%02x (only ASCII is allowed outside comments)", c);
    }
}
