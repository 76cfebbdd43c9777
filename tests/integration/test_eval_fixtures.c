/* tests/integration/test_eval_fixtures.c: the CPU forward pass against the transformers fp32
 * references in tests/data/<fixture>/ (ref.json, tokens.txt, ref_logits.f32 [T, V] f32 LE):
 * prefill of `prefill` tokens then one decode step per token, max|diff|/max|ref| <= 2e-4 over
 * the prefill rows and over the decode rows; mean NLL vs ref.json "nll"; the hmoe-eval binary on
 * one fixture (output file, printed perplexity) and its input validation. Fails when there is
 * no fixture at all. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hmoe_test.h"
#include "integration/test_eval_common.h"

#define REL_TOL 2e-4

struct ref_info {
    int prefill, n_tokens, vocab;
    double nll;
};

static int read_ref_json(const char *dir, struct ref_info *r)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/ref.json", dir);
    char *txt = slurp(path, NULL);
    if (!txt) return -1;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    if (!j) return -1;
    const cJSON *p = cJSON_GetObjectItem(j, "prefill"), *t = cJSON_GetObjectItem(j, "n_tokens");
    const cJSON *v = cJSON_GetObjectItem(j, "vocab"), *nll = cJSON_GetObjectItem(j, "nll");
    int ok = cJSON_IsNumber(p) && cJSON_IsNumber(t) && cJSON_IsNumber(v) && cJSON_IsNumber(nll);
    if (ok) {
        r->prefill = p->valueint;
        r->n_tokens = t->valueint;
        r->vocab = v->valueint;
        r->nll = nll->valuedouble;
    }
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

static double mean_nll(const float *lg, const int32_t *tok, int T, int V)
{
    double s = 0.0;
    for (int t = 0; t + 1 < T; t++) {
        const float *row = lg + (size_t)t * V;
        double mx = (double)row[0], z = 0.0;
        for (int i = 1; i < V; i++) mx = fmax(mx, (double)row[i]);
        for (int i = 0; i < V; i++) z += exp((double)row[i] - mx);
        s += log(z) + mx - (double)row[tok[t + 1]];
    }
    return s / (T - 1);
}

static double max_abs(const float *a, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

/* Runs a shell command; returns its exit status (or -1), stderr captured into errbuf. */
static int sh(const char *cmd, char *errbuf, size_t errlen)
{
    char full[12000], errpath[] = "/tmp/hmoe-eval-test-XXXXXX";
    int fd = mkstemp(errpath);
    if (fd < 0) return -1;
    close(fd);
    snprintf(full, sizeof full, "%s 2>%s", cmd, errpath);
    int st = system(full);
    size_t len = 0;
    char *e = slurp(errpath, &len);
    unlink(errpath);
    if (errbuf) {
        snprintf(errbuf, errlen, "%s", e ? e : "");
    }
    free(e);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* hmoe-eval on one fixture: output file and perplexity, then its input validation. */
static void check_binary(const char *dir, const struct ref_info *r, const float *ref,
                         const float *ours, const int32_t *tok)
{
    const char *bin = HMOE_BIN_DIR "/hmoe-eval";
    char tmpd[] = "/tmp/hmoe-eval-test-dXXXXXX";
    if (!mkdtemp(tmpd)) {
        CHECKF(0, "mkdtemp failed");
        return;
    }
    char cmd[10000], err[4096], outp[200], ppl[200];
    snprintf(outp, sizeof outp, "%s/logits.f32", tmpd);
    snprintf(ppl, sizeof ppl, "%s/ppl.txt", tmpd);
    snprintf(cmd, sizeof cmd,
             "'%s' --model '%s' --tokens-file '%s/tokens.txt' --prefill %d --logits-out '%s' "
             "--perplexity --threads 2 >'%s'",
             bin, dir, dir, r->prefill, outp, ppl);
    int rc = sh(cmd, err, sizeof err);
    CHECKF(rc == 0, "hmoe-eval exit %d: %s", rc, err);
    CHECKF(strstr(err, "tok/s") != NULL, "no timing line on stderr: %s", err);
    const size_t n = (size_t)r->n_tokens * r->vocab;
    size_t len = 0;
    char *got = slurp(outp, &len);
    CHECKF(got && len == n * sizeof(float), "logits file has %zu bytes, want %zu", len,
           n * sizeof(float));
    if (got && len == n * sizeof(float)) {
        const float *g = (const float *)got;
        double d = rel_maxdiff(g, ref, n);
        CHECKF(d <= REL_TOL, "hmoe-eval logits vs reference rel diff %.3g", d);
        d = rel_maxdiff(g, ours, n);
        CHECKF(d <= 1e-6, "hmoe-eval logits vs in-process rel diff %.3g", d);
    }
    free(got);
    char *pp = slurp(ppl, NULL);
    double nll = NAN, px = NAN;
    CHECKF(pp && sscanf(pp, "mean_nll %lf perplexity %lf", &nll, &px) == 2, "stdout: %s",
           pp ? pp : "(none)");
    free(pp);
    const double tol = 2.0 * REL_TOL * max_abs(ref, n) + 1e-6;
    CHECKF(fabs(nll - r->nll) <= tol, "hmoe-eval nll %.6f vs ref %.6f", nll, r->nll);
    CHECKF(fabs(px - exp(r->nll)) <= exp(r->nll) * 2 * tol, "perplexity %.6f vs %.6f", px,
           exp(r->nll));

    /* bad input: one clear line on stderr and exit 1 */
    struct {
        const char *tokens; /* content of the tokens file, or NULL for the fixture's */
        const char *args;   /* extra arguments; %s = model dir, %s = tokens file */
        int want_rc;
        const char *want_msg;
    } cases[] = {
        {"1 2 x3 4", "--prefill 2", 1, "not a non-negative integer"},
        {"1 2 -3", "--prefill 2", 1, "not a non-negative integer"},
        {"   \n ", "--prefill 0", 1, "no token ids"},
        {"1 2 99999999", "--prefill 1", 1, "outside the vocabulary"},
        {"1 2 3", "--prefill 4", 1, "larger than"},
        {"1 2 3", "--prefill 2 --ctx 2", 1, "smaller than"},
#ifndef HMOE_TEST_HAVE_CUDA
        {"1 2 3", "--prefill 2 --backend cuda", 1, "not built"},
#endif
        {"1 2 3", "--prefill 2 --prefill-math bf16", 1, "needs --backend cuda"},
        {"1 2 3", "--prefill 2 --decode fast", 1, "needs --backend cuda"},
        {"1 2 3", "--prefill 2 --bogus", 1, "unknown argument"},
        {"1 2 3", "--prefill -1", 1, "bad value"},
        {"1 2 3", "", 1, "--prefill is required"},
    };
    char tokp[200];
    snprintf(tokp, sizeof tokp, "%s/tok.txt", tmpd);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *fp = fopen(tokp, "w");
        if (!fp) continue;
        fputs(cases[i].tokens, fp);
        fclose(fp);
        snprintf(cmd, sizeof cmd, "'%s' --model '%s' --tokens-file '%s' %s >/dev/null", bin, dir,
                 tokp, cases[i].args);
        rc = sh(cmd, err, sizeof err);
        CHECKF(rc == cases[i].want_rc && strstr(err, cases[i].want_msg),
               "case %zu (%s): exit %d, stderr: %s", i, cases[i].args, rc, err);
        CHECKF(count_lines(err) <= 2, "case %zu: stderr has %d lines", i, count_lines(err));
    }
#ifdef HMOE_TEST_HAVE_CUDA
    /* built with CUDA on a machine without a GPU: a clear one-line refusal (the GPU tests cover
     * the backend itself where a device exists) */
    if (access("/dev/nvidiactl", F_OK) != 0) {
        FILE *fp = fopen(tokp, "w");
        if (fp) {
            fputs("1 2 3", fp);
            fclose(fp);
        }
        snprintf(cmd, sizeof cmd, "'%s' --model '%s' --tokens-file '%s' --prefill 2 --backend cuda",
                 bin, dir, tokp);
        rc = sh(cmd, err, sizeof err);
        CHECKF(rc != 0 && strstr(err, "no CUDA device"), "--backend cuda without a GPU: exit %d, %s",
               rc, err);
    }
#endif
    /* a model that fails to open: one line naming the problem, exit 1 */
    snprintf(cmd, sizeof cmd, "'%s' --model '%s/nonexistent' --tokens-file '%s' --prefill 1",
             bin, tmpd, tokp);
    rc = sh(cmd, err, sizeof err);
    CHECKF(rc == 1 && count_lines(err) == 1 && strstr(err, "nonexistent"),
           "missing model: exit %d, stderr: %s", rc, err);
    /* prefill 0 (all decode steps) and the last token alone are valid */
    snprintf(cmd, sizeof cmd, "'%s' --model '%s' --tokens-file '%s/tokens.txt' --prefill 0 -o '%s'",
             bin, dir, dir, outp);
    rc = sh(cmd, err, sizeof err);
    CHECKF(rc == 0, "prefill 0: exit %d: %s", rc, err);
    got = slurp(outp, &len);
    if (got && len == n * sizeof(float)) {
        double d = rel_maxdiff((const float *)got, ref, n);
        CHECKF(d <= REL_TOL, "--prefill 0 logits vs reference rel diff %.3g", d);
    } else {
        CHECKF(0, "--prefill 0 wrote %zu bytes", len);
    }
    free(got);
    snprintf(cmd, sizeof cmd, "'%s' --help >/dev/null", bin);
    CHECK(sh(cmd, NULL, 0) == 0);
    (void)tok;
    unlink(outp);
    unlink(ppl);
    unlink(tokp);
    rmdir(tmpd);
}

