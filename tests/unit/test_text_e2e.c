/* test_text_e2e.c: text in, text out on a real (tiny, random) Qwen3-Next model with the CPU
 * reference forward pass: chat -> prompt ids -> prefill -> sample/stream per decode step.
 * Greedy tokens must be the argmax of an independent full prefill of prompt + answer, the
 * streamed text must equal the decoded ids, a seed must reproduce, and hmoe-generate must run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "hmoe/forward.h"
#include "hmoe/model.h"
#include "hmoe/text.h"
#include "hmoe_test.h"

#define MODEL HMOE_TEST_DATA "/tiny-bf16"
#define TOKJ HMOE_TEST_DATA "/tokenizer/tiny-384/tokenizer.json"
#define N_GEN 24

/* Generates N_GEN tokens; returns the streamed text (malloc'd) and the ids in gen[]. */
static char *generate(struct hmoe_tokenizer *tok, struct hmoe_model *m,
                      const struct hmoe_sampling_params *sp, int32_t *gen, struct hmoe_tokens *pr)
{
    struct hmoe_chat c;
    hmoe_chat_init(&c);
    CHECK(hmoe_chat_add(&c, "user", "Tell me a story about a caf\xc3\xa9.") == HMOE_OK);
    struct hmoe_gen_defaults d;
    CHECK(hmoe_gen_defaults_load(MODEL, &d) == HMOE_OK);
    CHECK(d.n_eos == 2 && d.eos_ids[0] == 383 && d.eos_ids[1] == 382);
    struct hmoe_gen_params gp;
    hmoe_gen_params_default(&gp);
    gp.max_new_tokens = N_GEN;
    gp.ignore_eos = 1; /* a random model: keep going for N_GEN tokens */
    gp.eos_ids = d.eos_ids;
    gp.n_eos = d.n_eos;
    gp.n_ctx = 256;
    struct hmoe_request *r = NULL;
    struct hmoe_fwd *f = NULL;
    CHECK(hmoe_request_init(tok, &c, HMOE_CHAT_CHATML, sp, &gp, &r) == HMOE_OK);
    CHECK(hmoe_fwd_init(m, 256, &f) == HMOE_OK);
    char *out = calloc(1, 16 * N_GEN + 1);
    float *logits = malloc((size_t)m->cfg.vocab_size * sizeof *logits);
    if (!r || !f || !out || !logits) goto done;
    size_t np;
    const int32_t *p = hmoe_request_prompt(r, &np, NULL);
    pr->n = 0;
    for (size_t i = 0; i < np; i++) CHECK(hmoe_tokens_push(pr, p[i]) == HMOE_OK);
    CHECK(hmoe_fwd_run(f, p, (int)np, logits, 1) == HMOE_OK);
    size_t w = 0;
    for (int k = 0; k < N_GEN; k++) {
        const char *t;
        size_t tn;
        enum hmoe_status st;
        enum hmoe_finish fin = hmoe_request_step(r, logits, &gen[k], &t, &tn, &st);
        CHECK(st == HMOE_OK);
        memcpy(out + w, t, tn);
        w += tn;
        if (k == N_GEN - 1) {
            CHECK(fin == HMOE_FINISH_LENGTH);
            break;
        }
        CHECK(fin == HMOE_FINISH_NONE);
        CHECK(hmoe_fwd_run(f, &gen[k], 1, logits, 1) == HMOE_OK);
    }
done:
    free(logits);
    hmoe_fwd_free(f);
    hmoe_request_free(r);
    hmoe_chat_free(&c);
    return out;
}

int main(void)
{
    struct hmoe_tokenizer *tok = NULL;
    struct hmoe_model *m = NULL;
    if (hmoe_tokenizer_load(TOKJ, &tok) || hmoe_model_open(MODEL, &m)) {
        fprintf(stderr, "%s\n", hmoe_err_msg());
        return 1;
    }
    CHECK(hmoe_tokenizer_n_vocab(tok) == m->cfg.vocab_size);
    CHECK(hmoe_tokenizer_token_id(tok, "<|im_end|>") == 383);
    int V = m->cfg.vocab_size;

    /* greedy */
    struct hmoe_sampling_params sp;
    hmoe_sampling_params_default(&sp);
    sp.temperature = 0.0f;
    int32_t gen[N_GEN];
    struct hmoe_tokens prompt = {0};
    char *text = generate(tok, m, &sp, gen, &prompt);

    /* independent check: one prefill of prompt + answer; each greedy token is the argmax of the
     * previous position (skipped when the top two are closer than 1e-4) */
    size_t T = prompt.n + N_GEN;
    int32_t *all = malloc(T * sizeof *all);
    float *lg = malloc(T * (size_t)V * sizeof *lg);
    struct hmoe_fwd *f = NULL;
    CHECK(hmoe_fwd_init(m, 256, &f) == HMOE_OK);
    if (all && lg && f) {
        memcpy(all, prompt.ids, prompt.n * sizeof *all);
        memcpy(all + prompt.n, gen, sizeof gen);
        CHECK(hmoe_fwd_run(f, all, (int)T, lg, 0) == HMOE_OK);
        int checked = 0;
        for (int k = 0; k < N_GEN; k++) {
            const float *row = lg + (prompt.n - 1 + (size_t)k) * (size_t)V;
            int best = 0, second = -1;
            for (int i = 1; i < V; i++) {
                if (row[i] > row[best]) {
                    second = best;
                    best = i;
                } else if (second < 0 || row[i] > row[second]) {
                    second = i;
                }
            }
            if (row[best] - row[second] < 1e-4f) continue;
            checked++;
            CHECKF(gen[k] == best, "step %d: sampled %d, argmax %d", k, gen[k], best);
        }
        CHECK(checked >= N_GEN - 2);
    }
    hmoe_fwd_free(f);
    free(all);
    free(lg);

    /* the streamed text is the decoded answer (special tokens hidden, U+FFFD for bad bytes) */
    char *raw, *dec;
    size_t rlen, dlen;
    CHECK(hmoe_tokenizer_decode(tok, gen, N_GEN, 1, &raw, &rlen) == HMOE_OK);
    struct hmoe_utf8_stream us;
    hmoe_utf8_stream_init(&us);
    CHECK(hmoe_utf8_stream_feed(&us, raw, rlen, 1, &dec, &dlen) == HMOE_OK);
    CHECKF(strlen(text) == dlen && !memcmp(text, dec, dlen), "'%s' vs '%s'", text, dec);
    free(raw);
    free(dec);
    free(text);

    /* sampling with the model defaults and a seed reproduces */
    sp.temperature = 0.7f;
    sp.seed = 1234;
    int32_t g1[N_GEN], g2[N_GEN];
    char *t1 = generate(tok, m, &sp, g1, &prompt);
    char *t2 = generate(tok, m, &sp, g2, &prompt);
    CHECK(!memcmp(g1, g2, sizeof g1) && !strcmp(t1, t2));
    free(t1);
    free(t2);
    hmoe_tokens_free(&prompt);

    /* the one-process tool */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s/hmoe-generate -m %s --tokenizer %s -p 'Hi there' -n 8 --temp 0 > /dev/null 2> "
             "/tmp/hmoe_gen_e2e.err && grep -q '8 tokens generated' /tmp/hmoe_gen_e2e.err",
             HMOE_BIN_DIR, MODEL, TOKJ);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s/hmoe-generate -m %s --bogus > /dev/null 2>&1", HMOE_BIN_DIR,
             MODEL);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    remove("/tmp/hmoe_gen_e2e.err");

    hmoe_model_close(m);
    hmoe_tokenizer_free(tok);
    TEST_DONE();
}
