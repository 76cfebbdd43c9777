/* gpu_worker/bench_main.c: hmoe-bench, llama-bench style throughput of the CUDA forward pass:
 * prompt processing ppN (one prefill call of N random tokens from an empty context) and text
 * generation tgN (N single-token decode steps from an empty context), mean ± sd over -r runs,
 * for one or more VRAM budgets; with --parallel, batched decode (llama.cpp's batched-bench idea):
 * B sequences each prefilled with a short prompt, then N decode steps of all B together,
 * aggregate (B N / time) and per-sequence (N / time) tok/s. Experts that do not fit run
 * in-process on the CPU expert kernels (hmoe_experts pool) through the forward pass's hook.
 * Output: markdown table or JSON. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hmoe/experts.h"
#include "hmoe/gpu_forward.h"
#include "hmoe/log.h"
#include "hmoe/model.h"
#include "hmoe/status.h"
#include "hmoe/clock.h"

#define MAX_LIST 16

struct bench_opts {
    const char *model;
    int p[MAX_LIST], np;
    int n[MAX_LIST], nn;
    int par[MAX_LIST], npar; /* --parallel: batch sizes */
    uint64_t budget[MAX_LIST];
    const char *budget_txt[MAX_LIST];
    int nb;
    int reps, threads, json, graphs, prefill;
    int fast; /* decode matvecs: 0 exact (bitsandbytes' rounding), 1 the fast kernel */
    double max_s; /* stop repeating a test once its runs took this long (0 = never) */
};

static void usage(FILE *out)
{
    fputs("usage: hmoe-bench -m SPEC [-p N[,N..]] [-n N[,N..]] [-r N] [-o md|json]\n"
          "                  [--vram-budget SIZE[,SIZE..]] [-t N] [--no-graphs]\n"
          "                  [--prefill tokens|fp32|tf32|bf16] [--decode exact|fast]\n"
          "                  [--parallel B[,B..]]\n"
          "Throughput of the CUDA forward pass, llama-bench style.\n"
          "  -m, --model SPEC       model directory or synth:<preset> (required)\n"
          "  -p, --n-prompt LIST    prompt lengths, one prefill call each (default: 512)\n"
          "  -n, --n-gen LIST       decode steps from an empty context (default: 128)\n"
          "  -r, --repetitions N    runs per test (default: 3)\n"
          "  --max-seconds S        fewer runs once a test's runs took S seconds (>= 1 run;\n"
          "                         the table shows the runs made) (default: 0 = off)\n"
          "  -o, --output FMT       md or json (default: md)\n"
          "  --vram-budget LIST     bytes or N[KMG]iB per configuration, 0 = unlimited\n"
          "                         (default: 14GiB); experts that do not fit run on the CPU\n"
          "  -t, --threads N        CPU expert threads (0 = one per core) (default: 0)\n"
          "  --no-graphs            decode without CUDA graphs\n"
          "  --prefill MODE         tokens (decode step per token), fp32 or tf32 (cuBLAS GEMMs\n"
          "                         in fp32 or TF32 tensor-core math), bf16 (fused NF4 x bf16\n"
          "                         tensor-core expert GEMMs, TF32 attention) (default: bf16)\n"
          "  --decode MATH          exact (the weights bitsandbytes uses, bf16(code * absmax))\n"
          "                         or fast (code * absmax unrounded, fp16 codes: the fast\n"
          "                         dense kernel, env HMOE_DMV_FAST=1) (default: exact, or\n"
          "                         fast when HMOE_DMV_FAST=1)\n"
          "  --parallel LIST        batched decode: for each B (1..8), B sequences each\n"
          "                         prefilled with the first -p tokens, then the first -n\n"
          "                         decode steps of all B together (aggregate and per-sequence\n"
          "                         tok/s; the plain pp/tg tests are not run)\n"
          "  -h, --help             show this help\n",
          out);
}

static int parse_int_list(const char *s, int *out, int max, int lo)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < lo || v > 1000000 || n == max) return -1;
        out[n++] = (int)v;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        p = end;
    }
    return n ? n : -1;
}

