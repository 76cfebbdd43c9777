/* hmoe/experts.h: routed-expert FFN on the CPU: out[t] += w · down(silu(gate·x) ⊙ (up·x)).
 * Two entry points: a portable scalar reference that works directly on model tensors
 * (NF4 / BF16 / F16 / F32), and a prepared expert set: weights copied once into node-local
 * memory (per-expert contiguous layout), kernels picked by cpuid (AVX-512, AVX2+FMA, generic C;
 * AVX-512 BF16 by name), run by a pinned thread pool; each thread owns a contiguous range of
 * (expert, 16-row) units and steals chunks of the others' ranges once its own is done.
 *
 * Numerics (both paths): an NF4 weight is code[nibble] * absmax in fp32, rounded to the tensor's
 * out_dtype (bf16 or f16 round-to-nearest-even; f32 none), exactly as bitsandbytes dequantizes;
 * BF16/F16 weights are widened exactly. The reference accumulates dot products in double and
 * rounds h = silu(g) * u to float; the fast kernels accumulate in fp32 (FMA), so the two agree to
 * about 1e-6 of max|out|, not bit for bit. For a given ISA the fast path is deterministic and
 * independent of the thread count and of how tokens are batched. */
#ifndef HMOE_EXPERTS_H
#define HMOE_EXPERTS_H

#include <stdint.h>

#include "hmoe/expert_pool.h"
#include "hmoe/model.h"
#include "hmoe/status.h"
#include "hmoe/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- scalar reference -------------------------------------------------------------------- */

/* out[t, :] += wt[t] * down(silu(gate x[t]) * (up x[t])) for t < n_tok.
 * x: (n_tok, H) f32, wt: (n_tok) f32 (NULL = all 1), out: (n_tok, H) f32 accumulated into.
 * w: gate [I, H], up [I, H], down [H, I] of dtype NF4, BF16, F16 or F32.
 * Returns HMOE_E_INVAL on inconsistent shapes, HMOE_E_UNSUPPORTED on other dtypes. Slow: tests
 * and checks only. Thread-safe. */
enum hmoe_status hmoe_expert_ffn_ref(const struct hmoe_mlp_w *w, int n_tok, const float *x,
                                     const float *wt, float *out);

/* ---- prepared expert sets ---------------------------------------------------------------- */

enum hmoe_experts_isa {
    HMOE_ISA_AUTO = 0, /* best supported: avx512, avx2 or generic (never avx512bf16 / amx) */
    HMOE_ISA_GENERIC,  /* portable C over the prepared layout */
    HMOE_ISA_AVX2,     /* AVX2 + FMA + F16C */
    HMOE_ISA_AVX512,   /* AVX-512 F/BW/VL */
    HMOE_ISA_AVX512BF16, /* AVX-512 F/BW/VL + BF16: bf16 weights and x in three bf16 parts
                          * with VDPBF16PS (the fp32 AVX-512 kernel for what it does not take);
                          * by name only: slower than avx512 where measured */
    HMOE_ISA_AMX,        /* AMX-TILE + AMX-BF16 (with AVX-512 BF16): rows decoded to bf16 tiles,
                          * x in three bf16 parts, TDPBF16PS; by name only: slower than avx512
                          * where measured */
    HMOE_ISA_COUNT
};
const char *hmoe_experts_isa_name(enum hmoe_experts_isa isa);
/* 1 when this binary has the variant and the CPU runs it (cpuid). */
int hmoe_experts_isa_supported(enum hmoe_experts_isa isa);
enum hmoe_experts_isa hmoe_experts_isa_best(void);

struct hmoe_experts;

struct hmoe_experts_opts {
    struct hmoe_pool_opts pool; /* threads and NUMA node */
    enum hmoe_experts_isa isa;  /* HMOE_ISA_AUTO = best; an unsupported one is an error */
    int max_tokens;             /* tokens per internal pass (larger runs are split); 0 = 64 */
    int max_top_k;              /* largest top_k passed to run; 0 = 16 */
    int expand_absmax;          /* 1: decode double-quant absmax to fp32 at load (3 more bytes
                                 * read per 64 weights, no decode in the kernels; same results) */
    int release_source;         /* 1: load gives back (MADV_DONTNEED) the whole pages inside each
                                 * expert's source bytes as soon as it is copied (a few bytes at
                                 * each end stay: a neighbour may share them), so the source and
                                 * the copy never coexist in full; for a caller that never reads
                                 * the source again (anonymous memory reads zero afterwards) */
};

