/* gpu_worker/cuda/norm.cu: the (1+w) RMSNorm and the gated RMSNorm, one warp per row
 * (rows of any length; x and y may alias). */
#include "norm.cuh"

template <bool GATED>
__global__ void __launch_bounds__(256) k_rmsnorm(const float *x, const float *z, const uint16_t *w,
                                                 float *y, int rows, int dim, float eps)
{
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (int64_t)row * dim;
    float ss = 0.f;
    for (int i = lane; i < dim; i += 32) ss = fmaf(xr[i], xr[i], ss);
    ss = hmoe_warp_sum(ss);
    const float inv = rsqrtf(ss / (float)dim + eps);
    float *yr = y + (int64_t)row * dim;
    for (int i = lane; i < dim; i += 32) {
        const float wv = __uint_as_float((uint32_t)w[i] << 16);
        yr[i] = GATED ? hmoe_norm_gated(xr[i], inv, wv, z[(int64_t)row * dim + i])
                      : hmoe_norm1p(xr[i], inv, wv);
    }
}

static enum hmoe_status launch(struct hmoe_gpu *g, const float *x, const float *z,
                               const uint16_t *w, float *y, int rows, int dim, float eps)
{
    if (rows < 0 || dim <= 0 || !(eps >= 0.0f))
        return hmoe_fail(HMOE_E_INVAL, "rmsnorm: rows %d dim %d eps %g", rows, dim, (double)eps);
    if (rows == 0) return HMOE_OK;
    const unsigned grid = (unsigned)((rows + 7) / 8);
    if (z)
        k_rmsnorm<true><<<grid, 256, 0, g->stream>>>(x, z, w, y, rows, dim, eps);
    else
        k_rmsnorm<false><<<grid, 256, 0, g->stream>>>(x, z, w, y, rows, dim, eps);
    HMOE_CUDA_LAUNCHED();
    return HMOE_OK;
}

extern "C" enum hmoe_status hmoe_gpu_rmsnorm(struct hmoe_gpu *g, const float *d_x,
                                             const uint16_t *d_w, float *d_y, int rows, int dim,
                                             float eps)
{
    return launch(g, d_x, NULL, d_w, d_y, rows, dim, eps);
}

extern "C" enum hmoe_status hmoe_gpu_rmsnorm_gated(struct hmoe_gpu *g, const float *d_x,
                                                   const float *d_z, const uint16_t *d_w,
                                                   float *d_y, int rows, int dim, float eps)
{
    if (!d_z) return hmoe_fail(HMOE_E_INVAL, "rmsnorm_gated: no gate");
    return launch(g, d_x, d_z, d_w, d_y, rows, dim, eps);
}
