/* gpu_worker/eval.c: hmoe-eval, the whole forward pass in one process. Reads token ids, runs the
 * first N as one prefill call and every other token as one decode step, writes the logits of
 * every position (float32 LE [T, V]) and optionally the perplexity of the sequence.
 * --backend cuda (when built with CUDA): the GPU forward pass under a VRAM budget, experts that
 * are not resident computed by the CPU expert kernels (hmoe_experts) through the hook.
 * Exit codes: 0 ok, 1 usage/config (bad flags, bad tokens file, model that fails to open),
 * 2 runtime failure. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "hmoe/clock.h"
#include "hmoe/forward.h"
#include "hmoe/log.h"
#include "hmoe/model.h"
#include "hmoe/status.h"
#ifdef HMOE_EVAL_CUDA
#include "hmoe/experts.h"
#include "hmoe/gpu_forward.h"
#endif

struct eval_opts {
    const char *model, *tokens_file, *logits_out, *backend, *vram_budget, *prefill_math,
        *decode;
    long prefill; /* -1 = not given */
    long ctx;     /* 0 = number of tokens */
    long threads; /* 0 = default */
    int perplexity;
};

static void usage(FILE *out)
{
    fputs("usage: hmoe-eval --model DIR --tokens-file FILE --prefill N [--logits-out OUT]\n"
          "                 [--perplexity] [--ctx N] [--threads N] [--backend cpu]\n"
          "Runs the first N tokens as one prefill call and each remaining token as one decode\n"
          "step through the reference forward pass.\n"
          "  -m, --model DIR        model directory (config.json + safetensors)\n"
          "  -f, --tokens-file FILE whitespace-separated token ids (T >= 1)\n"
          "  --prefill N            tokens in the prefill call, 0..T (required)\n"
          "  -o, --logits-out OUT   write the logits of all T positions, float32 LE [T, vocab]\n"
          "  --perplexity           print the mean NLL of tokens 1..T-1 and the perplexity\n"
          "  -c, --ctx N            context capacity in tokens (0 = T) (default: 0)\n"
          "  -t, --threads N        OpenMP threads (0 = OpenMP default) (default: 0)\n"
          "  --backend NAME         cpu or cuda (when built with CUDA) (default: cpu)\n"
          "  --vram-budget SIZE     cuda: bytes or N[KMG]iB the GPU forward pass may allocate;\n"
          "                         experts that do not fit run on the CPU; 0 = unlimited\n"
          "                         (default: 14GiB)\n"
          "  --prefill-math MODE    cuda: fp32, tf32 or bf16 (tensor-core kernels, activations\n"
          "                         in bf16: fastest, least exact) (default: fp32)\n"
          "  --decode MODE          cuda: exact (bitsandbytes' bf16-rounded weights) or fast\n"
          "                         (the fast dense NF4 kernel: code * absmax unrounded)\n"
          "                         (default: exact)\n"
          "  -h, --help             show this help\n",
          out);
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "hmoe-eval: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("; see hmoe-eval --help\n", stderr);
    return 1;
}

/* Parses a whole-string decimal integer in [lo, hi]. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Returns 0 to run, 1 for a usage error, -1 after --help. */
static int parse_args(int argc, char **argv, struct eval_opts *o)
{
    memset(o, 0, sizeof *o);
    o->prefill = -1;
    o->backend = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **sval = NULL;
        long *lval = NULL;
        long lo = 0, hi = INT_MAX;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--perplexity")) {
            o->perplexity = 1;
            continue;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) sval = &o->model;
        else if (!strcmp(a, "-f") || !strcmp(a, "--tokens-file")) sval = &o->tokens_file;
        else if (!strcmp(a, "-o") || !strcmp(a, "--logits-out")) sval = &o->logits_out;
        else if (!strcmp(a, "--backend")) sval = &o->backend;
        else if (!strcmp(a, "--vram-budget")) sval = &o->vram_budget;
        else if (!strcmp(a, "--prefill-math")) sval = &o->prefill_math;
        else if (!strcmp(a, "--decode")) sval = &o->decode;
        else if (!strcmp(a, "--prefill")) lval = &o->prefill;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) lval = &o->ctx;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            lval = &o->threads;
            hi = 4096;
        } else return bad_usage("unknown argument '%s'", a);
        if (i + 1 >= argc) return bad_usage("%s needs a value", a);
        const char *v = argv[++i];
        if (sval) *sval = v;
        else if (parse_long(v, lo, hi, lval))
            return bad_usage("bad value for %s (want a non-negative integer)", a);
    }
    if (!o->model) return bad_usage("%s", "--model is required");
    if (!o->tokens_file) return bad_usage("%s", "--tokens-file is required");
    if (o->prefill < 0) return bad_usage("%s", "--prefill is required");
    return 0;
}

