/* gpu_worker/cuda/dec_mv.cu: the decode step's NF4 matrix-vector kernel on tensor cores, with
 * the MoE expert modes and the last-block epilogues (see dec_mv.h).
 *
 * Work split: a tile is 16 rows; a block of KS warps computes one tile, its warps splitting the
 * row into 128-column "items" (superblocks). Lane (g = lane / 4, t = lane % 4) of a warp holds
 * tile rows g and g + 8 and, of each item, the 32 columns [32t, 32t + 32): 16 bytes per row, one
 * 128-bit load, inside one absmax block. mma.m16n8k16 needs, for k-step s (of 8 per item), the
 * A elements k = {2t, 2t+1, 2t+8, 2t+9}: they are taken as the item's columns 32t + 4s + {0..3}
 * (a permutation of k, applied to B too), so a lane dequantizes exactly the bytes it loaded.
 * B has two live columns: n = 0 holds bf16(x), n = 1 holds bf16(x - bf16(x)); the result of a
 * row is D[row][0] + D[row][1]. x fragments are built per warp in shared memory in the order the
 * lanes read them (one 8-byte load per k-step, conflict-free). Partial sums of the KS warps are
 * added in a fixed order (deterministic).
 * Batched decode (DENSE, nbt tokens): B's column n = g carries token 4 nt + (g >> 1) of n-tile nt
 * (hi for even g, lo for odd g), so lane (g, t) gets token 4 nt + t's pair in D columns 2t, 2t + 1;
 * 5..8 tokens use a second n-tile (two mma per k-step on the same A). A column's result does not
 * depend on the other columns, so a token's output is the same in any batch. */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "dec_mv.h"
#include "pdl.cuh"
#include "router.cuh"

namespace
{

constexpr int DMV_R = 4;        /* register kernel: items in flight per warp (8 x 16-byte loads) */
constexpr int DMV_ITEM_U4 = 32; /* x fragments of one item: 8 k-steps x 4 quads of uint4 */
/* x fragments of one token (uint4) in a multi-token item: 32 + 4 of padding, so that the four
 * tokens an n-tile reads at once fall into two bank halves (two wavefronts per 8-byte load). */
constexpr int DMV_TOK_U4 = 36;

/* Token columns of a launch (DENSE) and tokens present (device value, or all). */
__host__ __device__ __forceinline__ int dmv_nbt(const dmv_args &a)
{
    return a.nbt > 1 ? a.nbt : 1;
}

__device__ __forceinline__ int dmv_nb(const dmv_args &a)
{
    return a.nb ? *a.nb : dmv_nbt(a);
}

/* uint4 per item of x fragments for nc token columns. */
__host__ __device__ __forceinline__ int dmv_xis(int nc)
{
    return nc > 1 ? nc * DMV_TOK_U4 : DMV_ITEM_U4;
}

struct dmv_item {
    const uint8_t *wa, *wb; /* this lane's 16 bytes of rows g and g + 8 */
    const float *aa, *ab;   /* their absmax */
    int ok;
};

__device__ __forceinline__ float dmv_sigmoid(float z)
{
    return 1.0f / (1.0f + expf(-z));
}

__device__ __forceinline__ void dmv_mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                        uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Two weights of one byte (high nibble first), bf16(code * absmax) each, packed for mma. The
 * code table is 16 floats in 16 banks: any pattern of lookups is conflict-free. The nibbles come
 * as offsets prepared per 32-bit word w: lo4 = (w << 2) & 0x3C3C3C3C and
 * hi4 = (w >> 2) & 0x3C3C3C3C hold 4 * nibble in each byte, so one byte permute gives a table
 * offset (instead of a shift and a mask per nibble). */
__device__ __forceinline__ uint32_t dmv_deq2p(uint32_t lo4, uint32_t hi4, int pos, float am,
                                              const float *tab)
{
    const char *tb = (const char *)tab;
    const uint32_t oh = __byte_perm(hi4, 0u, 0x4440u | (uint32_t)pos);
    const uint32_t ol = __byte_perm(lo4, 0u, 0x4440u | (uint32_t)pos);
    const __nv_bfloat162 p = __floats2bfloat162_rn(*(const float *)(tb + oh) * am,
                                                   *(const float *)(tb + ol) * am);
    return *reinterpret_cast<const uint32_t *>(&p);
}

/* One 128-column item of a 16-row tile: 8 mma k-steps over this lane's words of rows g (wa) and
 * g + 8 (wb) and the item's x fragments xq; xo[nt]: offset (uint2) of the token this lane feeds
 * into B in n-tile nt (dmv_xoff). With one token, lanes g >= 2 load the fragments of g & 1: B's
 * columns 2..7 then hold copies, whose results (D columns 2..7, lanes t > 0) are never read. */
template <int NT>
__device__ __forceinline__ void
dmv_item_mma(float (&d)[NT][4], const uint32_t (&wa)[4], const uint32_t (&wb)[4], float aa,
             float ab, const uint2 *xq, const int (&xo)[NT], const float *tab, int g, int t)
{
#pragma unroll
    for (int wi = 0; wi < 4; wi++) { /* word wi: k-steps 2 wi and 2 wi + 1 */
        const uint32_t la = (wa[wi] << 2) & 0x3C3C3C3Cu, ha = (wa[wi] >> 2) & 0x3C3C3C3Cu;
        const uint32_t lb = (wb[wi] << 2) & 0x3C3C3C3Cu, hb = (wb[wi] >> 2) & 0x3C3C3C3Cu;
#pragma unroll
        for (int p0 = 0; p0 < 4; p0 += 2) {
            const int s = 2 * wi + (p0 >> 1);
            const uint32_t a0 = dmv_deq2p(la, ha, p0, aa, tab);
            const uint32_t a2 = dmv_deq2p(la, ha, p0 + 1, aa, tab);
            const uint32_t a1 = dmv_deq2p(lb, hb, p0, ab, tab);
            const uint32_t a3 = dmv_deq2p(lb, hb, p0 + 1, ab, tab);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const uint2 b = xq[xo[nt] + (s * 4 + t) * 2 + (g & 1)];
                dmv_mma(d[nt], a0, a1, a2, a3, b.x, b.y);
            }
        }
    }
}

/* Offsets (uint2) of the tokens lane g feeds into B: token 4 nt + (g >> 1), or token 0 (a copy
 * whose result is not read) past the nc columns. */
template <int NT> __device__ __forceinline__ void dmv_xoff(int (&xo)[NT], int nc, int g)
{
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int tok = 4 * nt + (g >> 1);
        xo[nt] = tok < nc && nc > 1 ? tok * DMV_TOK_U4 * 2 : 0;
    }
}

/* x fragments of one 128-column item for one token: lane l converts xp[4l .. 4l + 3] * xs to bf16
 * hi + lo (x ~ hi + lo) and stores them where lane (g, t) reads k-step l & 7 (dmv_item_mma). */
__device__ __forceinline__ void dmv_xfrag(const float *xp, float xs, uint4 *dst, int lane)
{
    const float4 xv = __ldcg((const float4 *)xp + lane);
    const float xx[4] = {xv.x * xs, xv.y * xs, xv.z * xs, xv.w * xs};
    uint32_t hv[2], lv[2];
#pragma unroll
    for (int q = 0; q < 2; q++) {
        const __nv_bfloat162 h2 = __floats2bfloat162_rn(xx[2 * q], xx[2 * q + 1]);
        const float2 hf = __bfloat1622float2(h2);
        const __nv_bfloat162 l2 = __floats2bfloat162_rn(xx[2 * q] - hf.x, xx[2 * q + 1] - hf.y);
        hv[q] = *reinterpret_cast<const uint32_t *>(&h2);
        lv[q] = *reinterpret_cast<const uint32_t *>(&l2);
    }
    dst[(lane & 7) * 4 + (lane >> 3)] = make_uint4(hv[0], hv[1], lv[0], lv[1]);
}