static int parse_args(int argc, char **argv, struct bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->p[0] = 512;
    o->np = 1;
    o->n[0] = 128;
    o->nn = 1;
    o->budget[0] = 14ull << 30;
    o->budget_txt[0] = "14GiB";
    o->nb = 1;
    o->reps = 3;
    o->graphs = 1;
    o->prefill = HMOE_PREFILL_BF16;
    const char *fe = getenv("HMOE_DMV_FAST");
    o->fast = fe && !strcmp(fe, "1");
    static char budget_copy[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--no-graphs")) {
            o->graphs = 0;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "hmoe-bench: %s needs a value (or is unknown); see --help\n", a);
            return 1;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt"))
            bad = (o->np = parse_int_list(v, o->p, MAX_LIST, 0)) < 0;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen"))
            bad = (o->nn = parse_int_list(v, o->n, MAX_LIST, 0)) < 0;
        else if (!strcmp(a, "--parallel")) {
            bad = (o->npar = parse_int_list(v, o->par, MAX_LIST, 1)) < 0;
            for (int j = 0; j < o->npar && !bad; j++)
                bad = o->par[j] > HMOE_GFWD_MAX_BATCH;
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) {
            int r[1];
            bad = parse_int_list(v, r, 1, 1) != 1;
            o->reps = r[0];
        } else if (!strcmp(a, "--max-seconds")) {
            char *end;
            o->max_s = strtod(v, &end);
            bad = *end || end == v || o->max_s < 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            int r[1];
            bad = parse_int_list(v, r, 1, 0) != 1;
            o->threads = r[0];
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            bad = strcmp(v, "md") && strcmp(v, "json");
            o->json = !strcmp(v, "json");
        } else if (!strcmp(a, "--prefill")) {
            const int pm = hmoe_gfwd_prefill_parse(v);
            bad = pm < 0;
            o->prefill = (enum hmoe_gfwd_prefill)(pm < 0 ? 0 : pm);
        } else if (!strcmp(a, "--decode")) {
            bad = strcmp(v, "exact") && strcmp(v, "fast");
            o->fast = !strcmp(v, "fast");
        } else if (!strcmp(a, "--vram-budget")) {
            snprintf(budget_copy, sizeof budget_copy, "%s", v);
            o->nb = 0;
            for (char *tk = strtok(budget_copy, ","); tk && !bad; tk = strtok(NULL, ",")) {
                if (o->nb == MAX_LIST || hmoe_parse_bytes(tk, &o->budget[o->nb]))
                    bad = 1;
                else
                    o->budget_txt[o->nb++] = tk;
            }
            bad |= o->nb == 0;
        } else {
            fprintf(stderr, "hmoe-bench: unknown argument '%s'; see --help\n", a);
            return 1;
        }
        if (bad) {
            fprintf(stderr, "hmoe-bench: bad value '%s' for %s; see --help\n", v, a);
            return 1;
        }
    }
    if (!o->model) {
        fprintf(stderr, "hmoe-bench: --model is required; see --help\n");
        return 1;
    }
    return 0;
}

struct hook_ctx {
    struct hmoe_experts *ex;
    int topk;
};

static enum hmoe_status bench_hook(void *ctx, int layer, int n_tok, const float *x,
                                   const int32_t *idx, const float *w, float *out)
{
    struct hook_ctx *h = ctx;
    return hmoe_experts_run(h->ex, layer, n_tok, h->topk, x, idx, w, out);
}

static int keep_host(int layer, int expert, void *arg)
{
    return !hmoe_gfwd_expert_resident(arg, layer, expert);
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static int32_t rand_tok(int V)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int32_t)(rng % (uint64_t)V);
}

struct result {
    const char *budget;
    int resident, experts;
    char test[32];
    double mean, sd;
    int n_tok, reps;
    int par;                 /* sequences decoded together (0: a pp test) */
    double seq_mean, seq_sd; /* tok/s of one sequence */
};

static void stats(const double *v, int n, double *mean, double *sd)
{
    double s = 0, q = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0.0;
}