/* Reads whitespace-separated ids. Returns 0, or 1 with a message printed. */
static int read_tokens(const char *path, int32_t **out, int *n_out)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "hmoe-eval: cannot open tokens file %s: %s\n", path, strerror(errno));
        return 1;
    }
    int cap = 256, n = 0;
    int32_t *tok = malloc((size_t)cap * sizeof *tok);
    char word[64];
    int len = 0, ch, rc = 0;
    if (!tok) {
        fclose(fp);
        fprintf(stderr, "hmoe-eval: out of memory\n");
        return 1;
    }
    do {
        ch = fgetc(fp);
        if (ch != EOF && ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r' && ch != '\v' &&
            ch != '\f') {
            if (len + 1 >= (int)sizeof word) {
                word[len] = 0;
                fprintf(stderr, "hmoe-eval: %s: token %d is not an integer ('%.20s...')\n", path,
                        n, word);
                rc = 1;
                break;
            }
            word[len++] = (char)ch;
            continue;
        }
        if (!len) continue;
        word[len] = 0;
        len = 0;
        long v;
        if (parse_long(word, 0, INT32_MAX, &v)) {
            fprintf(stderr, "hmoe-eval: %s: token %d '%s' is not a non-negative integer\n", path,
                    n, word);
            rc = 1;
            break;
        }
        if (n == cap) {
            if (cap > INT_MAX / 2) {
                fprintf(stderr, "hmoe-eval: %s: too many tokens\n", path);
                rc = 1;
                break;
            }
            cap *= 2;
            int32_t *nt = realloc(tok, (size_t)cap * sizeof *tok);
            if (!nt) {
                fprintf(stderr, "hmoe-eval: out of memory\n");
                rc = 1;
                break;
            }
            tok = nt;
        }
        tok[n++] = (int32_t)v;
    } while (ch != EOF);
    if (!rc && ferror(fp)) {
        fprintf(stderr, "hmoe-eval: error reading %s\n", path);
        rc = 1;
    }
    fclose(fp);
    if (!rc && !n) {
        fprintf(stderr, "hmoe-eval: %s holds no token ids\n", path);
        rc = 1;
    }
    if (rc) {
        free(tok);
        return 1;
    }
    *out = tok;
    *n_out = n;
    return 0;
}

/* -log softmax(row)[target], in double. */
static double nll_of(const float *row, int V, int target)
{
    float mx = row[0];
    for (int i = 1; i < V; i++)
        if (row[i] > mx) mx = row[i];
    double s = 0.0;
    for (int i = 0; i < V; i++) s += exp((double)row[i] - (double)mx);
    return log(s) + (double)mx - (double)row[target];
}

static int write_rows(FILE *fp, const float *rows, size_t count)
{
    static const uint16_t probe = 1;
    if (*(const unsigned char *)&probe) return fwrite(rows, sizeof(float), count, fp) != count;
    for (size_t i = 0; i < count; i++) { /* big-endian host: write LE bytes */
        uint32_t u;
        memcpy(&u, &rows[i], 4);
        unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8),
                              (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
        if (fwrite(b, 1, 4, fp) != 4) return 1;
    }
    return 0;
}

/* The forward pass behind one interface: the CPU reference or (when built) the CUDA one. */
struct eval_fwd {
    struct hmoe_fwd *cpu;
#ifdef HMOE_EVAL_CUDA
    struct hmoe_gfwd *gpu;
    struct hmoe_experts *ex;
    int topk;
#endif
};

#ifdef HMOE_EVAL_CUDA
static enum hmoe_status eval_hook(void *ctx, int layer, int n_tok, const float *x,
                                  const int32_t *idx, const float *w, float *out)
{
    struct eval_fwd *e = ctx;
    return hmoe_experts_run(e->ex, layer, n_tok, e->topk, x, idx, w, out);
}

static int keep_host(int layer, int expert, void *arg)
{
    return !hmoe_gfwd_expert_resident(arg, layer, expert);
}

