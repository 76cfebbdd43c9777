/* gpu_worker/cuda/forward_cuda.cu: the Qwen3-Next forward pass on one CUDA device
 * (hmoe/gpu_forward.h; MODEL.md §1-§3, same structure as gpu_worker/cpu/forward_cpu.c).
 * Sequences: n_seq independent ones, their caches side by side ([n_seq][...] per layer).
 * Decode: a step of B <= HMOE_GFWD_MAX_BATCH tokens of B sequences through dec_mv (NF4 on
 * tensor cores, each weight read once for the B tokens) or per-token matvecs, the sequences and
 * positions in device memory (the batch table, fwd_launch.h), captured as one CUDA graph per
 * batch-size bucket (1, 2, 4, 8) when every expert is resident. Prefill: chunks of
 * tokens through fp32 cuBLAS GEMMs on weights dequantized one at a time into a scratch buffer,
 * routed experts grouped by expert, causal prefill attention, the recurrent GDN over the chunk.
 * Experts that are not resident go to the hook (host) while the GPU computes the resident ones. */
#include <cublas_v2.h>
#include <errno.h>
#include <math.h>
#include <new>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <thread>
#include <vector>

#include "dec_mv.h"
#include "fwd_launch.h"
#include "hmoe/gpu_forward.h"
#include "hmoe/log.h"

#define GF_CHECK(call)                                                                             \
    do {                                                                                           \
        enum hmoe_status s_ = (call);                                                              \
        if (s_) return s_;                                                                         \
    } while (0)