/* --parallel: B sequences each prefilled with o->p[0] random tokens, then o->n[0] decode steps
 * of the B together (timed); aggregate and per-sequence tok/s over the runs into rr (test,
 * counts, stats; the caller fills the budget fields). times: 2 * reps doubles. */
static enum hmoe_status bench_parallel(struct hmoe_gfwd *f, const struct bench_opts *o, int B,
                                       int V, int32_t *tok, float *logits, double *times,
                                       struct result *rr)
{
    const int np = o->p[0] > 0 ? o->p[0] : 1, n = o->n[0];
    int seqs[HMOE_GFWD_MAX_BATCH];
    int32_t step[HMOE_GFWD_MAX_BATCH];
    for (int s = 0; s < B; s++)
        seqs[s] = s;
    enum hmoe_status st = HMOE_OK;
    int done = 0;
    double spent = 0.0;
    /* run -1: warm-up (graph capture of the bucket at its second step) */
    for (int r = -1; r < o->reps && !st; r++) {
        for (int s = 0; s < B && !st; s++) {
            for (int i = 0; i < np; i++)
                tok[i] = rand_tok(V);
            hmoe_gfwd_seq_reset(f, s);
            st = hmoe_gfwd_run_seq(f, s, tok, np, logits, 1);
        }
        const int steps = r < 0 ? 3 : n;
        const double ts = hmoe_clock_s();
        for (int i = 0; i < steps && !st; i++) {
            for (int s = 0; s < B; s++)
                step[s] = rand_tok(V);
            st = hmoe_gfwd_decode_batch(f, seqs, step, B, logits);
        }
        const double dt = hmoe_clock_s() - ts;
        if (!st && !isfinite(logits[(size_t)(B - 1) * V])) {
            fprintf(stderr, "hmoe-bench: non-finite logits\n");
            st = HMOE_E_CUDA;
        }
        if (r < 0 || st) continue;
        times[done] = (double)B * n / dt;
        times[o->reps + done] = n / dt;
        spent += dt;
        done++;
        if (o->max_s > 0 && spent >= o->max_s) break;
    }
    if (st) return st;
    snprintf(rr->test, sizeof rr->test, "pp%d+tg%d", np, n);
    rr->n_tok = n;
    rr->reps = done;
    rr->par = B;
    stats(times, done, &rr->mean, &rr->sd);
    stats(times + o->reps, done, &rr->seq_mean, &rr->seq_sd);
    fprintf(stderr, "hmoe-bench: B %d %s: %.2f ± %.2f tok/s (%.2f ± %.2f per sequence)\n", B,
            rr->test, rr->mean, rr->sd, rr->seq_mean, rr->seq_sd);
    return HMOE_OK;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    hmoe_log_init("B0", HMOE_LOG_LVL_INFO, 0);
    int max_ctx = 16;
    for (int i = 0; i < o.np; i++)
        max_ctx = o.p[i] > max_ctx ? o.p[i] : max_ctx;
    for (int i = 0; i < o.nn; i++)
        max_ctx = o.n[i] > max_ctx ? o.n[i] : max_ctx;
    int n_seq = 1;
    for (int i = 0; i < o.npar; i++) {
        n_seq = o.par[i] > n_seq ? o.par[i] : n_seq;
        max_ctx = o.p[0] + o.n[0] + 4 > max_ctx ? o.p[0] + o.n[0] + 4 : max_ctx;
    }