/* Where item i of token tb takes x from (DENSE, GATEUP: the input row; DOWN: the activations of
 * assignment j times its routing weight, or sigmoid(shared gate) for the shared expert). */
__device__ __forceinline__ const float *dmv_xsrc(const dmv_args &a, int i, int tb, float *xs)
{
    if (a.mode == DMV_DOWN) {
        const int nI = a.I >> 7, j = i / nI, nj = a.k + a.has_sh;
        *xs = j < a.k ? a.tw[tb * a.k + j] : dmv_sigmoid(a.sgl[tb]);
        return a.act + ((int64_t)tb * nj + j) * a.I + (i % nI) * 128;
    }
    *xs = 1.f;
    return a.x + (int64_t)tb * (a.mode == DMV_DENSE ? a.cols : a.H) + i * 128;
}

/* After a tile's products: lane (g, t) of warp w files token 4 nt + t's rows g, g + 8 in red,
 * then threads < 16 nc add the KS warps in order into sum = red + KS * 16 * nc ([nc][16]). */
template <int NT>
__device__ __forceinline__ float *dmv_reduce(const float (&d)[NT][4], float *red, int ks, int nc,
                                             int w, int g, int t)
{
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int tok = 4 * nt + t;
        if (tok < nc) {
            red[(w * nc + tok) * 16 + g] = d[nt][0] + d[nt][1];
            red[(w * nc + tok) * 16 + 8 + g] = d[nt][2] + d[nt][3];
        }
    }
    __syncthreads();
    float *sum = red + ks * 16 * nc;
    if ((int)threadIdx.x < 16 * nc) {
        const int tok = threadIdx.x >> 4, r = threadIdx.x & 15;
        float v = 0.f;
        for (int k = 0; k < ks; k++)
            v += red[(k * nc + tok) * 16 + r];
        sum[threadIdx.x] = v;
    }
    __syncthreads();
    return sum;
}

