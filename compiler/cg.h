/* compiler/cg.h: the LLVM code generator for the tensor IR (tir.h).
 *
 * Input: verified tensor-IR programs (forward, inverse, ...) of one flow graph, and options
 * (dtype, vector width, target). Output: one LLVM module holding one function per program,
 * named "<prefix>_<prog name>", with the kernel ABI of tir.h:
 *   void f(int64_t n, int64_t row0, int64_t seed, const T *const *args, const double *scalars,
 *          T *const *outs, const T *params, void *ws);
 * A program with gradient outputs (tprog.ngrad > 0) also writes them to outs[nouts], a flat
 * array laid out like params (tir.h).
 * The module is verified and optimized (new pass manager; see cg.c for the pipelines) for its target
 * machine; it can be written out (IR, assembly, object) or handed to the JIT (jit.h).
 * The design (tiles of V rows in structure-of-arrays form, unbatched precomputation, Sleef
 * variant selection, fast-math flags, workspace layout) is described in docs/codegen.md.
 *
 * Library code: never prints or exits; every failure (LLVM errors included) is reported as
 * a nonzero return with a message in err. Only cg.c, cg_math.c, jit.c and aot.c include LLVM headers.
 */
#ifndef NFC_CG_H
#define NFC_CG_H
#include "tir.h"

/* what a segment_sink needs to compile a segment's module (strings owned by the cg_module) */
typedef struct cg_target {
    const char *triple, *cpu, *features;
    const char *pipeline;      /* the optimizer's pipeline for LLVMRunPasses (the JIT compiles
                                  at its own code-generator level, as it does whole modules) */
} cg_target;

typedef struct {
    int         dtype;         /* DT_F32 or DT_F64 (ir.h) */
    int         vector_width;  /* 0: native for the target (f32: 16 with AVX-512, 8 with AVX/AVX2,
                                  4 SSE/NEON; f64: half); 1: scalar; or an explicit 2/4/8/16 */
    int         opt_level;     /* 0..3, default 2 (O1/O2: short cleanup pipelines, the code is
                                  vectorized explicitly; O3: LLVM's full default<O3>) */
    const char *triple;        /* NULL: host */
    const char *cpu;           /* NULL: host ("generic" allowed) */
    const char *features;      /* NULL: host features when cpu is NULL, else "" */
    int         use_sleef;     /* 1: Sleef vector functions matched to the ISA (but f32 tanh
                                  and exp of a bounded argument are always inline); 0: nfc's
                                  own vectorized polynomials (cg_math.h), no external calls */
    int         segment_nodes; /* the code is split into segment functions of at most this
                                  many nodes, cut at products, called in order per tile from a
                                  table (LLVM's code generation is superlinear in a function's
                                  size); segments whose IR is the same (the layers of a repeat
                                  block) are compiled once and called with their own offset
                                  tables (docs/codegen.md, "Shared segments"); 0: the default
                                  CG_SEGMENT_NODES; -1: one function per program */
    int         tile_pairs;    /* segments of the tile loop compute two tiles of V rows at a
                                  time, their products both at once (each weight loaded used
                                  twice: docs/codegen.md, "Tile pairs"); same results, more
                                  compile time and a second copy of the workspace's tile part.
                                  0 (default): for programs with gradient outputs; 1: for
                                  every program (AOT builds); -1: never */
    int         no_fuse;       /* 0 (default): fusion of elementwise chains and of a matrix
                                  product's elementwise epilogue (computed in registers at
                                  their only use, no workspace slot: docs/codegen.md,
                                  "Fusion"); 1: every value gets its slot and its own loop */
    /* JIT builds: each segment is built in a module and an LLVM context of its own, and
     * handed to segment_sink(segment_ctx, target, context, module, the segment's function
     * name) as soon as it is complete (not yet verified or optimized). The sink owns both
     * from then on; it must compile the module for the target (cg_target: triple, CPU,
     * features, the pipeline to run) and make the function available
     * under that name before the program's own module is linked (model.c: the JIT's
     * jit_compile_async, then jit_segments_finish). So LLVM holds the IR of a few segments
     * at a time, and they can be compiled in parallel. The program's module only declares
     * the segments. Returns 0, or -1 with a message in err. NULL (default): one module. */
    int       (*segment_sink)(void *ctx, const struct cg_target *t, void *context, void *module, const char *fn,
                              char *err, size_t errlen);
    void       *segment_ctx;
} cg_options;

