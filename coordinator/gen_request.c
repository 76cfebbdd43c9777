/* gen_request.c: one request end to end on the coordinator side: the conversation is rendered
 * with the chat template, encoded (special tokens parsed), fitted to the context (refused or
 * left-truncated), the prompt tokens enter the sampler's repeat window; then each decode step
 * samples from the logits, records the token and feeds the generation state. */
#include <stdlib.h>
#include <string.h>

#include "hmoe/text.h"

struct hmoe_request {
    struct hmoe_tokens prompt;
    size_t n_dropped;
    struct hmoe_sampler *smp;
    struct hmoe_gen *gen;
};

enum hmoe_status hmoe_request_init(struct hmoe_tokenizer *tok, const struct hmoe_chat *chat,
                                   enum hmoe_chat_template tmpl,
                                   const struct hmoe_sampling_params *sampling,
                                   const struct hmoe_gen_params *gen, struct hmoe_request **out)
{
    *out = NULL;
    struct hmoe_request *r = calloc(1, sizeof *r);
    if (!r) return hmoe_fail(HMOE_E_NOMEM, "request: out of memory");
    char *text = NULL;
    enum hmoe_status st = hmoe_chat_render(chat, tmpl, 1, &text);
    if (!st) st = hmoe_tokenizer_encode(tok, text, strlen(text), 1, &r->prompt);
    free(text);
    if (!st) st = hmoe_gen_fit_prompt(gen, &r->prompt, &r->n_dropped);
    if (!st) st = hmoe_sampler_init(sampling, hmoe_tokenizer_n_vocab(tok), &r->smp);
    for (size_t i = 0; !st && i < r->prompt.n; i++)
        st = hmoe_sampler_accept(r->smp, r->prompt.ids[i], 1);
    if (!st) st = hmoe_gen_init(gen, tok, r->prompt.n, &r->gen);
    if (st) {
        hmoe_request_free(r);
        return st;
    }
    *out = r;
    return HMOE_OK;
}

void hmoe_request_free(struct hmoe_request *r)
{
    if (!r) return;
    hmoe_tokens_free(&r->prompt);
    hmoe_sampler_free(r->smp);
    hmoe_gen_free(r->gen);
    free(r);
}

const int32_t *hmoe_request_prompt(const struct hmoe_request *r, size_t *n, size_t *n_dropped)
{
    *n = r->prompt.n;
    if (n_dropped) *n_dropped = r->n_dropped;
    return r->prompt.ids;
}

uint64_t hmoe_request_seed(const struct hmoe_request *r)
{
    return hmoe_sampler_seed(r->smp);
}

enum hmoe_finish hmoe_request_step(struct hmoe_request *r, const float *logits, int32_t *id,
                                   const char **text, size_t *text_len, enum hmoe_status *st)
{
    static const char empty[1] = "";
    *text = empty;
    *text_len = 0;
    *id = -1;
    *st = HMOE_OK;
    enum hmoe_finish f = hmoe_gen_finish(r->gen);
    if (f != HMOE_FINISH_NONE) return f;
    if ((*st = hmoe_sampler_sample(r->smp, logits, id))) return HMOE_FINISH_NONE;
    if ((*st = hmoe_sampler_accept(r->smp, *id, 0))) return HMOE_FINISH_NONE;
    return hmoe_gen_feed(r->gen, *id, text, text_len, st);
}

enum hmoe_finish hmoe_request_abort(struct hmoe_request *r, const char **text, size_t *text_len)
{
    return hmoe_gen_abort(r->gen, text, text_len);
}

size_t hmoe_request_n_generated(const struct hmoe_request *r)
{
    return hmoe_gen_n_generated(r->gen);
}