__device__ __forceinline__ uint4 dmv_ldg16(const uint8_t *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* GATEUP: gate and up weights (nibbles, absmax) of assignment j (j == k: the shared expert);
 * false when the routed expert is not resident. */
__device__ __forceinline__ bool dmv_gateup_w(const dmv_args &a, int j, int tb, const uint8_t **gw,
                                             const uint8_t **uw, const float **ga, const float **ua)
{
    if (j >= a.k) {
        *gw = a.sh_w[0];
        *uw = a.sh_w[1];
        *ga = a.sh_a[0];
        *ua = a.sh_a[1];
        return true;
    }
    const int e = a.ti[tb * a.k + j], sl = e >= 0 && e < a.E ? a.slot[e] : -1;
    if (sl < 0) return false;
    const uint8_t *base = a.pool + (int64_t)sl * a.slot_bytes;
    *gw = base;
    *uw = base + a.o_up;
    *ga = (const float *)(base + a.o_ag);
    *ua = (const float *)(base + a.o_au);
    return true;
}

/* Where tile `tile` of the launch gets its rows: fills the row pointers of lane g for item i. */
struct dmv_tile {
    int seg, r0, nitems, valid_a, valid_b;
    const uint8_t *wa0, *wb0; /* row starts (nibbles) */
    const float *aa0, *ab0;   /* row starts (absmax) */
    int expert;               /* GATEUP: j */
};

/* DENSE: the segment and first row of 16-row tile `tile` (tiles numbered across segments). */
__device__ __forceinline__ void dmv_seg_tile(const dmv_args &a, int tile, int *seg, int *r0)
{
    int s = 0, t0 = 0;
    for (; s < a.nseg - 1; s++) {
        const int nt = (a.seg[s].rows + 15) >> 4;
        if (tile < t0 + nt) break;
        t0 += nt;
    }
    *seg = s;
    *r0 = (tile - t0) * 16;
}

__device__ __forceinline__ dmv_tile dmv_find_tile(const dmv_args &a, int tile, int g, int tb)
{
    dmv_tile T = {};
    if (a.mode == DMV_DENSE) {
        dmv_seg_tile(a, tile, &T.seg, &T.r0);
        const dmv_seg &S = a.seg[T.seg];
        int ra = T.r0 + g, rb = T.r0 + 8 + g;
        T.valid_a = ra < S.rows;
        T.valid_b = rb < S.rows;
        if (!T.valid_a) ra = 0;
        if (!T.valid_b) rb = 0;
        T.wa0 = S.w + (int64_t)ra * (a.cols >> 1);
        T.wb0 = S.w + (int64_t)rb * (a.cols >> 1);
        T.aa0 = S.absf + (int64_t)ra * (a.cols >> 6);
        T.ab0 = S.absf + (int64_t)rb * (a.cols >> 6);
        T.nitems = a.cols >> 7;
    } else if (a.mode == DMV_GATEUP) {
        const int nq = a.I >> 3, j = tile / nq, q = tile % nq, row = q * 8 + g;
        T.expert = j;
        T.r0 = q * 8;
        T.nitems = a.H >> 7;
        const uint8_t *gw, *uw;
        const float *ga, *ua;
        if (!dmv_gateup_w(a, j, tb, &gw, &uw, &ga, &ua)) {
            T.nitems = -1; /* not resident: the block has nothing to do */
            return T;
        }
        T.wa0 = gw + (int64_t)row * (a.H >> 1);
        T.wb0 = uw + (int64_t)row * (a.H >> 1);
        T.aa0 = ga + (int64_t)row * (a.H >> 6);
        T.ab0 = ua + (int64_t)row * (a.H >> 6);
        T.valid_a = T.valid_b = 1;
    } else {
        T.r0 = tile * 16;
        T.nitems = (a.k + a.has_sh) * (a.I >> 7);
        T.valid_a = T.valid_b = 1;
    }
    return T;
}

__device__ __forceinline__ dmv_item dmv_get_item(const dmv_args &a, const dmv_tile &T, int i, int g,
                                                 int t, int tb)
{
    dmv_item it;
    it.ok = 1;
    if (a.mode != DMV_DOWN) {
        it.wa = T.wa0 + i * 64 + 16 * t;
        it.wb = T.wb0 + i * 64 + 16 * t;
        it.aa = T.aa0 + 2 * i + (t >> 1);
        it.ab = T.ab0 + 2 * i + (t >> 1);
        return it;
    }
    const int nI = a.I >> 7, j = i / nI, ci = i % nI;
    const uint8_t *dn;
    const float *da;
    if (j < a.k) {
        const int e = a.ti[tb * a.k + j], sl = e >= 0 && e < a.E ? a.slot[e] : -1;
        if (sl < 0) {
            it.ok = 0;
            return it;
        }
        const uint8_t *base = a.pool + (int64_t)sl * a.slot_bytes;
        dn = base + a.o_down;
        da = (const float *)(base + a.o_ad);
    } else {
        dn = a.sh_w[2];
        da = a.sh_a[2];
    }
    const int ra = T.r0 + g, rb = T.r0 + 8 + g;
    it.wa = dn + (int64_t)ra * (a.I >> 1) + ci * 64 + 16 * t;
    it.wb = dn + (int64_t)rb * (a.I >> 1) + ci * 64 + 16 * t;
    it.aa = da + (int64_t)ra * (a.I >> 6) + 2 * ci + (t >> 1);
    it.ab = da + (int64_t)rb * (a.I >> 6) + 2 * ci + (t >> 1);
    return it;
}

/* h += y; xn = h * rsqrt(mean(h^2) + eps) * normw, n values (rows b of h and xn), by the whole
 * block. */
__device__ void dmv_addnorm(const dmv_args &a, const float *y, int n, int b, float *sm)
{
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, nw = blockDim.x >> 5;
    float *h = a.h + (int64_t)b * n, *xn = a.xn + (int64_t)b * n;
    float ss = 0.f;
    for (int i = tid; i < n; i += blockDim.x) {
        const float v = h[i] + __ldcg(y + i);
        h[i] = v;
        ss = fmaf(v, v, ss);
    }
    ss = hmoe_warp_sum(ss);
    if (b > 0) __syncthreads(); /* sm of the previous token read */
    if (lane == 0) sm[w] = ss;
    __syncthreads();
    ss = 0.f;
    for (int i = 0; i < nw; i++)
        ss += sm[i];
    const float inv = rsqrtf(ss / (float)n + a.eps);
    for (int i = tid; i < n; i += blockDim.x)
        xn[i] = h[i] * inv * a.normw[i];
}

/* The last block of a launch to finish runs the epilogue over every block's output (called by
 * every thread of every block once its outputs are written; scr: 128 floats of shared memory).
 * Top-k: one token (NT == 0) or a warp per token present; add + norm: each token present. */
template <int NT = 0> __device__ void dmv_epilogue(const dmv_args &a, float *scr)
{
    if (a.epi == DMV_EPI_NONE) return;
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(a.counter, 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (a.epi == DMV_EPI_TOPK) {
        if (NT == 0) {
            if (threadIdx.x < 32)
                hmoe_topk_warp<true>(a.seg[0].y, a.E, a.k, a.renorm, a.ti_out, a.tw_out);
        } else {
            const int nb = dmv_nb(a);
#pragma unroll 1
            for (int b = threadIdx.x >> 5; b < nb; b += blockDim.x >> 5)
                hmoe_topk_warp<true>(a.seg[0].y + (int64_t)b * a.E, a.E, a.k, a.renorm,
                                     a.ti_out + b * a.k, a.tw_out + b * a.k);
        }
    } else {
        const int n = a.mode == DMV_DOWN ? a.H : a.seg[0].rows;
        const float *y = a.mode == DMV_DOWN ? a.out : a.seg[0].y;
        const int nb = a.nbt > 1 ? dmv_nb(a) : 1;
        for (int b = 0; b < nb; b++)
            dmv_addnorm(a, y + (int64_t)b * n, n, b, scr);
    }
    if (threadIdx.x == 0) *a.counter = 0;
}

/* Token of this block (GATEUP, DOWN: the tiles of token b are blocks [b * tpt, (b + 1) * tpt);
 * DENSE: 0, the tokens are the mma columns) and its tile index. */
__device__ __forceinline__ int dmv_block_tok(const dmv_args &a, int *tile)
{
    if (a.mode == DMV_DENSE || a.nbt <= 1) {
        *tile = blockIdx.x;
        return 0;
    }
    const int tpt = a.mode == DMV_GATEUP ? (a.k + a.has_sh) * (a.I >> 3) : a.H >> 4;
    *tile = blockIdx.x % tpt;
    return blockIdx.x / tpt;
}

/* A tile's results (sum: [nc][16] from dmv_reduce): DENSE y rows of each token present;
 * GATEUP SiLU(gate) * up of token tb's assignment `expert`; DOWN token tb's rows + host part. */
__device__ __forceinline__ void dmv_store(const dmv_args &a, const float *sum, int seg, int r0,
                                          int expert, int tb, int nc)
{
    const int tid = threadIdx.x;
    if (a.mode == DMV_DENSE) {
        const dmv_seg &S = a.seg[seg];
        const int tok = tid >> 4, r = r0 + (tid & 15);
        if (tid < 16 * nc && (nc == 1 || tok < dmv_nb(a)) && r < S.rows)
            S.y[(int64_t)tok * S.rows + r] = sum[tid];
    } else if (a.mode == DMV_GATEUP) {
        if (tid < 8) {
            const float gv = sum[tid], uv = sum[8 + tid];
            const int64_t j = (int64_t)tb * (a.k + a.has_sh) + expert;
            a.act[j * a.I + r0 + tid] = gv / (1.0f + expf(-gv)) * uv;
        }
    } else if (tid < 16) {
        const int64_t o = (int64_t)tb * a.H + r0 + tid;
        a.out[o] = sum[tid] + (a.host ? a.host[o] : 0.f);
    }
}

/* NT: 0 = one token column (B = 1, and the per-token expert tiles), 1 or 2: n-tiles of a DENSE
 * launch of 2..4 or 5..8 tokens. */
template <int KS, int NT>
__global__ void __launch_bounds__(KS * 32, 16 / KS) k_dmv(const __grid_constant__ dmv_args a)
{
    constexpr int NTA = NT > 0 ? NT : 1; /* accumulator n-tiles */
    extern __shared__ __align__(16) unsigned char dmv_sm[];
    const int nc = NT == 0 ? 1 : dmv_nbt(a), xis = dmv_xis(nc);
    float *tab = (float *)dmv_sm; /* [16] */
    uint4 *xf = (uint4 *)(dmv_sm + 64) + (threadIdx.x >> 5) * DMV_R * xis;
    float *red = (float *)(dmv_sm + 64 + KS * DMV_R * xis * 16); /* [KS*16*nc + 16*nc] */
    float *scr = red + (KS + 1) * 16 * nc;                       /* [128] */
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    if (threadIdx.x < 16) tab[threadIdx.x] = a.code[threadIdx.x];
    int tile;
    const int tb = dmv_block_tok(a, &tile);
    /* one exit through the epilogue (its code inlined once: a second copy made these launches
     * ~1 us slower); a padded token has nothing to compute but is counted by the epilogue */
    auto work = [&]() {
        /* GATEUP picks its experts from the previous kernel's top-k: wait first. DOWN reads the
         * top-k of two kernels back (complete: every kernel here triggers its dependents only after
         * its own wait) and prefetches the expert weights before waiting. */
        if (a.mode == DMV_GATEUP) fw_pdl_wait();
        const dmv_tile T = dmv_find_tile(a, tile, g, tb);
        if (T.nitems < 0) return;
        const int i0 = (int)((int64_t)T.nitems * w / KS),
                  i1 = (int)((int64_t)T.nitems * (w + 1) / KS);
        float d[NTA][4] = {};
        int xo[NTA];
        dmv_xoff(xo, nc, g);
        bool waited = a.mode == DMV_GATEUP;
        for (int ib = i0; ib < i1 || (!waited && ib == i0); ib += DMV_R) {
            const int n = i1 - ib < DMV_R ? i1 - ib : DMV_R;
            uint4 qa[DMV_R], qb[DMV_R];
            float aa[DMV_R], ab[DMV_R];
            unsigned okm = 0; /* bit u: item ib + u is computed */
#pragma unroll
            for (int u = 0; u < DMV_R; u++) {
                if (u < n) {
                    const dmv_item it = dmv_get_item(a, T, ib + u, g, t, tb);
                    if (it.ok) {
                        qa[u] = dmv_ldg16(it.wa);
                        qb[u] = dmv_ldg16(it.wb);
                        aa[u] = __ldg(it.aa);
                        ab[u] = __ldg(it.ab);
                        okm |= 1u << u;
                    }
                }
            }
            if (!waited) {
                fw_pdl_wait();
                waited = true;
            }
            if (n <= 0) break;
#pragma unroll
            for (int u = 0; u < DMV_R; u++) {
                if (!(okm >> u & 1)) continue;
                for (int c = 0; c < nc; c++) {
                    float xs;
                    const float *xp = dmv_xsrc(a, ib + u, tb + c, &xs);
                    dmv_xfrag(xp, xs, xf + u * xis + c * DMV_TOK_U4, lane);
                }
            }
            __syncwarp();
#pragma unroll
            for (int u = 0; u < DMV_R; u++) {
                if (!(okm >> u & 1)) continue;
                const uint32_t wa[4] = {qa[u].x, qa[u].y, qa[u].z, qa[u].w};
                const uint32_t wb[4] = {qb[u].x, qb[u].y, qb[u].z, qb[u].w};
                dmv_item_mma<NTA>(d, wa, wb, aa[u], ab[u], (const uint2 *)(xf + u * xis), xo, tab,
                                  g, t);
            }
            __syncwarp();
        }
        fw_pdl_trigger();
        const float *sum = dmv_reduce<NTA>(d, red, KS, nc, w, g, t);
        dmv_store(a, sum, T.seg, T.r0, T.expert, tb, nc);
    };
    if (tb > 0 && tb >= dmv_nb(a))
        fw_pdl_wait();
    else
        work();
    dmv_epilogue<NT>(a, scr);
}

/* ------------------------------------------------------------------------------------------ */
/* The same product with the tile's weights fetched by the bulk-copy engine (cp.async.bulk, one
 * copy per row and expert) into shared memory before the PDL wait: every block's weights are
 * requested at once, registers stay free, and the warps only dequantize and multiply. Rows are
 * padded so that the lanes' 16-byte reads are conflict-free (row stride / 4 = 16 mod 32). */

__device__ __forceinline__ uint32_t dmv_s32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void dmv_bulk(void *dst, const void *src, uint32_t bytes, uint64_t *bar)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
                 "%2, [%3];" ::"r"(dmv_s32(dst)),
                 "l"(src), "r"(bytes), "r"(dmv_s32(bar))
                 : "memory");
}

