/* GPU gated attention decode (gpu_worker/cuda/attn.cu) against a float64 reference of MODEL.md
 * §1.4 for one query token: GQA head mapping, cache stride (cap > T), chunk boundaries
 * (T = 1, 255..257, 1000), peaky and flat softmax, with and without the sigmoid gate. */
#include "gpu_test_util.h"

static void check(struct hmoe_gpu *g, int Hq, int Hkv, int D, int T, int cap, float qscale,
                  int gated)
{
    size_t nq = (size_t)Hq * D, nkv = (size_t)Hkv * cap * D;
    float *q = malloc(nq * 4), *gate = malloc(nq * 4), *k = malloc(nkv * 4), *v = malloc(nkv * 4);
    float *o = malloc(nq * 4);
    double *ref = malloc(nq * 8), *p = malloc((size_t)T * 8);
    for (size_t i = 0; i < nq; i++) {
        q[i] = gt_uniform() * qscale;
        gate[i] = gt_uniform() * 3.0f;
    }
    for (size_t i = 0; i < nkv; i++) {
        k[i] = gt_uniform();
        v[i] = gt_uniform() * 2.0f;
    }
    const double scale = 1.0 / sqrt((double)D);
    for (int h = 0; h < Hq; h++) {
        int gk = h / (Hq / Hkv);
        double mx = -1e300, s = 0;
        for (int t = 0; t < T; t++) {
            double d = 0;
            for (int i = 0; i < D; i++)
                d += (double)q[h * D + i] * (double)k[((size_t)gk * cap + t) * D + i];
            p[t] = d * scale;
            if (p[t] > mx) mx = p[t];
        }
        for (int t = 0; t < T; t++) s += p[t] = exp(p[t] - mx);
        for (int i = 0; i < D; i++) {
            double acc = 0;
            for (int t = 0; t < T; t++) acc += p[t] / s * (double)v[((size_t)gk * cap + t) * D + i];
            if (gated) acc *= 1.0 / (1.0 + exp(-(double)gate[h * D + i]));
            ref[h * D + i] = acc;
        }
    }
    float *d_q = gt_dev(g, q, nq * 4), *d_g = gt_dev(g, gate, nq * 4);
    float *d_k = gt_dev(g, k, nkv * 4), *d_v = gt_dev(g, v, nkv * 4);
    float *d_o = gt_dev(g, NULL, nq * 4);
    float *d_ws = gt_dev(g, NULL, hmoe_gpu_attn_ws_bytes(Hq, D, T));
    enum hmoe_status st = hmoe_gpu_attn_decode(g, d_q, d_k, d_v, gated ? d_g : NULL, d_o, T, cap,
                                               Hq, Hkv, D, (float)scale, d_ws);
    if (!st) st = hmoe_gpu_sync(g);
    CHECKF(st == HMOE_OK, "%s", hmoe_err_msg());
    hmoe_gpu_download(g, o, d_o, nq * 4);
    double err = gt_rel_err(o, ref, nq);
    CHECKF(err < 1e-5, "Hq %d Hkv %d D %d T %d cap %d q*%g gate %d: %.3g", Hq, Hkv, D, T, cap,
           (double)qscale, gated, err);
    hmoe_gpu_free(g, d_q);
    hmoe_gpu_free(g, d_g);
    hmoe_gpu_free(g, d_k);
    hmoe_gpu_free(g, d_v);
    hmoe_gpu_free(g, d_o);
    hmoe_gpu_free(g, d_ws);
    free(q), free(gate), free(k), free(v), free(o), free(ref), free(p);
}

int main(void)
{
    struct hmoe_gpu *g = gt_open();
    check(g, 16, 2, 256, 1, 4, 1.0f, 1);
    check(g, 16, 2, 256, 257, 300, 8.0f, 1);
    check(g, 16, 2, 256, 1000, 1000, 1.0f, 0);
    check(g, 16, 2, 256, 255, 256, 20.0f, 1);
    check(g, 4, 2, 64, 33, 40, 4.0f, 1);
    check(g, 8, 2, 128, 600, 610, 4.0f, 0);
    check(g, 4, 4, 64, 7, 7, 1.0f, 1); /* no GQA */
    CHECK(hmoe_gpu_attn_decode(g, NULL, NULL, NULL, NULL, NULL, 0, 4, 16, 2, 256, 1.0f, NULL) ==
          HMOE_E_INVAL);
    CHECK(hmoe_gpu_attn_decode(g, NULL, NULL, NULL, NULL, NULL, 5, 4, 16, 2, 256, 1.0f, NULL) ==
          HMOE_E_INVAL);
    CHECK(hmoe_gpu_attn_decode(g, NULL, NULL, NULL, NULL, NULL, 1, 4, 16, 3, 256, 1.0f, NULL) ==
          HMOE_E_INVAL);
    CHECK(hmoe_gpu_attn_decode(g, NULL, NULL, NULL, NULL, NULL, 1, 4, 16, 2, 96, 1.0f, NULL) ==
          HMOE_E_UNSUPPORTED);
    hmoe_gpu_close(g);
    TEST_DONE();
}