/* i: the fixture's index; the first one also runs the hmoe-eval binary and its bad inputs. */
static void check_fixture(const char *dir, int i)
{
    const int run_binary = i == 0;
    fprintf(stderr, "fixture %s\n", dir);
    struct ref_info r;
    if (read_ref_json(dir, &r)) {
        CHECKF(0, "%s/ref.json: missing prefill/n_tokens/vocab/nll", dir);
        return;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/tokens.txt", dir);
    int32_t *tok = NULL;
    int T = read_token_file(path, &tok);
    CHECKF(T == r.n_tokens && T >= 2 && r.prefill >= 1 && r.prefill <= T,
           "tokens.txt has %d ids, ref.json n_tokens %d prefill %d", T, r.n_tokens, r.prefill);
    if (T != r.n_tokens || T < 2 || r.prefill < 1 || r.prefill > T) {
        free(tok);
        return;
    }
    const int V = r.vocab, N = r.prefill;
    snprintf(path, sizeof path, "%s/ref_logits.f32", dir);
    size_t len = 0;
    float *ref = (float *)slurp(path, &len);
    CHECKF(ref && len == (size_t)T * V * sizeof(float), "ref_logits.f32: %zu bytes, want %zu",
           len, (size_t)T * V * sizeof(float));
    struct hmoe_model *m = NULL;
    enum hmoe_status st = hmoe_model_open(dir, &m);
    CHECKF(st == HMOE_OK, "model open: %s", hmoe_err_msg());
    struct hmoe_fwd *f = NULL;
    if (m) {
        CHECKF(m->cfg.vocab_size == V, "config vocab %d vs ref.json %d", m->cfg.vocab_size, V);
        st = hmoe_fwd_init(m, T, &f);
        CHECKF(st == HMOE_OK, "fwd init: %s", hmoe_err_msg());
    }
    if (!f || !ref || len != (size_t)T * V * sizeof(float) || m->cfg.vocab_size != V) {
        hmoe_fwd_free(f);
        hmoe_model_close(m);
        free(ref);
        free(tok);
        return;
    }
    float *lg = malloc(sizeof(float) * (size_t)T * V);
    const int split[] = {N, 0}; /* prefill N, then decode steps */
    st = run_split(f, tok, T, split, lg, V);
    CHECKF(st == HMOE_OK, "forward: %s", hmoe_err_msg());
    const double dp = rel_maxdiff(lg, ref, (size_t)N * V);
    const double dd = T > N ? rel_maxdiff(lg + (size_t)N * V, ref + (size_t)N * V,
                                          (size_t)(T - N) * V)
                            : 0.0;
    fprintf(stderr, "  prefill %d: rel diff %.3g; decode %d: rel diff %.3g (max|ref| %.3f)\n", N,
            dp, T - N, dd, max_abs(ref, (size_t)T * V));
    CHECKF(dp <= REL_TOL, "%s prefill rel diff %.3g", dir, dp);
    CHECKF(dd <= REL_TOL, "%s decode rel diff %.3g", dir, dd);
    const double nll = mean_nll(lg, tok, T, V);
    const double tol = 2.0 * REL_TOL * max_abs(ref, (size_t)T * V) + 1e-6;
    fprintf(stderr, "  nll %.6f vs ref %.6f\n", nll, r.nll);
    CHECKF(fabs(nll - r.nll) <= tol, "%s nll %.6f vs ref %.6f", dir, nll, r.nll);
    /* the reference's own nll must agree with its logits (guards a stale ref.json) */
    const double nll_ref = mean_nll(ref, tok, T, V);
    CHECKF(fabs(nll_ref - r.nll) <= 1e-4, "%s ref.json nll %.6f but ref logits give %.6f", dir,
           r.nll, nll_ref);
    if (run_binary) check_binary(dir, &r, ref, lg, tok);
    free(lg);
    hmoe_fwd_free(f);
    hmoe_model_close(m);
    free(ref);
    free(tok);
}

int main(void)
{
    CHECKF(for_each_fixture(check_fixture) > 0,
           "no fixtures (ref.json + tokens.txt + ref_logits.f32) under %s", HMOE_TEST_DATA);
    TEST_DONE();
}
