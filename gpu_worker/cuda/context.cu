/* gpu_worker/cuda/context.cu: device context (stream, code tables), device memory and copies,
 * and weight upload: NF4 (bnb layout; absmax kept as 8-bit codes or decoded to fp32) or BF16. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "matvec.cuh"

extern "C" int hmoe_gpu_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" enum hmoe_status hmoe_gpu_open(int device, struct hmoe_gpu **out)
{
    *out = NULL;
    int n = hmoe_gpu_device_count();
    if (device < 0 || device >= n)
        return hmoe_fail(HMOE_E_INVAL, "GPU %d: no such device (%d found)", device, n);
    HMOE_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp p;
    HMOE_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    struct hmoe_gpu *g = (struct hmoe_gpu *)calloc(1, sizeof *g);
    if (!g) return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    g->device = device;
    g->n_sm = p.multiProcessorCount;
    g->mv_nf4 = HMOE_GPU_MV_NF4_DEFAULT;
    g->mv_bf16 = HMOE_GPU_MV_BF16_DEFAULT;
    snprintf(g->desc, sizeof g->desc, "%.100s, %d SMs, %.1f GiB, cc %d.%d", p.name, p.multiProcessorCount,
             (double)p.totalGlobalMem / 1073741824.0, p.major, p.minor);
    cudaError_t e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        free(g);
        return hmoe_fail(HMOE_E_CUDA, "cudaStreamCreate: %s", cudaGetErrorString(e));
    }
    *out = g;
    return HMOE_OK;
}

extern "C" void hmoe_gpu_close(struct hmoe_gpu *g)
{
    if (!g) return;
    (void)cudaSetDevice(g->device);
    (void)cudaStreamSynchronize(g->stream);
    for (int i = 0; i < g->n_tables; i++) (void)cudaFree(g->d_tables[i]);
    (void)cudaStreamDestroy(g->stream);
    free(g);
}

extern "C" const char *hmoe_gpu_describe(const struct hmoe_gpu *g)
{
    return g->desc;
}

extern "C" enum hmoe_status hmoe_gpu_malloc(struct hmoe_gpu *g, size_t bytes, void **d_ptr)
{
    *d_ptr = NULL;
    cudaError_t e = cudaMalloc(d_ptr, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *d_ptr = NULL;
        return hmoe_fail(e == cudaErrorMemoryAllocation ? HMOE_E_NOMEM : HMOE_E_CUDA,
                         "cudaMalloc(%zu bytes): %s", bytes, cudaGetErrorString(e));
    }
    return HMOE_OK;
}

extern "C" void hmoe_gpu_free(struct hmoe_gpu *g, void *d_ptr)
{
    if (d_ptr) (void)cudaFree(d_ptr);
}

extern "C" enum hmoe_status hmoe_gpu_upload(struct hmoe_gpu *g, void *d_dst, const void *src,
                                            size_t bytes)
{
    HMOE_CUDA_CHECK(cudaMemcpyAsync(d_dst, src, bytes, cudaMemcpyHostToDevice, g->stream));
    HMOE_CUDA_CHECK(cudaStreamSynchronize(g->stream));
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_download(struct hmoe_gpu *g, void *dst, const void *d_src,
                                              size_t bytes)
{
    HMOE_CUDA_CHECK(cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, g->stream));
    HMOE_CUDA_CHECK(cudaStreamSynchronize(g->stream));
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_memset0(struct hmoe_gpu *g, void *d_dst, size_t bytes)
{
    HMOE_CUDA_CHECK(cudaMemsetAsync(d_dst, 0, bytes, g->stream));
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_sync(struct hmoe_gpu *g)
{
    HMOE_CUDA_CHECK(cudaStreamSynchronize(g->stream));
    HMOE_CUDA_CHECK(cudaGetLastError());
    return HMOE_OK;
}

/* The device copy of a nested code table (shared by every weight that uses the same one). */
static enum hmoe_status nested_table(struct hmoe_gpu *g, const float *code, const float **d_out)
{
    for (int i = 0; i < g->n_tables; i++)
        if (!memcmp(g->tables[i], code, sizeof g->tables[i])) {
            *d_out = g->d_tables[i];
            return HMOE_OK;
        }
    if (g->n_tables == HMOE_GPU_MAX_TABLES)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "more than %d distinct nested_quant_map tables",
                         HMOE_GPU_MAX_TABLES);
    float *d = NULL;
    HMOE_CUDA_CHECK(cudaMalloc(&d, 1024));
    cudaError_t e = cudaMemcpy(d, code, 1024, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        (void)cudaFree(d);
        return hmoe_fail(HMOE_E_CUDA, "nested table upload: %s", cudaGetErrorString(e));
    }
    memcpy(g->tables[g->n_tables], code, 1024);
    g->d_tables[g->n_tables++] = d;
    *d_out = d;
    return HMOE_OK;
}

