/* frontends/cli/main.c: the `nfc` command-line driver.
 * Input: argv. Output: the chosen command's work on stdout, diagnostics on stderr, and the
 * exit status: 0 success, 1 errors in the input (the model, a data file), 2 usage errors. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../compiler/front.h"
#include "run_cmds.h"
#include "train_cmd.h"
#include "data_cmd.h"

#ifndef NFC_VERSION
#define NFC_VERSION "0.1.0"
#endif

static const char usage_text[] =
    "usage: nfc <command> [options] MODEL.flow ...\n"
    "\n"
    "nfc compiles normalizing flows written in the .flow language to native code.\n"
    "\n"
    "commands:\n"
    "  check FILE...          check models and print a summary of each: input, context,\n"
    "                         base, layers with the shape after each, parameter counts\n"
    "    --dump=graph         print the flow graph instead of the summary\n"
    "    --dump=ast           print the syntax tree\n"
    "  forward MODEL --data X -o Z [--logdet L]   z = f(x) and log|det df/dx| per row\n"
    "  inverse MODEL --data Z -o X [--logdet L]   x = f^-1(z) and its log|det| per row\n"
    "  logprob MODEL --data X -o LP               log p(x) per row, in nats\n"
    "  eval MODEL --data X                        mean log-likelihood (nats), bits/dim\n"
    "  sample MODEL -n N -o X [--seed S] [--temperature T]\n"
    NFC_AOT_USAGE
    NFC_TRAIN_USAGE
    NFC_DATA_USAGE
    "\n"
    "options of the commands that run a model:\n"
    "  --weights W.safetensors  parameters (default: the initializer, see --init-seed)\n"
    "  --context C            the context, for flows that have one: one row per sample,\n"
    "                         or a single row used for every sample\n"
    "  --init-seed S          seed of the parameter initializer (default 0)\n"
    "  --init-scale F         start zero-initialized parameters at uniform(-F, F), so an\n"
    "                         untrained model is not the identity (default 0)\n"
    "  --dtype f32|f64        precision of the compiled code (default f32)\n"
    "  --backend jit|interp   native code (default) or the reference interpreter (f64)\n"
    "  -O0 .. -O3             optimization level (default -O2)\n"
    "  --cpu NAME             target CPU (default: this machine's)\n"
    "  --vector-width N       0 (native, default), 1 (scalar), 2, 4, 8, 16\n"
    "  --no-fuse              no fusion: every intermediate value is stored and loaded\n"
    "                         back (by default elementwise chains and matrix-product\n"
    "                         epilogues are computed in registers; docs/codegen.md)\n"
    "  --threads T            split large batches across T threads (default: the online\n"
    "                         CPUs); results do not depend on T. An ahead-of-time build\n"
    "                         ignores it: the library's caller runs it on its own threads\n"
    "  --flow NAME            which flow of a file that defines several\n"
    "  data files are NPY (f32 or f64, C order) or CSV (header optional), by extension\n"
    "\n"
    "options:\n"
    "  -h, --help             show this help and exit\n"
    "  --version              show the version and exit\n"
    "  --color=auto|always|never\n"
    "                         color diagnostics (default auto: when stderr is a terminal\n"
    "                         and NO_COLOR is unset)\n"
    "\n"
    "exit status: 0 success, 1 errors in the input, 2 usage errors\n"
    "the language: docs/language.md\n";

static int color_mode = -1; /* -1 auto */

static int use_color(void) {
    if (color_mode >= 0) return color_mode;
    const char *nc = getenv("NO_COLOR");
    return isatty(2) && !(nc && *nc);
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "nfc: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'nfc --help' for more information.\n");
    return 2;
}

/* --color=MODE, accepted before or after the command; returns 0, or 2 after a usage error */
static int set_color(const char *a) {
    const char *m = a + 8;
    if (!strcmp(m, "always")) color_mode = 1;
    else if (!strcmp(m, "never")) color_mode = 0;
    else if (!strcmp(m, "auto")) color_mode = -1;
    else return usage_error("unknown color mode '%s' (auto, always or never)", m);
    return 0;
}

static void summary(const ir_graph *g, FILE *out) {
    static const char *base_names[] = { "normal", "normal(learned)", "logistic" };
    const ir_node *in = &g->nodes[g->input];
    const char *dt = g->dtype == DT_F64 ? "f64" : "f32";
    fprintf(out, "flow %s (%s:%d)\n", g->name, g->file, g->loc.line);
    fprintf(out, "  input    %s: %s[%d]\n", g->input_name, dt, in->width);
    if (g->context != IR_NONE) fprintf(out, "  context  %s: %s[%d]\n", g->context_name, dt, g->nodes[g->context].width);
    fprintf(out, "  base     %s", base_names[g->base]);
    if (g->base == BASE_NORMAL_LEARNED) fprintf(out, "  params %d", 2 * in->width);
    fputc('\n', out);
    fprintf(out, "  %-4s %-58s %8s %10s\n", "#", "layer", "shape", "params");
    for (int i = 0; i < g->nlayers; i++) {
        const ir_layer *l = &g->layers[i];
        char shape[64] = "";
        if (l->nouts == 0) snprintf(shape, sizeof shape, "[%d]", l->width_after);
        for (int k = 0; k < l->nouts; k++) {
            size_t at = strlen(shape);
            snprintf(shape + at, sizeof shape - at, "%s[%d]", k ? " " : "", g->nodes[l->outs[k]].width);
        }
        char desc[59];
        int len = (int)strlen(l->desc);
        if (len > 58) snprintf(desc, sizeof desc, "%.55s...", l->desc);
        else snprintf(desc, sizeof desc, "%s", l->desc);
        fprintf(out, "  %-4d %-58s %8s %10lld\n", i + 1, desc, shape, (long long)l->nparams);
    }
    fprintf(out, "  total parameters: %lld\n", (long long)ir_param_count(g));
}