#define CG_SEGMENT_NODES 64
/* fusion computes a value at most this many nodes after its own position (cg.c, plan_fusion) */
#define CG_FUSE_SPAN 48

/* dtype f32, native width, O2, host target, Sleef on, fusion on, segments of CG_SEGMENT_NODES. */
void cg_default_options(cg_options *o);

/* Owns an LLVM context (ORC thread-safe context), a module and a target machine. */
typedef struct cg_module cg_module;

/* Builds one function per program. g supplies the parameter shapes (PARAM nodes) and may be
 * NULL when no program has a PARAM node. Every program is checked with tir_verify first.
 * Returns 0 and *out, or -1 with a message in err (*out = NULL). */
int cg_build(const tprog *const *progs, int nprogs, const ir_graph *g, const char *prefix,
             const cg_options *o, cg_module **out, char *err, size_t errlen);

/* Bytes of workspace (64-byte aligned, per the ABI) that program prog_index needs; the size
 * does not depend on n. -1 for a bad index. */
int64_t cg_workspace_bytes(const cg_module *m, int prog_index);
/* The part of it that holds batched values (per tile of rows, twice with tile pairs; the rest
 * holds unbatched values and the accumulators of sums over the batch, which grow with the
 * parameters). -1 for a bad index. */
int64_t cg_tile_workspace_bytes(const cg_module *m, int prog_index);

/* Nodes of program prog_index that fusion made virtual (no slot, computed at their use); 0
 * with no_fuse; -1 for a bad index. For tests and diagnostics. */
int cg_fused_count(const cg_module *m, int prog_index);

/* The vector width V actually used (rows per tile). */
/* Segment functions compiled for the module's programs, and (in *shared, if not NULL) the
 * segment calls that reuse one of them instead of code of their own (docs/codegen.md,
 * "Shared segments"). */
int cg_segment_count(const cg_module *m, int *shared);
int cg_vector_width(const cg_module *m);

/* The target triple, CPU and feature string the module was built for (owned by m). */
const char *cg_triple(const cg_module *m);
const char *cg_cpu(const cg_module *m);
const char *cg_features(const cg_module *m);

/* Name of function i ("<prefix>_<prog name>", owned by m), or NULL for a bad index. */
const char *cg_function_name(const cg_module *m, int prog_index);

enum { CG_EMIT_LLVM, CG_EMIT_ASM, CG_EMIT_OBJ };
/* Writes the module as LLVM IR text, assembly or an object file (position independent). */
int cg_emit_file(cg_module *m, const char *path, int kind, char *err, size_t errlen);

void cg_free(cg_module *m);

/* ---- for jit.c only ---- */
/* Initializes LLVM's targets once per process (thread-safe; cg_build calls it). */
void cg_llvm_init(void);
/* Hands over the ORC thread-safe context and the module (LLVMOrcThreadSafeContextRef and
 * LLVMModuleRef, as void * so that this header needs no LLVM headers) and frees the rest of
 * m. The caller owns both afterwards. */
void cg_release_llvm(cg_module *m, void **tsc, void **mod);
/* ---- for aot.c only ---- */
/* The module's LLVMContextRef and LLVMModuleRef (still owned by m), and its target machine. */
void cg_llvm_handles(cg_module *m, void **ctx, void **mod);
void *cg_target_machine(cg_module *m);

#endif