/* GPU forward pass + CPU expert kernels for the experts that are not resident. */
static int eval_cuda_init(struct eval_fwd *e, const struct hmoe_model *m, int ctx,
                          const struct eval_opts *o)
{
    uint64_t budget = 14ull << 30;
    if (o->vram_budget && hmoe_parse_bytes(o->vram_budget, &budget)) {
        fprintf(stderr, "hmoe-eval: bad --vram-budget '%s' (want BYTES or N[KMG]iB)\n",
                o->vram_budget);
        return 1;
    }
    if (hmoe_gfwd_init(m, 0, ctx, budget, HMOE_GPU_ABSMAX_F32, &e->gpu)) {
        fprintf(stderr, "hmoe-eval: cannot set up the CUDA forward pass: %s\n", hmoe_err_msg());
        return 1;
    }
    if (o->prefill_math) {
        const int pm = hmoe_gfwd_prefill_parse(o->prefill_math);
        if (pm < 1 || hmoe_gfwd_set_prefill(e->gpu, (enum hmoe_gfwd_prefill)pm)) {
            fprintf(stderr, "hmoe-eval: bad --prefill-math '%s' (want fp32, tf32 or bf16)\n",
                    o->prefill_math);
            return 1;
        }
    }
    if (o->decode) {
        const int dm = hmoe_gfwd_decode_parse(o->decode);
        if (dm < 0 || hmoe_gfwd_set_decode(e->gpu, (enum hmoe_gfwd_decode)dm)) {
            fprintf(stderr, "hmoe-eval: bad --decode '%s' (want exact or fast)\n", o->decode);
            return 1;
        }
    }
    hmoe_gfwd_print_budget(e->gpu, stderr);
    struct hmoe_gfwd_budget b;
    hmoe_gfwd_get_budget(e->gpu, &b);
    if (b.n_resident < b.n_experts) {
        struct hmoe_experts_opts xo;
        memset(&xo, 0, sizeof xo);
        xo.pool.n_threads = (int)o->threads;
        xo.pool.numa_node = -1;
        e->topk = m->cfg.num_experts_per_tok;
        xo.max_top_k = e->topk;
        if (hmoe_experts_init(&xo, m->cfg.hidden_size, m->cfg.moe_intermediate_size, &e->ex) ||
            hmoe_experts_add_model(e->ex, m, 0, m->cfg.num_layers, keep_host, e->gpu) ||
            hmoe_experts_load(e->ex)) {
            fprintf(stderr, "hmoe-eval: cannot set up the CPU experts: %s\n", hmoe_err_msg());
            return 1;
        }
        const struct hmoe_moe_hook hook = {eval_hook, e};
        hmoe_gfwd_set_moe_hook(e->gpu, &hook);
        fprintf(stderr, "hmoe-eval: %d experts on the CPU (%s kernels)\n",
                b.n_experts - b.n_resident, hmoe_experts_isa_name(hmoe_experts_isa_used(e->ex)));
    }
    return 0;
}
#endif

static enum hmoe_status eval_run(struct eval_fwd *e, const int32_t *tok, int n, float *lg)
{
#ifdef HMOE_EVAL_CUDA
    if (e->gpu) return hmoe_gfwd_run(e->gpu, tok, n, lg, 0);
#endif
    return hmoe_fwd_run(e->cpu, tok, n, lg, 0);
}

static void eval_free(struct eval_fwd *e)
{
    hmoe_fwd_free(e->cpu);
#ifdef HMOE_EVAL_CUDA
    hmoe_gfwd_free(e->gpu);
    hmoe_experts_free(e->ex);
#endif
}

