/* gen.c: generation defaults (config.json + generation_config.json), prompt fitting against the
 * context window, and the per-request generation state: token ids in, streamable text out.
 * Text is held back while it is an incomplete UTF-8 character or could be the start of a stop
 * string; a stop string and what follows it are never emitted. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "hmoe/text.h"

/* ------------------------------------------------------------------------------------------ */
/* defaults */

enum hmoe_status hmoe_gen_defaults_add_eos(struct hmoe_gen_defaults *d, int32_t id)
{
    for (int i = 0; i < d->n_eos; i++)
        if (d->eos_ids[i] == id) return HMOE_OK;
    if (d->n_eos >= HMOE_GEN_MAX_EOS)
        return hmoe_fail(HMOE_E_RANGE, "more than %d EOS ids", HMOE_GEN_MAX_EOS);
    d->eos_ids[d->n_eos++] = id;
    return HMOE_OK;
}

static enum hmoe_status add_eos_json(struct hmoe_gen_defaults *d, const cJSON *e, const char *file)
{
    if (!e || cJSON_IsNull(e)) return HMOE_OK;
    if (cJSON_IsNumber(e)) {
        if (e->valuedouble < 0 || e->valuedouble > 1e8)
            return hmoe_fail(HMOE_E_FORMAT, "%s: eos_token_id out of range", file);
        return hmoe_gen_defaults_add_eos(d, (int32_t)e->valuedouble);
    }
    if (cJSON_IsArray(e)) {
        const cJSON *x;
        cJSON_ArrayForEach(x, e)
        {
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 1e8)
                return hmoe_fail(HMOE_E_FORMAT, "%s: eos_token_id list holds a non-id", file);
            enum hmoe_status st = hmoe_gen_defaults_add_eos(d, (int32_t)x->valuedouble);
            if (st) return st;
        }
        return HMOE_OK;
    }
    return hmoe_fail(HMOE_E_FORMAT, "%s: eos_token_id must be an int or a list", file);
}

static int get_num(const cJSON *o, const char *k, double *v)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(e)) return 0;
    *v = e->valuedouble;
    return 1;
}

enum hmoe_status hmoe_gen_defaults_parse(const char *config_json, const char *gen_config_json,
                                         struct hmoe_gen_defaults *d)
{
    memset(d, 0, sizeof *d);
    hmoe_sampling_params_default(&d->sampling);
    d->bos_id = -1;
    enum hmoe_status st = HMOE_OK;
    double v;
    if (config_json) {
        cJSON *c = cJSON_Parse(config_json);
        if (!cJSON_IsObject(c)) {
            cJSON_Delete(c);
            return hmoe_fail(HMOE_E_FORMAT, "config.json: not a JSON object");
        }
        st = add_eos_json(d, cJSON_GetObjectItemCaseSensitive(c, "eos_token_id"), "config.json");
        if (get_num(c, "bos_token_id", &v)) d->bos_id = (int32_t)v;
        if (get_num(c, "max_position_embeddings", &v) && v > 0 && v < 1e9)
            d->max_context = (int32_t)v;
        cJSON_Delete(c);
        if (st) return st;
    }
    if (gen_config_json) {
        cJSON *g = cJSON_Parse(gen_config_json);
        if (!cJSON_IsObject(g)) {
            cJSON_Delete(g);
            return hmoe_fail(HMOE_E_FORMAT, "generation_config.json: not a JSON object");
        }
        struct hmoe_sampling_params *p = &d->sampling;
        st = add_eos_json(d, cJSON_GetObjectItemCaseSensitive(g, "eos_token_id"),
                          "generation_config.json");
        if (get_num(g, "bos_token_id", &v)) d->bos_id = (int32_t)v;
        if (get_num(g, "temperature", &v)) p->temperature = (float)v;
        if (get_num(g, "top_k", &v)) p->top_k = (int32_t)v;
        if (get_num(g, "top_p", &v)) p->top_p = (float)v;
        if (get_num(g, "min_p", &v)) p->min_p = (float)v;
        if (get_num(g, "repetition_penalty", &v)) p->repeat_penalty = (float)v;
        /* HF: do_sample=false means greedy whatever the temperature */
        if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(g, "do_sample"))) p->temperature = 0.0f;
        cJSON_Delete(g);
        if (st) return st;
        if ((st = hmoe_sampling_params_check(p))) {
            hmoe_err_prefix("generation_config.json");
            return HMOE_E_FORMAT;
        }
    }
    return HMOE_OK;
}