/* mbarriers in shared memory: init with n arrivals, arrive, wait for the phase of parity. */
__device__ __forceinline__ void dmv_bar_init(uint64_t *b, int n)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(dmv_s32(b)), "r"(n) : "memory");
}

__device__ __forceinline__ void dmv_bar_arrive(uint64_t *b)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(dmv_s32(b)) : "memory");
}

__device__ __forceinline__ void dmv_bar_wait(uint64_t *b, uint32_t parity)
{
    asm volatile("{\n\t.reg .pred p;\n"
                 "DMV_WAIT%=:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n\t"
                 "@!p bra DMV_WAIT%=;\n}" ::"r"(dmv_s32(b)),
                 "r"(parity)
                 : "memory");
}

/* Row stride in shared memory for ni items: ni * 64 bytes + padding, stride / 4 = 16 mod 32. */
__host__ __device__ __forceinline__ int dmv_rs(int ni)
{
    return ni * 64 + ((ni & 1) ? 128 : 64);
}

/* Items of a tile in this launch (all tiles of a launch have the same count). */
__host__ __device__ __forceinline__ int dmv_nitems(const dmv_args &a)
{
    return a.mode == DMV_DENSE ? a.cols >> 7
           : a.mode == DMV_GATEUP ? a.H >> 7
                                  : (a.k + a.has_sh) * (a.I >> 7);
}

/* DOWN: the down weights (nibbles, absmax) of assignment j, or NULL when not resident. */
__device__ __forceinline__ const uint8_t *dmv_down_w(const dmv_args &a, int j, int tb,
                                                     const float **abs)
{
    if (j >= a.k) {
        *abs = a.sh_a[2];
        return a.sh_w[2];
    }
    const int e = a.ti[tb * a.k + j], sl = e >= 0 && e < a.E ? a.slot[e] : -1;
    if (sl < 0) return nullptr;
    const uint8_t *base = a.pool + (int64_t)sl * a.slot_bytes;
    *abs = (const float *)(base + a.o_ad);
    return base + a.o_down;
}

