/* hmoe-synth-check: runs a model (e.g. a synth: preset) through the CPU forward pass for a few
 * tokens and prints, per MoE layer, the RMS of the MoE input and of the routed-expert output
 * (computed here through the routed-expert hook), the router's top-1 weight, and the logits'
 * statistics: the evidence that synth weight scales keep activations finite and non-trivial. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hmoe/forward.h"
#include "hmoe/log.h"
#include "hmoe/model.h"

struct check_ctx {
    const struct hmoe_model *m;
    float *g, *u, *y;
    int call;
    int bad; /* non-finite values seen */
};

static double rms(const float *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)v[i] * (double)v[i];
    return sqrt(s / n);
}

static enum hmoe_status routed(void *vctx, int layer, int n_tok, const float *x,
                               const int32_t *idx, const float *w, float *out)
{
    struct check_ctx *c = vctx;
    const struct hmoe_config *cfg = &c->m->cfg;
    const int H = cfg->hidden_size, I = cfg->moe_intermediate_size, k = cfg->num_experts_per_tok;
    double xr = 0, orr = 0, top1 = 0;
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * H;
        float *ot = out + (size_t)t * H;
        for (int j = 0; j < k; j++) {
            const struct hmoe_mlp_w *e = &c->m->layers[layer].experts[idx[t * k + j]];
            hmoe_matmul(&e->gate, xt, c->g, 1);
            hmoe_matmul(&e->up, xt, c->u, 1);
            for (int i = 0; i < I; i++) c->g[i] = c->g[i] / (1.0f + expf(-c->g[i])) * c->u[i];
            hmoe_matmul(&e->down, c->g, c->y, 1);
            for (int i = 0; i < H; i++) ot[i] += w[t * k + j] * c->y[i];
        }
        xr += rms(xt, H) / n_tok;
        orr += rms(ot, H) / n_tok;
        top1 += (double)w[t * k] / n_tok;
        for (int i = 0; i < H; i++) c->bad += !isfinite(ot[i]);
    }
    printf("call %d layer %2d %-6s  moe_in_rms %7.3f  routed_out_rms %8.4f  top1_w %.3f\n", c->call,
           layer, cfg->layer_types[layer] == HMOE_LAYER_FULL ? "attn" : "gdn", xr, orr, top1);
    fflush(stdout);
    return HMOE_OK;
}

static void logit_stats(const float *lg, int V, int *bad)
{
    double mx = -1e30, s = 0, s2 = 0;
    int am = 0;
    for (int i = 0; i < V; i++) {
        const double v = (double)lg[i];
        if (!isfinite(v)) (*bad)++;
        s += v;
        s2 += v * v;
        if (v > mx) {
            mx = v;
            am = i;
        }
    }
    double mean = s / V, sd = sqrt(s2 / V - mean * mean), z = 0, ent = 0;
    for (int i = 0; i < V; i++) z += exp((double)lg[i] - mx);
    for (int i = 0; i < V; i++) {
        double p = exp((double)lg[i] - mx) / z;
        if (p > 0) ent -= p * log(p);
    }
    printf("logits: mean %.3f std %.3f max %.3f (token %d) entropy %.3f nats (uniform %.3f)\n",
           mean, sd, mx, am, ent, log((double)V));
}

int main(int argc, char **argv)
{
    const char *spec = NULL;
    int n = 2;
    hmoe_log_init("K", HMOE_LOG_LVL_INFO, 0);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: hmoe-synth-check -m SPEC|DIR [-n PREFILL_TOKENS]\n"
                   "  runs PREFILL_TOKENS (2) as one prefill call, then one decode step\n");
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s: unknown option or missing value; see --help\n", argv[i]);
            return 1;
        }
        if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            spec = argv[++i];
        } else if (!strcmp(argv[i], "-n")) {
            n = atoi(argv[++i]);
        } else {
            fprintf(stderr, "error: unknown option %s; see --help\n", argv[i]);
            return 1;
        }
    }
    if (!spec || n < 1 || n > 64) {
        fprintf(stderr, "error: -m SPEC is required and 1 <= n <= 64; see --help\n");
        return 1;
    }
    struct hmoe_model *m = NULL;
    struct hmoe_fwd *f = NULL;
    if (hmoe_model_open(spec, &m) || hmoe_fwd_init(m, n + 1, &f)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        hmoe_model_close(m);
        return 1;
    }
    const struct hmoe_config *cfg = &m->cfg;
    struct check_ctx c = {.m = m};
    c.g = malloc((size_t)cfg->moe_intermediate_size * 4);
    c.u = malloc((size_t)cfg->moe_intermediate_size * 4);
    c.y = malloc((size_t)cfg->hidden_size * 4);
    float *lg = malloc((size_t)cfg->vocab_size * 4);
    int32_t tok[65];
    for (int i = 0; i <= n; i++) tok[i] = (int32_t)((1000003u * (unsigned)(i + 1)) % (unsigned)cfg->vocab_size);
    struct hmoe_moe_hook hook = {routed, &c};
    hmoe_fwd_set_moe_hook(f, &hook);
    int rc = 0;
    for (int call = 0; call < 2 && !rc; call++) {
        c.call = call;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        enum hmoe_status st = call == 0 ? hmoe_fwd_run(f, tok, n, lg, 1) : hmoe_fwd_run(f, tok + n, 1, lg, 1);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (st) {
            fprintf(stderr, "error: %s\n", hmoe_err_msg());
            rc = 2;
            break;
        }
        printf("call %d (%s, %d token(s)): %.2f s\n", call, call ? "decode" : "prefill", call ? 1 : n,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
        logit_stats(lg, cfg->vocab_size, &c.bad);
    }
    printf("non-finite values: %d\n", c.bad);
    if (c.bad) rc = 2;
    free(c.g);
    free(c.u);
    free(c.y);
    free(lg);
    hmoe_fwd_free(f);
    hmoe_model_close(m);
    return rc;
}