static const char *ast_kind_name(ast_kind k) {
    static const char *names[] = { "file", "flow", "net", "decl", "cmd", "name", "int", "float", "list", "call", "apply", "binop", "neg" };
    return names[k];
}

static void dump_ast(const ast *n, int depth, FILE *out) {
    fprintf(out, "%*s%s", depth * 2, "", ast_kind_name(n->kind));
    if (n->name) fprintf(out, " %s", n->name);
    if (n->kind == AST_INT) fprintf(out, " %lld", (long long)n->ival);
    if (n->kind == AST_FLOAT) fprintf(out, " %g", n->fval);
    if (n->kind == AST_BINOP) fprintf(out, " %c", n->op);
    if (n->dtype) fprintf(out, " : %s", n->dtype);
    fprintf(out, " @%d:%d\n", n->loc.line, n->loc.col);
    for (int i = 0; i < n->ntargets; i++) dump_ast(n->targets[i], depth + 1, out);
    for (int i = 0; i < n->nparams; i++) dump_ast(n->params[i], depth + 1, out);
    if (n->shape) dump_ast(n->shape, depth + 1, out);
    if (n->callee) dump_ast(n->callee, depth + 1, out);
    for (int i = 0; i < n->nargs; i++) dump_ast(n->args[i], depth + 1, out);
    for (int i = 0; i < n->nopts; i++) {
        fprintf(out, "%*sopt %s\n", (depth + 1) * 2, "", n->opts[i].key);
        dump_ast(n->opts[i].val, depth + 2, out);
    }
    for (int i = 0; i < n->nbody; i++) dump_ast(n->body[i], depth + 1, out);
}

static int cmd_check(int argc, char **argv) {
    const char *dump = NULL;
    const char *files[256];
    int nfiles = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "--dump=", 7)) {
            dump = a + 7;
            if (strcmp(dump, "graph") && strcmp(dump, "ast")) return usage_error("unknown dump '%s' (graph or ast)", dump);
        } else if (!strncmp(a, "--color=", 8)) {
            if (set_color(a)) return 2;
        } else if (!strcmp(a, "--dump")) {
            return usage_error("%s needs a stage: --dump=graph or --dump=ast", a);
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s' for 'nfc check'", a);
        } else {
            if (nfiles == 256) return usage_error("too many files (the limit is %s)", "256");
            files[nfiles++] = a;
        }
    }
    if (nfiles == 0) return usage_error("%s", "'nfc check' needs at least one .flow file");
    int status = 0;
    for (int i = 0; i < nfiles; i++) {
        arena ar;
        arena_init(&ar);
        diag_ctx dc;
        diag_init(&dc, &ar);
        sema_result res = { 0 };
        ast *tree = NULL;
        int nerr = front_compile_file(&dc, files[i], &res, &tree);
        diag_render(&dc, stderr, use_color());
        if (dump && !strcmp(dump, "ast") && tree) dump_ast(tree, 0, stdout);
        if (nerr) {
            status = 1;
        } else {
            for (int k = 0; k < res.nflows; k++) {
                if (dump && !strcmp(dump, "graph")) ir_dump(res.flows[k], stdout);
                else if (!dump) summary(res.flows[k], stdout);
            }
        }
        if (nerr > 0 && dc.nerrors > 1 && !dc.capped)
            fprintf(stderr, "%d errors generated.\n", dc.nerrors);
        arena_free(&ar);
    }
    return status;
}

int main(int argc, char **argv) {
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_text, stdout); return 0; }
        if (!strcmp(a, "--version")) { printf("nfc %s\n", NFC_VERSION); return 0; }
        if (!strncmp(a, "--color=", 8)) {
            if (set_color(a)) return 2;
            continue;
        }
        break;
    }
    if (i >= argc) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *cmd = argv[i];
    /* `nfc COMMAND --help`: the one help text, which covers every command */
    for (int k = i + 1; k < argc; k++)
        if (!strcmp(argv[k], "-h") || !strcmp(argv[k], "--help")) { fputs(usage_text, stdout); return 0; }
    static const char *const cmds[] = { "check", "forward", "inverse", "logprob", "eval", "sample", "train", "data" };
    if (!strcmp(cmd, "data")) return cmd_data(argc - i - 1, argv + i + 1);
    if (!strcmp(cmd, "train")) return cmd_train(argc - i - 1, argv + i + 1, use_color());
    if (!strcmp(cmd, "check")) return cmd_check(argc - i - 1, argv + i + 1);
    for (int k = 1; k < 6; k++)
        if (!strcmp(cmd, cmds[k])) return cmd_run(cmd, argc - i - 1, argv + i + 1, use_color());
    size_t cl = strlen(cmd);
    if (cl > 5 && !strcmp(cmd + cl - 5, ".flow")) return cmd_emit(argc - i, argv + i, use_color());
    if (cmd[0] == '-') return usage_error("unknown option '%s'", cmd);
    const char *sug = closest_word(cmd, cmds, 8);
    if (sug) {
        fprintf(stderr, "nfc: error: unknown command '%s'; did you mean '%s'?\n", cmd, sug);
        fprintf(stderr, "Try 'nfc --help' for more information.\n");
        return 2;
    }
    return usage_error("unknown command '%s'", cmd);
}
