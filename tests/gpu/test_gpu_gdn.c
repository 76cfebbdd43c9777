/* GPU Gated DeltaNet decode step (gpu_worker/cuda/gdn.cu) against the float64 recurrence of
 * MODEL.md §1.6 step 7 over several steps (state carried), for the 80B head shape and a tiny one. */
#include "gpu_test_util.h"

static void check(struct hmoe_gpu *g, int Hk, int Hv, int dk, int dv, int steps)
{
    size_t ns = (size_t)Hv * dk * dv;
    double *S = calloc(ns, 8);
    float *Sf = malloc(ns * 4), *o = malloc((size_t)Hv * dv * 4);
    double *oref = malloc((size_t)Hv * dv * 8);
    for (size_t i = 0; i < ns; i++) {
        Sf[i] = gt_uniform() * 0.3f;
        S[i] = Sf[i];
    }
    float *d_S = gt_dev(g, Sf, ns * 4);
    float *q = malloc((size_t)Hk * dk * 4), *k = malloc((size_t)Hk * dk * 4);
    float *v = malloc((size_t)Hv * dv * 4), *gg = malloc((size_t)Hv * 4), *beta = malloc((size_t)Hv * 4);
    double *qn = malloc((size_t)dk * 8), *kn = malloc((size_t)dk * 8);
    float *d_q = gt_dev(g, NULL, (size_t)Hk * dk * 4), *d_k = gt_dev(g, NULL, (size_t)Hk * dk * 4);
    float *d_v = gt_dev(g, NULL, (size_t)Hv * dv * 4), *d_g = gt_dev(g, NULL, (size_t)Hv * 4);
    float *d_b = gt_dev(g, NULL, (size_t)Hv * 4), *d_o = gt_dev(g, NULL, (size_t)Hv * dv * 4);
    double worst = 0;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < Hk * dk; i++) {
            q[i] = gt_uniform();
            k[i] = gt_uniform();
        }
        for (int i = 0; i < Hv * dv; i++) v[i] = gt_uniform() * 2.0f;
        for (int h = 0; h < Hv; h++) {
            gg[h] = -2.0f * fabsf(gt_uniform());
            beta[h] = 0.5f + 0.5f * gt_uniform();
        }
        hmoe_gpu_upload(g, d_q, q, (size_t)Hk * dk * 4);
        hmoe_gpu_upload(g, d_k, k, (size_t)Hk * dk * 4);
        hmoe_gpu_upload(g, d_v, v, (size_t)Hv * dv * 4);
        hmoe_gpu_upload(g, d_g, gg, (size_t)Hv * 4);
        hmoe_gpu_upload(g, d_b, beta, (size_t)Hv * 4);
        enum hmoe_status st = hmoe_gpu_gdn_step(g, d_q, d_k, d_v, d_g, d_b, d_S, d_o, Hk, Hv, dk, dv);
        if (!st) st = hmoe_gpu_sync(g);
        CHECKF(st == HMOE_OK, "%s", hmoe_err_msg());
        for (int h = 0; h < Hv; h++) {
            int kh = h / (Hv / Hk);
            double sq = 0, sk = 0;
            for (int i = 0; i < dk; i++) {
                sq += (double)q[kh * dk + i] * (double)q[kh * dk + i];
                sk += (double)k[kh * dk + i] * (double)k[kh * dk + i];
            }
            for (int i = 0; i < dk; i++) {
                qn[i] = (double)q[kh * dk + i] / sqrt(sq + 1e-6) / sqrt((double)dk);
                kn[i] = (double)k[kh * dk + i] / sqrt(sk + 1e-6);
            }
            double *Sh = S + (size_t)h * dk * dv, dec = exp((double)gg[h]);
            for (int j = 0; j < dv; j++) {
                double kv = 0;
                for (int i = 0; i < dk; i++) kv += (Sh[i * dv + j] *= dec) * kn[i];
                double delta = ((double)v[h * dv + j] - kv) * (double)beta[h], out = 0;
                for (int i = 0; i < dk; i++) {
                    Sh[i * dv + j] += kn[i] * delta;
                    out += Sh[i * dv + j] * qn[i];
                }
                oref[h * dv + j] = out;
            }
        }
        hmoe_gpu_download(g, o, d_o, (size_t)Hv * dv * 4);
        worst = fmax(worst, gt_rel_err(o, oref, (size_t)Hv * dv));
    }
    hmoe_gpu_download(g, Sf, d_S, ns * 4);
    double serr = gt_rel_err(Sf, S, ns);
    CHECKF(worst < 1e-5, "Hv %d dk %d: output err %.3g", Hv, dk, worst);
    CHECKF(serr < 1e-5, "Hv %d dk %d: state err %.3g", Hv, dk, serr);
    hmoe_gpu_free(g, d_S);
    hmoe_gpu_free(g, d_q);
    hmoe_gpu_free(g, d_k);
    hmoe_gpu_free(g, d_v);
    hmoe_gpu_free(g, d_g);
    hmoe_gpu_free(g, d_b);
    hmoe_gpu_free(g, d_o);
    free(S), free(Sf), free(o), free(oref), free(q), free(k), free(v), free(gg), free(beta);
    free(qn), free(kn);
}

int main(void)
{
    struct hmoe_gpu *g = gt_open();
    check(g, 16, 32, 128, 128, 4);
    check(g, 2, 4, 32, 32, 3);
    check(g, 4, 8, 64, 64, 2);
    CHECK(hmoe_gpu_gdn_step(g, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 16, 32, 96, 128) ==
          HMOE_E_UNSUPPORTED);
    CHECK(hmoe_gpu_gdn_step(g, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 3, 32, 128, 128) ==
          HMOE_E_INVAL);
    hmoe_gpu_close(g);
    TEST_DONE();
}