static size_t align256(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

extern "C" enum hmoe_status hmoe_gpu_weight_upload(struct hmoe_gpu *g, const struct hmoe_tensor *t,
                                                   enum hmoe_gpu_absmax mode,
                                                   struct hmoe_gpu_w **out)
{
    *out = NULL;
    const char *name = t->name ? t->name : "(unnamed)";
    if (t->ndim != 2 || t->shape[0] <= 0 || t->shape[1] <= 0)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: GPU weights must be 2-D", name);
    const int64_t rows = t->shape[0], cols = t->shape[1], n = rows * cols;
    struct hmoe_gpu_w *w = (struct hmoe_gpu_w *)calloc(1, sizeof *w);
    if (!w) return hmoe_fail(HMOE_E_NOMEM, "out of memory");
    w->g = g;
    w->dtype = t->dtype;
    w->rows = rows;
    w->cols = cols;
    enum hmoe_status st = HMOE_OK;
    float *absf = NULL;
    if (t->dtype == HMOE_DT_BF16) {
        if (cols % 8) {
            free(w);
            return hmoe_fail(HMOE_E_UNSUPPORTED, "%s: BF16 cols %lld not a multiple of 8", name,
                             (long long)cols);
        }
        w->bytes = (uint64_t)n * 2;
        st = hmoe_gpu_malloc(g, (size_t)w->bytes, &w->d_buf);
        if (!st) st = hmoe_gpu_upload(g, w->d_buf, (const uint16_t *)t->data + t->elem0, (size_t)w->bytes);
        w->d_w = w->d_buf;
    } else if (t->dtype == HMOE_DT_NF4) {
        const struct hmoe_nf4 *q = t->nf4;
        if (!q || q->blocksize != 64 || cols % 64 || t->elem0 % 64)
            st = hmoe_fail(HMOE_E_UNSUPPORTED,
                           "%s: NF4 on the GPU needs blocksize 64, cols %% 64 == 0 and a view "
                           "starting on a block",
                           name);
        const int64_t b0 = t->elem0 / 64, nb = n / 64;
        int codes = !st && q->absmax_q && mode == HMOE_GPU_ABSMAX_CODES && q->nested_blocksize == 256;
        size_t nib = (size_t)n / 2, o_abs = align256(nib), o_nest = 0, total;
        int64_t g0 = 0, ng = 0;
        if (codes) {
            g0 = b0 / 256;
            ng = (b0 + nb - 1) / 256 - g0 + 1;
            o_nest = align256(o_abs + (size_t)nb);
            total = o_nest + (size_t)ng * 4;
            w->bytes = nib + (uint64_t)nb + (uint64_t)ng * 4;
        } else {
            total = o_abs + (size_t)nb * 4;
            w->bytes = nib + (uint64_t)nb * 4;
        }
        if (!st) st = hmoe_gpu_malloc(g, total, &w->d_buf);
        uint8_t *base = (uint8_t *)w->d_buf;
        if (!st) st = hmoe_gpu_upload(g, base, (const uint8_t *)t->data + t->elem0 / 2, nib);
        if (!st && codes) {
            st = hmoe_gpu_upload(g, base + o_abs, q->absmax_q + b0, (size_t)nb);
            if (!st) st = hmoe_gpu_upload(g, base + o_nest, q->nested_absmax + g0, (size_t)ng * 4);
            if (!st) st = nested_table(g, q->nested_code, &w->d_ncode);
            w->d_absq = base + o_abs;
            w->d_nested = (const float *)(base + o_nest);
            w->nested_offset = q->nested_offset;
            w->nested_shift = (int)(b0 - g0 * 256);
        } else if (!st) {
            absf = (float *)malloc((size_t)nb * 4);
            if (!absf) st = hmoe_fail(HMOE_E_NOMEM, "out of memory");
            for (int64_t b = 0; !st && b < nb; b++) {
                int64_t bb = b0 + b;
                /* bnb: dequantize_blockwise (code * absmax, fp32) + offset, fp32. */
                if (q->absmax_q) {
                    float p = q->nested_code[q->absmax_q[bb]] *
                              q->nested_absmax[bb / q->nested_blocksize];
                    absf[b] = p + q->nested_offset;
                } else {
                    absf[b] = q->absmax_f32[bb];
                }
            }
            if (!st) st = hmoe_gpu_upload(g, base + o_abs, absf, (size_t)nb * 4);
            w->d_absf = (const float *)(base + o_abs);
        }
        if (!st) memcpy(w->code, q->code, sizeof w->code);
        w->d_w = base;
        if (!st) st = hmoe_mv_nf4_prepare(g, w); /* may move everything to a tiled buffer */
    } else {
        st = hmoe_fail(HMOE_E_UNSUPPORTED, "%s: dtype %s is not supported on the GPU", name,
                       hmoe_dtype_name(t->dtype));
    }
    free(absf);
    if (st) {
        hmoe_gpu_free(g, w->d_buf);
        free(w);
        return st;
    }
    *out = w;
    return HMOE_OK;
}

extern "C" void hmoe_gpu_weight_free(struct hmoe_gpu_w *w)
{
    if (!w) return;
    hmoe_gpu_free(w->g, w->d_buf);
    free(w);
}

extern "C" int64_t hmoe_gpu_weight_rows(const struct hmoe_gpu_w *w)
{
    return w->rows;
}

extern "C" int64_t hmoe_gpu_weight_cols(const struct hmoe_gpu_w *w)
{
    return w->cols;
}

extern "C" uint64_t hmoe_gpu_weight_bytes(const struct hmoe_gpu_w *w)
{
    return w->bytes;
}