int main(int argc, char **argv)
{
    struct eval_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    hmoe_log_init("G0", HMOE_LOG_LVL_INFO, 0);
    const int use_cuda = !strcmp(o.backend, "cuda");
    if (strcmp(o.backend, "cpu") && !use_cuda)
        return bad_usage("unknown backend '%s' (want cpu or cuda)", o.backend);
#ifndef HMOE_EVAL_CUDA
    if (use_cuda) {
        fprintf(stderr, "hmoe-eval: backend 'cuda' is not built (only 'cpu' is available)\n");
        return 1;
    }
#endif
    if (o.vram_budget && !use_cuda) return bad_usage("%s", "--vram-budget needs --backend cuda");
    if (o.prefill_math && !use_cuda)
        return bad_usage("%s", "--prefill-math needs --backend cuda");
    if (o.decode && !use_cuda) return bad_usage("%s", "--decode needs --backend cuda");
#ifdef _OPENMP
    if (o.threads > 0) omp_set_num_threads((int)o.threads);
#else
    if (o.threads > 1) fprintf(stderr, "hmoe-eval: built without OpenMP, --threads ignored\n");
#endif

    int32_t *tok = NULL;
    int T = 0;
    if (read_tokens(o.tokens_file, &tok, &T)) return 1;
    if (o.prefill > T) {
        fprintf(stderr, "hmoe-eval: --prefill %ld is larger than the %d tokens of %s\n",
                o.prefill, T, o.tokens_file);
        free(tok);
        return 1;
    }
    if (o.ctx && o.ctx < T) {
        fprintf(stderr, "hmoe-eval: --ctx %ld is smaller than the %d tokens of %s\n", o.ctx, T,
                o.tokens_file);
        free(tok);
        return 1;
    }
    if (o.perplexity && T < 2) {
        fprintf(stderr, "hmoe-eval: --perplexity needs at least 2 tokens\n");
        free(tok);
        return 1;
    }

    struct hmoe_model *m = NULL;
    double t0 = hmoe_clock_s();
    if (hmoe_model_open(o.model, &m)) {
        fprintf(stderr, "hmoe-eval: cannot open model %s: %s\n", o.model, hmoe_err_msg());
        free(tok);
        return 1;
    }
    const int V = m->cfg.vocab_size;
    for (int i = 0; i < T; i++)
        if (tok[i] >= V) {
            fprintf(stderr, "hmoe-eval: %s: token %d is id %d, outside the vocabulary [0, %d)\n",
                    o.tokens_file, i, (int)tok[i], V);
            hmoe_model_close(m);
            free(tok);
            return 1;
        }
    struct eval_fwd fw;
    memset(&fw, 0, sizeof fw);
#ifdef HMOE_EVAL_CUDA
    if (use_cuda && eval_cuda_init(&fw, m, o.ctx ? (int)o.ctx : T, &o)) {
        eval_free(&fw);
        hmoe_model_close(m);
        free(tok);
        return 1;
    }
#endif
    if (!use_cuda && hmoe_fwd_init(m, o.ctx ? (int)o.ctx : T, &fw.cpu)) {
        fprintf(stderr, "hmoe-eval: cannot set up the forward pass: %s\n", hmoe_err_msg());
        hmoe_model_close(m);
        free(tok);
        return 1;
    }
    double t_load = hmoe_clock_s() - t0;

    FILE *out = NULL;
    if (o.logits_out && !(out = fopen(o.logits_out, "wb"))) {
        fprintf(stderr, "hmoe-eval: cannot create %s: %s\n", o.logits_out, strerror(errno));
        rc = 1;
        goto done;
    }
    const int N = (int)o.prefill;
    const int rows = N > 1 ? N : 1;
    float *lg = malloc((size_t)rows * V * sizeof(float));
    if (!lg) {
        fprintf(stderr, "hmoe-eval: out of memory for %d x %d logits\n", rows, V);
        rc = 2;
        goto done;
    }
    const int need_logits = out || o.perplexity;
    double nll = 0.0, t_pre = 0.0, t_dec = 0.0;
    int pos = 0;
    while (pos < T) {
        /* the prefill call covers tokens [0, N) when N >= 1; then one token per step */
        const int n = pos == 0 && N > 0 ? N : 1;
        double ts = hmoe_clock_s();
        if (eval_run(&fw, tok + pos, n, need_logits ? lg : NULL)) {
            fprintf(stderr, "hmoe-eval: forward failed at position %d: %s\n", pos, hmoe_err_msg());
            rc = 2;
            break;
        }
        double dt = hmoe_clock_s() - ts;
        if (pos == 0 && N > 0) t_pre = dt;
        else t_dec += dt;
        if (out && write_rows(out, lg, (size_t)n * V)) {
            fprintf(stderr, "hmoe-eval: write to %s failed: %s\n", o.logits_out, strerror(errno));
            rc = 2;
            break;
        }
        if (o.perplexity)
            for (int i = 0; i < n; i++)
                if (pos + i + 1 < T) nll += nll_of(lg + (size_t)i * V, V, tok[pos + i + 1]);
        pos += n;
    }
    free(lg);
    if (!rc) {
        const int n_dec = T - (N > 0 ? N : 0);
        fprintf(stderr, "hmoe-eval: load %.2f s; prefill %d tok in %.3f s (%.2f tok/s); "
                        "decode %d tok in %.3f s (%.2f tok/s)\n",
                t_load, N, t_pre, t_pre > 0 ? N / t_pre : 0.0, n_dec, t_dec,
                t_dec > 0 ? n_dec / t_dec : 0.0);
        if (o.perplexity) {
            const double mean = nll / (T - 1);
            printf("mean_nll %.6f perplexity %.6f tokens %d\n", mean, exp(mean), T - 1);
        }
    }

done:
    if (out && fclose(out) && !rc) {
        fprintf(stderr, "hmoe-eval: closing %s failed: %s\n", o.logits_out, strerror(errno));
        rc = 2;
    }
    eval_free(&fw);
    hmoe_model_close(m);
    free(tok);
    return rc;
}