    double t0 = hmoe_clock_s();
    struct hmoe_model *m = NULL;
    if (hmoe_model_open(o.model, &m)) {
        fprintf(stderr, "hmoe-bench: cannot open model %s: %s\n", o.model, hmoe_err_msg());
        return 1;
    }
    fprintf(stderr, "hmoe-bench: model %s opened in %.1f s\n", o.model, hmoe_clock_s() - t0);
    const int V = m->cfg.vocab_size;
    float *logits = malloc((size_t)HMOE_GFWD_MAX_BATCH * V * sizeof(float));
    int32_t *tok = malloc((size_t)max_ctx * sizeof(int32_t));
    double *times = malloc((size_t)o.reps * 2 * sizeof(double));
    struct result res[MAX_LIST * MAX_LIST * 2];
    int nres = 0;
    if (!logits || !tok || !times) {
        fprintf(stderr, "hmoe-bench: out of memory\n");
        return 2;
    }
    for (int b = 0; b < o.nb && !rc; b++) {
        struct hmoe_gfwd *f = NULL;
        struct hmoe_experts *ex = NULL;
        t0 = hmoe_clock_s();
        if (hmoe_gfwd_init_seqs(m, 0, max_ctx, n_seq, o.budget[b], HMOE_GPU_ABSMAX_F32, &f)) {
            fprintf(stderr, "hmoe-bench: budget %s: %s\n", o.budget_txt[b], hmoe_err_msg());
            rc = 2;
            break;
        }
        fprintf(stderr, "hmoe-bench: GPU forward pass ready in %.1f s\n", hmoe_clock_s() - t0);
        hmoe_gfwd_print_budget(f, stderr);
        hmoe_gfwd_set_graphs(f, o.graphs);
        if (hmoe_gfwd_set_prefill(f, (enum hmoe_gfwd_prefill)o.prefill) ||
            hmoe_gfwd_set_decode(f, o.fast ? HMOE_DECODE_FAST : HMOE_DECODE_EXACT)) {
            fprintf(stderr, "hmoe-bench: %s\n", hmoe_err_msg());
            hmoe_gfwd_free(f);
            rc = 2;
            break;
        }
        struct hmoe_gfwd_budget bu;
        hmoe_gfwd_get_budget(f, &bu);
        struct hook_ctx hc = {NULL, m->cfg.num_experts_per_tok};
        if (bu.n_resident < bu.n_experts) {
            struct hmoe_experts_opts xo;
            memset(&xo, 0, sizeof xo);
            xo.pool.n_threads = o.threads;
            xo.pool.numa_node = -1;
            xo.max_top_k = hc.topk;
            xo.max_tokens = 256 > HMOE_GFWD_MAX_BATCH ? 256 : HMOE_GFWD_MAX_BATCH;
            t0 = hmoe_clock_s();
            if (hmoe_experts_init(&xo, m->cfg.hidden_size, m->cfg.moe_intermediate_size, &ex) ||
                hmoe_experts_add_model(ex, m, 0, m->cfg.num_layers, keep_host, f) ||
                hmoe_experts_load(ex)) {
                fprintf(stderr, "hmoe-bench: CPU experts: %s\n", hmoe_err_msg());
                hmoe_experts_free(ex);
                hmoe_gfwd_free(f);
                rc = 2;
                break;
            }
            hc.ex = ex;
            const struct hmoe_moe_hook hook = {bench_hook, &hc};
            hmoe_gfwd_set_moe_hook(f, &hook);
            fprintf(stderr,
                    "hmoe-bench: %d experts on the CPU (%s, %d threads, %.2f GiB) ready in "
                    "%.1f s\n",
                    bu.n_experts - bu.n_resident, hmoe_experts_isa_name(hmoe_experts_isa_used(ex)),
                    hmoe_pool_size(hmoe_experts_pool(ex)),
                    hmoe_experts_total_bytes(ex) / 1073741824.0, hmoe_clock_s() - t0);
        }
        /* warm-up: a short prefill and a few decode steps (graph capture, cuBLAS plans) */
        for (int i = 0; i < 16; i++)
            tok[i] = rand_tok(V);
        hmoe_gfwd_reset(f);
        enum hmoe_status st = hmoe_gfwd_run(f, tok, 8, logits, 1);
        for (int i = 0; !st && i < 4; i++)
            st = hmoe_gfwd_run(f, tok + 8 + i, 1, logits, 1);
        for (int kind = 0; kind < 2 && !st && !o.npar; kind++) {
            const int cnt = kind ? o.nn : o.np;
            for (int ti = 0; ti < cnt && !st; ti++) {
                const int n = kind ? o.n[ti] : o.p[ti];
                if (n <= 0) continue;
                int done = 0;
                double spent = 0.0;
                for (int r = 0; r < o.reps && !st; r++) {
                    for (int i = 0; i < n; i++)
                        tok[i] = rand_tok(V);
                    hmoe_gfwd_reset(f);
                    const double ts = hmoe_clock_s();
                    if (!kind)
                        st = hmoe_gfwd_run(f, tok, n, logits, 1);
                    else
                        for (int i = 0; i < n && !st; i++)
                            st = hmoe_gfwd_run(f, tok + i, 1, logits, 1);
                    const double dt = hmoe_clock_s() - ts;
                    times[r] = n / dt;
                    spent += dt;
                    done++;
                    if (!isfinite(logits[0])) {
                        fprintf(stderr, "hmoe-bench: non-finite logits\n");
                        st = HMOE_E_CUDA;
                    }
                    if (o.max_s > 0 && spent >= o.max_s) break;
                }
                if (st) break;
                struct result *rr = &res[nres++];
                rr->budget = o.budget_txt[b];
                rr->resident = bu.n_resident;
                rr->experts = bu.n_experts;
                snprintf(rr->test, sizeof rr->test, "%s%d", kind ? "tg" : "pp", n);
                rr->n_tok = n;
                rr->reps = done;
                rr->par = kind;
                stats(times, done, &rr->mean, &rr->sd);
                rr->seq_mean = kind ? rr->mean : 0.0;
                rr->seq_sd = kind ? rr->sd : 0.0;
                fprintf(stderr, "hmoe-bench: budget %s %s: %.2f ± %.2f tok/s\n", rr->budget,
                        rr->test, rr->mean, rr->sd);
            }
        }
        for (int pi = 0; pi < o.npar && !st; pi++) {
            st = bench_parallel(f, &o, o.par[pi], V, tok, logits, times, &res[nres]);
            if (st) break;
            res[nres].budget = o.budget_txt[b];
            res[nres].resident = bu.n_resident;
            res[nres].experts = bu.n_experts;
            nres++;
        }
        if (st) {
            fprintf(stderr, "hmoe-bench: run failed: %s\n", hmoe_err_msg());
            rc = 2;
        }
        hmoe_gfwd_free(f);
        hmoe_experts_free(ex);
    }
    static const char *const pf_name[] = {"tokens", "fp32", "tf32", "bf16"};
    if (o.json) {
        printf("[\n");
        for (int i = 0; i < nres; i++)
            printf("  {\"model\": \"%s\", \"vram_budget\": \"%s\", \"experts_resident\": %d, "
                   "\"experts\": %d, \"test\": \"%s\", \"n_tokens\": %d, \"reps\": %d, "
                   "\"graphs\": %d, \"prefill\": \"%s\", \"decode\": \"%s\", \"parallel\": %d, "
                   "\"avg_ts\": %.3f, \"stddev_ts\": %.3f, \"avg_seq_ts\": %.3f, "
                   "\"stddev_seq_ts\": %.3f}%s\n",
                   o.model, res[i].budget, res[i].resident, res[i].experts, res[i].test,
                   res[i].n_tok, res[i].reps, o.graphs, pf_name[o.prefill],
                   o.fast ? "fast" : "exact", res[i].par, res[i].mean, res[i].sd, res[i].seq_mean,
                   res[i].seq_sd, i + 1 < nres ? "," : "");
        printf("]\n");
    } else {
        printf("| model | vram budget | experts resident | prefill | decode | graphs | test | B "
               "| runs | t/s | t/s per seq |\n");
        printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        for (int i = 0; i < nres; i++) {
            char seq[64] = "-", par[16] = "-";
            if (res[i].par) {
                snprintf(seq, sizeof seq, "%.2f ± %.2f", res[i].seq_mean, res[i].seq_sd);
                snprintf(par, sizeof par, "%d", res[i].par);
            }
            printf("| %s | %s | %d / %d | %s | %s | %s | %s | %s | %d | %.2f ± %.2f | %s |\n",
                   o.model, res[i].budget, res[i].resident, res[i].experts, pf_name[o.prefill],
                   o.fast ? "fast" : "exact", o.graphs ? "yes" : "no", res[i].test, par,
                   res[i].reps, res[i].mean, res[i].sd, seq);
        }
    }
    free(logits);
    free(tok);
    free(times);
    hmoe_model_close(m);
    return rc;
}