/* Creates an empty set for hidden size H and expert intermediate size I (all experts of a set
 * share them) and starts its pool. Returns HMOE_E_INVAL / HMOE_E_UNSUPPORTED / HMOE_E_NOMEM. */
enum hmoe_status hmoe_experts_init(const struct hmoe_experts_opts *o, int hidden, int inter,
                                   struct hmoe_experts **out);
void hmoe_experts_free(struct hmoe_experts *ex); /* NULL is a no-op */

/* Registers routed expert `expert` of layer `layer` (any ids >= 0, layer < HMOE_MAX_LAYERS).
 * Only the tensor views are remembered: the weights they point to must stay valid until
 * hmoe_experts_load. Checks shapes and dtypes (HMOE_E_INVAL / HMOE_E_UNSUPPORTED) and duplicate
 * ids (HMOE_E_INVAL). Not after load. */
enum hmoe_status hmoe_experts_add(struct hmoe_experts *ex, int layer, int expert,
                                  const struct hmoe_mlp_w *w);
/* Convenience: registers the routed experts of the MoE layers in [layer0, layer1) of a model;
 * keep(layer, expert, arg) selects a subset (NULL = all). */
enum hmoe_status hmoe_experts_add_model(struct hmoe_experts *ex, const struct hmoe_model *m,
                                        int layer0, int layer1,
                                        int (*keep)(int layer, int expert, void *arg), void *arg);

/* Allocates one node-local region (huge pages where allowed) and copies every registered expert
 * into it, gate | up | down each contiguous with its absmax, the copy done by the pool's threads
 * (first touch). Afterwards the source tensors are no longer read: the caller may close the
 * model or drop its pages, so the weights are held once. */
enum hmoe_status hmoe_experts_load(struct hmoe_experts *ex);

/* out[t, :] += sum_k wts[t, k] * FFN_{idx[t, k]}(x[t, :]) for t < n_tok, k < top_k.
 * x: (n_tok, H) f32; idx: (n_tok, top_k) int32 expert ids of `layer`, < 0 = skip the slot;
 * wts: (n_tok, top_k) f32; out: (n_tok, H) f32, accumulated into (zero it first).
 * Experts are applied in ascending id order for every token. Runs on the pool; the only
 * syscalls are futex wake/waits of a sleeping pool. Returns HMOE_E_INVAL for an expert that was
 * not registered (nothing is written then), a bad layer, top_k > max_top_k or before load.
 * Not thread-safe: one caller at a time. */
enum hmoe_status hmoe_experts_run(struct hmoe_experts *ex, int layer, int n_tok, int top_k,
                                  const float *x, const int32_t *idx, const float *wts, float *out);

/* Bytes of one prepared expert that a run streams (packed weights + absmax + nested absmax);
 * 0 when absent. */
uint64_t hmoe_experts_nbytes(const struct hmoe_experts *ex, int layer, int expert);
/* Total bytes of the node-local region. */
uint64_t hmoe_experts_total_bytes(const struct hmoe_experts *ex);
/* Threads used by later runs (1..pool size; for scaling measurements). */
void hmoe_experts_set_threads(struct hmoe_experts *ex, int n);
/* Switches the kernels of later runs (HMOE_E_UNSUPPORTED when the CPU lacks the ISA). */
enum hmoe_status hmoe_experts_set_isa(struct hmoe_experts *ex, enum hmoe_experts_isa isa);
/* How a run's gate/up and down rows are shared among the threads (results are the same bits). */
enum hmoe_experts_sched {
    HMOE_SCHED_FLOW = 0, /* default: own contiguous range claimed a quarter of the rest at a
                          * time, then ~32 KB chunks stolen from the others; a down chunk waits
                          * only for its expert's gate/up rows (no barrier between the two) */
    HMOE_SCHED_STEAL,    /* the same with a barrier between gate/up and down */
    HMOE_SCHED_STATIC,   /* one fixed contiguous range per thread, barrier (no stealing) */
    HMOE_SCHED_COUNT
};
/* Switches the schedule of later runs (HMOE_E_INVAL for an unknown one). For measurements. */
enum hmoe_status hmoe_experts_set_sched(struct hmoe_experts *ex, enum hmoe_experts_sched s);
const char *hmoe_experts_sched_name(enum hmoe_experts_sched s);
struct hmoe_pool *hmoe_experts_pool(struct hmoe_experts *ex);
enum hmoe_experts_isa hmoe_experts_isa_used(const struct hmoe_experts *ex);

#ifdef __cplusplus
}
#endif
#endif
