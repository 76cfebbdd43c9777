/* hmoe_experts_opts.release_source (helper mem): a set loaded with it gives the same bits as one
 * loaded without (fast path, synth:small, every MoE layer, with and without expand_absmax), and
 * the source pages of its experts are given back during the load: the anonymous synth arena
 * reads zero there afterwards (all but the partial pages at each end of every piece: > 60% of
 * the bytes of synth:small's 32 KiB pieces). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/experts.h"
#include "hmoe/synth.h"
#include "hmoe_test.h"

#define NTOK 6

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static struct hmoe_experts *make_set(struct hmoe_model *m, int release, int expand)
{
    const struct hmoe_config *c = &m->cfg;
    struct hmoe_experts_opts o = {.pool = {.n_threads = 2, .numa_node = -1, .spin_us = 0},
                                  .isa = HMOE_ISA_AUTO,
                                  .max_top_k = c->num_experts_per_tok,
                                  .expand_absmax = expand,
                                  .release_source = release};
    struct hmoe_experts *ex = NULL;
    if (hmoe_experts_init(&o, c->hidden_size, c->moe_intermediate_size, &ex) != HMOE_OK)
        return NULL;
    if (hmoe_experts_add_model(ex, m, 0, c->num_layers, NULL, NULL) != HMOE_OK ||
        hmoe_experts_load(ex) != HMOE_OK) {
        hmoe_experts_free(ex);
        return NULL;
    }
    return ex;
}

/* fraction of zero bytes in the packed data of every routed expert tensor */
static double zero_fraction(const struct hmoe_model *m)
{
    const struct hmoe_config *c = &m->cfg;
    uint64_t z = 0, n = 0;
    for (int l = 0; l < c->num_layers; l++) {
        if (!c->layer_is_moe[l]) continue;
        for (int e = 0; e < c->num_experts; e++) {
            const struct hmoe_mlp_w *w = &m->layers[l].experts[e];
            const struct hmoe_tensor *ts[3] = {&w->gate, &w->up, &w->down};
            for (int i = 0; i < 3; i++) {
                const uint8_t *p = ts[i]->data;
                const size_t nb = (size_t)hmoe_tensor_numel(ts[i]) / 2;
                for (size_t k = 0; k < nb; k++)
                    z += p[k] == 0;
                n += nb;
            }
        }
    }
    return n ? (double)z / (double)n : 0.0;
}

int main(void)
{
    for (int expand = 0; expand < 2; expand++) {
        struct hmoe_model *a = NULL, *b = NULL;
        CHECK(hmoe_synth_open("synth:small?seed=3", &a) == HMOE_OK);
        CHECK(hmoe_synth_open("synth:small?seed=3", &b) == HMOE_OK);
        if (!a || !b) TEST_DONE();
        const struct hmoe_config *c = &a->cfg;
        const int H = c->hidden_size, K = c->num_experts_per_tok;
        struct hmoe_experts *ea = make_set(a, 0, expand), *eb = make_set(b, 1, expand);
        CHECKF(ea && eb, "sets: %s", hmoe_err_msg());
        if (!ea || !eb) TEST_DONE();
        const double za = zero_fraction(a), zb = zero_fraction(b);
        CHECKF(za < 0.2, "source kept: %.3f of its bytes are zero", za);
        CHECKF(zb > 0.6, "source given back: only %.3f of its bytes read zero", zb);
        float *x = malloc((size_t)NTOK * H * sizeof *x);
        float *oa = calloc((size_t)NTOK * H, sizeof *oa),
              *ob = calloc((size_t)NTOK * H, sizeof *ob);
        int32_t idx[NTOK * 16];
        float wts[NTOK * 16];
        uint64_t s = 11;
        int same = 0, layers = 0;
        for (int l = 0; x && oa && ob && l < c->num_layers; l++) {
            if (!c->layer_is_moe[l]) continue;
            for (int i = 0; i < NTOK * H; i++)
                x[i] = (float)(rng_next(&s) >> 40) / (float)(1 << 24) * 4.0f - 2.0f;
            for (int i = 0; i < NTOK * K; i++) {
                idx[i] = (int32_t)(rng_next(&s) % (uint64_t)c->num_experts);
                wts[i] = 0.25f;
            }
            memset(oa, 0, (size_t)NTOK * H * sizeof *oa);
            memset(ob, 0, (size_t)NTOK * H * sizeof *ob);
            CHECK(hmoe_experts_run(ea, l, NTOK, K, x, idx, wts, oa) == HMOE_OK);
            CHECK(hmoe_experts_run(eb, l, NTOK, K, x, idx, wts, ob) == HMOE_OK);
            double mx = 0;
            for (int i = 0; i < NTOK * H; i++)
                mx = mx > (double)oa[i] ? mx : (double)oa[i];
            same += mx > 0 && !memcmp(oa, ob, (size_t)NTOK * H * sizeof *oa);
            layers++;
        }
        CHECKF(layers > 0 && same == layers, "expand_absmax %d: %d of %d layers bit-identical",
               expand, same, layers);
        free(x);
        free(oa);
        free(ob);
        hmoe_experts_free(ea);
        hmoe_experts_free(eb);
        hmoe_synth_close(a);
        hmoe_synth_close(b);
    }
    TEST_DONE();
}
