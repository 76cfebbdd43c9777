/* GPU router softmax + top-k (gpu_worker/cuda/router.cu) against a float64 reference: the same
 * experts in the same order, weights within 1e-5, with and without renormalisation. */
#include "gpu_test_util.h"

static void check(struct hmoe_gpu *g, int n_tok, int n_exp, int k, int norm, float scale)
{
    size_t n = (size_t)n_tok * n_exp;
    float *l = malloc(n * 4), *w = malloc((size_t)n_tok * k * 4);
    int32_t *idx = malloc((size_t)n_tok * k * 4);
    for (size_t i = 0; i < n; i++) l[i] = gt_uniform() * scale;
    float *d_l = gt_dev(g, l, n * 4), *d_w = gt_dev(g, NULL, (size_t)n_tok * k * 4);
    int32_t *d_i = gt_dev(g, NULL, (size_t)n_tok * k * 4);
    enum hmoe_status st = hmoe_gpu_router_topk(g, d_l, n_tok, n_exp, k, norm, d_i, d_w);
    if (!st) st = hmoe_gpu_sync(g);
    CHECKF(st == HMOE_OK, "%s", hmoe_err_msg());
    hmoe_gpu_download(g, w, d_w, (size_t)n_tok * k * 4);
    hmoe_gpu_download(g, idx, d_i, (size_t)n_tok * k * 4);
    double *p = malloc((size_t)n_exp * 8);
    char *used = malloc((size_t)n_exp);
    int bad_idx = 0;
    double max_err = 0;
    for (int t = 0; t < n_tok; t++) {
        double m = -1e300, s = 0, sel = 0;
        for (int e = 0; e < n_exp; e++) m = fmax(m, l[t * n_exp + e]);
        for (int e = 0; e < n_exp; e++) s += p[e] = exp((double)l[t * n_exp + e] - m);
        memset(used, 0, (size_t)n_exp);
        int ri[32];
        for (int j = 0; j < k; j++) {
            int b = -1;
            for (int e = 0; e < n_exp; e++)
                if (!used[e] && (b < 0 || p[e] > p[b])) b = e;
            used[b] = 1;
            ri[j] = b;
            sel += p[b] / s;
        }
        for (int j = 0; j < k; j++) {
            bad_idx += idx[t * k + j] != ri[j];
            double rw = p[ri[j]] / s / (norm ? sel : 1.0);
            max_err = fmax(max_err, fabs((double)w[t * k + j] - rw));
        }
    }
    CHECKF(bad_idx == 0, "E %d k %d: %d indices differ", n_exp, k, bad_idx);
    CHECKF(max_err < 1e-5, "E %d k %d norm %d: weight err %.3g", n_exp, k, norm, max_err);
    hmoe_gpu_free(g, d_l);
    hmoe_gpu_free(g, d_w);
    hmoe_gpu_free(g, d_i);
    free(l);
    free(w);
    free(idx);
    free(p);
    free(used);
}

int main(void)
{
    struct hmoe_gpu *g = gt_open();
    check(g, 7, 512, 10, 1, 4.0f);
    check(g, 33, 512, 10, 0, 1.0f);
    check(g, 5, 8, 2, 1, 3.0f);
    check(g, 3, 1000, 32, 1, 6.0f);
    check(g, 2, 37, 32, 1, 2.0f);
    CHECK(hmoe_gpu_router_topk(g, NULL, 1, 1025, 2, 1, NULL, NULL) == HMOE_E_INVAL);
    CHECK(hmoe_gpu_router_topk(g, NULL, 1, 8, 9, 1, NULL, NULL) == HMOE_E_INVAL);
    CHECK(hmoe_gpu_router_topk(g, NULL, 1, 64, 33, 1, NULL, NULL) == HMOE_E_INVAL);
    hmoe_gpu_close(g);
    TEST_DONE();
}
