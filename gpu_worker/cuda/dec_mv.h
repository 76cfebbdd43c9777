/* gpu_worker/cuda/dec_mv.h: the decode step's NF4 matrix-vector kernel (dec_mv.cu), C++ linkage,
 * used by forward_cuda.cu only.
 *
 * Weights: canonical NF4 (nibbles from element 0, high nibble first; fp32 absmax per 64),
 * dequantized exactly as bitsandbytes does, w = bf16(code[n] * absmax), cols % 128 == 0. The
 * product runs on tensor cores (mma m16n8k16 bf16, fp32 accumulation) with x split into two
 * bf16 parts (x ~ hi + lo, 16 significant bits): the weights are exact, x loses ~2^-17.
 *
 * One launch computes up to DMV_MAX_SEG dense matrices that share x and cols (e.g. the router
 * and the shared-expert gate), or the routed + shared experts of a MoE layer (gate|up with SiLU,
 * or down with the routing weights and the combine), and can finish with an epilogue run by the
 * last block: residual add + (1+w) RMSNorm, or the router's softmax top-k. Launched with PDL:
 * weights are fetched before the previous kernel ends. */
#ifndef HMOE_CUDA_DEC_MV_H
#define HMOE_CUDA_DEC_MV_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "hmoe/status.h"

#define DMV_MAX_SEG 4
#define DMV_MAX_TOK 8 /* tokens of one launch (batched decode: two mma n-tiles of 4 tokens) */

enum dmv_mode {
    DMV_DENSE = 0,  /* y_s = W_s x for every segment s */
    DMV_GATEUP = 1, /* act[j] = SiLU(gate_j x) * (up_j x) for the k routed experts + shared */
    DMV_DOWN = 2,   /* y = sum_j w_j down_j act[j] (+ sigmoid(sgl) shared) (+ host) */
};

enum dmv_epi {
    DMV_EPI_NONE = 0,
    DMV_EPI_ADDNORM = 1, /* h += y; xn = h * rsqrt(mean(h^2) + eps) * normw (y: seg[0].y / out) */
    DMV_EPI_TOPK = 2,    /* softmax over seg[0].y[0..E), top-k -> ti_out, tw_out */
};

struct dmv_seg {
    const uint8_t *w;  /* nibbles [rows, cols / 2] */
    const float *absf; /* [rows * cols / 64] */
    float *y;          /* [rows] */
    int rows;
};

/* Batched decode (nbt > 1): token b of the launch reads and writes row b of every per-token
 * buffer: DENSE x + b cols, seg y + b rows; experts ti, tw + b k, x (GATEUP) + b H, act + b
 * (k + has_sh) I, sgl + b, out, host + b H; epilogues h, xn + b H, top-k ti_out, tw_out + b k
 * (over seg[0].y + b E). DENSE computes the tokens as mma columns (each weight read once);
 * GATEUP and DOWN run the tiles of each token (its own experts, and the shared one). Tokens
 * b >= *nb (padding of a graph bucket) write nothing. */
struct dmv_args {
    int mode, epi, cols, nseg, rnd;
    int nbt;       /* tokens of the launch (1..DMV_MAX_TOK; 0 = 1) */
    const int *nb; /* device: tokens really present (<= nbt), NULL = nbt */
    int fast; /* DENSE: the fast kernel where it applies (dmv_takes_fast; fp16 codes, absmax
               * after the mma: the weight is code * absmax unrounded, not bitsandbytes'
               * bf16(code * absmax)) */
    struct dmv_seg seg[DMV_MAX_SEG];
    const float *x; /* [cols] (DENSE, GATEUP) */
    float code[16];
    int *counter; /* one int in device memory, 0 between launches (epilogues) */
    /* experts (GATEUP, DOWN): routed slot layout as fw_ex_desc (NF4) */
    const uint8_t *pool;
    const int *slot; /* [E] slot of each expert of the layer, -1 = not resident */
    int64_t slot_bytes, o_up, o_down, o_ag, o_au, o_ad;
    const int32_t *ti; /* [k] chosen experts */
    const float *tw;   /* [k] routing weights */
    int k, I, H, has_sh;
    const uint8_t *sh_w[3]; /* shared expert gate, up, down (has_sh) */
    const float *sh_a[3];
    const float *sgl; /* [1] shared-expert gate logit */
    float *act;       /* [(k + 1) * I] */
    float *out;       /* DOWN: [H] */
    const float *host; /* DOWN: [H] added when not NULL (experts computed on the host) */
    /* epilogues */
    float *h;
    const float *normw;
    float *xn;
    float eps;
    int E, renorm;
    int32_t *ti_out;
    float *tw_out;
};

/* Whether dmv_launch runs a through the fast kernel (a->fast set, dense, one token, cols = 2048,
 * 16-byte aligned weights, absmax and x, at least one tile of 16 rows per SM, tensor maps
 * available). */
int dmv_takes_fast(const struct dmv_args *a);
/* Whether the kernel takes this weight shape / rounding. */
int dmv_ok(int cols, int rnd_bf16);
enum hmoe_status dmv_launch(cudaStream_t st, const struct dmv_args *a, int pdl);

#endif