template <int KS, int NT> /* NT as k_dmv */
__global__ void __launch_bounds__(KS * 32, 24 / KS) k_dmvt(const __grid_constant__ dmv_args a)
{
    constexpr int NTA = NT > 0 ? NT : 1;
    extern __shared__ __align__(128) unsigned char dmv_smt[];
    unsigned char *dmv_sm = dmv_smt;
    const int NI = dmv_nitems(a), RS = dmv_rs(NI);
    const int nc = NT == 0 ? 1 : dmv_nbt(a), xis = dmv_xis(nc);
    float *tab = (float *)dmv_sm;                      /* [16] */
    uint64_t *bar = (uint64_t *)(dmv_sm + 64);         /* one mbarrier */
    uint8_t *nib = dmv_sm + 128;                       /* [16][RS] */
    float *abs = (float *)(nib + 16 * RS);             /* [16][2 NI] */
    uint4 *xf = (uint4 *)(abs + 32 * NI);              /* [NI][xis] */
    float *red = (float *)(xf + NI * xis);             /* [KS*16*nc + 16*nc] */
    float *scr = red + (KS + 1) * 16 * nc;             /* [128] */
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
    __shared__ const uint8_t *dn_w[33]; /* DOWN: down weights of assignment j (NULL: skip) */
    __shared__ const float *dn_a[33];
    int tile;
    const int tb = dmv_block_tok(a, &tile);
    auto work =
        [&]() { /* as in k_dmv: one exit through the epilogue */
                if (tid < 16) tab[tid] = a.code[tid];
                if (a.mode == DMV_DOWN && tid < a.k + a.has_sh) {
                    const float *da = nullptr;
                    dn_w[tid] = dmv_down_w(a, tid, tb, &da);
                    dn_a[tid] = da;
                }
                if (tid == 0) {
                    dmv_bar_init(bar, 1);
                    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
                }
                __syncthreads();
                /* GATEUP picks its experts from the previous kernel's top-k: wait first. DOWN reads
                 * the top-k of two kernels back (complete: every kernel here triggers its
                 * dependents only after its own wait) and fetches the expert weights before
                 * waiting. */
                if (a.mode == DMV_GATEUP) {
                    fw_pdl_wait();
                    fw_pdl_trigger();
                }
                /* the tile: its rows (DENSE, DOWN: r0 ..; GATEUP: gate rows q*8 .. and the same up
                 * rows) */
                int seg = 0, r0 = 0, nvalid = 16, expert = 0;
                const uint8_t *gw = nullptr, *uw = nullptr;
                const float *ga = nullptr, *ua = nullptr;
                if (a.mode == DMV_DENSE) {
                    dmv_seg_tile(a, tile, &seg, &r0);
                    nvalid = min(16, a.seg[seg].rows - r0);
                } else if (a.mode == DMV_GATEUP) {
                    const int nq = a.I >> 3;
                    expert = tile / nq;
                    r0 = (tile % nq) * 8;
                    if (!dmv_gateup_w(a, expert, tb, &gw, &uw, &ga, &ua)) return; /* not resident */
                } else {
                    r0 = tile * 16;
                }
                /* warp 0 requests the nibbles: lane r < 16 copies tile row r */
                if (w == 0) {
                    const int nI = a.I >> 7, nj = a.k + a.has_sh;
                    uint32_t bytes = 0;
                    if (a.mode == DMV_DOWN) {
                        for (int j = 0; j < nj; j++)
                            bytes += dn_w[j] ? 16u * (uint32_t)(nI * 64) : 0u;
                    } else {
                        bytes = (uint32_t)nvalid * (uint32_t)(NI * 64);
                    }
                    if (lane == 0)
                        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(
                                         dmv_s32(bar)),
                                     "r"(bytes)
                                     : "memory");
                    __syncwarp();
                    if (lane < 16) {
                        uint8_t *dst = nib + lane * RS;
                        if (a.mode == DMV_DENSE) {
                            if (lane < nvalid)
                                dmv_bulk(dst, a.seg[seg].w + (int64_t)(r0 + lane) * (a.cols >> 1),
                                         NI * 64, bar);
                        } else if (a.mode == DMV_GATEUP) {
                            const uint8_t *src =
                                (lane < 8 ? gw : uw) + (int64_t)(r0 + (lane & 7)) * (a.H >> 1);
                            dmv_bulk(dst, src, NI * 64, bar);
                        } else {
                            for (int j = 0; j < nj; j++)
                                if (dn_w[j])
                                    dmv_bulk(dst + j * nI * 64,
                                             dn_w[j] + (int64_t)(r0 + lane) * (a.I >> 1), nI * 64,
                                             bar);
                        }
                    }
                }
                /* absmax of the tile: [16 rows][2 NI] by every thread (plain loads) */
                for (int e = tid; e < 32 * NI; e += KS * 32) {
                    const int r = e / (2 * NI), q = e % (2 * NI);
                    float v = 0.f;
                    if (a.mode == DMV_DENSE) {
                        if (r < nvalid)
                            v = __ldg(a.seg[seg].absf + (int64_t)(r0 + r) * (a.cols >> 6) + q);
                    } else if (a.mode == DMV_GATEUP) {
                        v = __ldg((r < 8 ? ga : ua) + (int64_t)(r0 + (r & 7)) * (a.H >> 6) + q);
                    } else {
                        const int nI = a.I >> 7, j = (q >> 1) / nI;
                        if (dn_w[j])
                            v = __ldg(dn_a[j] + (int64_t)(r0 + r) * (a.I >> 6) + (q - j * 2 * nI));
                    }
                    abs[e] = v;
                }
                if (a.mode != DMV_GATEUP) {
                    fw_pdl_wait();
                    fw_pdl_trigger();
                }
                /* x fragments of this warp's items, each token present */
                const int i0 = NI * w / KS, i1 = NI * (w + 1) / KS;
                for (int i = i0; i < i1; i++)
                    for (int c = 0; c < nc; c++) {
                        float xs;
                        const float *xp = dmv_xsrc(a, i, tb + c, &xs);
                        dmv_xfrag(xp, xs, xf + i * xis + c * DMV_TOK_U4, lane);
                    }
                __syncthreads(); /* absmax of every thread; x fragments of this warp */
                dmv_bar_wait(bar, 0);
                float d[NTA][4] = {};
                int xo[NTA];
                dmv_xoff(xo, nc, g);
                for (int i = i0; i < i1; i++) {
                    if (a.mode == DMV_DOWN && !dn_w[i / (a.I >> 7)]) continue;
                    const uint4 qa = *(const uint4 *)(nib + g * RS + i * 64 + 16 * t);
                    const uint4 qb = *(const uint4 *)(nib + (g + 8) * RS + i * 64 + 16 * t);
                    const float aa = abs[g * 2 * NI + 2 * i + (t >> 1)];
                    const float ab = abs[(g + 8) * 2 * NI + 2 * i + (t >> 1)];
                    const uint32_t wa[4] = {qa.x, qa.y, qa.z, qa.w};
                    const uint32_t wb[4] = {qb.x, qb.y, qb.z, qb.w};
                    dmv_item_mma<NTA>(d, wa, wb, aa, ab, (const uint2 *)(xf + i * xis), xo, tab, g,
                                      t);
                }
                const float *sum = dmv_reduce<NTA>(d, red, KS, nc, w, g, t);
                dmv_store(a, sum, seg, r0, expert, tb, nc);
        };
    if (tb > 0 && tb >= dmv_nb(a))
        fw_pdl_wait();
    else
        work();
    dmv_epilogue<NT>(a, scr);
}

/* ------------------------------------------------------------------------------------------ */
/* Fast dense path (dmv_args.fast; hmoe_gfwd_set_decode(HMOE_DECODE_FAST)): the NF4 codes enter the
 * mma as fp16 and each row's absmax multiplies the fp32 sums of its 64-column block after the mma,
 * so a weight costs no multiply and no rounding: the product is code * absmax in fp32 instead of
 * bitsandbytes' bf16(code * absmax) (the two differ by that bf16 rounding, <= 2^-9 of the weight;
 * the fp16 code itself is within 2^-12 of the table value). x enters as fp16 hi + lo of x * 2^s (s
 * from max|x|, undone at the end). Lookups: a table of the 256 byte values, each entry the two
 * codes of the byte as fp16x2, one copy per lane (entry e of lane l at byte 256 e + 4 l: every lane
 * reads its own bank); one byte permute forms the offset from the weight byte and the lane's
 * offset. Per 8 weights a lane issues 4 PRMT + 4 LDS + one mma.
 *
 * Weights reach shared memory as whole 16-row tiles, one tensor-map copy per tile (cols = 2048:
 * 16 KB of nibbles as [chunk of 128 bytes][row][128 bytes] with the 128-byte swizzle, plus the
 * tile's 2 KB of fp32 absmax as [row][128 bytes], swizzled the same way), into a ring of DMVF_S
 * stages. Persistent blocks (DMVF_CPS per SM): DMVF_W consumer warps split each tile into its 16
 * items of 128 columns (DMVF_IPW per warp, their x fragments held in registers); one producer warp
 * waits until every consumer has released a stage (mbarrier), adds the warps' partial sums of
 * that tile in a fixed order, writes the 16 outputs and refills the stage. The copies of the first
 * DMVF_S tiles are issued before the PDL wait. Measured (docs/cuda.md, session 4): 69% of copy
 * bandwidth on one large weight, against 44% for the earlier register-fed form of this math. */

constexpr int DMVF_TAB = 256 * 256; /* bytes of the pair table */
constexpr int DMVF_COLS = 2048;     /* the one width the tile layout takes */
/* Shape, the measured best of four (docs/cuda.md, session 4): 8 consumer warps, 2 stages, 2 blocks
 * per SM (8 warps x 4 stages x 1 block: 57.6% at steady state; 4 x 2 x 2: 68.3%; 16 x 4 x 1:
 * 66.1%; this one 69.1%). */
constexpr int DMVF_W = 8, DMVF_S = 2, DMVF_CPS = 2, DMVF_IPW = DMVF_COLS / 128 / DMVF_W;
constexpr int DMVF_WB = DMVF_COLS / 2 * 16, DMVF_AB = DMVF_COLS / 64 * 4 * 16; /* stage bytes */

