/* gen_main.c: hmoe-generate, text in and text out in one process: tokenizer + chat template +
 * the portable CPU forward pass (hmoe/forward.h) + sampler + stop criteria, streaming the answer
 * to stdout and a stats line to stderr. For small models and for checking the text path without
 * the cluster (the cluster client is `hmoe run`).
 *   hmoe-generate -m DIR [--tokenizer FILE] -p "prompt" [sampling and generation flags] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hmoe/forward.h"
#include "hmoe/model.h"
#include "hmoe/text.h"
#include "hmoe/clock.h"

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: hmoe-generate -m DIR [--tokenizer FILE] -p PROMPT [options]\n"
               "Generates text with the CPU reference forward pass (small models).\n\n"
               "Model:\n"
               "  -m, --model DIR                  model directory (config.json, safetensors, "
               "generation_config.json)\n"
               "  --tokenizer FILE                 tokenizer.json (default: DIR/tokenizer.json)\n"
               "  -v, --verbose                    print the prompt ids on stderr\n"
               "  -h, --help                       this help\n");
    hmoe_text_opts_help(f);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t k = fread(b + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
        if (n + 1 == cap) {
            char *q = realloc(b, cap * 2);
            if (!q) {
                free(b);
                b = NULL;
                break;
            }
            b = q;
            cap *= 2;
        }
    }
    fclose(f);
    if (b) b[n] = 0;
    return b;
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *tok_path = NULL;
    int verbose = 0;
    struct hmoe_text_opts o;
    hmoe_text_opts_init(&o);
    if (hmoe_text_opts_env(&o)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model_dir = argv[++i];
        } else if (!strcmp(a, "--tokenizer") && i + 1 < argc) {
            tok_path = argv[++i];
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbose = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            int r = hmoe_text_opts_parse(&o, argc, argv, &i);
            if (r < 0) {
                fprintf(stderr, "error: %s (see --help)\n", hmoe_err_msg());
                return 1;
            }
            if (r == 0) {
                fprintf(stderr, "error: unknown or incomplete option '%s' (see --help)\n", a);
                return 1;
            }
        }
    }
    if (!model_dir || (!o.prompt && !o.prompt_file)) {
        fprintf(stderr, "error: -m DIR and -p PROMPT (or -f FILE) are required (see --help)\n");
        return 1;
    }
    char path[4096];
    if (!tok_path) {
        snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
        tok_path = path;
    }
    char *file_prompt = NULL;
    if (o.prompt_file && !(file_prompt = read_file(o.prompt_file))) {
        fprintf(stderr, "error: cannot read prompt file %s\n", o.prompt_file);
        return 1;
    }
    int rc = 2;
    struct hmoe_tokenizer *tok = NULL;
    struct hmoe_model *m = NULL;
    struct hmoe_fwd *fwd = NULL;
    struct hmoe_request *req = NULL;
    float *logits = NULL;
    struct hmoe_chat chat;
    hmoe_chat_init(&chat);
    struct hmoe_gen_defaults d;
    struct hmoe_sampling_params sp;
    struct hmoe_gen_params gp;
    enum hmoe_status st;
    if ((st = hmoe_tokenizer_load(tok_path, &tok))) {
        fprintf(stderr, "error: %s\nhint: pass --tokenizer FILE\n", hmoe_err_msg());
        goto out;
    }
    if ((st = hmoe_gen_defaults_load(model_dir, &d)) || (st = hmoe_model_open(model_dir, &m))) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        goto out;
    }
    if (m->cfg.vocab_size < hmoe_tokenizer_n_vocab(tok)) {
        fprintf(stderr, "error: the tokenizer has %d ids but the model only %d\n",
                hmoe_tokenizer_n_vocab(tok), m->cfg.vocab_size);
        goto out;
    }
    if ((st = hmoe_text_opts_resolve(&o, &d, d.max_context, &sp, &gp)) ||
        (st = hmoe_fwd_init(m, gp.n_ctx, &fwd))) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        goto out;
    }
    int tmpl = hmoe_chat_template_parse(o.chat_template);
    if ((o.system_prompt && (st = hmoe_chat_set_system(&chat, o.system_prompt))) ||
        (st = hmoe_chat_add(&chat, "user", file_prompt ? file_prompt : o.prompt)) ||
        (st = hmoe_request_init(tok, &chat, (enum hmoe_chat_template)tmpl, &sp, &gp, &req))) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        goto out;
    }
    size_t np, dropped;
    const int32_t *prompt = hmoe_request_prompt(req, &np, &dropped);
    if (dropped) fprintf(stderr, "warning: dropped the %zu oldest prompt tokens\n", dropped);
    if (verbose) {
        fprintf(stderr, "prompt (%zu tokens):", np);
        for (size_t i = 0; i < np; i++) fprintf(stderr, " %d", prompt[i]);
        fprintf(stderr, "\nseed %llu\n", (unsigned long long)hmoe_request_seed(req));
    }
    logits = malloc((size_t)m->cfg.vocab_size * sizeof *logits);
    if (!logits) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    signal(SIGINT, on_sigint);
    double t0 = hmoe_clock_s();
    if ((st = hmoe_fwd_run(fwd, prompt, (int)np, logits, 1))) {
        fprintf(stderr, "error: prefill: %s\n", hmoe_err_msg());
        goto out;
    }
    double t1 = hmoe_clock_s();
    enum hmoe_finish fin = HMOE_FINISH_NONE;
    const char *text;
    size_t len;
    for (;;) {
        if (g_stop) {
            fin = hmoe_request_abort(req, &text, &len);
            fwrite(text, 1, len, stdout);
            break;
        }
        int32_t id;
        fin = hmoe_request_step(req, logits, &id, &text, &len, &st);
        if (st) {
            fprintf(stderr, "\nerror: %s\n", hmoe_err_msg());
            goto out;
        }
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        if (fin != HMOE_FINISH_NONE) break;
        if ((st = hmoe_fwd_run(fwd, &id, 1, logits, 1))) {
            fprintf(stderr, "\nerror: decode: %s\n", hmoe_err_msg());
            goto out;
        }
    }
    double t2 = hmoe_clock_s();
    size_t ng = hmoe_request_n_generated(req);
    putchar('\n');
    fflush(stdout);
    fprintf(stderr,
            "# prompt %zu tokens in %.3f s (%.1f tok/s); %zu tokens generated in %.3f s "
            "(%.1f tok/s); finish: %s\n",
            np, t1 - t0, (double)np / (t1 - t0 > 0 ? t1 - t0 : 1e-9), ng, t2 - t1,
            (double)ng / (t2 - t1 > 0 ? t2 - t1 : 1e-9), hmoe_finish_str(fin));
    rc = 0;
out:
    free(logits);
    free(file_prompt);
    hmoe_request_free(req);
    hmoe_chat_free(&chat);
    hmoe_fwd_free(fwd);
    hmoe_model_close(m);
    hmoe_tokenizer_free(tok);
    return rc;
}
