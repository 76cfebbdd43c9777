/* Expert kernels on real checkpoints: the committed fixtures (tests/data/tiny-nf4: bnb NF4
 * double-quant experts read from safetensors; tiny-bf16: BF16 experts) and the synthetic model,
 * loaded with hmoe_model_open. Every routed expert of every MoE layer goes into a prepared set;
 * each ISA variant must equal the scalar reference on the model's own tensors (<= 1e-5 of
 * max|ref|), with random top-k routing over several tokens. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/experts.h"
#include "hmoe/experts_synth.h"
#include "hmoe/log.h"
#include "hmoe/model.h"
#include "hmoe_test.h"

#define NTOK 5

static void check_model(const char *dir, int *checked)
{
    struct hmoe_model *m = NULL;
    if (hmoe_model_open(dir, &m) != HMOE_OK) {
        CHECKF(0, "%s: %s", dir, hmoe_err_msg());
        return;
    }
    const struct hmoe_config *c = &m->cfg;
    const int H = c->hidden_size, I = c->moe_intermediate_size, K = c->num_experts_per_tok;
    uint64_t rng = 7;
    float *x = malloc((size_t)NTOK * H * sizeof *x), *ref = malloc((size_t)NTOK * H * sizeof *ref),
          *out = malloc((size_t)NTOK * H * sizeof *out);
    int32_t *idx = malloc((size_t)NTOK * K * sizeof *idx);
    float *wts = malloc((size_t)NTOK * K * sizeof *wts);
    for (int isa = HMOE_ISA_GENERIC; isa < HMOE_ISA_COUNT; isa++) {
        if (!hmoe_experts_isa_supported((enum hmoe_experts_isa)isa)) continue;
        struct hmoe_experts_opts o = {.pool = {.n_threads = 2, .numa_node = -1, .spin_us = 50},
                                      .isa = (enum hmoe_experts_isa)isa,
                                      .max_top_k = K};
        struct hmoe_experts *ex = NULL;
        CHECK(hmoe_experts_init(&o, H, I, &ex) == HMOE_OK);
        if (!ex) break;
        CHECKF(hmoe_experts_add_model(ex, m, 0, c->num_layers, NULL, NULL) == HMOE_OK, "%s: %s",
               dir, hmoe_err_msg());
        CHECK(hmoe_experts_load(ex) == HMOE_OK);
        for (int l = 0; l < c->num_layers; l++) {
            if (!c->layer_is_moe[l]) continue;
            for (int i = 0; i < NTOK * H; i++) x[i] = (hmoe_exsynth_uniform(&rng) - 0.5f) * 4.0f;
            memset(ref, 0, (size_t)NTOK * H * sizeof *ref);
            memset(out, 0, (size_t)NTOK * H * sizeof *out);
            for (int t = 0; t < NTOK; t++)
                for (int k = 0; k < K; k++) {
                    int e, dup;
                    do { /* distinct experts per token, as top-k gives */
                        e = (int)(hmoe_exsynth_rand(&rng) % (uint64_t)c->num_experts);
                        dup = 0;
                        for (int j = 0; j < k; j++) dup |= idx[t * K + j] == e;
                    } while (dup);
                    idx[t * K + k] = e;
                    wts[t * K + k] = hmoe_exsynth_uniform(&rng) / (float)K;
                    CHECK(hmoe_expert_ffn_ref(&m->layers[l].experts[e], 1, x + (size_t)t * H,
                                              &wts[t * K + k], ref + (size_t)t * H) == HMOE_OK);
                }
            CHECK(hmoe_experts_run(ex, l, NTOK, K, x, idx, wts, out) == HMOE_OK);
            double scale = 0, d = 0;
            for (int i = 0; i < NTOK * H; i++) {
                scale = fmax(scale, fabs((double)ref[i]));
                d = fmax(d, fabs((double)ref[i] - (double)out[i]));
            }
            CHECKF(scale > 0 && d <= 1e-5 * scale, "%s layer %d %s: max diff %.3g, max|ref| %.3g",
                   dir, l, hmoe_experts_isa_name((enum hmoe_experts_isa)isa), d, scale);
            (*checked)++;
        }
        hmoe_experts_free(ex);
    }
    free(x);
    free(ref);
    free(out);
    free(idx);
    free(wts);
    hmoe_model_close(m);
}

int main(void)
{
    hmoe_log_init("T", HMOE_LOG_LVL_WARN, 0);
    int checked = 0;
    check_model(HMOE_TEST_DATA "/tiny-nf4", &checked);
    check_model(HMOE_TEST_DATA "/tiny-bf16", &checked);
    check_model("synth:tiny", &checked);
    fprintf(stderr, "%d (model, layer, ISA) combinations checked\n", checked);
    CHECK(checked > 0);
    TEST_DONE();
}