/* The kernel's parameters: the tensor maps of each segment (weights, absmax) and the call. */
struct dmvf_params {
    CUtensorMap tw[DMV_MAX_SEG], ta[DMV_MAX_SEG];
    dmv_args a;
};

__device__ __forceinline__ void dmvf_mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint2 b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b.x), "r"(b.y));
}

/* Requests tile `tile` into stage (w, ab) on barrier bar (one thread). Rows past the segment's
 * end arrive as zeros (weights and absmax), which add nothing. */
__device__ __forceinline__ void dmvf_fetch(const dmvf_params &p, int tile, unsigned char *w,
                                           unsigned char *ab, uint64_t *bar)
{
    int s, r0;
    dmv_seg_tile(p.a, tile, &s, &r0);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(dmv_s32(bar)),
                 "r"(DMVF_WB + DMVF_AB)
                 : "memory");
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(dmv_s32(w)),
                 "l"(&p.tw[s]), "r"(0), "r"(r0), "r"(0), "r"(dmv_s32(bar))
                 : "memory");
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];" ::"r"(dmv_s32(ab)),
                 "l"(&p.ta[s]), "r"(0), "r"(r0), "r"(dmv_s32(bar))
                 : "memory");
}

/* Offset of the pair-table entry of byte `pos` of word v for this lane: 256 * byte + 4 * lane. */
__device__ __forceinline__ uint32_t dmvf_off(uint32_t v, uint32_t lane4, int pos)
{
    return __byte_perm(v, lane4, 0x7604u | ((uint32_t)pos << 4));
}

/* Item i (128 columns) of a tile in stage (W, A) for lane (g, t): rows g and g + 8, both 64-column
 * halves; sums times absmax added to acc_a / acc_b. x fragments xr[k-step]. */
__device__ __forceinline__ void dmvf_item(float &acc_a, float &acc_b, const unsigned char *W,
                                          const unsigned char *A, int i, int g, int t,
                                          const uint2 (&xr)[8], const unsigned char *tab,
                                          uint32_t lane4)
{
    /* byte o of row r in 128-byte chunk c sits at (c * 16 + r) * 128 + ((o / 16) ^ (r % 8)) * 16
     * + o % 16 (the tensor map's 128-byte swizzle); rows g and g + 8 share r % 8 */
    const unsigned char *ra = W + ((i >> 1) * 16 + g) * 128, *rb = ra + 8 * 128;
    uint2 wa[2], wb[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int u = (i & 1) * 4 + hf * 2 + (t >> 1);
        const int off = ((u ^ g) << 4) + 8 * (t & 1);
        wa[hf] = *(const uint2 *)(ra + off);
        wb[hf] = *(const uint2 *)(rb + off);
    }
    const int aoff = (((i >> 1) ^ g) << 4) + 8 * (i & 1); /* absmax blocks 2i, 2i + 1 */
    const float2 aa = *(const float2 *)(A + g * 128 + aoff);
    const float2 ab = *(const float2 *)(A + (g + 8) * 128 + aoff);
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        float e[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}}; /* two mma chains */
#pragma unroll
        for (int s = 0; s < 4; s++) {
            const uint32_t va = s < 2 ? wa[hf].x : wa[hf].y, vb = s < 2 ? wb[hf].x : wb[hf].y;
            const int p = (2 * s) & 3;
            const uint32_t a0 = *(const uint32_t *)(tab + dmvf_off(va, lane4, p));
            const uint32_t a2 = *(const uint32_t *)(tab + dmvf_off(va, lane4, p + 1));
            const uint32_t a1 = *(const uint32_t *)(tab + dmvf_off(vb, lane4, p));
            const uint32_t a3 = *(const uint32_t *)(tab + dmvf_off(vb, lane4, p + 1));
            dmvf_mma(e[s & 1], a0, a1, a2, a3, xr[hf * 4 + s]);
        }
        acc_a = fmaf(hf ? aa.y : aa.x, (e[0][0] + e[0][1]) + (e[1][0] + e[1][1]), acc_a);
        acc_b = fmaf(hf ? ab.y : ab.x, (e[0][2] + e[0][3]) + (e[1][2] + e[1][3]), acc_b);
    }
}

