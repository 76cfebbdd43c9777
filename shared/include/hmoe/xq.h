/* hmoe/xq.h: the expert queue, one shared-memory region per CPU expert worker, through which
 * the GPU worker hands one MoE layer's offloaded (token, expert) pairs to that worker and gets
 * the weighted expert outputs back. Single producer (GPU worker), single consumer (the expert
 * worker). Protocol: the producer writes x, the pair list and the descriptor, then rings `req`
 * (sequence r); the worker computes out[p] = w_p * expert_p(x[tok_p]) for every pair and sets
 * `resp` to r. The coordinator clears `alive` when the worker dies, which ends a waiting
 * producer with HMOE_E_PEER_DEAD. */
#ifndef HMOE_XQ_H
#define HMOE_XQ_H

#include <stddef.h>
#include <stdint.h>

#include "hmoe/doorbell.h"
#include "hmoe/model.h"
#include "hmoe/shm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HMOE_XQ_LAYOUT 0x58510001u /* "XQ" v1 */

struct hmoe_xq_pair {
    int32_t tok;    /* row of x */
    int32_t expert; /* expert id in layer */
    float w;        /* routing weight */
    int32_t pad;
};

/* At the start of the region's data (shared by both processes). */
struct hmoe_xq_ctl {
    struct hmoe_doorbell req;  /* producer -> worker */
    struct hmoe_doorbell resp; /* worker -> producer: sequence of the answered request */
    _Atomic uint32_t alive;    /* 1 while the worker serves; set by the worker, cleared by the
                                  coordinator when it dies */
    _Atomic uint32_t worker_pid;
    uint32_t pad0[14];
    /* geometry, written once by the coordinator */
    uint32_t hidden;    /* H */
    uint32_t cap_tok;   /* rows of x */
    uint32_t cap_pairs; /* entries of pairs / rows of out */
    uint32_t pad1;
    uint64_t x_off, pairs_off, out_off; /* byte offsets from the ctl start */
    /* request descriptor, written by the producer before ringing */
    int32_t layer;
    int32_t n_tok;
    int32_t n_pairs;
    int32_t status;      /* written by the worker: enum hmoe_status of the request */
    uint64_t compute_ns; /* written by the worker */
    char error[200];     /* written by the worker when status != 0 */
};

/* A mapped queue (pointers into the region). */
struct hmoe_xq {
    struct hmoe_xq_ctl *ctl;
    float *x;                   /* (cap_tok, H) f32 */
    struct hmoe_xq_pair *pairs; /* (cap_pairs) */
    float *out;                 /* (cap_pairs, H) f32: weighted output of each pair */
};

/* The logits region: the GPU worker writes the last position's logits of each step and then
 * `seq` (the step number); the coordinator checks seq against StepEnd.logits_seq. */
#define HMOE_LOGITS_LAYOUT 0x4c470001u /* "LG" v1 */
struct hmoe_logits_ctl {
    _Atomic uint32_t seq;
    uint32_t vocab;
    uint32_t pad[14];
    /* followed by float logits[vocab] */
};
static inline float *hmoe_logits_data(struct hmoe_logits_ctl *c)
{
    return (float *)(c + 1);
}

/* Data bytes a queue needs. */
size_t hmoe_xq_shm_size(uint32_t hidden, uint32_t cap_tok, uint32_t cap_pairs);
/* Lays a queue out in a freshly created region (coordinator). HMOE_E_INVAL if too small. */
enum hmoe_status hmoe_xq_shm_init(struct hmoe_shm *s, uint32_t hidden, uint32_t cap_tok,
                                  uint32_t cap_pairs, struct hmoe_xq *q);
/* Maps an attached region as a queue, checking the geometry against the region size and the
 * expected hidden size (0 = any). HMOE_E_PROTO when the geometry is inconsistent. */
enum hmoe_status hmoe_xq_open(struct hmoe_shm *s, uint32_t hidden, struct hmoe_xq *q);

/* Reference expert math shared by the GPU worker's resident experts and the CPU expert
 * worker: out_p = w_p * down(silu(gate x) * up x) for each pair, experts dequantized once per
 * call and tokens grouped by expert. It uses hmoe_matmul and the same silu as the CPU forward
 * pass, so results are bit-identical to hmoe-eval's in-process experts. */
struct hmoe_xq_scratch {
    int H, I, cap_rows;
    float *xe, *ge, *ue, *ye; /* (cap_rows, H|I) */
    int32_t *order;           /* (cap_pairs) */
    int cap_pairs;
};
enum hmoe_status hmoe_xq_scratch_init(struct hmoe_xq_scratch *s, int H, int I, int cap_rows,
                                      int cap_pairs);
void hmoe_xq_scratch_free(struct hmoe_xq_scratch *s);
/* pairs[p] over x (n_tok, H) -> out (n_pairs, H), row p = w_p * FFN_{expert_p}(x[tok_p]).
 * experts: the layer's routed experts [E]. Pairs must be valid (checked by the caller); more
 * than cap_rows tokens for one expert are processed in pieces. */
enum hmoe_status hmoe_xq_compute(struct hmoe_xq_scratch *s, const struct hmoe_mlp_w *experts,
                                 int n_experts, const struct hmoe_xq_pair *pairs, int n_pairs,
                                 const float *x, float *out);

#ifdef __cplusplus
}
#endif
#endif