#define GF_CUBLAS(call)                                                                            \
    do {                                                                                           \
        cublasStatus_t c_ = (call);                                                                \
        if (c_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return hmoe_fail(HMOE_E_CUDA, "%s:%d: %s: cuBLAS status %d", __FILE__, __LINE__,       \
                             #call, (int)c_);                                                      \
    } while (0)

static const double GIB = 1073741824.0;

/* Batch-size buckets of the decode graphs: 1, 2, 4, 8 tokens. */
#define GF_NBUCKET 4
static_assert(HMOE_GFWD_MAX_BATCH == FW_MAXB && FW_MAXB <= DMV_MAX_TOK &&
                  (1 << (GF_NBUCKET - 1)) == FW_MAXB,
              "batch limits");

/* A dense 2-D weight on the device. GW_LIB: BF16 through the kernel library (hmoe_gpu_matvec);
 * GW_NF4: canonical NF4 (nibbles from element 0 + fp32 absmax per 64, dequantized values
 * rounded to the tensor's out_dtype as bitsandbytes does); GW_BF16: BF16 with odd widths;
 * GW_F32: F32/F16 weights and NF4 tensors the canonical form cannot hold (dequantized exactly). */
enum { GW_NONE = 0, GW_LIB, GW_NF4, GW_BF16, GW_F32 };
struct gf_w {
    int kind, rnd;
    struct hmoe_gpu_w *gw;
    void *d;
    float *absf;
    float code[16];
    int rows, cols;
    uint64_t bytes;
};

struct gf_layer {
    int full, moe, n_res;
    float *small;                                 /* one allocation for the f32 params below */
    float *in_norm, *post_norm, *q_norm, *k_norm; /* (1+w) already added */
    float *dt_bias, *nea, *lin_norm, *conv_w;     /* nea = -exp(A_log); conv_w [cd, K] */
    float *kc, *vc;                               /* [Hkv, cap, D] */
    float *cstate, *rstate;                       /* [cd, K], [Hv, dk, dv] */
    gf_w q, k, v, o, qkvz, ba, out, router, sgate, sg, su, sd, mg, mu, md;
    int *d_slot; /* [E] (view into f->d_slot) */
    int fast_mix, fast_moe; /* decode through dec_mv (tensor-core NF4, fused epilogues) */
};

struct hmoe_gfwd {
    const struct hmoe_model *m;
    const struct hmoe_config *c;
    struct hmoe_gpu *g;
    cudaStream_t st, up_st;
    cublasHandle_t blas;
    enum hmoe_gpu_absmax absmax;
    int max_ctx, tc, n_seq, cur;    /* cur: the sequence of a prefill call */
    std::vector<int> spos, sbroken; /* per sequence: position, broken by a failed call */
    int64_t kvs, css, rss;          /* cache strides per sequence (floats): K or V, conv, rec */
    int gdn_bat;                    /* GDN decode through the batched kernels (else n_seq 1) */
    int H, V, L, Hq, Hkv, D, rot, Hk, Hv, dk, dv, K, kd, vd, cd, qkvz_dim, E, topk, Ish, Imlp;
    int n_full, n_lin, n_moe;
    gf_layer *lay;
    float *d_final_norm, *d_inv_freq;
    gf_w lm;
    std::vector<void *> allocs; /* device allocations owned here (besides gf_w) */
    /* workspace (rows = tc tokens) */
    int *d_pos;
    int *d_bat, *h_bat; /* the decode step's batch table (FW_BAT_INTS), pinned copy */
    float *d_x0, *d_h, *d_xn, *d_blk, *d_proj, *d_kb, *d_vb, *d_q, *d_gate, *d_ao, *d_sc, *d_part;
    float *d_mixed, *d_conv, *d_z, *d_ba, *d_beta, *d_gg, *d_rlog, *d_tw, *d_sg, *d_su, *d_sact,
        *d_sy, *d_sgl, *d_host, *d_logits, *d_wscr;
    int32_t *d_ti;
    float *d_act, *d_ye; /* decode experts: (topk, I), (topk, H); prefill: see below */
    /* prefill routed experts (tc * topk assignments grouped by expert) */
    float *d_xs, *d_gu, *d_pact, *d_py;
    int32_t *d_rows, *d_perm, *d_cslots, *h_cslots;
    /* fused expert GEMM tiles (pf_kernels.cu), 4 ints each */
    int32_t *d_items, *h_items;
    const float **d_ptrs, **h_ptrs; /* grouped GEMM pointer arrays, 6 per expert */
    int ex_chunk;                   /* experts dequantized together in a prefill chunk */
    uint64_t ws_bytes, cache_bytes, dense_bytes;
    /* pinned host buffers */
    int *h_pos;
    float *h_x0, *h_xn, *h_tw, *h_out, *h_logits;
    int32_t *h_ti, *h_idx, *h_rows, *h_perm;
    float *h_w;
    float *h_ge, *h_ue, *h_ye; /* in-process CPU experts */
    /* experts */
    fw_ex_desc ex;
    uint8_t *d_pool;
    int *d_slot, *h_slot; /* [L*E] */
    int n_res, n_total_ex, fmt;
    uint64_t ex_bytes;
    /* graphs, hook */
    int graphs_on, prefill_mode, all_res, decode_fast;
    /* decode fast path (dec_mv.cu): on unless HMOE_DEC_MV=0; PDL unless HMOE_PDL=0 */
    int dmv_on, pdl, *d_cnt;
    float *d_act1; /* (topk + 1, I): routed + shared expert activations */
    cudaGraphExec_t gexec[GF_NBUCKET]; /* decode step of bucket i (1 << i tokens) */
    int n_eager[GF_NBUCKET];
    cudaEvent_t ev;
    struct hmoe_moe_hook hook;
    int has_hook;
    uint64_t budget;
};

/* ---------------------------------------------------------------------------------------- */
/* sizes and uploads */

static size_t al256(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

static enum hmoe_status dmalloc(struct hmoe_gfwd *f, size_t bytes, void **p, uint64_t *acct)
{
    GF_CHECK(hmoe_gpu_malloc(f->g, bytes, p));
    f->allocs.push_back(*p);
    if (acct) *acct += al256(bytes);
    return HMOE_OK;
}

/* Device bytes a dense tensor will take (estimate made before anything is allocated). */
static uint64_t est_weight(const struct hmoe_tensor *t, enum hmoe_gpu_absmax mode)
{
    if (t->dtype == HMOE_DT_NONE) return 0;
    const uint64_t n = (uint64_t)hmoe_tensor_numel(t);
    if (t->dtype == HMOE_DT_NF4) return al256(n / 2) + al256(n / 64 * 4 + 4);
    if (t->dtype == HMOE_DT_BF16) return al256(n * 2);
    return al256(n * 4);
}

static int rnd_of(const struct hmoe_nf4 *q)
{
    return q->out_dtype == HMOE_DT_BF16  ? FW_RND_BF16
           : q->out_dtype == HMOE_DT_F16 ? FW_RND_F16
                                         : FW_RND_NONE;
}

/* NF4 tensors the canonical kernels take: blocksize 64, view on a block, rows of whole words. */
static int nf4_canonical(const struct hmoe_tensor *t)
{
    return t->dtype == HMOE_DT_NF4 && t->nf4 && t->nf4->blocksize == 64 && t->elem0 % 64 == 0 &&
           hmoe_tensor_numel(t) % 64 == 0 && hmoe_tensor_cols(t) % 8 == 0;
}

/* Canonical NF4 of n elements: nibbles (n/2 bytes) then fp32 absmax (n/64) at absf. */
static void pack_nf4(const struct hmoe_tensor *t, int64_t n, uint8_t *nib, float *absf)
{
    memcpy(nib, (const uint8_t *)t->data + t->elem0 / 2, (size_t)n / 2);
    const int64_t b0 = t->elem0 / 64;
    for (int64_t b = 0; b < n / 64; b++)
        absf[b] = hmoe_nf4_absmax(t->nf4, b0 + b);
}

static enum hmoe_status upload_w(struct hmoe_gfwd *f, const struct hmoe_tensor *t, gf_w *w)
{
    memset(w, 0, sizeof *w);
    if (t->dtype == HMOE_DT_NONE) return HMOE_OK;
    w->rows = (int)t->shape[0];
    w->cols = (int)hmoe_tensor_cols(t);
    const size_t n = (size_t)w->rows * w->cols;
    if (t->dtype == HMOE_DT_BF16 && w->cols % 8 == 0) {
        struct hmoe_tensor t2 = *t;
        t2.ndim = 2;
        t2.shape[0] = w->rows;
        t2.shape[1] = w->cols;
        GF_CHECK(hmoe_gpu_weight_upload(f->g, &t2, HMOE_GPU_ABSMAX_F32, &w->gw));
        w->kind = GW_LIB;
        w->bytes = al256(n * 2);
        return HMOE_OK;
    }
    size_t bytes;
    std::vector<uint8_t> h;
    if (nf4_canonical(t) && w->cols <= 12000) {
        w->kind = GW_NF4;
        w->rnd = rnd_of(t->nf4);
        memcpy(w->code, t->nf4->code, sizeof w->code);
        bytes = al256(n / 2) + n / 64 * 4;
        h.resize(bytes);
        pack_nf4(t, (int64_t)n, h.data(), (float *)(h.data() + al256(n / 2)));
    } else if (t->dtype == HMOE_DT_BF16) {
        w->kind = GW_BF16;
        bytes = n * 2;
        h.resize(bytes);
        memcpy(h.data(), (const uint16_t *)t->data + t->elem0, bytes);
    } else {
        w->kind = GW_F32;
        bytes = n * 4;
        h.resize(bytes);
        hmoe_tensor_read_f32(t, 0, (int64_t)n, (float *)h.data());
    }
    GF_CHECK(hmoe_gpu_malloc(f->g, bytes, &w->d));
    w->bytes = al256(bytes);
    if (w->kind == GW_NF4) w->absf = (float *)((uint8_t *)w->d + al256(n / 2));
    return hmoe_gpu_upload(f->g, w->d, h.data(), bytes);
}

static void free_w(gf_w *w)
{
    hmoe_gpu_weight_free(w->gw);
    if (w->d) (void)cudaFree(w->d);
    memset(w, 0, sizeof *w);
}

/* y = W x for one token (x: cols f32, y: rows f32). */
static enum hmoe_status mv(struct hmoe_gfwd *f, const gf_w *w, const float *x, float *y)
{
    switch (w->kind) {
    case GW_LIB: return hmoe_gpu_matvec(f->g, w->gw, x, y);
    case GW_BF16:
        return fw_mv_bf16(f->st, (const uint16_t *)w->d, x, y, w->rows, w->cols, 1, w->cols,
                          w->rows);
    default:
        return fw_mv_dense(f->st, w->d, w->absf, w->code, w->rnd, w->kind == GW_F32, x, y, w->rows,
                           w->cols);
    }
}

static int pf_fast(const struct hmoe_gfwd *f);

/* Y (T, rows) = X (T, cols) W^T, fp32 GEMM on the weight dequantized into the scratch (TF32 when
 * the prefill mode is TF32). */
static enum hmoe_status gemm_exact(struct hmoe_gfwd *f, const gf_w *w, const float *X, float *Y,
                                   int T)
{
    if (T == 1) return mv(f, w, X, Y);
    const int64_t n = (int64_t)w->rows * w->cols;
    const float *W = f->d_wscr;
    if (w->kind == GW_LIB)
        GF_CHECK(fw_deq_weight(f->st, w->gw, f->d_wscr));
    else if (w->kind == GW_BF16)
        GF_CHECK(fw_bf16_to_f32(f->st, (const uint16_t *)w->d, f->d_wscr, n));
    else if (w->kind == GW_NF4)
        GF_CHECK(fw_deq_nf4c(f->st, (const uint8_t *)w->d, w->absf, w->code, w->rnd, f->d_wscr, n));
    else
        W = (const float *)w->d;
    const float one = 1.f, zero = 0.f;
    GF_CUBLAS(cublasSgemm(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->rows, T, w->cols, &one, W, w->cols,
                          X, w->cols, &zero, Y, w->rows));
    return HMOE_OK;
}

/* gemm_exact; with HMOE_PREFILL_DENSE=1 in the fast TF32 mode (pf_fast), for NF4 weights
 * rounded to bf16 with rows % 128 == 0 and cols % 64 == 0: X rounded to bf16 (in d_xs, free
 * outside moe_prefill's expert part) and one fused NF4 x bf16 tensor-core GEMM with fp32
 * accumulation (fw_pf_dense). Off by default: on the H200 the dequant + cuBLAS TF32 GEMMs are
 * faster for the dense shapes (80B pp4096 14379 vs 12307 tok/s, docs/cuda.md). */
static enum hmoe_status gemm(struct hmoe_gfwd *f, const gf_w *w, const float *X, float *Y, int T)
{
    const char *dn = getenv("HMOE_PREFILL_DENSE");
    if (T > 1 && w->kind == GW_NF4 && pf_fast(f) && dn && dn[0] == '1' &&
        fw_pf_dense_ok(w->rows, w->cols, w->rnd) &&
        (size_t)T * w->cols * 2 <= (size_t)f->tc * f->topk * f->H * 4)
        return fw_pf_dense(f->st, (const uint8_t *)w->d, w->absf, w->code, w->rows, w->cols, X,
                           f->d_xs, Y, T);
    return gemm_exact(f, w, X, Y, T);
}

/* A small tensor as f32 (+add) into dst (host), n elements. */
static void read_small(const struct hmoe_tensor *t, int64_t n, float add, float *dst)
{
    hmoe_tensor_read_f32(t, 0, n, dst);
    if (add != 0.f)
        for (int64_t i = 0; i < n; i++)
            dst[i] += add;
}

/* ---------------------------------------------------------------------------------------- */
/* routed-expert pool */

/* Expert format for the whole model: NF4 (canonical) when every routed expert tensor is
 * canonical NF4 with one code table and one output dtype; else BF16 when every tensor is BF16 or
 * NF4 rounded to bf16 (exact); else F32. */
static int pick_ex_format(struct hmoe_gfwd *f)
{
    const struct hmoe_nf4 *q0 = NULL;
    int all_nf4 = 1, all_bf16 = 1;
    for (int l = 0; l < f->L; l++) {
        if (!f->c->layer_is_moe[l]) continue;
        for (int e = 0; e < f->E; e++) {
            const struct hmoe_mlp_w *x = &f->m->layers[l].experts[e];
            const struct hmoe_tensor *ts[3] = {&x->gate, &x->up, &x->down};
            for (int i = 0; i < 3; i++) {
                const struct hmoe_tensor *t = ts[i];
                if (!nf4_canonical(t))
                    all_nf4 = 0;
                else if (!q0)
                    q0 = t->nf4;
                else if (memcmp(q0->code, t->nf4->code, sizeof q0->code) ||
                         q0->out_dtype != t->nf4->out_dtype)
                    all_nf4 = 0;
                if (!(t->dtype == HMOE_DT_BF16 ||
                      (t->dtype == HMOE_DT_NF4 && t->nf4 && t->nf4->out_dtype == HMOE_DT_BF16)))
                    all_bf16 = 0;
            }
        }
    }
    if (all_nf4 && q0) {
        memcpy(f->ex.code, q0->code, sizeof f->ex.code);
        f->ex.rnd = rnd_of(q0);
        return FW_EX_NF4;
    }
    return all_bf16 ? FW_EX_BF16 : FW_EX_F32;
}

/* Writes expert (l, e) in the slot layout into dst (host). */
static void pack_expert(const struct hmoe_gfwd *f, int l, int e, uint8_t *dst)
{
    const struct hmoe_mlp_w *x = &f->m->layers[l].experts[e];
    const struct hmoe_tensor *ts[3] = {&x->gate, &x->up, &x->down};
    const int64_t off[3] = {0, f->ex.o_up, f->ex.o_down},
                  aoff[3] = {f->ex.o_ag, f->ex.o_au, f->ex.o_ad};
    const int64_t n = (int64_t)f->H * f->ex.I;
    for (int i = 0; i < 3; i++) {
        const struct hmoe_tensor *t = ts[i];
        if (f->fmt == FW_EX_NF4) {
            pack_nf4(t, n, dst + off[i], (float *)(dst + aoff[i]));
        } else if (f->fmt == FW_EX_F32) {
            hmoe_tensor_read_f32(t, 0, n, (float *)(dst + off[i]));
        } else if (t->dtype == HMOE_DT_BF16) {
            memcpy(dst + off[i], (const uint16_t *)t->data + t->elem0, (size_t)n * 2);
        } else {
            uint16_t *o = (uint16_t *)(dst + off[i]);
            float buf[1024];
            for (int64_t j = 0; j < n; j += 1024) {
                const int64_t c = n - j < 1024 ? n - j : 1024;
                hmoe_tensor_read_f32(t, j, c, buf);
                for (int64_t q = 0; q < c; q++)
                    o[j + q] = hmoe_f32_to_bf16(buf[q]);
            }
        }
    }
}

/* Uploads every resident expert through two pinned staging buffers on the upload stream
 * (host packing by a few threads overlaps the previous copy). */
static enum hmoe_status upload_experts(struct hmoe_gfwd *f)
{
    std::vector<int> list; /* (l * E + e) of resident experts in slot order */
    for (int i = 0; i < f->L * f->E; i++)
        if (f->h_slot[i] >= 0) list.push_back(i);
    if (list.empty()) return HMOE_OK;
    const size_t sb = (size_t)f->ex.slot_bytes;
    size_t per = ((size_t)64 << 20) / sb;
    if (per < 1) per = 1;
    uint8_t *stage[2] = {NULL, NULL};
    cudaEvent_t done[2];
    HMOE_CUDA_CHECK(cudaMallocHost((void **)&stage[0], per * sb));
    cudaError_t ce = cudaMallocHost((void **)&stage[1], per * sb);
    if (ce != cudaSuccess) {
        cudaFreeHost(stage[0]);
        return hmoe_fail(HMOE_E_NOMEM, "pinned staging: %s", cudaGetErrorString(ce));
    }
    cudaEventCreateWithFlags(&done[0], cudaEventDisableTiming);
    cudaEventCreateWithFlags(&done[1], cudaEventDisableTiming);
    unsigned nth = std::thread::hardware_concurrency();
    if (nth < 1) nth = 1;
    if (nth > 16) nth = 16;
    enum hmoe_status st = HMOE_OK;
    int b = 0;
    for (size_t i0 = 0; i0 < list.size() && !st; i0 += per, b ^= 1) {
        const size_t cnt = list.size() - i0 < per ? list.size() - i0 : per;
        if (cudaEventSynchronize(done[b]) != cudaSuccess) { /* the copy that used this buffer */
            st = hmoe_fail(HMOE_E_CUDA, "expert upload failed");
            break;
        }
        std::vector<std::thread> th;
        for (unsigned w = 0; w < nth && w < cnt; w++)
            th.emplace_back([&, w]() {
                for (size_t j = w; j < cnt; j += nth) {
                    const int id = list[i0 + j];
                    pack_expert(f, id / f->E, id % f->E, stage[b] + j * sb);
                }
            });
        for (auto &t : th)
            t.join();
        const int slot0 = f->h_slot[list[i0]]; /* slots are consecutive in list order */
        ce = cudaMemcpyAsync(f->d_pool + (size_t)slot0 * sb, stage[b], cnt * sb,
                             cudaMemcpyHostToDevice, f->up_st);
        if (ce == cudaSuccess) ce = cudaEventRecord(done[b], f->up_st);
        if (ce != cudaSuccess)
            st = hmoe_fail(HMOE_E_CUDA, "expert upload: %s", cudaGetErrorString(ce));
    }
    if (cudaStreamSynchronize(f->up_st) != cudaSuccess && !st)
        st = hmoe_fail(HMOE_E_CUDA, "expert upload stream failed");
    cudaEventDestroy(done[0]);
    cudaEventDestroy(done[1]);
    cudaFreeHost(stage[0]);
    cudaFreeHost(stage[1]);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* routed experts on the host (not resident) */

/* out[t] += sum_j w[t, j] expert_{idx[t, j]}(x[t]) on the CPU (idx < 0: skip). */
static enum hmoe_status host_experts_local(struct hmoe_gfwd *f, int l, int T, const float *x,
                                           const int32_t *idx, const float *w, float *out)
{
    const struct hmoe_mlp_w *ex = f->m->layers[l].experts;
    const int I = f->ex.I, H = f->H;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < f->topk; j++) {
            const int e = idx[t * f->topk + j];
            if (e < 0) continue;
            hmoe_matmul(&ex[e].gate, x + (size_t)t * H, f->h_ge, 1);
            hmoe_matmul(&ex[e].up, x + (size_t)t * H, f->h_ue, 1);
            for (int i = 0; i < I; i++)
                f->h_ge[i] = f->h_ge[i] / (1.f + expf(-f->h_ge[i])) * f->h_ue[i];
            hmoe_matmul(&ex[e].down, f->h_ge, f->h_ye, 1);
            const float wt = w[t * f->topk + j];
            for (int d = 0; d < H; d++)
                out[(size_t)t * H + d] += wt * f->h_ye[d];
        }
    return HMOE_OK;
}

/* Marks the slots the GPU computes (idx -1, weight 0) in h_idx / h_w; returns how many slots
 * remain for the host. */
static int host_slots(struct hmoe_gfwd *f, int l, int T)
{
    int n = 0;
    for (int s = 0; s < T * f->topk; s++) {
        const int e = f->h_ti[s];
        const int res = e >= 0 && e < f->E && f->h_slot[(size_t)l * f->E + e] >= 0;
        f->h_idx[s] = res ? -1 : e;
        f->h_w[s] = res ? 0.f : f->h_tw[s];
        n += !res;
    }
    return n;
}

static enum hmoe_status run_host_experts(struct hmoe_gfwd *f, int l, int T)
{
    memset(f->h_out, 0, (size_t)T * f->H * sizeof(float));
    enum hmoe_status st;
    if (f->has_hook)
        st = f->hook.routed(f->hook.ctx, l, T, f->h_xn, f->h_idx, f->h_w, f->h_out);
    else
        st = host_experts_local(f, l, T, f->h_xn, f->h_idx, f->h_w, f->h_out);
    if (st) {
        hmoe_err_prefix("layer %d routed experts", l);
        return st;
    }
    HMOE_CUDA_CHECK(cudaMemcpyAsync(f->d_host, f->h_out, (size_t)T * f->H * sizeof(float),
                                    cudaMemcpyHostToDevice, f->st));
    return HMOE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* the layers */

/* Y (B, rows) = X (B, cols) W^T for the B tokens of a decode step, token by token through the
 * single-vector kernels (a token's result does not depend on B). */
static enum hmoe_status mv_rows(struct hmoe_gfwd *f, const gf_w *w, const float *X, float *Y, int B)
{
    for (int b = 0; b < B; b++)
        GF_CHECK(mv(f, w, X + (size_t)b * w->cols, Y + (size_t)b * w->rows));
    return HMOE_OK;
}

/* A projection of T rows: the decode step's matvecs (dec) or the prefill GEMM. */
static enum hmoe_status lin(struct hmoe_gfwd *f, const gf_w *w, const float *X, float *Y, int T,
                            int dec)
{
    return dec ? mv_rows(f, w, X, Y, T) : gemm(f, w, X, Y, T);
}

static enum hmoe_status shared_and_dense(struct hmoe_gfwd *f, const gf_layer *ly, int T, int dec)
{
    const gf_w *g = ly->moe ? &ly->sg : &ly->mg, *u = ly->moe ? &ly->su : &ly->mu;
    const gf_w *dn = ly->moe ? &ly->sd : &ly->md;
    if (!g->rows) return HMOE_OK;
    GF_CHECK(lin(f, g, f->d_xn, f->d_sg, T, dec));
    GF_CHECK(lin(f, u, f->d_xn, f->d_su, T, dec));
    GF_CHECK(fw_silu_mul(f->st, f->d_sg, f->d_su, f->d_sact, (int64_t)T * g->rows));
    GF_CHECK(lin(f, dn, f->d_sact, ly->moe ? f->d_sy : f->d_blk, T, dec));
    if (ly->moe) GF_CHECK(lin(f, &ly->sgate, f->d_xn, f->d_sgl, T, dec));
    return HMOE_OK;
}

/* Decode: copies the B tokens' routing (top-k ids, weights) and MoE inputs to pinned host
 * memory and records f->ev, for the experts the host computes. */
static enum hmoe_status route_to_host(struct hmoe_gfwd *f, int B)
{
    const size_t k = (size_t)f->topk * B;
    HMOE_CUDA_CHECK(cudaMemcpyAsync(f->h_ti, f->d_ti, k * 4, cudaMemcpyDeviceToHost, f->st));
    HMOE_CUDA_CHECK(cudaMemcpyAsync(f->h_tw, f->d_tw, k * 4, cudaMemcpyDeviceToHost, f->st));
    HMOE_CUDA_CHECK(
        cudaMemcpyAsync(f->h_xn, f->d_xn, (size_t)B * f->H * 4, cudaMemcpyDeviceToHost, f->st));
    HMOE_CUDA_CHECK(cudaEventRecord(f->ev, f->st));
    return HMOE_OK;
}

/* Decode: once route_to_host's copies landed, computes the B tokens' non-resident experts on the
 * host (one hook call, n_tok = B) and copies their sums to d_host (*host = d_host), or leaves
 * *host NULL when every chosen expert is resident. */
static enum hmoe_status host_part(struct hmoe_gfwd *f, int l, int B, const float **host)
{
    HMOE_CUDA_CHECK(cudaEventSynchronize(f->ev));
    if (!host_slots(f, l, B)) return HMOE_OK;
    GF_CHECK(run_host_experts(f, l, B));
    *host = f->d_host;
    return HMOE_OK;
}

/* The MoE (or dense MLP) block of B decode tokens through the general kernels. */
static enum hmoe_status moe_decode(struct hmoe_gfwd *f, int l, int B)
{
    gf_layer *ly = &f->lay[l];
    if (!ly->moe) return shared_and_dense(f, ly, B, 1);
    const int k = f->topk, H = f->H;
    GF_CHECK(mv_rows(f, &ly->router, f->d_xn, f->d_rlog, B));
    GF_CHECK(
        hmoe_gpu_router_topk(f->g, f->d_rlog, B, f->E, k, f->c->norm_topk_prob, f->d_ti, f->d_tw));
    const int need_host = ly->n_res < f->E;
    if (need_host) GF_CHECK(route_to_host(f, B));
    GF_CHECK(shared_and_dense(f, ly, B, 1));
    fw_ex_desc d = f->ex;
    d.slot = ly->d_slot;
    if (ly->n_res) GF_CHECK(fw_experts(f->st, &d, f->d_ti, f->d_xn, f->d_act, f->d_ye, B * k));
    const float *host = NULL;
    if (need_host) GF_CHECK(host_part(f, l, B, &host));
    return fw_moe_combine(f->st, f->d_ye, NULL, f->d_ti, f->d_tw, ly->d_slot, k, H,
                          f->Ish ? f->d_sy : NULL, f->d_sgl, host, f->d_blk, B);
}

/* BF16 prefill mode: the tensor-core prefill kernels (fused NF4 x bf16 expert GEMMs, TF32
 * attention); TF32 mode: cuBLAS TF32 expert GEMMs and fp32 attention. */
static int pf_fast(const struct hmoe_gfwd *f)
{
    return f->prefill_mode == HMOE_PREFILL_BF16;
}

/* The resident routed experts of layer l for the grouped assignments (rows d_rows, prefix
 * counts cnt, experts `used`) into d_py (fp32). bf (TF32 prefill mode, NF4 experts rounded to
 * bf16): the rows gathered in bf16, then two fused NF4 x bf16 tensor-core GEMMs (fp32
 * accumulation; gate|up with SiLU*up into bf16, down into fp32), no weight scratch. Otherwise, in
 * chunks of f->ex_chunk experts: one dequant launch (the chunk's experts into the fp32 scratch),
 * one grouped SGEMM for gate|up, SiLU*up, one grouped SGEMM for down. */
static enum hmoe_status moe_experts(struct hmoe_gfwd *f, int l, const std::vector<int> &used,
                                    const std::vector<int> &cnt, int nres, int bf)
{
    const int H = f->H, I = f->ex.I, E = f->E;
    if (bf) {
        if (!nres) return HMOE_OK;
        const int cap = E + f->tc * f->topk / 64 + 1;
        const int ni = fw_pf_moe_items(cnt.data(), used.data(), (int)used.size(),
                                       f->h_slot + (size_t)l * E, f->h_items, cap);
        if (ni < 0) return hmoe_fail(HMOE_E_CUDA, "fused expert GEMM: more than %d tiles", cap);
        GF_CHECK(fw_pf_gather_bf16(f->st, f->d_xn, f->d_rows, f->d_xs, nres, H));
        HMOE_CUDA_CHECK(cudaMemcpyAsync(f->d_items, f->h_items, (size_t)ni * 16,
                                        cudaMemcpyHostToDevice, f->st));
        return fw_pf_moe(f->st, &f->ex, f->d_items, ni, f->d_xs, f->d_pact, f->d_py);
    }
    if (nres) GF_CHECK(fw_gather(f->st, f->d_xn, f->d_rows, f->d_xs, nres, H));
    const size_t chunk = (size_t)f->ex_chunk;
    const int64_t HI = (int64_t)H * I;
    for (size_t c0 = 0; c0 < used.size(); c0 += chunk) {
        const int nc = (int)(used.size() - c0 < chunk ? used.size() - c0 : chunk);
        int32_t *hs = f->h_cslots + c0;
        const float **pa = f->h_ptrs + 6 * c0; /* per expert: A_gu, B_gu, C_gu, A_d, B_d, C_d */
        std::vector<int> mg(nc), nn(nc), kg(nc), md(nc), kd(nc), lg(nc), ld(nc), lbd(nc), lcd(nc),
            gsz(nc, 1), hh(nc, H);
        std::vector<float> al(nc, 1.f), be(nc, 0.f);
        std::vector<cublasOperation_t> ta(nc, CUBLAS_OP_T), tb(nc, CUBLAS_OP_N);
        for (int i = 0; i < nc; i++) {
            const int e = used[c0 + i], o = cnt[e], n = cnt[e + 1] - cnt[e];
            hs[i] = f->h_slot[(size_t)l * E + e];
            const float *wsc = f->d_wscr + (size_t)i * 3 * HI;
            pa[0 * nc + i] = wsc;
            pa[1 * nc + i] = f->d_xs + (size_t)o * H;
            pa[2 * nc + i] = f->d_gu + (size_t)o * 2 * I;
            pa[3 * nc + i] = wsc + 2 * HI;
            pa[4 * nc + i] = f->d_pact + (size_t)o * I;
            pa[5 * nc + i] = f->d_py + (size_t)o * H;
            mg[i] = 2 * I;
            nn[i] = n;
            kg[i] = H;
            lg[i] = 2 * I;
            md[i] = H;
            kd[i] = I;
            ld[i] = I;
            lbd[i] = I;
            lcd[i] = H;
        }
        const float **dpa = f->d_ptrs + 6 * c0;
        int32_t *dcs = f->d_cslots + c0;
        HMOE_CUDA_CHECK(cudaMemcpyAsync(dcs, hs, (size_t)nc * 4, cudaMemcpyHostToDevice, f->st));
        HMOE_CUDA_CHECK(cudaMemcpyAsync(dpa, pa, (size_t)6 * nc * sizeof(float *),
                                        cudaMemcpyHostToDevice, f->st));
        GF_CHECK(fw_pf_deq_slots(f->st, &f->ex, dcs, nc, 0, f->d_wscr));
        GF_CUBLAS(cublasSgemmGroupedBatched(f->blas, ta.data(), tb.data(), mg.data(), nn.data(),
                                            kg.data(), al.data(), dpa, hh.data(), dpa + nc,
                                            hh.data(), be.data(), (float *const *)(dpa + 2 * nc),
                                            lg.data(), nc, gsz.data()));
        const int o0 = cnt[used[c0]], o1 = cnt[used[c0 + nc - 1] + 1];
        GF_CHECK(fw_silu_gu(f->st, f->d_gu + (size_t)o0 * 2 * I, f->d_pact + (size_t)o0 * I, I,
                            o1 - o0));
        GF_CUBLAS(cublasSgemmGroupedBatched(
            f->blas, ta.data(), tb.data(), md.data(), nn.data(), kd.data(), al.data(), dpa + 3 * nc,
            ld.data(), dpa + 4 * nc, lbd.data(), be.data(), (float *const *)(dpa + 5 * nc),
            lcd.data(), nc, gsz.data()));
    }
    return HMOE_OK;
}

static enum hmoe_status moe_prefill(struct hmoe_gfwd *f, int l, int T)
{
    gf_layer *ly = &f->lay[l];
    if (!ly->moe) return shared_and_dense(f, ly, T, 0);
    const int k = f->topk, H = f->H, E = f->E, na = T * k;
    GF_CHECK(gemm_exact(f, &ly->router, f->d_xn, f->d_rlog, T)); /* routing stays TF32/fp32 */
    GF_CHECK(
        hmoe_gpu_router_topk(f->g, f->d_rlog, T, E, k, f->c->norm_topk_prob, f->d_ti, f->d_tw));
    const int need_host = ly->n_res < E;
    HMOE_CUDA_CHECK(
        cudaMemcpyAsync(f->h_ti, f->d_ti, (size_t)na * 4, cudaMemcpyDeviceToHost, f->st));
    HMOE_CUDA_CHECK(
        cudaMemcpyAsync(f->h_tw, f->d_tw, (size_t)na * 4, cudaMemcpyDeviceToHost, f->st));
    if (need_host)
        HMOE_CUDA_CHECK(
            cudaMemcpyAsync(f->h_xn, f->d_xn, (size_t)T * H * 4, cudaMemcpyDeviceToHost, f->st));
    HMOE_CUDA_CHECK(cudaEventRecord(f->ev, f->st));
    GF_CHECK(shared_and_dense(f, ly, T, 0));
    HMOE_CUDA_CHECK(cudaEventSynchronize(f->ev));
    /* group the resident assignments by expert (ascending), tokens ascending inside */
    std::vector<int> cnt(E + 1, 0);
    for (int s = 0; s < na; s++) {
        const int e = f->h_ti[s];
        if (e < 0 || e >= E) return hmoe_fail(HMOE_E_CUDA, "router returned expert %d", e);
        if (f->h_slot[(size_t)l * E + e] >= 0) cnt[e + 1]++;
    }
    for (int e = 0; e < E; e++)
        cnt[e + 1] += cnt[e];
    const int nres = cnt[E];
    std::vector<int> fill(cnt.begin(), cnt.end() - 1);
    for (int s = 0; s < na; s++) {
        const int e = f->h_ti[s];
        if (f->h_slot[(size_t)l * E + e] >= 0) {
            const int p = fill[e]++;
            f->h_rows[p] = s / k;
            f->h_perm[s] = p;
        } else {
            f->h_perm[s] = 0;
        }
    }
    if (nres)
        HMOE_CUDA_CHECK(
            cudaMemcpyAsync(f->d_rows, f->h_rows, (size_t)nres * 4, cudaMemcpyHostToDevice, f->st));
    HMOE_CUDA_CHECK(
        cudaMemcpyAsync(f->d_perm, f->h_perm, (size_t)na * 4, cudaMemcpyHostToDevice, f->st));
    std::vector<int> used;
    for (int e = 0; e < E; e++)
        if (cnt[e + 1] > cnt[e]) used.push_back(e);
    /* TF32 mode: fused NF4 x bf16 tensor-core expert GEMMs (fp32 accumulation) */
    const int bf = pf_fast(f) && fw_pf_moe_ok(&f->ex);
    GF_CHECK(moe_experts(f, l, used, cnt, nres, bf));
    const float *host = NULL;
    if (need_host && host_slots(f, l, T)) {
        GF_CHECK(run_host_experts(f, l, T)); /* the GPU works on the resident ones meanwhile */
        host = f->d_host;
    }
    return fw_moe_combine(f->st, f->d_py, f->d_perm, f->d_ti, f->d_tw, ly->d_slot, k, H,
                          f->Ish ? f->d_sy : NULL, f->d_sgl, host, f->d_blk, T);
}

/* Attention or GDN block of layer l for T > 1 prefill tokens of sequence f->cur. */
static enum hmoe_status mixer(struct hmoe_gfwd *f, int l, int T)
{
    gf_layer *ly = &f->lay[l];
    const float eps = f->c->rms_norm_eps;
    if (ly->full) {
        float *kc = ly->kc + f->cur * f->kvs, *vc = ly->vc + f->cur * f->kvs;
        GF_CHECK(gemm(f, &ly->q, f->d_xn, f->d_proj, T));
        GF_CHECK(gemm(f, &ly->k, f->d_xn, f->d_kb, T));
        GF_CHECK(gemm(f, &ly->v, f->d_xn, f->d_vb, T));
        GF_CHECK(fw_attn_prep(f->st, f->d_proj, f->d_kb, f->d_vb, ly->q_norm, ly->k_norm,
                              f->d_inv_freq, f->d_pos, 0, NULL, 0, T, f->d_q, f->d_gate, kc, vc,
                              f->Hq, f->Hkv, f->D, f->rot, f->max_ctx, eps));
        const float scale = 1.0f / sqrtf((float)f->D);
        if (pf_fast(f) && fw_pf_attn_ok(f->Hq, f->Hkv, f->D))
            GF_CHECK(fw_pf_attn_tf32(f->st, f->d_q, f->d_gate, kc, vc, f->d_pos, f->d_ao, T, f->Hq,
                                     f->Hkv, f->D, f->max_ctx, scale));
        else
            GF_CHECK(fw_attn_prefill(f->st, f->d_q, f->d_gate, kc, vc, f->d_pos, f->d_ao, T, f->Hq,
                                     f->Hkv, f->D, f->max_ctx, scale));
        return gemm(f, &ly->o, f->d_ao, f->d_blk, T);
    }
    GF_CHECK(gemm(f, &ly->qkvz, f->d_xn, f->d_proj, T));
    GF_CHECK(gemm(f, &ly->ba, f->d_xn, f->d_ba, T));
    GF_CHECK(fw_gdn(f->st, f->d_proj, f->d_ba, ly->dt_bias, ly->nea, ly->conv_w,
                    ly->cstate + f->cur * f->css, ly->rstate + f->cur * f->rss, ly->lin_norm,
                    f->d_mixed, f->d_conv, f->d_z, f->d_beta, f->d_gg, f->d_ao, T, f->Hk, f->Hv,
                    f->dk, f->dv, f->K, eps));
    return gemm(f, &ly->out, f->d_ao, f->d_blk, T);
}

/* Decode step, B tokens (rows of d_proj / d_kb / d_vb) of the batch table: q/k norm + RoPE +
 * KV write into each token's sequence, split-KV attention -> d_ao. */
static enum hmoe_status attn_step(struct hmoe_gfwd *f, gf_layer *ly, int B)
{
    GF_CHECK(fw_attn_prep(f->st, f->d_proj, f->d_kb, f->d_vb, ly->q_norm, ly->k_norm, f->d_inv_freq,
                          NULL, 0, f->d_bat, f->kvs, B, f->d_q, f->d_gate, ly->kc, ly->vc, f->Hq,
                          f->Hkv, f->D, f->rot, f->max_ctx, f->c->rms_norm_eps));
    return fw_attn_decode(f->st, f->d_q, f->d_gate, ly->kc, ly->vc, f->d_bat, f->kvs, B, f->d_sc,
                          f->d_part, f->d_ao, f->Hq, f->Hkv, f->D, f->max_ctx,
                          1.0f / sqrtf((float)f->D));
}

/* Decode step, B tokens (rows of d_proj, d_ba): the GDN conv + delta rule + gated norm on each
 * token's sequence -> d_ao. Shapes the batched kernels do not take: one sequence, one token
 * (init keeps n_seq at 1 for them). */
static enum hmoe_status gdn_step(struct hmoe_gfwd *f, gf_layer *ly, int B)
{
    if (f->gdn_bat)
        return fw_pf_gdn_decode(f->st, f->d_proj, f->d_ba, ly->dt_bias, ly->nea, ly->conv_w,
                                ly->cstate, ly->rstate, ly->lin_norm, f->d_conv, f->d_z, f->d_beta,
                                f->d_gg, f->d_ao, f->Hk, f->Hv, f->dk, f->dv, f->K,
                                f->c->rms_norm_eps, f->d_bat, B, f->css, f->rss);
    if (B != 1 || f->n_seq != 1)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "GDN decode of %d tokens for these shapes", B);
    return fw_gdn(f->st, f->d_proj, f->d_ba, ly->dt_bias, ly->nea, ly->conv_w, ly->cstate,
                  ly->rstate, ly->lin_norm, f->d_mixed, f->d_conv, f->d_z, f->d_beta, f->d_gg,
                  f->d_ao, 1, f->Hk, f->Hv, f->dk, f->dv, f->K, f->c->rms_norm_eps);
}

/* Attention or GDN block of layer l for B decode tokens through the general kernels. */
static enum hmoe_status mixer_dec(struct hmoe_gfwd *f, int l, int B)
{
    gf_layer *ly = &f->lay[l];
    if (ly->full) {
        GF_CHECK(mv_rows(f, &ly->q, f->d_xn, f->d_proj, B));
        GF_CHECK(mv_rows(f, &ly->k, f->d_xn, f->d_kb, B));
        GF_CHECK(mv_rows(f, &ly->v, f->d_xn, f->d_vb, B));
        GF_CHECK(attn_step(f, ly, B));
        return mv_rows(f, &ly->o, f->d_ao, f->d_blk, B);
    }
    GF_CHECK(mv_rows(f, &ly->qkvz, f->d_xn, f->d_proj, B));
    GF_CHECK(mv_rows(f, &ly->ba, f->d_xn, f->d_ba, B));
    GF_CHECK(gdn_step(f, ly, B));
    return mv_rows(f, &ly->out, f->d_ao, f->d_blk, B);
}

/* ---------------------------------------------------------------------------------------- */
/* the decode step through dec_mv (NF4 on tensor cores, fused epilogues, PDL) */

static dmv_seg dseg(const gf_w *w, float *y)
{
    dmv_seg s;
    s.w = (const uint8_t *)w->d;
    s.absf = w->absf;
    s.y = y;
    s.rows = w->rows;
    return s;
}

/* Whether dec_mv takes these weights together (NF4 rounded to bf16, one code table, cols). */
static int dmv_takes(const gf_w *const *ws, int n, int cols)
{
    for (int i = 0; i < n; i++) {
        const gf_w *w = ws[i];
        if (w->kind != GW_NF4 || w->cols != cols || !dmv_ok(w->cols, w->rnd == FW_RND_BF16) ||
            memcmp(w->code, ws[0]->code, sizeof w->code))
            return 0;
    }
    return 1;
}

/* Decides per layer which parts of the decode step run through dec_mv. */
static void plan_dmv(struct hmoe_gfwd *f)
{
    for (int l = 0; l < f->L; l++) {
        gf_layer *ly = &f->lay[l];
        ly->fast_mix = ly->fast_moe = 0;
        if (!f->dmv_on) continue;
        if (ly->full) {
            const gf_w *in[] = {&ly->q, &ly->k, &ly->v};
            const gf_w *o[] = {&ly->o};
            ly->fast_mix = dmv_takes(in, 3, f->H) && dmv_takes(o, 1, ly->o.cols);
        } else {
            const gf_w *in[] = {&ly->qkvz, &ly->ba};
            const gf_w *o[] = {&ly->out};
            ly->fast_mix = dmv_takes(in, 2, f->H) && dmv_takes(o, 1, ly->out.cols);
        }
        if (ly->moe && f->fmt == FW_EX_NF4 && f->ex.rnd == FW_RND_BF16 && f->H % 128 == 0 &&
            f->ex.I % 128 == 0 && f->topk <= 32) {
            const gf_w *r[] = {&ly->router, &ly->sgate, &ly->sg, &ly->su};
            const gf_w *d[] = {&ly->sd};
            int ok = dmv_takes(r, f->Ish ? 2 : 1, f->H) &&
                     !memcmp(ly->router.code, f->ex.code, sizeof f->ex.code);
            if (f->Ish)
                ok = ok && f->Ish == f->ex.I && dmv_takes(r + 2, 2, f->H) &&
                     !memcmp(ly->sg.code, f->ex.code, sizeof f->ex.code) &&
                     dmv_takes(d, 1, f->ex.I) && ly->sd.rows == f->H;
            ly->fast_moe = ok && ly->router.rows == f->E && f->E <= 1024;
        }
    }
}

/* dec_mv arguments for the B tokens of a decode step (the real count read from the batch table). */
static dmv_args dargs(struct hmoe_gfwd *f, int mode, int B)
{
    dmv_args a;
    memset(&a, 0, sizeof a);
    a.mode = mode;
    a.nbt = B;
    a.nb = f->d_bat;
    a.counter = f->d_cnt;
    a.h = f->d_h;
    a.xn = f->d_xn;
    a.eps = f->c->rms_norm_eps;
    a.fast = mode == DMV_DENSE && f->decode_fast; /* hmoe_gfwd_set_decode */
    return a;
}

/* Attention or GDN block for B tokens with its input projections and its output projection +
 * residual + post-attention norm through dec_mv: h += mixer(xn); xn = post_norm(h). */
static enum hmoe_status mixer_dmv(struct hmoe_gfwd *f, int l, int B)
{
    gf_layer *ly = &f->lay[l];
    dmv_args a = dargs(f, DMV_DENSE, B);
    a.x = f->d_xn;
    a.rnd = 1;
    a.cols = f->H;
    const gf_w *ow;
    if (ly->full) {
        memcpy(a.code, ly->q.code, sizeof a.code);
        a.seg[0] = dseg(&ly->q, f->d_proj);
        a.seg[1] = dseg(&ly->k, f->d_kb);
        a.seg[2] = dseg(&ly->v, f->d_vb);
        a.nseg = 3;
        GF_CHECK(dmv_launch(f->st, &a, f->pdl));
        GF_CHECK(attn_step(f, ly, B));
        ow = &ly->o;
    } else {
        memcpy(a.code, ly->qkvz.code, sizeof a.code);
        a.seg[0] = dseg(&ly->qkvz, f->d_proj);
        a.seg[1] = dseg(&ly->ba, f->d_ba);
        a.nseg = 2;
        GF_CHECK(dmv_launch(f->st, &a, f->pdl));
        GF_CHECK(gdn_step(f, ly, B));
        ow = &ly->out;
    }
    dmv_args o = dargs(f, DMV_DENSE, B);
    o.x = f->d_ao;
    o.rnd = 1;
    o.cols = ow->cols;
    memcpy(o.code, ow->code, sizeof o.code);
    o.seg[0] = dseg(ow, f->d_blk);
    o.nseg = 1;
    o.epi = DMV_EPI_ADDNORM;
    o.normw = ly->post_norm;
    return dmv_launch(f->st, &o, f->pdl);
}

/* The MoE block for B tokens through dec_mv: router + shared gate with the top-k in the last
 * block; routed + shared experts gate|up with SiLU; down with the routing weights, the shared
 * gate, the host part, the residual and the next norm (normw): h += moe(xn); xn = norm(h). */
static enum hmoe_status moe_dmv(struct hmoe_gfwd *f, int l, const float *normw, int B)
{
    gf_layer *ly = &f->lay[l];
    const int k = f->topk, H = f->H;
    dmv_args r = dargs(f, DMV_DENSE, B);
    r.x = f->d_xn;
    r.rnd = 1;
    r.cols = H;
    memcpy(r.code, ly->router.code, sizeof r.code);
    r.seg[0] = dseg(&ly->router, f->d_rlog);
    r.nseg = 1;
    if (f->Ish) r.seg[r.nseg++] = dseg(&ly->sgate, f->d_sgl);
    r.epi = DMV_EPI_TOPK;
    r.E = f->E;
    r.k = k;
    r.renorm = f->c->norm_topk_prob;
    r.ti_out = f->d_ti;
    r.tw_out = f->d_tw;
    GF_CHECK(dmv_launch(f->st, &r, f->pdl));
    const int need_host = ly->n_res < f->E;
    if (need_host) GF_CHECK(route_to_host(f, B));
    dmv_args e = dargs(f, DMV_GATEUP, B);
    e.x = f->d_xn;
    e.rnd = 1;
    memcpy(e.code, f->ex.code, sizeof e.code);
    e.pool = f->d_pool;
    e.slot = ly->d_slot;
    e.slot_bytes = f->ex.slot_bytes;
    e.o_up = f->ex.o_up;
    e.o_down = f->ex.o_down;
    e.o_ag = f->ex.o_ag;
    e.o_au = f->ex.o_au;
    e.o_ad = f->ex.o_ad;
    e.ti = f->d_ti;
    e.tw = f->d_tw;
    e.k = k;
    e.E = f->E;
    e.I = f->ex.I;
    e.H = H;
    e.has_sh = f->Ish > 0;
    if (e.has_sh) {
        const gf_w *sw[3] = {&ly->sg, &ly->su, &ly->sd};
        for (int i = 0; i < 3; i++) {
            e.sh_w[i] = (const uint8_t *)sw[i]->d;
            e.sh_a[i] = sw[i]->absf;
        }
        e.sgl = f->d_sgl;
    }
    e.act = f->d_act1;
    GF_CHECK(dmv_launch(f->st, &e, f->pdl));
    const float *host = NULL;
    if (need_host) GF_CHECK(host_part(f, l, B, &host));
    e.mode = DMV_DOWN;
    e.x = NULL;
    e.out = f->d_blk;
    e.host = host;
    e.epi = DMV_EPI_ADDNORM;
    e.normw = normw;
    return dmv_launch(f->st, &e, f->pdl);
}

/* The B tokens of a decode step (embeddings in h_x0, batch table in h_bat; B: the bucket's
 * launch size) through every layer; ends with the final norm in d_xn. Layers (or parts) that
 * dec_mv does not take run through the general kernels. */
static enum hmoe_status decode_layers(struct hmoe_gfwd *f, int B)
{
    const int H = f->H;
    const float eps = f->c->rms_norm_eps;
    HMOE_CUDA_CHECK(cudaMemcpyAsync(f->d_bat, f->h_bat, FW_BAT_INTS * sizeof(int),
                                    cudaMemcpyHostToDevice, f->st));
    HMOE_CUDA_CHECK(
        cudaMemcpyAsync(f->d_x0, f->h_x0, (size_t)B * H * 4, cudaMemcpyHostToDevice, f->st));
    GF_CHECK(fw_add_norm(f->st, f->d_x0, NULL, f->d_h, f->lay[0].in_norm, f->d_xn, B, H, eps));
    for (int l = 0; l < f->L; l++) {
        gf_layer *ly = &f->lay[l];
        const float *next = l + 1 < f->L ? f->lay[l + 1].in_norm : f->d_final_norm;
        if (ly->fast_mix) {
            GF_CHECK(mixer_dmv(f, l, B));
        } else {
            GF_CHECK(mixer_dec(f, l, B));
            GF_CHECK(
                fw_add_norm(f->st, f->d_h, f->d_blk, f->d_h, ly->post_norm, f->d_xn, B, H, eps));
        }
        if (ly->fast_moe) {
            GF_CHECK(moe_dmv(f, l, next, B));
        } else {
            GF_CHECK(moe_decode(f, l, B));
            GF_CHECK(fw_add_norm(f->st, f->d_h, f->d_blk, f->d_h, next, f->d_xn, B, H, eps));
        }
    }
    return HMOE_OK;
}

/* Enqueues T > 1 prefill tokens (embeddings already in h_x0, position in h_pos) through every
 * layer; ends with the final norm in d_xn (T rows). Host syncs happen only for layers with host
 * experts. */
static enum hmoe_status enqueue_layers(struct hmoe_gfwd *f, int T)
{
    const int H = f->H;
    const float eps = f->c->rms_norm_eps;
    HMOE_CUDA_CHECK(
        cudaMemcpyAsync(f->d_pos, f->h_pos, sizeof(int), cudaMemcpyHostToDevice, f->st));
    HMOE_CUDA_CHECK(
        cudaMemcpyAsync(f->d_x0, f->h_x0, (size_t)T * H * 4, cudaMemcpyHostToDevice, f->st));
    for (int l = 0; l < f->L; l++) {
        gf_layer *ly = &f->lay[l];
        GF_CHECK(fw_add_norm(f->st, l ? f->d_h : f->d_x0, l ? f->d_blk : NULL, f->d_h, ly->in_norm,
                             f->d_xn, T, H, eps));
        GF_CHECK(mixer(f, l, T));
        GF_CHECK(fw_add_norm(f->st, f->d_h, f->d_blk, f->d_h, ly->post_norm, f->d_xn, T, H, eps));
        GF_CHECK(moe_prefill(f, l, T));
    }
    return fw_add_norm(f->st, f->d_h, f->d_blk, f->d_h, f->d_final_norm, f->d_xn, T, H, eps);
}

/* lm_head for the B rows of X into d_logits (B, V): bf16 weights in one pass for the B tokens,
 * other dtypes token by token. */
static enum hmoe_status lm_rows(struct hmoe_gfwd *f, const float *X, int B)
{
    const gf_w *w = &f->lm;
    const uint16_t *bf = w->kind == GW_LIB && w->gw->dtype == HMOE_DT_BF16
                             ? (const uint16_t *)w->gw->d_w
                         : w->kind == GW_BF16 && w->cols % 8 == 0 ? (const uint16_t *)w->d
                                                                  : NULL;
    if (bf) return fw_mv_bf16_rows(f->st, bf, X, f->d_logits, w->rows, w->cols, B);
    return mv_rows(f, w, X, f->d_logits, B);
}

/* The whole decode step of B tokens including the logits copy into h_logits (what a bucket's
 * graph holds). */
static enum hmoe_status enqueue_decode(struct hmoe_gfwd *f, int B)
{
    GF_CHECK(decode_layers(f, B));
    GF_CHECK(lm_rows(f, f->d_xn, B));
    HMOE_CUDA_CHECK(cudaMemcpyAsync(f->h_logits, f->d_logits, (size_t)B * f->V * 4,
                                    cudaMemcpyDeviceToHost, f->st));
    return HMOE_OK;
}

static enum hmoe_status capture_decode(struct hmoe_gfwd *f, int bi)
{
    cudaGraph_t graph = NULL;
    HMOE_CUDA_CHECK(cudaStreamBeginCapture(f->st, cudaStreamCaptureModeRelaxed));
    enum hmoe_status st = enqueue_decode(f, 1 << bi);
    cudaError_t ce = cudaStreamEndCapture(f->st, &graph);
    if (st) {
        if (graph) cudaGraphDestroy(graph);
        return st;
    }
    if (ce != cudaSuccess)
        return hmoe_fail(HMOE_E_CUDA, "graph capture: %s", cudaGetErrorString(ce));
    ce = cudaGraphInstantiate(&f->gexec[bi], graph, 0);
    cudaGraphDestroy(graph);
    if (ce != cudaSuccess) {
        f->gexec[bi] = NULL;
        return hmoe_fail(HMOE_E_CUDA, "graph instantiate: %s", cudaGetErrorString(ce));
    }
    return HMOE_OK;
}

static void gather_embed(struct hmoe_gfwd *f, const int32_t *tok, int n)
{
    for (int t = 0; t < n; t++)
        hmoe_tensor_read_f32(&f->m->embed, (int64_t)tok[t] * f->H, f->H,
                             f->h_x0 + (size_t)t * f->H);
}

/* One decode step: token tok[b] of sequence seqs[b] for b < B (checked by the caller). With
 * graphs, the step runs the graph of the smallest bucket >= B (captured at its second use, when
 * every expert is resident), the rows past B zero and skipped by the kernels; without, the
 * kernels are launched for B. logits: (B, V) or NULL. */
static enum hmoe_status decode_step(struct hmoe_gfwd *f, const int *seqs, const int32_t *tok, int B,
                                    float *logits)
{
    int bi = 0;
    while ((1 << bi) < B)
        bi++;
    const int use_graph = f->graphs_on && f->all_res;
    const int nl = use_graph ? 1 << bi : B; /* rows the kernels are launched for */
    gather_embed(f, tok, B);
    memset(f->h_x0 + (size_t)B * f->H, 0, (size_t)(nl - B) * f->H * sizeof(float));
    memset(f->h_bat, 0, FW_BAT_INTS * sizeof(int));
    f->h_bat[0] = B;
    for (int b = 0; b < B; b++) {
        f->h_bat[FW_BAT_SEQ + b] = seqs[b];
        f->h_bat[FW_BAT_POS + b] = f->spos[seqs[b]];
    }
    if (use_graph && !f->gexec[bi] && f->n_eager[bi] > 0 && capture_decode(f, bi)) {
        HMOE_LOG_WARN("CUDA graph capture failed (%s); decoding without graphs", hmoe_err_msg());
        (void)cudaGetLastError();
        f->graphs_on = 0;
    }
    if (f->graphs_on && f->gexec[bi]) {
        HMOE_CUDA_CHECK(cudaGraphLaunch(f->gexec[bi], f->st));
    } else {
        GF_CHECK(enqueue_decode(f, nl));
        f->n_eager[bi]++;
    }
    GF_CHECK(hmoe_gpu_sync(f->g));
    for (int b = 0; b < B; b++)
        f->spos[seqs[b]]++;
    if (logits) memcpy(logits, f->h_logits, (size_t)B * f->V * sizeof(float));
    return HMOE_OK;
}

/* One prefill chunk of T <= tc tokens; logits of rows [0, T) or of the last row only. */
static enum hmoe_status prefill_chunk(struct hmoe_gfwd *f, const int32_t *tok, int T, float *logits,
                                      int last_only)
{
    gather_embed(f, tok, T);
    *f->h_pos = f->spos[f->cur];
    GF_CHECK(enqueue_layers(f, T));
    if (logits) {
        const int t0 = last_only ? T - 1 : 0;
        for (int t = t0; t < T; t++) {
            GF_CHECK(lm_rows(f, f->d_xn + (size_t)t * f->H, 1));
            float *dst = logits + (size_t)(t - t0) * f->V;
            HMOE_CUDA_CHECK(cudaMemcpyAsync(f->h_logits, f->d_logits, (size_t)f->V * 4,
                                            cudaMemcpyDeviceToHost, f->st));
            GF_CHECK(hmoe_gpu_sync(f->g));
            memcpy(dst, f->h_logits, (size_t)f->V * sizeof(float));
        }
    }
    GF_CHECK(hmoe_gpu_sync(f->g));
    f->spos[f->cur] += T;
    return HMOE_OK;
}

/* A sequence index usable for a call (message naming `who` otherwise). */
static enum hmoe_status check_seq(const struct hmoe_gfwd *f, int s, const char *who)
{
    if (s < 0 || s >= f->n_seq)
        return hmoe_fail(HMOE_E_INVAL, "%s: sequence %d outside [0, %d)", who, s, f->n_seq);
    if (f->sbroken[s])
        return hmoe_fail(HMOE_E_INVAL,
                         "%s: sequence %d: an earlier call failed half-way; it must be reset", who,
                         s);
    return HMOE_OK;
}

static enum hmoe_status check_token(const struct hmoe_gfwd *f, int32_t t, int i)
{
    if (t < 0 || t >= f->V)
        return hmoe_fail(HMOE_E_INVAL, "token id %d at index %d is outside the vocabulary [0, %d)",
                         (int)t, i, f->V);
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gfwd_run_seq(struct hmoe_gfwd *f, int seq, const int32_t *tokens,
                                              int n, float *logits, int last_only)
{
    if (!f || !tokens || n <= 0)
        return hmoe_fail(HMOE_E_INVAL, "hmoe_gfwd_run: need a forward state and n > 0 tokens");
    GF_CHECK(check_seq(f, seq, "hmoe_gfwd_run"));
    if (n > f->max_ctx - f->spos[seq])
        return hmoe_fail(HMOE_E_RANGE,
                         "context full: sequence %d position %d + %d tokens > max_ctx %d", seq,
                         f->spos[seq], n, f->max_ctx);
    for (int i = 0; i < n; i++)
        GF_CHECK(check_token(f, tokens[i], i));
    enum hmoe_status st = HMOE_OK;
    f->cur = seq;
    if (n == 1 || f->prefill_mode == 0) {
        for (int i = 0; i < n && !st; i++) {
            float *lg = NULL;
            if (logits && !last_only)
                lg = logits + (size_t)i * f->V;
            else if (logits && i == n - 1)
                lg = logits;
            st = decode_step(f, &seq, tokens + i, 1, lg);
        }
    } else {
        for (int i = 0; i < n && !st; i += f->tc) {
            const int part = n - i < f->tc ? n - i : f->tc;
            float *lg = NULL;
            if (logits && !last_only)
                lg = logits + (size_t)i * f->V;
            else if (logits && i + part == n)
                lg = logits;
            if (part == 1)
                st = decode_step(f, &seq, tokens + i, 1, lg);
            else
                st = prefill_chunk(f, tokens + i, part, lg, last_only || !logits);
        }
    }
    if (st) f->sbroken[seq] = 1;
    return st;
}

extern "C" enum hmoe_status hmoe_gfwd_run(struct hmoe_gfwd *f, const int32_t *tokens, int n,
                                          float *logits, int last_only)
{
    return hmoe_gfwd_run_seq(f, 0, tokens, n, logits, last_only);
}

extern "C" enum hmoe_status hmoe_gfwd_decode_batch(struct hmoe_gfwd *f, const int *seqs,
                                                   const int32_t *tokens, int B, float *logits)
{
    if (!f || !seqs || !tokens)
        return hmoe_fail(HMOE_E_INVAL, "hmoe_gfwd_decode_batch: NULL argument");
    if (B < 1 || B > HMOE_GFWD_MAX_BATCH)
        return hmoe_fail(HMOE_E_INVAL, "hmoe_gfwd_decode_batch: batch of %d (1..%d)", B,
                         HMOE_GFWD_MAX_BATCH);
    for (int b = 0; b < B; b++) {
        GF_CHECK(check_seq(f, seqs[b], "hmoe_gfwd_decode_batch"));
        for (int c = 0; c < b; c++)
            if (seqs[c] == seqs[b])
                return hmoe_fail(HMOE_E_INVAL,
                                 "hmoe_gfwd_decode_batch: sequence %d twice in one batch "
                                 "(indices %d and %d)",
                                 seqs[b], c, b);
        GF_CHECK(check_token(f, tokens[b], b));
        if (f->spos[seqs[b]] >= f->max_ctx)
            return hmoe_fail(HMOE_E_RANGE, "context full: sequence %d at position %d = max_ctx",
                             seqs[b], f->spos[seqs[b]]);
    }
    const enum hmoe_status st = decode_step(f, seqs, tokens, B, logits);
    if (st)
        for (int b = 0; b < B; b++)
            f->sbroken[seqs[b]] = 1;
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* init */

static uint64_t est_dense(const struct hmoe_gfwd *f)
{
    const struct hmoe_model *m = f->m;
    uint64_t b = est_weight(m->lm_head.dtype != HMOE_DT_NONE ? &m->lm_head : &m->embed, f->absmax);
    for (int l = 0; l < f->L; l++) {
        const struct hmoe_layer_w *w = &m->layers[l];
        const struct hmoe_tensor *ts[] = {
            &w->q_proj,     &w->k_proj,      &w->v_proj,   &w->o_proj,      &w->in_proj_qkvz,
            &w->in_proj_ba, &w->out_proj,    &w->router,   &w->shared_gate, &w->shared.gate,
            &w->shared.up,  &w->shared.down, &w->mlp.gate, &w->mlp.up,      &w->mlp.down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            b += est_weight(ts[i], f->absmax);
        b += al256((size_t)(2 * f->H + 2 * f->D + 3 * f->Hv + f->dv + (size_t)f->cd * f->K) * 4);
    }
    return b;
}

/* Rows of the per-token workspace: a prefill chunk or a decode batch. */
static size_t ws_rows(const struct hmoe_gfwd *f)
{
    return (size_t)(f->tc > FW_MAXB ? f->tc : FW_MAXB);
}

/* Workspace floats for ws_rows tokens (see struct hmoe_gfwd). */
struct gf_ws_plan {
    size_t proj, ao, sh, wscr, ea;
};

static gf_ws_plan ws_plan(const struct hmoe_gfwd *f)
{
    gf_ws_plan p;
    p.proj = f->n_lin ? (size_t)f->qkvz_dim : 0;
    if (f->n_full && (size_t)2 * f->Hq * f->D > p.proj) p.proj = (size_t)2 * f->Hq * f->D;
    p.ao = f->n_lin ? (size_t)f->vd : 0;
    if (f->n_full && (size_t)f->Hq * f->D > p.ao) p.ao = (size_t)f->Hq * f->D;
    p.sh = (size_t)(f->Ish > f->Imlp ? f->Ish : f->Imlp);
    if (p.sh < 1) p.sh = 1;
    /* largest dense weight except lm_head (prefill GEMM scratch), and one expert */
    size_t mx = (size_t)3 * f->H * f->ex.I;
    for (int l = 0; l < f->L; l++) {
        const struct hmoe_layer_w *w = &f->m->layers[l];
        const struct hmoe_tensor *ts[] = {&w->q_proj,   &w->in_proj_qkvz, &w->o_proj,
                                          &w->out_proj, &w->router,       &w->mlp.gate,
                                          &w->mlp.down, &w->shared.gate,  &w->shared.down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            if (ts[i]->dtype != HMOE_DT_NONE && (size_t)hmoe_tensor_numel(ts[i]) > mx)
                mx = (size_t)hmoe_tensor_numel(ts[i]);
    }
    p.wscr = mx > (size_t)f->ex_chunk * 3 * f->H * f->ex.I
                 ? mx
                 : (size_t)f->ex_chunk * 3 * f->H * f->ex.I;
    p.ea = ws_rows(f) * (f->topk > 0 ? f->topk : 1);
    return p;
}

static uint64_t ws_bytes_of(const struct hmoe_gfwd *f, const gf_ws_plan &p)
{
    const size_t T = ws_rows(f), H = (size_t)f->H, MB = FW_MAXB;
    size_t fl = T * H * 5 + T * p.proj + 2 * T * f->Hkv * f->D + 2 * T * f->Hq * f->D + T * p.ao +
                MB * f->Hq * f->max_ctx + MB * f->Hq * FW_ATTN_SPLIT * (f->D + 2) + 2 * T * f->cd +
                T * f->vd + 2 * T * f->Hv + 2 * T * f->Hv + T * f->E + 2 * T * f->topk +
                3 * T * p.sh + T * H + T + MB * f->V + p.wscr + MB * f->topk * (f->ex.I + H) +
                MB * (f->topk + 1) * f->ex.I + 64 + FW_BAT_INTS +
                p.ea * (H + 2 * (size_t)f->ex.I + f->ex.I + H) + 2 * p.ea + (size_t)f->E * 13 +
                4 * ((size_t)f->E + p.ea / 64 + 1);
    return (uint64_t)fl * 4 + 64 * 256;
}

/* Caches of every sequence. */
static uint64_t cache_bytes_of(const struct hmoe_gfwd *f)
{
    return (uint64_t)f->n_seq * (uint64_t)(f->n_full * 2 * f->kvs + f->n_lin * (f->css + f->rss)) *
           4;
}

#define WS(ptr, count)                                                                             \
    do {                                                                                           \
        void *p_;                                                                                  \
        GF_CHECK(dmalloc(f, (size_t)(count)*4 > 0 ? (size_t)(count)*4 : 4, &p_, &f->ws_bytes));    \
        HMOE_CUDA_CHECK(cudaMemsetAsync(p_, 0, (size_t)(count)*4, f->st)); /* finite pad rows */   \
        (ptr) = (decltype(ptr))p_;                                                                 \
    } while (0)

#define PIN(ptr, count)                                                                            \
    do {                                                                                           \
        HMOE_CUDA_CHECK(                                                                           \
            cudaMallocHost((void **)&(ptr), (size_t)(count)*4 > 0 ? (size_t)(count)*4 : 4));       \
    } while (0)

static enum hmoe_status init_inner(struct hmoe_gfwd *f, int device)
{
    const struct hmoe_model *m = f->m;
    const struct hmoe_config *c = f->c;
    GF_CHECK(hmoe_gpu_open(device, &f->g));
    f->st = f->g->stream;
    HMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&f->up_st, cudaStreamNonBlocking));
    HMOE_CUDA_CHECK(cudaEventCreateWithFlags(&f->ev, cudaEventDisableTiming));
    GF_CUBLAS(cublasCreate(&f->blas));
    GF_CUBLAS(cublasSetStream(f->blas, f->st));
    GF_CUBLAS(cublasSetMathMode(f->blas, CUBLAS_PEDANTIC_MATH)); /* fp32 GEMMs stay fp32 */

    /* plan and the dense-part check before any large allocation */
    const gf_ws_plan wp = ws_plan(f);
    const uint64_t e_dense = est_dense(f), e_cache = cache_bytes_of(f), e_ws = ws_bytes_of(f, wp);
    if (f->budget && e_dense + e_cache + e_ws > f->budget)
        return hmoe_fail(HMOE_E_NOMEM,
                         "VRAM budget %.2f GiB is too small: dense weights %.2f GiB + caches %.2f "
                         "GiB (max_ctx %d) + workspace %.2f GiB = %.2f GiB before any expert\n"
                         "hint: raise --vram-budget to at least %.1f GiB, lower --ctx, or use "
                         "--vram-budget 0 for no limit",
                         f->budget / GIB, e_dense / GIB, e_cache / GIB, f->max_ctx, e_ws / GIB,
                         (e_dense + e_cache + e_ws) / GIB,
                         ceil((e_dense + e_cache + e_ws) / GIB * 10 + 1) / 10);

    /* dense weights and small per-layer parameters */
    f->lay = (gf_layer *)calloc((size_t)f->L, sizeof(gf_layer));
    if (!f->lay) return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    GF_CHECK(upload_w(f, m->lm_head.dtype != HMOE_DT_NONE ? &m->lm_head : &m->embed, &f->lm));
    f->dense_bytes += f->lm.bytes;
    std::vector<float> hs((size_t)2 * f->H + 2 * f->D + 3 * f->Hv + f->dv + (size_t)f->cd * f->K +
                          8);
    for (int l = 0; l < f->L; l++) {
        const struct hmoe_layer_w *w = &m->layers[l];
        gf_layer *ly = &f->lay[l];
        ly->full = c->layer_types[l] == HMOE_LAYER_FULL;
        ly->moe = c->layer_is_moe[l] != 0;
        gf_w *ws[] = {&ly->q,  &ly->k,   &ly->v,      &ly->o,     &ly->qkvz,
                      &ly->ba, &ly->out, &ly->router, &ly->sgate, &ly->sg,
                      &ly->su, &ly->sd,  &ly->mg,     &ly->mu,    &ly->md};
        const struct hmoe_tensor *ts[] = {
            &w->q_proj,     &w->k_proj,      &w->v_proj,   &w->o_proj,      &w->in_proj_qkvz,
            &w->in_proj_ba, &w->out_proj,    &w->router,   &w->shared_gate, &w->shared.gate,
            &w->shared.up,  &w->shared.down, &w->mlp.gate, &w->mlp.up,      &w->mlp.down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            const int wanted = i < 4 ? ly->full : i < 7 ? !ly->full : i < 12 ? ly->moe : !ly->moe;
            if (!wanted || (i >= 8 && i < 12 && f->Ish == 0)) continue;
            GF_CHECK(upload_w(f, ts[i], ws[i]));
            f->dense_bytes += ws[i]->bytes;
        }
        /* small params: in_norm, post_norm [H]; q_norm, k_norm [D]; dt_bias, nea [Hv]; lin_norm
         * [dv]; conv_w [cd*K] */
        float *h = hs.data();
        size_t o = 0;
        read_small(&w->input_norm, f->H, 1.f, h + o);
        o += f->H;
        read_small(&w->post_norm, f->H, 1.f, h + o);
        o += f->H;
        const size_t o_q = o;
        if (ly->full) {
            read_small(&w->q_norm, f->D, 1.f, h + o);
            read_small(&w->k_norm, f->D, 1.f, h + o + f->D);
        }
        o += 2 * (size_t)f->D;
        const size_t o_l = o;
        if (!ly->full) {
            read_small(&w->dt_bias, f->Hv, 0.f, h + o);
            read_small(&w->A_log, f->Hv, 0.f, h + o + f->Hv);
            for (int i = 0; i < f->Hv; i++)
                h[o + f->Hv + i] = -expf(h[o + f->Hv + i]);
            read_small(&w->lin_norm, f->dv, 0.f, h + o + 2 * f->Hv);
            read_small(&w->conv1d, (int64_t)f->cd * f->K, 0.f, h + o + 2 * f->Hv + f->dv);
        }
        o += 2 * (size_t)f->Hv + f->dv + (size_t)f->cd * f->K;
        void *p;
        GF_CHECK(dmalloc(f, o * 4, &p, &f->dense_bytes));
        GF_CHECK(hmoe_gpu_upload(f->g, p, h, o * 4));
        ly->small = (float *)p;
        ly->in_norm = ly->small;
        ly->post_norm = ly->small + f->H;
        ly->q_norm = ly->small + o_q;
        ly->k_norm = ly->small + o_q + f->D;
        ly->dt_bias = ly->small + o_l;
        ly->nea = ly->small + o_l + f->Hv;
        ly->lin_norm = ly->small + o_l + 2 * f->Hv;
        ly->conv_w = ly->small + o_l + 2 * f->Hv + f->dv;
        /* caches of the n_seq sequences, side by side (strides kvs, css, rss) */
        const size_t ns = (size_t)f->n_seq;
        if (ly->full) {
            GF_CHECK(dmalloc(f, ns * f->kvs * 4, &p, &f->cache_bytes));
            ly->kc = (float *)p;
            GF_CHECK(dmalloc(f, ns * f->kvs * 4, &p, &f->cache_bytes));
            ly->vc = (float *)p;
        } else {
            GF_CHECK(dmalloc(f, ns * f->css * 4, &p, &f->cache_bytes));
            ly->cstate = (float *)p;
            GF_CHECK(dmalloc(f, ns * f->rss * 4, &p, &f->cache_bytes));
            ly->rstate = (float *)p;
        }
    }
    {
        std::vector<float> fn((size_t)f->H), inv((size_t)(f->rot / 2 + 1));
        read_small(&m->final_norm, f->H, 1.f, fn.data());
        for (int j = 0; j < f->rot / 2; j++)
            inv[j] = 1.0f / powf(c->rope_theta, (float)(2 * j) / (float)f->rot);
        void *p;
        GF_CHECK(dmalloc(f, (size_t)f->H * 4, &p, &f->dense_bytes));
        f->d_final_norm = (float *)p;
        GF_CHECK(hmoe_gpu_upload(f->g, p, fn.data(), (size_t)f->H * 4));
        GF_CHECK(dmalloc(f, inv.size() * 4, &p, &f->dense_bytes));
        f->d_inv_freq = (float *)p;
        GF_CHECK(hmoe_gpu_upload(f->g, p, inv.data(), inv.size() * 4));
    }

    /* workspace */
    const size_t T = ws_rows(f), H = (size_t)f->H, MB = FW_MAXB;
    WS(f->d_pos, 64);
    WS(f->d_bat, FW_BAT_INTS);
    WS(f->d_x0, T * H);
    WS(f->d_h, T * H);
    WS(f->d_xn, T * H);
    WS(f->d_blk, T * H);
    WS(f->d_proj, T * wp.proj);
    WS(f->d_kb, T * f->Hkv * f->D);
    WS(f->d_vb, T * f->Hkv * f->D);
    WS(f->d_q, T * f->Hq * f->D);
    WS(f->d_gate, T * f->Hq * f->D);
    WS(f->d_ao, T * wp.ao);
    WS(f->d_sc, MB * f->Hq * f->max_ctx);
    WS(f->d_part, MB * f->Hq * FW_ATTN_SPLIT * (f->D + 2));
    WS(f->d_mixed, T * f->cd);
    WS(f->d_conv, T * f->cd);
    WS(f->d_z, T * f->vd);
    WS(f->d_ba, T * 2 * f->Hv);
    WS(f->d_beta, T * f->Hv);
    WS(f->d_gg, T * f->Hv);
    WS(f->d_rlog, T * f->E);
    WS(f->d_ti, T * f->topk);
    WS(f->d_tw, T * f->topk);
    WS(f->d_sg, T * wp.sh);
    WS(f->d_su, T * wp.sh);
    WS(f->d_sact, T * wp.sh);
    WS(f->d_sy, T * H);
    WS(f->d_sgl, T);
    WS(f->d_host, T * H);
    WS(f->d_logits, MB * f->V);
    WS(f->d_wscr, wp.wscr);
    WS(f->d_act, MB * f->topk * f->ex.I);
    WS(f->d_ye, MB * f->topk * H);
    WS(f->d_act1, MB * (f->topk + 1) * f->ex.I);
    WS(f->d_cnt, 64);
    HMOE_CUDA_CHECK(cudaMemsetAsync(f->d_cnt, 0, 64 * 4, f->st));
    WS(f->d_xs, wp.ea * H);
    WS(f->d_gu, wp.ea * 2 * f->ex.I);
    WS(f->d_pact, wp.ea * f->ex.I);
    WS(f->d_py, wp.ea * H);
    WS(f->d_rows, wp.ea);
    WS(f->d_perm, wp.ea);
    WS(f->d_cslots, f->E);
    WS(f->d_items, 4 * ((size_t)f->E + wp.ea / 64 + 1));
    WS(f->d_ptrs, (size_t)f->E * 6 * sizeof(void *) / 4);
    PIN(f->h_pos, 16);
    PIN(f->h_bat, FW_BAT_INTS);
    PIN(f->h_x0, T * H);
    PIN(f->h_xn, T * H);
    PIN(f->h_out, T * H);
    PIN(f->h_logits, MB * f->V);
    PIN(f->h_ti, wp.ea);
    PIN(f->h_tw, wp.ea);
    PIN(f->h_idx, wp.ea);
    PIN(f->h_w, wp.ea);
    PIN(f->h_rows, wp.ea);
    PIN(f->h_perm, wp.ea);
    PIN(f->h_cslots, f->E);
    PIN(f->h_items, 4 * ((size_t)f->E + wp.ea / 64 + 1));
    PIN(f->h_ptrs, (size_t)f->E * 6 * sizeof(void *) / 4);
    f->h_ge = (float *)calloc((size_t)f->ex.I * 2 + H + 3, sizeof(float));
    if (!f->h_ge) return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    f->h_ue = f->h_ge + f->ex.I + 1;
    f->h_ye = f->h_ue + f->ex.I + 1;

    /* routed experts: as many as fit, the same count per MoE layer, lowest ids first */
    f->h_slot = (int *)malloc((size_t)f->L * (f->E > 0 ? f->E : 1) * sizeof(int));
    if (!f->h_slot) return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    for (int i = 0; i < f->L * f->E; i++)
        f->h_slot[i] = -1;
    if (f->n_moe) {
        f->fmt = pick_ex_format(f);
        const int64_t n = (int64_t)f->H * f->ex.I;
        fw_ex_desc *d = &f->ex;
        d->fmt = f->fmt;
        d->H = f->H;
        d->k = f->topk;
        if (f->fmt == FW_EX_NF4) {
            d->o_up = (int64_t)al256((size_t)n / 2);
            d->o_down = 2 * d->o_up;
            d->o_ag = 3 * d->o_up;
            const int64_t ab = (int64_t)al256((size_t)n / 64 * 4);
            d->o_au = d->o_ag + ab;
            d->o_ad = d->o_au + ab;
            d->slot_bytes = d->o_ad + ab;
        } else {
            d->o_up = (int64_t)al256((size_t)n * (f->fmt == FW_EX_F32 ? 4 : 2));
            d->o_down = 2 * d->o_up;
            d->slot_bytes = 3 * d->o_up;
        }
        f->ex_bytes = (uint64_t)d->slot_bytes;
        f->n_total_ex = f->n_moe * f->E;
        const uint64_t used = f->dense_bytes + f->cache_bytes + f->ws_bytes;
        int64_t slots = f->n_total_ex;
        if (f->budget) {
            const uint64_t left = f->budget > used ? f->budget - used : 0;
            if ((int64_t)(left / f->ex_bytes) < slots) slots = (int64_t)(left / f->ex_bytes);
        }
        const int per = (int)(slots / f->n_moe);
        int extra = (int)(slots % f->n_moe), s = 0;
        for (int l = 0; l < f->L; l++) {
            if (!f->c->layer_is_moe[l]) continue;
            const int nl = per + (extra > 0 ? 1 : 0);
            if (extra > 0) extra--;
            for (int e = 0; e < nl && e < f->E; e++)
                f->h_slot[(size_t)l * f->E + e] = s++;
            f->lay[l].n_res = nl < f->E ? nl : f->E;
        }
        f->n_res = s;
        void *p = NULL;
        if (s) GF_CHECK(dmalloc(f, (size_t)s * f->ex_bytes, &p, NULL));
        f->d_pool = (uint8_t *)p;
        d->pool = f->d_pool;
        GF_CHECK(dmalloc(f, (size_t)f->L * f->E * sizeof(int), &p, &f->ws_bytes));
        f->d_slot = (int *)p;
        GF_CHECK(hmoe_gpu_upload(f->g, f->d_slot, f->h_slot, (size_t)f->L * f->E * sizeof(int)));
        for (int l = 0; l < f->L; l++)
            f->lay[l].d_slot = f->d_slot + (size_t)l * f->E;
        GF_CHECK(upload_experts(f));
    }
    f->all_res = f->n_res == f->n_total_ex;
    plan_dmv(f);
    for (int s = 0; s < f->n_seq; s++)
        hmoe_gfwd_seq_reset(f, s);
    return hmoe_gpu_sync(f->g);
}

extern "C" enum hmoe_status hmoe_gfwd_init(const struct hmoe_model *m, int device, int max_ctx,
                                           uint64_t vram_budget, enum hmoe_gpu_absmax absmax,
                                           struct hmoe_gfwd **out)
{
    return hmoe_gfwd_init_seqs(m, device, max_ctx, 1, vram_budget, absmax, out);
}

extern "C" enum hmoe_status hmoe_gfwd_init_seqs(const struct hmoe_model *m, int device, int max_ctx,
                                                int n_seq, uint64_t vram_budget,
                                                enum hmoe_gpu_absmax absmax, struct hmoe_gfwd **out)
{
    if (!m || !out) return hmoe_fail(HMOE_E_INVAL, "hmoe_gfwd_init: NULL argument");
    *out = NULL;
    const struct hmoe_config *c = &m->cfg;
    if (max_ctx < 0) return hmoe_fail(HMOE_E_INVAL, "hmoe_gfwd_init: max_ctx %d < 0", max_ctx);
    if (n_seq < 1 || n_seq > 4096)
        return hmoe_fail(HMOE_E_INVAL, "hmoe_gfwd_init: %d sequences (1..4096)", n_seq);
    if (max_ctx == 0) {
        max_ctx = c->max_position_embeddings > 0 ? c->max_position_embeddings : 4096;
        if (max_ctx > 4096) max_ctx = 4096;
    }
    /* the CPU forward pass validates the config and every tensor shape (its caches for one
     * token are small) */
    {
        struct hmoe_fwd *chk = NULL;
        GF_CHECK(hmoe_fwd_init(m, 1, &chk));
        hmoe_fwd_free(chk);
    }
    if (hmoe_gpu_device_count() == 0) return hmoe_fail(HMOE_E_CUDA, "no CUDA device found");
    if (absmax != HMOE_GPU_ABSMAX_F32)
        return hmoe_fail(HMOE_E_UNSUPPORTED,
                         "CUDA forward: NF4 absmax is kept as fp32 "
                         "(HMOE_GPU_ABSMAX_F32); 8-bit codes are not implemented");
    struct hmoe_gfwd *f = new (std::nothrow) hmoe_gfwd();
    if (!f) return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    f->m = m;
    f->c = c;
    f->absmax = absmax;
    f->max_ctx = max_ctx;
    f->budget = vram_budget;
    f->graphs_on = 1;
    f->prefill_mode = 1;
    {
        const char *e = getenv("HMOE_DEC_MV"), *p = getenv("HMOE_PDL");
        f->dmv_on = !(e && !strcmp(e, "0"));
        f->pdl = !(p && !strcmp(p, "0"));
    }
    f->H = c->hidden_size;
    f->V = c->vocab_size;
    f->L = c->num_layers;
    f->Hq = c->num_heads;
    f->Hkv = c->num_kv_heads;
    f->D = c->head_dim;
    f->rot = c->rotary_dim;
    f->Hk = c->linear_num_key_heads;
    f->Hv = c->linear_num_value_heads;
    f->dk = c->linear_key_head_dim;
    f->dv = c->linear_value_head_dim;
    f->K = c->linear_conv_kernel_dim;
    f->kd = f->Hk * f->dk;
    f->vd = f->Hv * f->dv;
    f->cd = 2 * f->kd + f->vd;
    f->qkvz_dim = 2 * f->kd + 2 * f->vd;
    f->E = c->num_experts;
    f->topk = c->num_experts_per_tok;
    f->Ish = c->shared_expert_intermediate_size;
    f->Imlp = c->intermediate_size;
    f->ex.I = c->moe_intermediate_size;
    for (int l = 0; l < f->L; l++) {
        if (c->layer_types[l] == HMOE_LAYER_FULL)
            f->n_full++;
        else
            f->n_lin++;
        f->n_moe += c->layer_is_moe[l] != 0;
    }
    if (!f->n_moe) f->E = f->topk = f->ex.I = 0;
    if (!f->n_lin) f->Hk = f->Hv = f->dk = f->dv = f->K = f->kd = f->vd = f->cd = f->qkvz_dim = 0;
    if (!f->n_full) f->Hq = f->Hkv = f->D = f->rot = 0;
    f->n_seq = n_seq;
    f->spos.assign((size_t)n_seq, 0);
    f->sbroken.assign((size_t)n_seq, 0);
    f->kvs = (int64_t)f->Hkv * max_ctx * f->D;
    f->css = (int64_t)f->cd * f->K;
    f->rss = (int64_t)f->Hv * f->dk * f->dv;
    f->gdn_bat = !f->n_lin || fw_pf_gdn_decode_ok(f->Hk, f->Hv, f->dk, f->dv, f->K);
    if (n_seq > 1 && !f->gdn_bat) {
        delete f;
        return hmoe_fail(HMOE_E_UNSUPPORTED,
                         "CUDA forward: several sequences need the batched GDN decode kernel "
                         "(key head dim 16/32/64/128, value head dim <= 256, conv <= 8)");
    }
    if (f->n_moe && (f->E > 1024 || f->topk > 32)) {
        delete f;
        return hmoe_fail(HMOE_E_UNSUPPORTED, "CUDA forward: %d experts top-%d (at most 1024, 32)",
                         c->num_experts, c->num_experts_per_tok);
    }
    f->tc = max_ctx < (vram_budget ? 1024 : 4096) ? max_ctx : (vram_budget ? 1024 : 4096);
    f->ex_chunk = vram_budget ? 8 : 32;
    if (f->E && f->ex_chunk > f->E) f->ex_chunk = f->E;
    if (f->ex_chunk < 1) f->ex_chunk = 1;
    enum hmoe_status st = init_inner(f, device);
    if (st) {
        hmoe_gfwd_free(f);
        return st;
    }
    *out = f;
    return HMOE_OK;
}

extern "C" void hmoe_gfwd_free(struct hmoe_gfwd *f)
{
    if (!f) return;
    if (f->g) (void)cudaStreamSynchronize(f->st);
    for (int i = 0; i < GF_NBUCKET; i++)
        if (f->gexec[i]) cudaGraphExecDestroy(f->gexec[i]);
    if (f->lay) {
        for (int l = 0; l < f->L; l++) {
            gf_layer *ly = &f->lay[l];
            gf_w *ws[] = {&ly->q,  &ly->k,   &ly->v,      &ly->o,     &ly->qkvz,
                          &ly->ba, &ly->out, &ly->router, &ly->sgate, &ly->sg,
                          &ly->su, &ly->sd,  &ly->mg,     &ly->mu,    &ly->md};
            for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
                free_w(ws[i]);
        }
        free(f->lay);
    }
    free_w(&f->lm);
    for (void *p : f->allocs)
        (void)cudaFree(p);
    void *pins[] = {f->h_pos,  f->h_x0,     f->h_xn,           f->h_out,   f->h_logits,
                    f->h_ti,   f->h_tw,     f->h_idx,          f->h_w,     f->h_rows,
                    f->h_perm, f->h_cslots, (void *)f->h_ptrs, f->h_items, f->h_bat};
    for (size_t i = 0; i < sizeof pins / sizeof pins[0]; i++)
        if (pins[i]) (void)cudaFreeHost(pins[i]);
    free(f->h_ge);
    free(f->h_slot);
    if (f->blas) cublasDestroy(f->blas);
    if (f->ev) cudaEventDestroy(f->ev);
    if (f->up_st) cudaStreamDestroy(f->up_st);
    hmoe_gpu_close(f->g);
    delete f;
}

extern "C" void hmoe_gfwd_seq_reset(struct hmoe_gfwd *f, int seq)
{
    if (!f || seq < 0 || seq >= f->n_seq) return;
    f->spos[seq] = 0;
    f->sbroken[seq] = 0;
    for (int l = 0; l < f->L; l++) {
        gf_layer *ly = &f->lay[l];
        if (ly->cstate) (void)cudaMemsetAsync(ly->cstate + seq * f->css, 0, f->css * 4, f->st);
        if (ly->rstate) (void)cudaMemsetAsync(ly->rstate + seq * f->rss, 0, f->rss * 4, f->st);
    }
    (void)cudaStreamSynchronize(f->st);
}

extern "C" void hmoe_gfwd_reset(struct hmoe_gfwd *f)
{
    hmoe_gfwd_seq_reset(f, 0);
}

extern "C" int hmoe_gfwd_seq_pos(const struct hmoe_gfwd *f, int seq)
{
    return f && seq >= 0 && seq < f->n_seq ? f->spos[seq] : 0;
}

extern "C" int hmoe_gfwd_pos(const struct hmoe_gfwd *f)
{
    return hmoe_gfwd_seq_pos(f, 0);
}

extern "C" int hmoe_gfwd_n_seq(const struct hmoe_gfwd *f)
{
    return f ? f->n_seq : 0;
}

extern "C" void hmoe_gfwd_set_moe_hook(struct hmoe_gfwd *f, const struct hmoe_moe_hook *hook)
{
    if (!f) return;
    if (hook && hook->routed) {
        f->hook = *hook;
        f->has_hook = 1;
    } else {
        memset(&f->hook, 0, sizeof f->hook);
        f->has_hook = 0;
    }
}

extern "C" void hmoe_gfwd_get_budget(const struct hmoe_gfwd *f, struct hmoe_gfwd_budget *b)
{
    memset(b, 0, sizeof *b);
    b->budget = f->budget;
    b->dense = f->dense_bytes;
    b->caches = f->cache_bytes;
    b->workspace = f->ws_bytes;
    b->experts = (uint64_t)f->n_res * f->ex_bytes;
    b->expert_bytes = f->ex_bytes;
    b->n_resident = f->n_res;
    b->n_experts = f->n_total_ex;
}

extern "C" void hmoe_gfwd_print_budget(const struct hmoe_gfwd *f, FILE *fp)
{
    struct hmoe_gfwd_budget b;
    hmoe_gfwd_get_budget(f, &b);
    const uint64_t tot = b.dense + b.caches + b.workspace + b.experts;
    if (b.budget)
        fprintf(fp, "vram budget %.2f GiB (%s)\n", b.budget / GIB, hmoe_gpu_describe(f->g));
    else
        fprintf(fp, "vram budget unlimited (%s)\n", hmoe_gpu_describe(f->g));
    fprintf(fp, "  dense weights %.3f GiB (embedding table stays in host memory)\n", b.dense / GIB);
    fprintf(fp,
            "  caches        %.3f GiB (%d sequence%s: KV f32 for %d tokens, conv + recurrent "
            "states)\n",
            b.caches / GIB, f->n_seq, f->n_seq > 1 ? "s" : "", f->max_ctx);
    fprintf(fp, "  workspace     %.3f GiB (prefill chunk %d tokens)\n", b.workspace / GIB, f->tc);
    fprintf(fp,
            "  expert cache  %.3f GiB (%llu bytes): %d experts of %d resident (%.3f MiB each, "
            "%s; same count per layer, lowest ids first)\n",
            b.experts / GIB, (unsigned long long)b.experts, b.n_resident, b.n_experts,
            b.expert_bytes / 1048576.0,
            f->fmt == FW_EX_NF4   ? "NF4 + f32 absmax"
            : f->fmt == FW_EX_F32 ? "f32"
                                  : "bf16");
    fprintf(fp, "  total         %.3f GiB (%llu bytes)\n", tot / GIB, (unsigned long long)tot);
}

extern "C" int hmoe_gfwd_expert_resident(const struct hmoe_gfwd *f, int layer, int expert)
{
    if (!f || layer < 0 || layer >= f->L || expert < 0 || expert >= f->E) return 0;
    return f->h_slot[(size_t)layer * f->E + expert] >= 0;
}

extern "C" void hmoe_gfwd_set_graphs(struct hmoe_gfwd *f, int on)
{
    if (!f) return;
    f->graphs_on = on != 0;
    for (int i = 0; i < GF_NBUCKET && !on; i++)
        if (f->gexec[i]) {
            cudaGraphExecDestroy(f->gexec[i]);
            f->gexec[i] = NULL;
        }
}

extern "C" enum hmoe_status hmoe_gfwd_set_prefill(struct hmoe_gfwd *f, enum hmoe_gfwd_prefill mode)
{
    if (!f || mode < HMOE_PREFILL_TOKENS || mode > HMOE_PREFILL_BF16)
        return hmoe_fail(HMOE_E_INVAL, "hmoe_gfwd_set_prefill: bad mode %d", (int)mode);
    GF_CUBLAS(cublasSetMathMode(f->blas, mode >= HMOE_PREFILL_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                   : CUBLAS_PEDANTIC_MATH));
    f->prefill_mode = (int)mode;
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gfwd_set_decode(struct hmoe_gfwd *f, enum hmoe_gfwd_decode mode)
{
    if (!f || (mode != HMOE_DECODE_EXACT && mode != HMOE_DECODE_FAST))
        return hmoe_fail(HMOE_E_INVAL, "hmoe_gfwd_set_decode: bad mode %d", (int)mode);
    if (f->decode_fast != (mode == HMOE_DECODE_FAST)) {
        const int on = f->graphs_on;
        hmoe_gfwd_set_graphs(f, 0); /* the graphs hold the previous kernels */
        hmoe_gfwd_set_graphs(f, on);
        f->decode_fast = mode == HMOE_DECODE_FAST;
    }
    return HMOE_OK;
}

extern "C" int hmoe_gfwd_decode_parse(const char *s)
{
    if (s && !strcmp(s, "exact")) return HMOE_DECODE_EXACT;
    if (s && !strcmp(s, "fast")) return HMOE_DECODE_FAST;
    return -1;
}

extern "C" int hmoe_gfwd_prefill_parse(const char *s)
{
    static const char *const names[] = {"tokens", "fp32", "tf32", "bf16"};
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

extern "C" int hmoe_parse_bytes(const char *s, uint64_t *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isfinite(v)) return -1;
    double mul = 1;
    if (*end) {
        const char u = (char)(*end >= 'a' ? *end - 32 : *end);
        if (u == 'K')
            mul = 1024.0;
        else if (u == 'M')
            mul = 1048576.0;
        else if (u == 'G')
            mul = GIB;
        else if (u == 'T')
            mul = GIB * 1024;
        else
            return -1;
        end++;
        if (!strcmp(end, "iB") || !strcmp(end, "ib") || !strcmp(end, "B") || !*end) {
        } else
            return -1;
    }
    const double b = v * mul;
    if (b > 1.8e19) return -1;
    *out = (uint64_t)b;
    return 0;
}