__global__ void __launch_bounds__((DMVF_W + 1) * 32, DMVF_CPS)
    k_dmvf(const __grid_constant__ dmvf_params p)
{
    extern __shared__ unsigned char dmvf_raw[];
    const dmv_args &a = p.a;
    /* the swizzled stages need 1024-byte alignment */
    unsigned char *sm = (unsigned char *)(((uintptr_t)dmvf_raw + 1023) & ~(uintptr_t)1023);
    unsigned char *stw = sm;                           /* [DMVF_S][DMVF_WB] */
    unsigned char *sta = stw + DMVF_S * DMVF_WB;       /* [DMVF_S][DMVF_AB] */
    unsigned char *tab = sta + DMVF_S * DMVF_AB;       /* [256 entries][32 lanes] fp16x2 */
    uint4 *xf = (uint4 *)(tab + DMVF_TAB);             /* [16 items][8 k-steps][4 t] (hi, lo) */
    float *red = (float *)(xf + DMVF_COLS / 128 * 32); /* [DMVF_S][DMVF_W][16] */
    uint64_t *full = (uint64_t *)(red + DMVF_S * DMVF_W * 16), *empty = full + DMVF_S;
    float *scr = (float *)(empty + DMVF_S); /* [128] */
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
    const int nthr = (DMVF_W + 1) * 32;
    int ntiles = 0;
    for (int s = 0; s < a.nseg; s++)
        ntiles += (a.seg[s].rows + 15) >> 4;
    const int mytiles = (ntiles - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x;
    if (tid == 0) {
        for (int s = 0; s < DMVF_S; s++) {
            dmv_bar_init(&full[s], 1);
            dmv_bar_init(&empty[s], DMVF_W);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();
    /* the first tiles, before waiting for the previous kernel (weights do not depend on it) */
    if (w == DMVF_W && lane == 0)
        for (int k = 0; k < DMVF_S && k < mytiles; k++)
            dmvf_fetch(p, blockIdx.x + k * gridDim.x, stw + k * DMVF_WB, sta + k * DMVF_AB,
                       &full[k]);
    /* the pair table: entry e = (fp16(code[e >> 4]), fp16(code[e & 15])), one copy per lane */
    for (int i = tid; i < 256 * 32; i += nthr) {
        const int e = i >> 5;
        const __half2 h =
            __halves2half2(__float2half_rn(a.code[e >> 4]), __float2half_rn(a.code[e & 15]));
        *(__half2 *)(tab + 256 * e + 4 * (i & 31)) = h;
    }
    fw_pdl_wait();
    /* x * 2^sh as fp16 hi + lo, 2^sh from max|x| (so that max|x| * 2^sh < 2^14) */
    float mx = 0.f;
    for (int c = tid; c < DMVF_COLS; c += nthr)
        mx = fmaxf(mx, fabsf(__ldcg(a.x + c)));
    mx = hmoe_warp_max(mx);
    if (lane == 0) scr[w] = mx;
    __syncthreads();
    mx = scr[0];
    for (int i = 1; i <= DMVF_W; i++)
        mx = fmaxf(mx, scr[i]);
    int ex = 0;
    if (mx > 0.f && isfinite(mx)) frexpf(mx, &ex);
    const float sc = ldexpf(1.f, 14 - ex), inv = ldexpf(1.f, ex - 14);
    /* fragment (item i, k-step s8, lane t): columns 128 i + 64 (s8 >> 2) + 16 t + 4 (s8 & 3)
     * + 0..3 */
    for (int f = tid; f < DMVF_COLS / 128 * 32; f += nthr) {
        const int i = f >> 5, s8 = (f >> 2) & 7, tt = f & 3;
        const float4 v =
            __ldcg((const float4 *)(a.x + i * 128 + 64 * (s8 >> 2) + 16 * tt + 4 * (s8 & 3)));
        const float xx[4] = {v.x * sc, v.y * sc, v.z * sc, v.w * sc};
        __half hi[4], lo[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            hi[q] = __float2half_rn(xx[q]);
            lo[q] = __float2half_rn(xx[q] - __half2float(hi[q]));
        }
        uint4 o;
        o.x = (uint32_t)__half_as_ushort(hi[0]) | ((uint32_t)__half_as_ushort(hi[1]) << 16);
        o.y = (uint32_t)__half_as_ushort(hi[2]) | ((uint32_t)__half_as_ushort(hi[3]) << 16);
        o.z = (uint32_t)__half_as_ushort(lo[0]) | ((uint32_t)__half_as_ushort(lo[1]) << 16);
        o.w = (uint32_t)__half_as_ushort(lo[2]) | ((uint32_t)__half_as_ushort(lo[3]) << 16);
        xf[f] = o;
    }
    __syncthreads();
    fw_pdl_trigger();
    if (w == DMVF_W) {
        /* producer: sums of a released stage, then its next tile */
        for (int k = 0; k < mytiles; k++) {
            const int s = k % DMVF_S;
            dmv_bar_wait(&empty[s], (k / DMVF_S) & 1);
            if (lane < 16) {
                const float *rd = red + s * DMVF_W * 16;
                float v = 0.f;
#pragma unroll
                for (int q = 0; q < DMVF_W; q++)
                    v += rd[q * 16 + lane];
                int sg, r0;
                dmv_seg_tile(a, blockIdx.x + k * gridDim.x, &sg, &r0);
                if (r0 + lane < a.seg[sg].rows) a.seg[sg].y[r0 + lane] = v * inv;
            }
            __syncwarp();
            if (lane == 0 && k + DMVF_S < mytiles)
                dmvf_fetch(p, blockIdx.x + (k + DMVF_S) * gridDim.x, stw + s * DMVF_WB,
                           sta + s * DMVF_AB, &full[s]);
        }
    } else {
        /* consumers: lane (g, t) reads the (hi or lo by g & 1) uint2 of fragment (i, s8, t) */
        const uint32_t lane4 = 4u * lane;
        const uint2 *xq0 = (const uint2 *)xf + t * 2 + (g & 1);
        uint2 xr[DMVF_IPW][8];
#pragma unroll
        for (int j = 0; j < DMVF_IPW; j++)
#pragma unroll
            for (int s8 = 0; s8 < 8; s8++)
                xr[j][s8] = xq0[((w + DMVF_W * j) * 8 + s8) * 8];
        for (int k = 0; k < mytiles; k++) {
            const int s = k % DMVF_S;
            dmv_bar_wait(&full[s], (k / DMVF_S) & 1);
            float acc_a = 0.f, acc_b = 0.f;
#pragma unroll
            for (int j = 0; j < DMVF_IPW; j++)
                dmvf_item(acc_a, acc_b, stw + s * DMVF_WB, sta + s * DMVF_AB, w + DMVF_W * j, g, t,
                          xr[j], tab, lane4);
            float *rd = red + s * DMVF_W * 16;
            if (t == 0) {
                rd[w * 16 + g] = acc_a;
                rd[w * 16 + 8 + g] = acc_b;
            }
            __syncwarp();
            if (lane == 0) dmv_bar_arrive(&empty[s]);
        }
    }
    dmv_epilogue(a, scr);
}

static size_t dmvf_smem(void)
{
    return 1024 + (size_t)DMVF_S * (DMVF_WB + DMVF_AB) + DMVF_TAB + DMVF_COLS / 128 * 32 * 16 +
           (size_t)DMVF_S * DMVF_W * 16 * 4 + 2 * DMVF_S * 8 + 128 * 4;
}

/* cuTensorMapEncodeTiled through the runtime (no link against the driver library). */
static PFN_cuTensorMapEncodeTiled_v12000 dmvf_encoder(void)
{
    static PFN_cuTensorMapEncodeTiled_v12000 fn;
    static int tried;
    if (!tried) {
        tried = 1;
        cudaDriverEntryPointQueryResult q;
        void *f = NULL;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                             &q) == cudaSuccess &&
            q == cudaDriverEntryPointSuccess)
            fn = (PFN_cuTensorMapEncodeTiled_v12000)f;
        else
            (void)cudaGetLastError();
    }
    return fn;
}

/* The tensor maps of one segment (cols = DMVF_COLS): nibbles as [chunk][row][128 bytes] boxes of
 * 16 rows x all chunks, absmax as [row][128 bytes] boxes of 16 rows, both 128-byte swizzled. */
static bool dmvf_maps(const dmv_seg &sg, CUtensorMap *tw, CUtensorMap *ta)
{
    PFN_cuTensorMapEncodeTiled_v12000 enc = dmvf_encoder();
    if (!enc) return false;
    const cuuint64_t wd[3] = {128, (cuuint64_t)sg.rows, DMVF_COLS / 256};
    const cuuint64_t ws[2] = {DMVF_COLS / 2, 128};
    const cuuint32_t wbox[3] = {128, 16, DMVF_COLS / 256}, one[3] = {1, 1, 1};
    if (enc(tw, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, (void *)sg.w, wd, ws, wbox, one,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
        return false;
    const cuuint64_t ad[2] = {DMVF_COLS / 64, (cuuint64_t)sg.rows};
    const cuuint64_t as[1] = {DMVF_COLS / 16};
    const cuuint32_t abox[2] = {DMVF_COLS / 64, 16};
    return enc(ta, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (void *)sg.absf, ad, as, abox, one,
               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* Whether dmv_launch runs `a` through k_dmvf: asked for, dense, cols = 2048, 16-byte aligned
 * weights, absmax and x, at least one tile per SM (a block builds a 64 KiB table), and the
 * driver encodes tensor maps. */
static bool dmvf_takes(const dmv_args &a, int nsm)
{
    if (!a.fast || a.mode != DMV_DENSE || a.cols != DMVF_COLS || ((uintptr_t)a.x & 15) ||
        !dmvf_encoder())
        return false;
    int ntiles = 0;
    for (int s = 0; s < a.nseg; s++) {
        if (((uintptr_t)a.seg[s].w & 15) || ((uintptr_t)a.seg[s].absf & 15)) return false;
        ntiles += (a.seg[s].rows + 15) / 16;
    }
    return ntiles >= nsm;
}

static int dmv_nsm(void)
{
    static int nsm = 0;
    if (!nsm) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && v > 0)
            nsm = v;
        else
            nsm = 132;
    }
    return nsm;
}

/* Token columns of one tile (DENSE: every token; experts: one). */
static int dmv_ncols(const dmv_args &a)
{
    return a.mode == DMV_DENSE ? dmv_nbt(a) : 1;
}

static size_t dmvt_smem(const dmv_args &a, int ks)
{
    const int ni = dmv_nitems(a), nc = dmv_ncols(a);
    return 128 + (size_t)16 * dmv_rs(ni) + (size_t)32 * ni * 4 + (size_t)ni * dmv_xis(nc) * 16 +
           (size_t)((ks + 1) * 16 * nc + 128) * 4;
}

static size_t dmv_smem(const dmv_args &a, int ks)
{
    const int nc = dmv_ncols(a);
    return 64 + (size_t)ks * DMV_R * dmv_xis(nc) * 16 + (size_t)((ks + 1) * 16 * nc + 128) * 4;
}

/* Launches k_dmv / k_dmvt <ks, nt> (tma: k_dmvt; nt 0: one token column), raising its
 * shared-memory limit once. */
static cudaError_t dmv_go(int tma, int ks, int nt, const dmv_args &a, int grid, size_t sm,
                          cudaStream_t st, int pdl)
{
    void (*const kd[3][3])(dmv_args) = {{k_dmv<4, 0>, k_dmv<8, 0>, k_dmv<16, 0>},
                                        {k_dmv<4, 1>, k_dmv<8, 1>, k_dmv<16, 1>},
                                        {k_dmv<4, 2>, k_dmv<8, 2>, k_dmv<16, 2>}};
    void (*const kt[3][3])(dmv_args) = {{k_dmvt<4, 0>, k_dmvt<8, 0>, k_dmvt<16, 0>},
                                        {k_dmvt<4, 1>, k_dmvt<8, 1>, k_dmvt<16, 1>},
                                        {k_dmvt<4, 2>, k_dmvt<8, 2>, k_dmvt<16, 2>}};
    static size_t opted[2][3][3];
    const int ki = ks == 4 ? 0 : ks == 8 ? 1 : 2;
    void (*kern)(dmv_args) = tma ? kt[nt][ki] : kd[nt][ki];
    size_t &op = opted[tma][nt][ki];
    if (sm > 48 * 1024 && sm > op) {
        const cudaError_t ce =
            cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
        if (ce != cudaSuccess) return ce;
        op = sm;
    }
    return fw_launch_pdl(pdl, kern, dim3(grid), dim3(ks * 32), sm, st, a);
}

/* Which calls use the bulk-copy kernel (k_dmvt): HMOE_DMV_TMA=0 none, 1 all, 2 (default) all
 * but DOWN (measurement switch; see docs/cuda.md). */
int dmv_use_tma(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("HMOE_DMV_TMA");
        v = e && (e[0] == '0' || e[0] == '1') && !e[1] ? e[0] - '0' : 2;
    }
    return v;
}

} // namespace

int dmv_takes_fast(const struct dmv_args *a)
{
    return dmv_nbt(*a) == 1 && dmvf_takes(*a, dmv_nsm());
}

int dmv_ok(int cols, int rnd_bf16)
{
    return rnd_bf16 && cols >= 128 && cols % 128 == 0;
}

enum hmoe_status dmv_launch(cudaStream_t st, const struct dmv_args *a, int pdl)
{
    int ntiles = 0;
    const int nbt = dmv_nbt(*a);
    if (nbt > DMV_MAX_TOK) return hmoe_fail(HMOE_E_INVAL, "dec_mv: %d tokens", nbt);
    if (a->mode == DMV_DENSE) {
        if (a->nseg < 1 || a->nseg > DMV_MAX_SEG || !dmv_ok(a->cols, 1))
            return hmoe_fail(HMOE_E_INVAL, "dec_mv: %d segments, cols %d", a->nseg, a->cols);
        for (int s = 0; s < a->nseg; s++) {
            if (a->seg[s].rows < 1) return hmoe_fail(HMOE_E_INVAL, "dec_mv: empty segment");
            ntiles += (a->seg[s].rows + 15) / 16;
        }
    } else {
        if (a->H % 128 || a->I % 128 || a->k < 1 || a->k > 32)
            return hmoe_fail(HMOE_E_INVAL, "dec_mv experts: H %d I %d k %d", a->H, a->I, a->k);
        ntiles = a->mode == DMV_GATEUP ? (a->k + a->has_sh) * (a->I / 8) : a->H / 16;
    }
    if (a->epi != DMV_EPI_NONE && !a->counter)
        return hmoe_fail(HMOE_E_INVAL, "dec_mv: epilogue without a counter");
    /* warps per tile: enough blocks for every SM, each warp 1-4 items (from one token's tiles,
     * so that a token's sums do not depend on the batch) */
    const int items = a->mode == DMV_DENSE ? a->cols / 128
                      : a->mode == DMV_GATEUP ? a->H / 128
                                              : (a->k + a->has_sh) * (a->I / 128);
    int ks = ntiles >= 528 ? 4 : ntiles >= 200 ? 8 : 16;
    while (ks > 1 && items < ks) ks >>= 1;
    if (ks < 4) ks = 4;
    if (a->epi == DMV_EPI_TOPK && (a->E > 1024 || a->k > 32))
        return hmoe_fail(HMOE_E_INVAL, "dec_mv top-k: E %d k %d", a->E, a->k);
    if (nbt == 1 && dmvf_takes(*a, dmv_nsm())) {
        dmvf_params p;
        p.a = *a;
        for (int s = 0; s < a->nseg; s++)
            if (!dmvf_maps(a->seg[s], &p.tw[s], &p.ta[s]))
                return hmoe_fail(HMOE_E_CUDA, "dec_mv fast: tensor map of segment %d refused", s);
        const size_t sm = dmvf_smem();
        static size_t opted;
        cudaError_t ce;
        if (sm > opted) {
            ce = cudaFuncSetAttribute(k_dmvf, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
            if (ce != cudaSuccess)
                return hmoe_fail(HMOE_E_CUDA, "dec_mv fast smem: %s", cudaGetErrorString(ce));
            opted = sm;
        }
        const int per = DMVF_CPS * dmv_nsm(), grid = ntiles < per ? ntiles : per;
        ce = fw_launch_pdl(pdl, k_dmvf, dim3(grid), dim3((DMVF_W + 1) * 32), sm, st, p);
        if (ce != cudaSuccess)
            return hmoe_fail(HMOE_E_CUDA, "dec_mv launch: %s", cudaGetErrorString(ce));
        return HMOE_OK;
    }
    const int nt = dmv_ncols(*a) == 1 ? 0 : dmv_ncols(*a) > 4 ? 2 : 1;
    const int grid = a->mode == DMV_DENSE ? ntiles : ntiles * nbt;
    const size_t smax = 227 * 1024;
    int tma = dmv_use_tma() == 1 || (dmv_use_tma() == 2 && a->mode != DMV_DOWN);
    if (tma && dmvt_smem(*a, ks) > smax) tma = 0;
    /* the register kernel keeps DMV_R items per warp: fewer warps when many tokens need room
     * (only then do a token's sums depend on the batch) */
    while (!tma && ks > 4 && dmv_smem(*a, ks) > smax)
        ks >>= 1;
    const size_t sm = tma ? dmvt_smem(*a, ks) : dmv_smem(*a, ks);
    if (sm > smax) return hmoe_fail(HMOE_E_UNSUPPORTED, "dec_mv: %zu bytes of shared memory", sm);
    const cudaError_t ce = dmv_go(tma, ks, nt, *a, grid, sm, st, pdl);
    if (ce != cudaSuccess)
        return hmoe_fail(HMOE_E_CUDA, "dec_mv launch: %s", cudaGetErrorString(ce));
    return HMOE_OK;
}
