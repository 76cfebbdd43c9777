/* GPU RMSNorms (gpu_worker/cuda/norm.cu) against float64 references of MODEL.md §1.2 (1+w) and
 * §1.3 (gated, fp32 throughout), for row lengths 2048, 256, 128 and 100 and in place. */
#include "gpu_test_util.h"

static void check(struct hmoe_gpu *g, int rows, int dim, int gated, int inplace)
{
    size_t n = (size_t)rows * dim;
    float *x = malloc(n * 4), *z = malloc(n * 4), *y = malloc(n * 4);
    double *ref = malloc(n * 8);
    uint16_t *w = malloc((size_t)dim * 2);
    for (size_t i = 0; i < n; i++) {
        x[i] = gt_uniform() * 3.0f + (i % 7 == 0 ? 2.0f : 0.0f);
        z[i] = gt_uniform() * 4.0f;
    }
    for (int i = 0; i < dim; i++) w[i] = gt_bf16((gated ? 1.0f : 0.0f) + 0.2f * gt_uniform());
    const double eps = 1e-6;
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * (double)x[r * dim + i];
        double inv = 1.0 / sqrt(ss / dim + eps);
        for (int i = 0; i < dim; i++) {
            double xv = (double)x[r * dim + i] * inv, wv = (double)gt_bf16_f(w[i]);
            double zv = z[r * dim + i];
            ref[r * dim + i] = gated ? wv * xv * (zv / (1.0 + exp(-zv))) : xv * (1.0 + wv);
        }
    }
    float *d_x = gt_dev(g, x, n * 4), *d_z = gt_dev(g, z, n * 4);
    float *d_y = inplace ? d_x : gt_dev(g, NULL, n * 4);
    uint16_t *d_w = gt_dev(g, w, (size_t)dim * 2);
    enum hmoe_status st = gated ? hmoe_gpu_rmsnorm_gated(g, d_x, d_z, d_w, d_y, rows, dim, 1e-6f)
                                : hmoe_gpu_rmsnorm(g, d_x, d_w, d_y, rows, dim, 1e-6f);
    if (!st) st = hmoe_gpu_sync(g);
    CHECKF(st == HMOE_OK, "%s", hmoe_err_msg());
    hmoe_gpu_download(g, y, d_y, n * 4);
    double err = gt_rel_err(y, ref, n);
    CHECKF(err < 1e-5, "%s rows %d dim %d%s: %.3g", gated ? "gated" : "1+w", rows, dim,
           inplace ? " in place" : "", err);
    hmoe_gpu_free(g, d_x);
    hmoe_gpu_free(g, d_z);
    if (!inplace) hmoe_gpu_free(g, d_y);
    hmoe_gpu_free(g, d_w);
    free(x);
    free(z);
    free(y);
    free(ref);
    free(w);
}

int main(void)
{
    struct hmoe_gpu *g = gt_open();
    check(g, 3, 2048, 0, 0);
    check(g, 17, 256, 0, 1);
    check(g, 1, 100, 0, 0);
    check(g, 32, 128, 1, 0);
    check(g, 9, 100, 1, 1);
    CHECK(hmoe_gpu_rmsnorm(g, NULL, NULL, NULL, 1, 0, 1e-6f) == HMOE_E_INVAL);
    CHECK(hmoe_gpu_rmsnorm_gated(g, NULL, NULL, NULL, NULL, 1, 8, 1e-6f) == HMOE_E_INVAL);
    CHECK(hmoe_gpu_rmsnorm(g, NULL, NULL, NULL, 0, 8, 1e-6f) == HMOE_OK);
    hmoe_gpu_close(g);
    TEST_DONE();
}
