/* cli_opts.c: the option table of the client's prompt, sampling and generation flags (`hmoe run`,
 * `hmoe chat`, the server's per-request defaults). One table drives argv, HMOE_ARG_* env vars and
 * --help (valkey static_configs / llama.cpp arg table style). Flag names follow CLI.md. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/text.h"

enum opt_type { T_FLOAT, T_INT, T_INT64, T_STR, T_FLAG, T_STOP, T_TRUNC, T_TEMPLATE };

struct opt {
    const char *shrt, *lng, *env, *meta;
    enum opt_type type;
    size_t off;
    double lo, hi;
    uint32_t bit; /* HMOE_TOPT_* for sampling fields, 0 otherwise */
    const char *group, *help, *def;
};

#define OFF(f) offsetof(struct hmoe_text_opts, f)
static const struct opt OPTS[] = {
    {"-p", "--prompt", "HMOE_ARG_PROMPT", "TEXT", T_STR, OFF(prompt), 0, 0, 0, "Prompt",
     "prompt to start generation with", "none"},
    {"-f", "--file", "HMOE_ARG_FILE", "FNAME", T_STR, OFF(prompt_file), 0, 0, 0, "Prompt",
     "file containing the prompt", "none"},
    {"-sys", "--system-prompt", "HMOE_ARG_SYSTEM_PROMPT", "TEXT", T_STR, OFF(system_prompt), 0, 0,
     0, "Prompt", "system prompt (chat templates only)", "none"},
    {NULL, "--chat-template", "HMOE_ARG_CHAT_TEMPLATE", "NAME", T_TEMPLATE, OFF(chat_template), 0,
     0, 0, "Prompt", "chat template: chatml | none (raw text, nothing added)", "chatml"},
    {"-n", "--n-predict", "HMOE_ARG_N_PREDICT", "N", T_INT, OFF(n_predict), -2, 1e9, 0,
     "Generation", "tokens to generate (-1 = no limit, -2 = until the context is full)", "-1"},
    {"-c", "--ctx-size", "HMOE_ARG_CTX_SIZE", "N", T_INT, OFF(ctx_size), 0, 1e9, 0, "Generation",
     "context size in tokens (0 = from the model)", "0"},
    {"-r", "--reverse-prompt", "HMOE_ARG_REVERSE_PROMPT", "TEXT", T_STOP, 0, 0, 0, 0, "Generation",
     "stop generating at TEXT (not printed); repeatable, also --stop", "none"},
    {NULL, "--stop", NULL, "TEXT", T_STOP, 0, 0, 0, 0, "Generation", "same as --reverse-prompt",
     "none"},
    {NULL, "--ignore-eos", "HMOE_ARG_IGNORE_EOS", NULL, T_FLAG, OFF(ignore_eos), 0, 1, 0,
     "Generation", "do not stop at end-of-sequence tokens", "off"},
    {NULL, "--truncate", "HMOE_ARG_TRUNCATE", "left|none", T_TRUNC, OFF(truncate_left), 0, 1, 0,
     "Generation", "a prompt longer than the context: drop its oldest tokens, or refuse", "none"},
    {"-s", "--seed", "HMOE_ARG_SEED", "N", T_INT64, OFF(sampling.seed), -1, 9.2e18,
     HMOE_TOPT_SEED, "Sampling", "random seed (-1 = random)", "-1"},
    {NULL, "--temp", "HMOE_ARG_TEMP", "N", T_FLOAT, OFF(sampling.temperature), 0, 100,
     HMOE_TOPT_TEMP, "Sampling", "temperature (0 = greedy)", "model, else 0.7"},
    {NULL, "--top-k", "HMOE_ARG_TOP_K", "N", T_INT, OFF(sampling.top_k), 0, 1e9, HMOE_TOPT_TOP_K,
     "Sampling", "top-k sampling (0 = off)", "model, else 20"},
    {NULL, "--top-p", "HMOE_ARG_TOP_P", "N", T_FLOAT, OFF(sampling.top_p), 1e-6, 1,
     HMOE_TOPT_TOP_P, "Sampling", "top-p (nucleus) sampling (1.0 = off)", "model, else 0.8"},
    {NULL, "--min-p", "HMOE_ARG_MIN_P", "N", T_FLOAT, OFF(sampling.min_p), 0, 1, HMOE_TOPT_MIN_P,
     "Sampling", "min-p sampling (0.0 = off)", "model, else 0.0"},
    {NULL, "--repeat-penalty", "HMOE_ARG_REPEAT_PENALTY", "N", T_FLOAT,
     OFF(sampling.repeat_penalty), 1e-3, 100, HMOE_TOPT_REPEAT_PENALTY, "Sampling",
     "penalize repeated tokens of the last --repeat-last-n (1.0 = off)", "model, else 1.0"},
    {NULL, "--repeat-last-n", "HMOE_ARG_REPEAT_LAST_N", "N", T_INT, OFF(sampling.repeat_last_n),
     -1, 1e9, HMOE_TOPT_REPEAT_LAST_N, "Sampling",
     "tokens considered by --repeat-penalty (0 = off, -1 = whole context)", "64"},
    {NULL, "--presence-penalty", "HMOE_ARG_PRESENCE_PENALTY", "N", T_FLOAT,
     OFF(sampling.presence_penalty), -2, 2, HMOE_TOPT_PRESENCE, "Sampling",
     "OpenAI presence penalty on generated tokens (0.0 = off)", "0.0"},
    {NULL, "--frequency-penalty", "HMOE_ARG_FREQUENCY_PENALTY", "N", T_FLOAT,
     OFF(sampling.frequency_penalty), -2, 2, HMOE_TOPT_FREQUENCY, "Sampling",
     "OpenAI frequency penalty on generated tokens (0.0 = off)", "0.0"},
};
#define N_OPTS (sizeof OPTS / sizeof *OPTS)

