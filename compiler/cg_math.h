/* compiler/cg_math.h: vectorized exp, log, log1p, expm1 and tanh as straight-line LLVM IR,
 * for targets and builds without Sleef (cg_options.use_sleef = 0); with Sleef too for f32
 * tanh (more accurate than Sleef's, and inline) and for exp of an argument bounded by its
 * definition (CGM_EXP_INRANGE), both chosen in cg.c.
 *
 * Input: a float or double scalar, or a vector of any number of lanes, and the builder
 * positioned where the code goes. Output: the function's value, of the same type. The code
 * has no branches and calls nothing but LLVM intrinsics that every target lowers inline
 * (llvm.fmuladd, llvm.fabs, llvm.copysign), so it is the same on x86-64 and aarch64.
 * No fast-math flags: NaN, infinities and signed zeros are handled as in C (details,
 * algorithms and measured accuracy in docs/codegen.md, "Math without Sleef").
 *
 * Codegen file: includes LLVM headers (like cg.c and jit.c).
 */
#ifndef NFC_CG_MATH_H
#define NFC_CG_MATH_H
#include <llvm-c/Core.h>

/* same order as cg.c's MF_ enum */
enum { CGM_EXP, CGM_LOG, CGM_LOG1P, CGM_EXPM1, CGM_TANH, CGM_COUNT };
/* exp of an argument the caller knows to be in [-80, 80] or NaN (cheaper: no special cases;
 * outside that range the result is wrong) */
enum { CGM_EXP_INRANGE = CGM_COUNT };

/* Emits f(v) at b's insertion point; M receives the intrinsic declarations. Returns NULL for
 * a bad f or a v that is not float/double (scalar or vector). */
LLVMValueRef cgm_emit(LLVMContextRef C, LLVMBuilderRef b, LLVMModuleRef M, int f, LLVMValueRef v);

#endif
