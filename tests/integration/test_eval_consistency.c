/* tests/integration/test_eval_consistency.c: self-consistency of the CPU forward pass on every
 * fixture model under tests/data (no reference logits needed): one prefill of the whole
 * sequence == token-by-token decode == two prefill calls with cache continuation (split
 * inside a 64-token GDN chunk) == many small calls, all within 1e-4 relative. Fails when there
 * is no fixture. The same checks run on a synthetic NF4 model ("synth:small", 4 layers). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "hmoe_test.h"
#include "integration/test_eval_common.h"

#define REL_TOL 1e-4

/* Checks one model (a fixture directory or a synth: spec) on tokens tok[0..T). */
static void check_model(const char *dir, const int32_t *tok, int T)
{
    struct hmoe_model *m = NULL;
    CHECKF(hmoe_model_open(dir, &m) == HMOE_OK, "model open: %s", hmoe_err_msg());
    struct hmoe_fwd *f = NULL;
    if (m) CHECKF(hmoe_fwd_init(m, T, &f) == HMOE_OK, "fwd init: %s", hmoe_err_msg());
    if (!f) {
        hmoe_model_close(m);
        return;
    }
    const int V = m->cfg.vocab_size;
    const size_t n = (size_t)T * V;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    const int whole[] = {T, 0};
    CHECKF(run_split(f, tok, T, whole, a, V) == HMOE_OK, "prefill: %s", hmoe_err_msg());

    const int dec[] = {0};
    CHECK(run_split(f, tok, T, dec, b, V) == HMOE_OK);
    double d = rel_maxdiff(b, a, n);
    fprintf(stderr, "  prefill vs decode: %.3g\n", d);
    CHECKF(d <= REL_TOL, "%s: prefill vs token-by-token decode rel diff %.3g", dir, d);

    const int two[] = {T / 2 + 3, T, 0}; /* two prefill calls, the second continues the cache */
    CHECK(run_split(f, tok, T, two, b, V) == HMOE_OK);
    d = rel_maxdiff(b, a, n);
    fprintf(stderr, "  prefill vs %d + %d: %.3g\n", T / 2 + 3, T - (T / 2 + 3), d);
    CHECKF(d <= REL_TOL, "%s: two-call prefill rel diff %.3g", dir, d);

    const int small[] = {2, 1, 3, 5, 2, 0}; /* calls shorter than the conv window */
    CHECK(run_split(f, tok, T, small, b, V) == HMOE_OK);
    d = rel_maxdiff(b, a, n);
    CHECKF(d <= REL_TOL, "%s: small-call schedule rel diff %.3g", dir, d);

    /* last_only of a partial prefill equals that row of the full call */
    hmoe_fwd_reset(f);
    const int p = T - 1;
    CHECK(hmoe_fwd_run(f, tok, p, b, 1) == HMOE_OK);
    d = rel_maxdiff(b, a + (size_t)(p - 1) * V, V);
    CHECKF(d <= REL_TOL, "%s: last_only rel diff %.3g", dir, d);
    CHECK(hmoe_fwd_run(f, tok + p, 2, b, 0) == HMOE_E_RANGE);

    free(a);
    free(b);
    hmoe_fwd_free(f);
    hmoe_model_close(m);
}

static void check_fixture(const char *dir, int i)
{
    (void)i;
    fprintf(stderr, "fixture %s\n", dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokens.txt", dir);
    int32_t *tok = NULL;
    int T = read_token_file(path, &tok);
    CHECKF(T >= 2, "%s: bad tokens.txt", path);
    if (T >= 2) check_model(dir, tok, T);
    free(tok);
}

int main(void)
{
    CHECKF(for_each_fixture(check_fixture) > 0,
           "no fixtures (ref.json + tokens.txt + ref_logits.f32) under %s", HMOE_TEST_DATA);

    /* the NF4 synthetic model at wider head dims (dk = dv = 64, 64 experts, top-4) */
    const char *spec = "synth:small?layers=4&seed=3";
    fprintf(stderr, "model %s\n", spec);
    int32_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = (int32_t)((i * 2654435761u) % 4096u);
    check_model(spec, tok, 40);
    TEST_DONE();
}