void hmoe_text_opts_init(struct hmoe_text_opts *o)
{
    memset(o, 0, sizeof *o);
    hmoe_sampling_params_default(&o->sampling);
    o->n_predict = -1;
    o->chat_template = "chatml";
}

/* Sets one option from its text value; name is the flag or env var used (for messages). */
static enum hmoe_status set_value(struct hmoe_text_opts *o, const struct opt *op, const char *v,
                                  const char *name)
{
    char *base = (char *)o + op->off;
    char *end;
    switch (op->type) {
    case T_FLOAT: {
        errno = 0;
        double d = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(d) || d < op->lo || d > op->hi)
            return hmoe_fail(HMOE_E_INVAL, "%s: expected a number in [%g, %g], got '%s'", name,
                             op->lo, op->hi, v);
        *(float *)(void *)base = (float)d;
        break;
    }
    case T_INT:
    case T_INT64: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (end == v || *end || errno || (double)x < op->lo || (double)x > op->hi)
            return hmoe_fail(HMOE_E_INVAL, "%s: expected an integer in [%.0f, %.0f], got '%s'",
                             name, op->lo, op->hi, v);
        if (op->type == T_INT) *(int32_t *)(void *)base = (int32_t)x;
        else *(int64_t *)(void *)base = (int64_t)x;
        break;
    }
    case T_STR: *(const char **)(void *)base = v; break;
    case T_TEMPLATE:
        if (hmoe_chat_template_parse(v) < 0)
            return hmoe_fail(HMOE_E_INVAL, "%s: unknown chat template '%s' (chatml | none)", name,
                             v);
        *(const char **)(void *)base = v;
        break;
    case T_FLAG:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "on")) *(int *)(void *)base = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "off"))
            *(int *)(void *)base = 0;
        else return hmoe_fail(HMOE_E_INVAL, "%s: expected 1/0, true/false or on/off, got '%s'",
                              name, v);
        break;
    case T_TRUNC:
        if (!strcmp(v, "left")) o->truncate_left = 1;
        else if (!strcmp(v, "none")) o->truncate_left = 0;
        else return hmoe_fail(HMOE_E_INVAL, "%s: expected left or none, got '%s'", name, v);
        break;
    case T_STOP:
        if (!*v) return hmoe_fail(HMOE_E_INVAL, "%s: empty stop string", name);
        if (o->n_stop >= HMOE_MAX_STOP)
            return hmoe_fail(HMOE_E_INVAL, "%s: at most %d stop strings", name, HMOE_MAX_STOP);
        o->stop[o->n_stop++] = v;
        break;
    }
    o->set |= op->bit;
    return HMOE_OK;
}