static char *read_opt(const char *dir, const char *name, enum hmoe_status *st)
{
    char path[4096];
    *st = HMOE_OK;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        *st = hmoe_fail(HMOE_E_INVAL, "model path too long");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno != ENOENT)
            *st = hmoe_fail(HMOE_E_IO, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            size_t nc = cap ? cap * 2 : 8192;
            char *q = realloc(b, nc);
            if (!q) {
                free(b);
                fclose(f);
                *st = hmoe_fail(HMOE_E_NOMEM, "out of memory reading %s", path);
                return NULL;
            }
            b = q;
            cap = nc;
        }
        size_t k = fread(b + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    fclose(f);
    b[n] = 0;
    return b;
}

enum hmoe_status hmoe_gen_defaults_load(const char *model_dir, struct hmoe_gen_defaults *out)
{
    enum hmoe_status st1, st2;
    char *cfg = read_opt(model_dir, "config.json", &st1);
    if (st1) return st1;
    char *gen = read_opt(model_dir, "generation_config.json", &st2);
    if (st2) {
        free(cfg);
        return st2;
    }
    enum hmoe_status st = hmoe_gen_defaults_parse(cfg, gen, out);
    if (st) hmoe_err_prefix("%s", model_dir);
    free(cfg);
    free(gen);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* params and prompt fitting */

void hmoe_gen_params_default(struct hmoe_gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->max_new_tokens = -1;
    p->n_ctx = 4096;
    p->skip_special = 1;
}

enum hmoe_status hmoe_gen_fit_prompt(const struct hmoe_gen_params *p, struct hmoe_tokens *prompt,
                                     size_t *n_dropped)
{
    if (n_dropped) *n_dropped = 0;
    if (p->n_ctx <= 1)
        return hmoe_fail(HMOE_E_INVAL, "context size must be > 1 (got %d)", p->n_ctx);
    size_t ctx = (size_t)p->n_ctx;
    if (prompt->n == 0) return hmoe_fail(HMOE_E_INVAL, "the prompt is empty (0 tokens)");
    if (prompt->n < ctx) return HMOE_OK;
    if (!p->truncate_left)
        return hmoe_fail(HMOE_E_RANGE,
                         "the prompt has %zu tokens but the context holds %zu (prompt plus at "
                         "least one new token); hint: shorten the prompt, raise -c/--ctx-size, or "
                         "ask for left truncation (--truncate left)",
                         prompt->n, ctx);
    size_t reserve = p->max_new_tokens > 0 ? (size_t)p->max_new_tokens : ctx / 4;
    if (reserve > ctx / 2) reserve = ctx / 2;
    if (reserve < 1) reserve = 1;
    size_t keep = ctx - reserve, drop = prompt->n - keep;
    memmove(prompt->ids, prompt->ids + drop, keep * sizeof *prompt->ids);
    prompt->n = keep;
    if (n_dropped) *n_dropped = drop;
    return HMOE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* generation state */

struct hmoe_gen {
    const struct hmoe_tokenizer *tok;
    int32_t max_new, n_ctx;
    int ignore_eos, skip_special;
    char *stop[HMOE_MAX_STOP];
    size_t stop_len[HMOE_MAX_STOP];
    int n_stop;
    int32_t eos[HMOE_GEN_MAX_EOS];
    int n_eos;
    size_t n_prompt, n_gen;
    enum hmoe_finish fin;
    struct hmoe_utf8_stream us;
    char *pend; /* decoded text not yet emitted (a possible stop-string start) */
    size_t pend_len, pend_cap;
    char *out; /* text returned by the last call */
    size_t out_cap;
};

const char *hmoe_finish_str(enum hmoe_finish f)
{
    switch (f) {
    case HMOE_FINISH_NONE: return "none";
    case HMOE_FINISH_EOS: return "eos";
    case HMOE_FINISH_STOP_STRING: return "stop_string";
    case HMOE_FINISH_LENGTH: return "length";
    case HMOE_FINISH_CONTEXT: return "context";
    case HMOE_FINISH_ABORT: return "abort";
    }
    return "?";
}

const char *hmoe_finish_openai(enum hmoe_finish f)
{
    switch (f) {
    case HMOE_FINISH_EOS:
    case HMOE_FINISH_STOP_STRING:
    case HMOE_FINISH_ABORT: return "stop";
    case HMOE_FINISH_LENGTH:
    case HMOE_FINISH_CONTEXT: return "length";
    default: return NULL;
    }
}

enum hmoe_status hmoe_gen_init(const struct hmoe_gen_params *p, const struct hmoe_tokenizer *tok,
                               size_t n_prompt, struct hmoe_gen **out)
{
    *out = NULL;
    if (!tok) return hmoe_fail(HMOE_E_INVAL, "generation: no tokenizer");
    if (p->n_ctx <= 0) return hmoe_fail(HMOE_E_INVAL, "generation: context size must be > 0");
    if (p->max_new_tokens == 0 || p->max_new_tokens < -2)
        return hmoe_fail(HMOE_E_INVAL, "generation: max new tokens must be > 0, -1 or -2 (got %d)",
                         p->max_new_tokens);
    if (p->n_stop < 0 || p->n_stop > HMOE_MAX_STOP)
        return hmoe_fail(HMOE_E_INVAL, "generation: at most %d stop strings", HMOE_MAX_STOP);
    if (p->n_eos < 0 || p->n_eos > HMOE_GEN_MAX_EOS || (p->n_eos && !p->eos_ids))
        return hmoe_fail(HMOE_E_INVAL, "generation: at most %d EOS ids", HMOE_GEN_MAX_EOS);
    if (n_prompt >= (size_t)p->n_ctx)
        return hmoe_fail(HMOE_E_RANGE, "generation: prompt of %zu tokens leaves no room in a "
                                       "context of %d", n_prompt, p->n_ctx);
    struct hmoe_gen *g = calloc(1, sizeof *g);
    if (!g) return hmoe_fail(HMOE_E_NOMEM, "generation: out of memory");
    g->tok = tok;
    g->max_new = p->max_new_tokens;
    g->n_ctx = p->n_ctx;
    g->ignore_eos = p->ignore_eos;
    g->skip_special = p->skip_special;
    g->n_prompt = n_prompt;
    for (int i = 0; i < p->n_stop; i++) {
        size_t n = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (!n || hmoe_utf8_valid_prefix(p->stop[i], n) != n) {
            hmoe_gen_free(g);
            return hmoe_fail(HMOE_E_INVAL, "generation: stop string %d is empty or not UTF-8", i);
        }
        if (!(g->stop[g->n_stop] = strdup(p->stop[i]))) {
            hmoe_gen_free(g);
            return hmoe_fail(HMOE_E_NOMEM, "generation: out of memory");
        }
        g->stop_len[g->n_stop++] = n;
    }
    for (int i = 0; i < p->n_eos; i++) g->eos[i] = p->eos_ids[i];
    g->n_eos = p->n_eos;
    hmoe_utf8_stream_init(&g->us);
    g->out_cap = 256;
    g->out = malloc(g->out_cap);
    if (!g->out) {
        hmoe_gen_free(g);
        return hmoe_fail(HMOE_E_NOMEM, "generation: out of memory");
    }
    g->out[0] = 0;
    *out = g;
    return HMOE_OK;
}

void hmoe_gen_free(struct hmoe_gen *g)
{
    if (!g) return;
    for (int i = 0; i < g->n_stop; i++) free(g->stop[i]);
    free(g->pend);
    free(g->out);
    free(g);
}

size_t hmoe_gen_n_generated(const struct hmoe_gen *g)
{
    return g->n_gen;
}

enum hmoe_finish hmoe_gen_finish(const struct hmoe_gen *g)
{
    return g->fin;
}

static int reserve(char **b, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    char *q = realloc(*b, c);
    if (!q) return -1;
    *b = q;
    *cap = c;
    return 0;
}

/* Moves pend[0..n) to out (out is replaced). */
static int emit(struct hmoe_gen *g, size_t n, size_t *out_len)
{
    if (reserve(&g->out, &g->out_cap, n + 1)) return -1;
    if (n) memcpy(g->out, g->pend, n);
    g->out[n] = 0;
    if (n && g->pend_len > n) memmove(g->pend, g->pend + n, g->pend_len - n);
    g->pend_len -= n;
    *out_len = n;
    return 0;
}

/* Appends decoded bytes (through the UTF-8 stream) to pend. */
static int push_bytes(struct hmoe_gen *g, const char *b, size_t n, int flush)
{
    char *txt;
    size_t tn;
    if (hmoe_utf8_stream_feed(&g->us, b, n, flush, &txt, &tn)) return -1;
    if (reserve(&g->pend, &g->pend_cap, g->pend_len + tn + 1)) {
        free(txt);
        return -1;
    }
    memcpy(g->pend + g->pend_len, txt, tn);
    g->pend_len += tn;
    free(txt);
    return 0;
}

/* Ends the request: flushes the UTF-8 stream and every held-back byte. */
static enum hmoe_finish finish_flush(struct hmoe_gen *g, enum hmoe_finish why, const char **text,
                                     size_t *text_len, enum hmoe_status *st)
{
    g->fin = why;
    if (push_bytes(g, NULL, 0, 1) || emit(g, g->pend_len, text_len)) {
        if (st) *st = hmoe_fail(HMOE_E_NOMEM, "generation: out of memory");
        *text_len = 0;
    }
    *text = g->out;
    return why;
}

enum hmoe_finish hmoe_gen_feed(struct hmoe_gen *g, int32_t id, const char **text,
                               size_t *text_len, enum hmoe_status *st)
{
    if (st) *st = HMOE_OK;
    g->out[0] = 0;
    *text = g->out;
    *text_len = 0;
    if (g->fin != HMOE_FINISH_NONE) return g->fin;
    size_t blen;
    const char *bytes = hmoe_tokenizer_token_bytes(g->tok, id, &blen);
    if (!bytes) {
        if (st) *st = hmoe_fail(HMOE_E_INVAL, "generation: unknown token id %d", id);
        return HMOE_FINISH_NONE;
    }
    g->n_gen++;
    int is_eos = 0;
    for (int i = 0; i < g->n_eos; i++) is_eos |= g->eos[i] == id;
    if (is_eos && !g->ignore_eos) return finish_flush(g, HMOE_FINISH_EOS, text, text_len, st);
    if (is_eos || (g->skip_special && hmoe_tokenizer_is_special(g->tok, id))) blen = 0;
    if (blen && push_bytes(g, bytes, blen, 0)) {
        if (st) *st = hmoe_fail(HMOE_E_NOMEM, "generation: out of memory");
        return HMOE_FINISH_NONE;
    }
    /* earliest stop-string occurrence in the held text */
    size_t hit = SIZE_MAX;
    for (int i = 0; i < g->n_stop; i++) {
        const char *p = memmem(g->pend, g->pend_len, g->stop[i], g->stop_len[i]);
        if (p && (size_t)(p - g->pend) < hit) hit = (size_t)(p - g->pend);
    }
    if (hit != SIZE_MAX) {
        g->fin = HMOE_FINISH_STOP_STRING;
        if (emit(g, hit, text_len) && st)
            *st = hmoe_fail(HMOE_E_NOMEM, "generation: out of memory");
        g->pend_len = 0; /* the stop string and anything after it are dropped */
        *text = g->out;
        return g->fin;
    }
    /* out of length or context: the last token's text is included */
    if (g->max_new > 0 && g->n_gen >= (size_t)g->max_new)
        return finish_flush(g, HMOE_FINISH_LENGTH, text, text_len, st);
    if (g->n_prompt + g->n_gen >= (size_t)g->n_ctx)
        return finish_flush(g, HMOE_FINISH_CONTEXT, text, text_len, st);
    /* hold back the longest suffix that is a proper prefix of a stop string */
    size_t hold = 0;
    for (int i = 0; i < g->n_stop; i++) {
        size_t maxk = g->stop_len[i] - 1 < g->pend_len ? g->stop_len[i] - 1 : g->pend_len;
        for (size_t k = maxk; k > hold; k--) {
            if (!memcmp(g->pend + g->pend_len - k, g->stop[i], k)) {
                hold = k;
                break;
            }
        }
    }
    if (emit(g, g->pend_len - hold, text_len)) {
        if (st) *st = hmoe_fail(HMOE_E_NOMEM, "generation: out of memory");
        *text_len = 0;
    }
    *text = g->out;
    return HMOE_FINISH_NONE;
}

enum hmoe_finish hmoe_gen_abort(struct hmoe_gen *g, const char **text, size_t *text_len)
{
    g->out[0] = 0;
    *text = g->out;
    *text_len = 0;
    if (g->fin != HMOE_FINISH_NONE) return g->fin;
    return finish_flush(g, HMOE_FINISH_ABORT, text, text_len, NULL);
}