enum hmoe_status hmoe_text_opts_env(struct hmoe_text_opts *o)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        if (!OPTS[i].env) continue;
        const char *v = getenv(OPTS[i].env);
        if (!v) continue;
        enum hmoe_status st = set_value(o, &OPTS[i], v, OPTS[i].env);
        if (st) return st;
    }
    return HMOE_OK;
}

int hmoe_text_opts_parse(struct hmoe_text_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    for (size_t k = 0; k < N_OPTS; k++) {
        const struct opt *op = &OPTS[k];
        size_t ll = strlen(op->lng);
        const char *val = NULL;
        int match = (op->shrt && !strcmp(a, op->shrt)) || !strcmp(a, op->lng);
        if (!match && op->type != T_FLAG && !strncmp(a, op->lng, ll) && a[ll] == '=') {
            match = 1;
            val = a + ll + 1; /* --temp=0.5 */
        }
        if (!match) continue;
        if (op->type == T_FLAG && !val) {
            *(int *)(void *)((char *)o + op->off) = 1;
            return 1;
        }
        if (!val) {
            if (*i + 1 >= argc) {
                hmoe_err_set("%s needs a value (%s)", a, op->meta);
                return -1;
            }
            val = argv[++*i];
        }
        return set_value(o, op, val, op->lng) == HMOE_OK ? 1 : -1;
    }
    return 0;
}

void hmoe_text_opts_help(FILE *f)
{
    const char *groups[] = {"Prompt", "Generation", "Sampling"};
    for (size_t g = 0; g < sizeof groups / sizeof *groups; g++) {
        fprintf(f, "\n%s:\n", groups[g]);
        for (size_t k = 0; k < N_OPTS; k++) {
            const struct opt *op = &OPTS[k];
            if (strcmp(op->group, groups[g])) continue;
            char flags[64];
            snprintf(flags, sizeof flags, "%s%s%s%s%s", op->shrt ? op->shrt : "",
                     op->shrt ? ", " : "", op->lng, op->meta ? " " : "", op->meta ? op->meta : "");
            fprintf(f, "  %-32s %s (default: %s)", flags, op->help, op->def);
            if (op->env) fprintf(f, " [env: %s]", op->env);
            fputc('\n', f);
        }
    }
}

enum hmoe_status hmoe_text_opts_resolve(const struct hmoe_text_opts *o,
                                        const struct hmoe_gen_defaults *d, int32_t model_ctx,
                                        struct hmoe_sampling_params *sp,
                                        struct hmoe_gen_params *gp)
{
    if (d) *sp = d->sampling;
    else hmoe_sampling_params_default(sp);
    const struct hmoe_sampling_params *g = &o->sampling;
    if (o->set & HMOE_TOPT_TEMP) sp->temperature = g->temperature;
    if (o->set & HMOE_TOPT_TOP_K) sp->top_k = g->top_k;
    if (o->set & HMOE_TOPT_TOP_P) sp->top_p = g->top_p;
    if (o->set & HMOE_TOPT_MIN_P) sp->min_p = g->min_p;
    if (o->set & HMOE_TOPT_REPEAT_PENALTY) sp->repeat_penalty = g->repeat_penalty;
    if (o->set & HMOE_TOPT_REPEAT_LAST_N) sp->repeat_last_n = g->repeat_last_n;
    if (o->set & HMOE_TOPT_PRESENCE) sp->presence_penalty = g->presence_penalty;
    if (o->set & HMOE_TOPT_FREQUENCY) sp->frequency_penalty = g->frequency_penalty;
    if (o->set & HMOE_TOPT_SEED) sp->seed = g->seed;
    enum hmoe_status st = hmoe_sampling_params_check(sp);
    if (st) return st;

    hmoe_gen_params_default(gp);
    gp->n_ctx = o->ctx_size > 0 ? o->ctx_size : model_ctx > 0 ? model_ctx : 4096;
    gp->max_new_tokens = o->n_predict;
    if (gp->max_new_tokens == 0)
        return hmoe_fail(HMOE_E_INVAL, "--n-predict must be > 0, -1 or -2");
    gp->ignore_eos = o->ignore_eos;
    gp->truncate_left = o->truncate_left;
    for (int i = 0; i < o->n_stop; i++) gp->stop[i] = o->stop[i];
    gp->n_stop = o->n_stop;
    if (d) {
        gp->eos_ids = d->eos_ids;
        gp->n_eos = d->n_eos;
    }
    return HMOE_OK;
}
