/* test_model_hostile: tiny Qwen3-Next directories written by tests/st_writer.h open and read
 * back exactly (bf16 / f16 / f32, NF4 with and without double quant, fused experts, shards,
 * tied embeddings, 5.x config); then hostile mutations of the files (truncation, header length,
 * offsets, dtypes, shapes, missing tensors and shards, bad JSON, overflowing shapes, bad NF4
 * state) must each give an error naming the file or tensor, never a crash. */
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hmoe/model.h"
#include "hmoe/safetensors.h"
#include "hmoe_test.h"
#include "st_writer.h"

static char root_dir[] = "/tmp/hmoe_test_model_XXXXXX";
static int dir_seq;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void new_dir(char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/m%d", root_dir, dir_seq++);
    if (mkdir(buf, 0700) != 0) {
        perror(buf);
        exit(1);
    }
}

/* Writes a model directory: config (v5 spelling or not) and 1 file or n_shards shards. */
static void write_model(const char *dir, const struct stw_tiny *c, const struct stw *w, int v5,
                        int n_shards)
{
    char cfg[8192], path[1024];
    stw_tiny_config(c, v5, cfg, sizeof cfg);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (stw_write_text(path, cfg)) exit(1);
    if (n_shards <= 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stw_write(w, path)) exit(1);
    } else if (stw_write_sharded(w, dir, n_shards)) {
        exit(1);
    }
}

/* Compares a loaded float tensor with the values the writer stored. */
static void check_float(const struct hmoe_tensor *t, const struct stw *w)
{
    CHECK(t->name != NULL);
    if (!t->name) return;
    const struct stw_tensor *s = stw_find(w, t->name);
    CHECKF(s && s->src, "%s not written as float", t->name);
    if (!s || !s->src) return;
    int64_t n = hmoe_tensor_numel(t);
    CHECKF(n == s->numel, "%s numel %lld vs %lld", t->name, (long long)n, (long long)s->numel);
    float *buf = malloc(sizeof(float) * (size_t)n);
    hmoe_tensor_read_f32(t, 0, n, buf);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += buf[i] != s->src[i];
    CHECKF(bad == 0, "%s: %d values differ", t->name, bad);
    free(buf);
}

/* NF4 tensors: every value is within the quantization error of the source value. */
static void check_nf4(const struct hmoe_tensor *t, const struct stw *w, const struct stw *orig)
{
    (void)w;
    const struct stw_tensor *s = stw_find(orig, t->name);
    CHECKF(s != NULL, "%s", t->name);
    if (!s) return;
    int64_t n = hmoe_tensor_numel(t);
    float *buf = malloc(sizeof(float) * (size_t)n);
    hmoe_tensor_read_f32(t, 0, n, buf);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += fabsf(buf[i] - s->src[i]) > 0.25f; /* |v| <= 1.5 */
    CHECKF(bad == 0, "%s: %d NF4 values off", t->name, bad);
    free(buf);
}

static void check_t(const struct hmoe_tensor *t, const struct stw *w, const struct stw *orig)
{
    if (t->dtype == HMOE_DT_NF4)
        check_nf4(t, w, orig);
    else
        check_float(t, w);
}

/* Float copies of the matrices (before NF4 quantization) to compare NF4 values against. */
static void float_twin(const struct stw_tiny *c, struct stw *orig, uint64_t seed)
{
    struct stw_tiny f = *c;
    f.nf4_mask = 0;
    stw_tiny_tensors(orig, &f, seed);
}

static void check_model(const struct hmoe_model *m, const struct stw_tiny *c, const struct stw *w,
                        const struct stw *orig)
{
    const struct hmoe_config *cfg = &m->cfg;
    CHECK(cfg->hidden_size == c->H && cfg->num_layers == c->L && cfg->vocab_size == c->V);
    check_t(&m->embed, w, orig);
    check_t(&m->final_norm, w, orig);
    if (c->tie)
        CHECK(m->lm_head.data == m->embed.data);
    else
        check_t(&m->lm_head, w, orig);
    for (int l = 0; l < c->L; l++) {
        const struct hmoe_layer_w *lw = &m->layers[l];
        check_t(&lw->input_norm, w, orig);
        check_t(&lw->post_norm, w, orig);
        if ((l + 1) % c->full_interval == 0) {
            CHECK(lw->kind == HMOE_LAYER_FULL);
            const struct hmoe_tensor *ts[] = {&lw->q_proj, &lw->k_proj, &lw->v_proj,
                                              &lw->o_proj, &lw->q_norm, &lw->k_norm};
            for (size_t i = 0; i < 6; i++)
                check_t(ts[i], w, orig);
        } else {
            CHECK(lw->kind == HMOE_LAYER_LINEAR);
            const struct hmoe_tensor *ts[] = {&lw->in_proj_qkvz, &lw->in_proj_ba, &lw->conv1d,
                                              &lw->dt_bias,      &lw->A_log,      &lw->lin_norm,
                                              &lw->out_proj};
            for (size_t i = 0; i < 7; i++)
                check_t(ts[i], w, orig);
        }
        if (l == 0 && c->mlp_only0) {
            CHECK(!cfg->layer_is_moe[0] && lw->experts == NULL);
            check_t(&lw->mlp.gate, w, orig);
            check_t(&lw->mlp.up, w, orig);
            check_t(&lw->mlp.down, w, orig);
            CHECK(lw->mlp.gate.shape[0] == c->Idense);
            continue;
        }
        CHECK(cfg->layer_is_moe[l]);
        check_t(&lw->router, w, orig);
        check_t(&lw->shared_gate, w, orig);
        check_t(&lw->shared.gate, w, orig);
        check_t(&lw->shared.up, w, orig);
        check_t(&lw->shared.down, w, orig);
        for (int e = 0; e < c->E; e++) {
            const struct hmoe_mlp_w *x = &lw->experts[e];
            if (!c->fused) {
                check_t(&x->gate, w, orig);
                check_t(&x->up, w, orig);
                check_t(&x->down, w, orig);
                CHECK(hmoe_expert_nbytes(m, l, e) > 0);
                continue;
            }
            /* fused: gate rows [e][0, I), up rows [e][I, 2I) of gate_up_proj [E, 2I, H] */
            const int64_t I = c->I, H = c->H;
            const struct stw_tensor *gu = stw_find(w, x->gate.name);
            const struct stw_tensor *dn = stw_find(w, x->down.name);
            CHECK(gu && dn && x->gate.ndim == 2 && x->gate.shape[0] == I && x->down.shape[0] == H);
            if (!gu || !dn) continue;
            float *buf = malloc(sizeof(float) * (size_t)(I * H));
            int bad = 0;
            hmoe_tensor_read_f32(&x->gate, 0, I * H, buf);
            for (int64_t i = 0; i < I * H; i++)
                bad += buf[i] != gu->src[e * 2 * I * H + i];
            hmoe_tensor_read_f32(&x->up, 0, I * H, buf);
            for (int64_t i = 0; i < I * H; i++)
                bad += buf[i] != gu->src[e * 2 * I * H + I * H + i];
            hmoe_tensor_read_f32(&x->down, 0, I * H, buf);
            for (int64_t i = 0; i < I * H; i++)
                bad += buf[i] != dn->src[e * H * I + i];
            CHECKF(bad == 0, "fused expert %d of layer %d: %d values differ", e, l, bad);
            CHECK(hmoe_expert_nbytes(m, l, e) == (uint64_t)(3 * I * H * 2));
            free(buf);
        }
    }
}

/* Writes, opens and checks one valid variant; returns the directory in dir. */
static void valid_variant(const char *what, struct stw_tiny c, int v5, int shards, char *dir,
                          size_t cap)
{
    struct stw w = {0}, orig = {0};
    stw_tiny_tensors(&w, &c, 42);
    float_twin(&c, &orig, 42);
    new_dir(dir, cap);
    write_model(dir, &c, &w, v5, shards);
    struct hmoe_model *m = NULL;
    enum hmoe_status st = hmoe_model_open(dir, &m);
    CHECKF(st == HMOE_OK, "%s: %s", what, hmoe_err_msg());
    if (m) {
        check_model(m, &c, &w, &orig);
        if (c.nf4_mask) {
            const struct hmoe_layer_w *l0 = &m->layers[0];
            CHECK(l0->in_proj_qkvz.dtype == HMOE_DT_NF4 && l0->router.dtype == HMOE_DT_NF4 &&
                  l0->shared_gate.dtype == HMOE_DT_NF4);
            CHECK(l0->in_proj_qkvz.nf4->absmax_q ? c.nf4_dq : !c.nf4_dq);
            CHECK(l0->experts[0].gate.dtype != HMOE_DT_NF4);
            CHECK(l0->experts[1].gate.dtype == HMOE_DT_NF4);
            CHECK(m->cfg.quantized == 1);
        }
    }
    hmoe_model_close(m);
    stw_free(&w);
    stw_free(&orig);
    fprintf(stderr, "valid: %s ok\n", what);
}

/* ---- mutations ------------------------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    if (fread(b, 1, (size_t)sz, fp) != (size_t)sz) abort();
    fclose(fp);
    b[sz] = 0;
    *n = (size_t)sz;
    return b;
}

/* Replaces the first `old` in the header of path by `new_` (rewrites the length too). */
static int mutate_header(const char *path, const char *old, const char *new_)
{
    size_t n;
    uint8_t *b = slurp(path, &n);
    if (!b) return -1;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | b[i];
    char *h = malloc(hl + 1);
    memcpy(h, b + 8, hl);
    h[hl] = 0;
    char *p = strstr(h, old);
    if (!p) {
        fprintf(stderr, "mutate: '%s' not in header\n", old);
        free(h);
        free(b);
        return -1;
    }
    size_t nh = hl - strlen(old) + strlen(new_);
    char *h2 = malloc(nh + 9);
    size_t pre = (size_t)(p - h);
    memcpy(h2, h, pre);
    memcpy(h2 + pre, new_, strlen(new_));
    strcpy(h2 + pre + strlen(new_), p + strlen(old));
    while (nh % 8)
        h2[nh++] = ' '; /* keep the data 8-byte aligned, as real writers do */
    h2[nh] = '\0';
    int rc = stw_write_raw(path, h2, nh, b + 8 + hl, n - 8 - hl);
    free(h);
    free(h2);
    free(b);
    return rc;
}

/* The "data_offsets":[a,b] of tensor `name` in the header of path. */
static int get_offsets(const char *path, const char *name, char *buf, size_t cap,
                       unsigned long long *a, unsigned long long *b)
{
    size_t n;
    uint8_t *f = slurp(path, &n);
    char key[400];
    snprintf(key, sizeof key, "\"%s\":{", name);
    char *p = strstr((char *)f + 8, key);
    int ok = p && (p = strstr(p, "\"data_offsets\":[")) &&
             sscanf(p, "\"data_offsets\":[%llu,%llu]", a, b) == 2;
    if (ok) snprintf(buf, cap, "\"data_offsets\":[%llu,%llu]", *a, *b);
    free(f);
    return ok ? 0 : -1;
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    uint8_t *b = slurp(from, &n);
    FILE *fp = fopen(to, "wb");
    if (!b || !fp || fwrite(b, 1, n, fp) != n) abort();
    fclose(fp);
    free(b);
}

/* Copies the valid single-file dir `src` into a fresh dir. */
static void clone_dir(const char *src, char *dir, size_t cap)
{
    new_dir(dir, cap);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/config.json", src);
    snprintf(b, sizeof b, "%s/config.json", dir);
    copy_file(a, b);
    snprintf(a, sizeof a, "%s/model.safetensors", src);
    snprintf(b, sizeof b, "%s/model.safetensors", dir);
    copy_file(a, b);
}

/* Opens dir expecting failure whose message contains `needle` (and `needle2` if non-NULL). */
static void expect_fail(const char *what, const char *dir, const char *needle, const char *needle2)
{
    struct hmoe_model *m = NULL;
    hmoe_err_clear();
    enum hmoe_status st = hmoe_model_open(dir, &m);
    CHECKF(st != HMOE_OK && m == NULL, "%s: opened", what);
    const char *msg = hmoe_err_msg();
    CHECKF(strstr(msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, msg, needle);
    if (needle2)
        CHECKF(strstr(msg, needle2) != NULL, "%s: message '%s' lacks '%s'", what, msg, needle2);
    CHECKF(strchr(msg, '\n') == NULL, "%s: message has several lines", what);
    fprintf(stderr, "hostile %-28s -> %s: %s\n", what, hmoe_status_str(st), msg);
    hmoe_model_close(m);
}

#define NORM0 "model.layers.0.input_layernorm.weight"
#define QKVZ0 "model.layers.0.linear_attn.in_proj_qkvz.weight"

static void header_case(const char *src, const char *what, const char *old, const char *new_,
                        const char *needle, const char *needle2)
{
    char dir[1024], f[1100];
    clone_dir(src, dir, sizeof dir);
    snprintf(f, sizeof f, "%s/model.safetensors", dir);
    if (mutate_header(f, old, new_) != 0) {
        CHECKF(0, "%s: could not mutate", what);
        return;
    }
    expect_fail(what, dir, needle, needle2);
}

static void hostile_single(const char *src)
{
    char dir[1024], f[1100];
    char src_f[1100];
    snprintf(src_f, sizeof src_f, "%s/model.safetensors", src);
    size_t fsz;
    free(slurp(src_f, &fsz));

    /* truncated file (data shorter than the offsets say) */
    clone_dir(src, dir, sizeof dir);
    snprintf(f, sizeof f, "%s/model.safetensors", dir);
    CHECK(truncate(f, (off_t)(fsz - 100)) == 0);
    expect_fail("truncated", dir, "model.safetensors", "out of range");
    /* file shorter than the length prefix, and empty */
    CHECK(truncate(f, 5) == 0);
    expect_fail("5-byte file", dir, "model.safetensors", NULL);
    CHECK(truncate(f, 0) == 0);
    expect_fail("empty file", dir, "model.safetensors", NULL);

    /* header length past EOF */
    clone_dir(src, dir, sizeof dir);
    snprintf(f, sizeof f, "%s/model.safetensors", dir);
    {
        FILE *fp = fopen(f, "r+b");
        uint8_t le[8] = {0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0};
        CHECK(fp && fwrite(le, 1, 8, fp) == 8);
        fclose(fp);
        expect_fail("header length past EOF", dir, "model.safetensors", "header length");
        fp = fopen(f, "r+b");
        uint8_t big[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        CHECK(fp && fwrite(big, 1, 8, fp) == 8);
        fclose(fp);
        expect_fail("header length 2^64-1", dir, "model.safetensors", "header length");
    }

    unsigned long long a, b;
    char off[128], bad[128];
    CHECK(get_offsets(src_f, NORM0, off, sizeof off, &a, &b) == 0);
    snprintf(bad, sizeof bad, "\"data_offsets\":[%llu,%llu]", a, (unsigned long long)fsz * 2);
    header_case(src, "offsets out of range", off, bad, NORM0, "out of range");
    snprintf(bad, sizeof bad, "\"data_offsets\":[%llu,%llu]", b, a);
    header_case(src, "offsets reversed", off, bad, NORM0, NULL);
    snprintf(bad, sizeof bad, "\"data_offsets\":[%llu,%llu]", a, b - 2);
    header_case(src, "offsets vs shape", off, bad, NORM0, "shape needs");
    snprintf(bad, sizeof bad, "\"data_offsets\":[%llu,%llu]", a + 1, b + 1);
    header_case(src, "misaligned data", off, bad, NORM0, "aligned");
    snprintf(bad, sizeof bad, "\"data_offsets\":[%llu]", a);
    header_case(src, "one offset", off, bad, NORM0, NULL);
    snprintf(bad, sizeof bad, "\"data_offsets\":[-8,%llu]", b);
    header_case(src, "negative offset", off, bad, NORM0, NULL);
    snprintf(bad, sizeof bad, "\"data_offsets\":[%llu.5,%llu]", a, b);
    header_case(src, "fractional offset", off, bad, NORM0, NULL);

    char old[512], nw[512];
    snprintf(old, sizeof old, "\"%s\":{\"dtype\":\"BF16\"", NORM0);
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"I16\"", NORM0);
    header_case(src, "unusable dtype I16", old, nw, NORM0, "I16");
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"Q7\"", NORM0);
    header_case(src, "unknown dtype", old, nw, NORM0, "dtype");
    snprintf(nw, sizeof nw, "\"%s\\n\":{\"dtype\":\"Q\\u0007\\n\"", NORM0);
    header_case(src, "control chars in name", old, nw, NORM0 "?",
                "'Q?"
                "?'");
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":7", NORM0);
    header_case(src, "numeric dtype", old, nw, NORM0, NULL);
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"F32\"", NORM0);
    header_case(src, "F32 with BF16 bytes", old, nw, NORM0, NULL);

    snprintf(old, sizeof old, "\"%s\":{\"dtype\":\"BF16\",\"shape\":[64]", NORM0);
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"BF16\",\"shape\":[32,2]", NORM0);
    header_case(src, "wrong shape", old, nw, NORM0, "expected [64]");
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"BF16\",\"shape\":[-64]", NORM0);
    header_case(src, "negative dim", old, nw, NORM0, NULL);
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"BF16\",\"shape\":[\"64\"]", NORM0);
    header_case(src, "string dim", old, nw, NORM0, NULL);
    snprintf(nw, sizeof nw,
             "\"%s\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296,4294967296]", NORM0);
    header_case(src, "overflowing shape", old, nw, NORM0, "overflow");
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"BF16\",\"shape\":[1e300]", NORM0);
    header_case(src, "huge dim", old, nw, NORM0, NULL);
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"BF16\",\"shape\":[1,1,1,1,1,1,1,1,1,64]", NORM0);
    header_case(src, "too many dims", old, nw, NORM0, "dims");
    snprintf(nw, sizeof nw, "\"%s\":{\"dtype\":\"BF16\",\"shape\":{}", NORM0);
    header_case(src, "shape not a list", old, nw, NORM0, NULL);

    snprintf(old, sizeof old, "\"%s\":", NORM0);
    snprintf(nw, sizeof nw, "\"%sX\":", NORM0);
    header_case(src, "missing tensor", old, nw, NORM0, "not found");
    snprintf(old, sizeof old, "\"%s\":{", NORM0);
    snprintf(nw, sizeof nw, "\"%s\":7,\"%sX\":{", NORM0, NORM0);
    header_case(src, "entry not an object", old, nw, NORM0, NULL);

    header_case(src, "bad JSON header", "{\"__metadata__\"", "{\"__metadata__\"}",
                "model.safetensors", "JSON");
    header_case(src, "header not an object", "{\"__metadata__\":{\"format\":\"pt\"},",
                "[{\"__metadata__\":{\"format\":\"pt\"}},", "model.safetensors", NULL);
    /* a header that is valid JSON but not an object */
    clone_dir(src, dir, sizeof dir);
    snprintf(f, sizeof f, "%s/model.safetensors", dir);
    CHECK(stw_write_raw(f, "[1, 2]  ", 8, "", 0) == 0);
    expect_fail("header is a list", dir, "model.safetensors", "not a JSON object");
    /* a duplicate key of an existing tensor */
    {
        unsigned long long a2, b2;
        char o2[128];
        CHECK(get_offsets(src_f, NORM0, o2, sizeof o2, &a2, &b2) == 0);
        snprintf(old, sizeof old, "{\"__metadata__\":{\"format\":\"pt\"},");
        snprintf(nw, sizeof nw,
                 "{\"__metadata__\":{\"format\":\"pt\"},\"%s\":{\"dtype\":\"BF16\",\"shape\":[64],"
                 "\"data_offsets\":[%llu,%llu]},",
                 NORM0, a2, b2);
        header_case(src, "duplicate key", old, nw, NORM0, "twice");
    }

    /* config.json problems */
    clone_dir(src, dir, sizeof dir);
    snprintf(f, sizeof f, "%s/config.json", dir);
    CHECK(stw_write_text(f, "{\"hidden_size\": 64, ") == 0);
    expect_fail("bad JSON in config.json", dir, "config.json", "JSON");
    CHECK(stw_write_text(f, "{\"hidden_size\": 64, \"num_hidden_layers\": 4, \"vocab_size\": 96, "
                            "\"num_attention_heads\": 4, \"num_key_value_heads\": 3}") == 0);
    expect_fail("heads % kv_heads", dir, "config.json", "num_key_value_heads");
    CHECK(unlink(f) == 0);
    expect_fail("missing config.json", dir, "config.json", NULL);
    /* config that disagrees with the tensors */
    clone_dir(src, dir, sizeof dir);
    {
        char cfg[8192];
        struct stw_tiny c = stw_tiny_default();
        c.Is = 32;
        stw_tiny_config(&c, 0, cfg, sizeof cfg);
        snprintf(f, sizeof f, "%s/config.json", dir);
        CHECK(stw_write_text(f, cfg) == 0);
        expect_fail("config vs shapes", dir, "shared_expert.gate_proj.weight", "expected [32, 64]");
    }
    /* neither model.safetensors nor an index */
    clone_dir(src, dir, sizeof dir);
    snprintf(f, sizeof f, "%s/model.safetensors", dir);
    CHECK(unlink(f) == 0);
    expect_fail("no weights", dir, "model.safetensors", NULL);
    expect_fail("no directory", "/nonexistent/hmoe-model", "/nonexistent/hmoe-model", NULL);
}

static void hostile_sharded(const char *src)
{
    char dir[1024], a[1100], b[1100];
    /* missing shard */
    new_dir(dir, sizeof dir);
    snprintf(a, sizeof a, "%s/config.json", src);
    snprintf(b, sizeof b, "%s/config.json", dir);
    copy_file(a, b);
    snprintf(a, sizeof a, "%s/model.safetensors.index.json", src);
    snprintf(b, sizeof b, "%s/model.safetensors.index.json", dir);
    copy_file(a, b);
    for (int s = 1; s <= 2; s++) {
        snprintf(a, sizeof a, "%s/model-%05d-of-00003.safetensors", src, s);
        snprintf(b, sizeof b, "%s/model-%05d-of-00003.safetensors", dir, s);
        copy_file(a, b);
    }
    expect_fail("missing shard", dir, "model-00003-of-00003.safetensors", NULL);

    /* index names the wrong shard for a tensor */
    snprintf(a, sizeof a, "%s/model-00003-of-00003.safetensors", src);
    snprintf(b, sizeof b, "%s/model-00003-of-00003.safetensors", dir);
    copy_file(a, b);
    snprintf(b, sizeof b, "%s/model.safetensors.index.json", dir);
    {
        size_t n;
        char *t = (char *)slurp(b, &n);
        /* the first tensor goes to shard 1: point it at shard 2 */
        char *p = strstr(t, "model-00001-of-00003");
        CHECK(p != NULL);
        if (p) p[10] = '2';
        CHECK(stw_write_text(b, t) == 0);
        expect_fail("tensor not in its shard", dir, "not in its shard", NULL);
        CHECK(stw_write_text(b, "{\"weight_map\": {\"a\": \"../etc/passwd\"}}") == 0);
        expect_fail("shard path escape", dir, "bad shard name", NULL);
        CHECK(stw_write_text(b, "{\"weight_map\": [1, 2]}") == 0);
        expect_fail("weight_map not an object", dir, "weight_map", NULL);
        CHECK(stw_write_text(b, "{\"weight_map\": {") == 0);
        expect_fail("bad index JSON", dir, "index.json", NULL);
        free(t);
    }
}

/* NF4 state problems, made at the writer level. */
static void nf4_case(const char *what, void (*fix)(struct stw *), const char *needle,
                     const char *needle2)
{
    struct stw_tiny c = stw_tiny_default();
    c.nf4_mask = STW_NF4_ATTN;
    c.nf4_dq = 1;
    struct stw w = {0};
    stw_tiny_tensors(&w, &c, 7);
    fix(&w);
    char dir[1024];
    new_dir(dir, sizeof dir);
    write_model(dir, &c, &w, 0, 1);
    expect_fail(what, dir, needle, needle2);
    stw_free(&w);
}

static void set_data(struct stw_tensor *t, const void *d, size_t n)
{
    free(t->data);
    t->data = malloc(n + 1);
    memcpy(t->data, d, n);
    t->nbytes = n;
    t->ndim = 1;
    t->shape[0] = (int64_t)n / t->elem_size;
    t->numel = t->shape[0];
}

static void fix_bad_qs_json(struct stw *w)
{
    const char *bad = "{\"quant_type\": \"nf4\", \"blocksize\": ";
    set_data(stw_find(w, QKVZ0 ".quant_state.bitsandbytes__nf4"), bad, strlen(bad));
}
static void fix_qs_blocksize(struct stw *w)
{
    const char *bad = "{\"quant_type\": \"nf4\", \"blocksize\": 63, \"dtype\": \"bfloat16\", "
                      "\"shape\": [320, 64], \"nested_blocksize\": 256, \"nested_offset\": 0.5}";
    set_data(stw_find(w, QKVZ0 ".quant_state.bitsandbytes__nf4"), bad, strlen(bad));
}
static void fix_qs_shape(struct stw *w)
{
    const char *bad = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", "
                      "\"shape\": [64, 320], \"nested_blocksize\": 256, \"nested_offset\": 0.5}";
    set_data(stw_find(w, QKVZ0 ".quant_state.bitsandbytes__nf4"), bad, strlen(bad));
}
static void fix_qs_fp4(struct stw *w)
{
    const char *bad = "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", "
                      "\"shape\": [320, 64], \"nested_blocksize\": 256, \"nested_offset\": 0.5}";
    set_data(stw_find(w, QKVZ0 ".quant_state.bitsandbytes__nf4"), bad, strlen(bad));
}
static void fix_fp4_key(struct stw *w)
{
    struct stw_tensor *t = stw_find(w, QKVZ0 ".quant_state.bitsandbytes__nf4");
    snprintf(t->name, sizeof t->name, "%s", QKVZ0 ".quant_state.bitsandbytes__fp4");
}
static void fix_absmax_len(struct stw *w)
{
    struct stw_tensor *t = stw_find(w, QKVZ0 ".absmax");
    uint8_t z[7] = {0};
    set_data(t, z, sizeof z);
}
static void fix_nested_len(struct stw *w)
{
    struct stw_tensor *t = stw_find(w, QKVZ0 ".nested_absmax");
    float z[3] = {0};
    set_data(t, z, sizeof z);
}
static void fix_quant_map_missing(struct stw *w)
{
    struct stw_tensor *t = stw_find(w, QKVZ0 ".quant_map");
    snprintf(t->name, sizeof t->name, "%s", QKVZ0 ".quant_mapX");
}
static void fix_weight_bytes(struct stw *w)
{
    struct stw_tensor *t = stw_find(w, QKVZ0);
    uint8_t z[100] = {0};
    set_data(t, z, sizeof z);
}
static void fix_norm_quantized(struct stw *w)
{
    /* a quant_state on a 1-D param */
    struct stw_tensor *t = stw_find(w, QKVZ0 ".quant_state.bitsandbytes__nf4");
    int64_t n = (int64_t)t->nbytes;
    stw_add(w, NORM0 ".quant_state.bitsandbytes__nf4", "U8", 1, &n, t->data, t->nbytes);
}

/* Reads every tensor of an opened model end to end (ASan catches any pointer past the files). */
static double touch_all(const struct hmoe_model *m)
{
    double sum = 0;
    float buf[4096];
    const struct hmoe_tensor *top[] = {&m->embed, &m->final_norm, &m->lm_head};
    for (int pass = 0; pass <= m->cfg.num_layers; pass++) {
        const struct hmoe_tensor *ts[32];
        int n = 0;
        if (pass == 0) {
            for (int k = 0; k < 3; k++)
                ts[n++] = top[k];
        } else {
            const struct hmoe_layer_w *w = &m->layers[pass - 1];
            const struct hmoe_tensor *all[] = {
                &w->input_norm, &w->post_norm,   &w->q_proj,      &w->k_proj,       &w->v_proj,
                &w->o_proj,     &w->q_norm,      &w->k_norm,      &w->in_proj_qkvz, &w->in_proj_ba,
                &w->conv1d,     &w->dt_bias,     &w->A_log,       &w->lin_norm,     &w->out_proj,
                &w->router,     &w->shared_gate, &w->shared.gate, &w->shared.up,    &w->shared.down,
                &w->mlp.gate,   &w->mlp.up,      &w->mlp.down};
            for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
                ts[n++] = all[k];
        }
        for (int k = 0; k < n; k++) {
            if (!ts[k]->name) continue;
            int64_t nn = hmoe_tensor_numel(ts[k]);
            for (int64_t i = 0; i < nn; i += 4096) {
                int64_t c = nn - i < 4096 ? nn - i : 4096;
                hmoe_tensor_read_f32(ts[k], i, c, buf);
                sum += (double)buf[0];
            }
        }
        if (pass > 0 && m->layers[pass - 1].experts) {
            for (int e = 0; e < m->cfg.num_experts; e++) {
                const struct hmoe_mlp_w *x = &m->layers[pass - 1].experts[e];
                const struct hmoe_tensor *es[3] = {&x->gate, &x->up, &x->down};
                for (int k = 0; k < 3; k++) {
                    int64_t nn = hmoe_tensor_numel(es[k]);
                    for (int64_t i = 0; i < nn; i += 4096) {
                        int64_t c = nn - i < 4096 ? nn - i : 4096;
                        hmoe_tensor_read_f32(es[k], i, c, buf);
                        sum += (double)buf[0];
                    }
                }
            }
        }
    }
    return sum;
}

/* Deterministic fuzzing of a very small NF4 model file: random byte changes in the header and
 * in the quant_state JSON, random truncations and length prefixes. Every open must either fail
 * with a message or give a model whose every tensor reads within the file. */
static void fuzz(void)
{
    struct stw_tiny c = {.H = 16,
                         .L = 2,
                         .V = 8,
                         .Hq = 2,
                         .Hkv = 1,
                         .D = 8,
                         .Hk = 1,
                         .Hv = 2,
                         .dk = 4,
                         .dv = 4,
                         .K = 2,
                         .E = 2,
                         .topk = 1,
                         .I = 4,
                         .Is = 4,
                         .Idense = 4,
                         .full_interval = 2,
                         .dtype = "BF16",
                         .nf4_mask = STW_NF4_ATTN | STW_NF4_ROUTER,
                         .nf4_dq = 1};
    struct stw w = {0};
    stw_tiny_tensors(&w, &c, 11);
    char dir[1024], f[1100];
    new_dir(dir, sizeof dir);
    write_model(dir, &c, &w, 0, 1);
    stw_free(&w);
    snprintf(f, sizeof f, "%s/model.safetensors", dir);
    size_t n;
    uint8_t *orig = slurp(f, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | orig[i];
    /* the quant_state JSON blobs lie in the data; find the first one to aim mutations at it */
    const char *qs = NULL;
    for (size_t i = 8 + hl; i + 14 < n && !qs; i++)
        if (!memcmp(orig + i, "{\"quant_type\"", 13)) qs = (const char *)orig + i;
    CHECK(qs != NULL);
    size_t qs_off = qs ? (size_t)(qs - (const char *)orig) : 8 + hl;
    uint8_t *buf = malloc(n);
    uint64_t s = 12345;
    int opened = 0, failed = 0;
    const int iters = 400;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, orig, n);
        size_t len = n;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(s >> 33);
        int op = (int)(r % 10);
        int nmut = 1 + (int)((r >> 4) % 4);
        static const char pool[] = "{}[],:\"0123456789-.eE \x00\xff"
                                   "abcdefnulltrue";
        for (int k = 0; k < nmut; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos;
            if (op < 6) /* header bytes */
                pos = 8 + (size_t)((s >> 20) % hl);
            else if (op < 8) /* quant_state JSON bytes */
                pos = qs_off + (size_t)((s >> 20) % 120);
            else /* anywhere, incl. the length prefix */
                pos = (size_t)((s >> 20) % n);
            if (pos >= n) pos = n - 1;
            buf[pos] = (uint8_t)pool[(s >> 45) % (sizeof pool - 1)];
        }
        if (op == 9) len = (size_t)((s >> 11) % n); /* truncation */
        FILE *fp = fopen(f, "wb");
        CHECK(fp && fwrite(buf, 1, len, fp) == len);
        fclose(fp);
        struct hmoe_model *m = NULL;
        hmoe_err_clear();
        if (hmoe_model_open(dir, &m) == HMOE_OK) {
            opened++;
            (void)touch_all(m);
            hmoe_model_close(m);
        } else {
            failed++;
            CHECK(hmoe_err_msg()[0] != '\0');
            if (getenv("HMOE_FUZZ_VERBOSE")) fprintf(stderr, "  %s\n", hmoe_err_msg());
        }
    }
    fprintf(stderr, "fuzz: %d mutated files, %d opened, %d refused\n", iters, opened, failed);
    CHECK(failed > iters / 2);
    free(buf);
    free(orig);
}

/* Counts the NF4 tensors of a model (all weights, experts included). */
static int count_nf4(const struct hmoe_model *m)
{
    int n = (m->embed.dtype == HMOE_DT_NF4) +
            (m->lm_head.dtype == HMOE_DT_NF4 && !m->cfg.tie_word_embeddings);
    for (int l = 0; l < m->cfg.num_layers; l++) {
        const struct hmoe_layer_w *w = &m->layers[l];
        const struct hmoe_tensor *ts[] = {
            &w->q_proj,     &w->k_proj,      &w->v_proj,   &w->o_proj,      &w->in_proj_qkvz,
            &w->in_proj_ba, &w->out_proj,    &w->router,   &w->shared_gate, &w->shared.gate,
            &w->shared.up,  &w->shared.down, &w->mlp.gate, &w->mlp.up,      &w->mlp.down};
        for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++)
            n += ts[k]->dtype == HMOE_DT_NF4;
        for (int e = 0; w->experts && e < m->cfg.num_experts; e++)
            n += (w->experts[e].gate.dtype == HMOE_DT_NF4) +
                 (w->experts[e].up.dtype == HMOE_DT_NF4) +
                 (w->experts[e].down.dtype == HMOE_DT_NF4);
    }
    return n;
}

/* The committed transformers fixtures (tests/data/tiny-*) open; the NF4 one has as many NF4
 * tensors as its generator reports (ref.json checks.quantized_tensors). */
static void fixtures(void)
{
    const char *names[] = {"tiny-bf16", "tiny-sharded", "tiny-nf4"};
    for (int i = 0; i < 3; i++) {
        char dir[512], path[600];
        snprintf(dir, sizeof dir, "%s/%s", HMOE_TEST_DATA, names[i]);
        snprintf(path, sizeof path, "%s/config.json", dir);
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "fixture %s not present, skipped\n", dir);
            continue;
        }
        struct hmoe_model *m = NULL;
        CHECKF(hmoe_model_open(dir, &m) == HMOE_OK, "%s: %s", names[i], hmoe_err_msg());
        if (!m) continue;
        int n = count_nf4(m);
        snprintf(path, sizeof path, "%s/ref.json", dir);
        size_t len;
        char *txt = (char *)slurp(path, &len);
        const char *q = txt ? strstr(txt, "\"quantized_tensors\": ") : NULL;
        int want = 0;
        if (q) sscanf(q, "\"quantized_tensors\": %d", &want);
        CHECKF(n == want, "%s: %d NF4 tensors, ref.json says %d", names[i], n, want);
        CHECK(m->cfg.quantized == (want > 0));
        /* a weight reads back finite */
        const struct hmoe_tensor *sd = &m->layers[0].shared.down;
        int64_t nn = hmoe_tensor_numel(sd);
        float *buf = malloc(sizeof(float) * (size_t)nn);
        hmoe_tensor_read_f32(sd, 0, nn, buf);
        int fin = 1;
        for (int64_t k = 0; k < nn; k++)
            fin &= isfinite(buf[k]) != 0;
        CHECK(fin);
        free(buf);
        free(txt);
        fprintf(stderr, "fixture %s: opened, %d NF4 tensors\n", names[i], n);
        hmoe_model_close(m);
    }
}

/* bnb_4bit_quant_storage other than uint8: the packed bytes stored as a BF16 [n/4, 1] tensor
 * open and give the same values as the U8 storage. */
static void nf4_storage_bf16(void)
{
    struct stw_tiny c = stw_tiny_default();
    c.nf4_mask = STW_NF4_ATTN;
    c.nf4_dq = 1;
    struct stw w = {0};
    stw_tiny_tensors(&w, &c, 9);
    char d1[1024], d2[1024];
    new_dir(d1, sizeof d1);
    write_model(d1, &c, &w, 0, 1);
    struct stw_tensor *t = stw_find(&w, QKVZ0);
    CHECK(t != NULL);
    if (!t) {
        stw_free(&w);
        return;
    }
    memcpy(t->dtype, "BF16", 5);
    t->elem_size = 2;
    t->shape[0] = (int64_t)t->nbytes / 2;
    new_dir(d2, sizeof d2);
    write_model(d2, &c, &w, 0, 1);
    struct hmoe_model *m1 = NULL, *m2 = NULL;
    CHECKF(hmoe_model_open(d1, &m1) == HMOE_OK, "%s", hmoe_err_msg());
    CHECKF(hmoe_model_open(d2, &m2) == HMOE_OK, "bf16 storage: %s", hmoe_err_msg());
    if (m1 && m2) {
        const struct hmoe_tensor *a = &m1->layers[0].in_proj_qkvz, *b = &m2->layers[0].in_proj_qkvz;
        CHECK(b->dtype == HMOE_DT_NF4);
        int64_t n = hmoe_tensor_numel(a);
        float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
        hmoe_tensor_read_f32(a, 0, n, x);
        hmoe_tensor_read_f32(b, 0, n, y);
        CHECK(memcmp(x, y, sizeof(float) * (size_t)n) == 0);
        free(x);
        free(y);
    }
    hmoe_model_close(m1);
    hmoe_model_close(m2);
    stw_free(&w);
}

int main(void)
{
    if (!mkdtemp(root_dir)) {
        perror("mkdtemp");
        return 1;
    }
    char single[1024], sharded[1024], dir[1024];
    struct stw_tiny c = stw_tiny_default();
    valid_variant("bf16 single file", c, 0, 1, single, sizeof single);
    valid_variant("bf16 3 shards", c, 0, 3, sharded, sizeof sharded);
    struct stw_tiny c2 = c;
    c2.fused = 1;
    c2.tie = 1;
    valid_variant("fused experts, tied, 5.x config", c2, 1, 1, dir, sizeof dir);
    c2 = c;
    c2.dtype = "F32";
    c2.mlp_only0 = 1;
    valid_variant("f32, dense layer 0", c2, 0, 2, dir, sizeof dir);
    c2 = c;
    c2.dtype = "F16";
    c2.fused = 1;
    valid_variant("f16 fused", c2, 1, 1, dir, sizeof dir);
    c2 = c;
    c2.nf4_mask = STW_NF4_ATTN | STW_NF4_ROUTER | STW_NF4_SHARED | STW_NF4_EXPERT1;
    c2.nf4_dq = 1;
    valid_variant("nf4 double quant", c2, 0, 1, dir, sizeof dir);
    c2.nf4_dq = 0;
    valid_variant("nf4 plain absmax, sharded", c2, 0, 2, dir, sizeof dir);

    hostile_single(single);
    hostile_sharded(sharded);

    nf4_case("bad quant_state JSON", fix_bad_qs_json, QKVZ0, "JSON");
    nf4_case("odd blocksize", fix_qs_blocksize, QKVZ0, "blocksize");
    nf4_case("quant_state shape", fix_qs_shape, QKVZ0, "expected [320, 64]");
    nf4_case("quant_type fp4 in nf4 key", fix_qs_fp4, QKVZ0, "nf4");
    nf4_case("fp4 quant_state key", fix_fp4_key, QKVZ0, "FP4");
    nf4_case("absmax wrong length", fix_absmax_len, QKVZ0 ".absmax", NULL);
    nf4_case("nested_absmax wrong length", fix_nested_len, QKVZ0 ".nested_absmax", NULL);
    nf4_case("quant_map missing", fix_quant_map_missing, QKVZ0 ".quant_map", "not found");
    nf4_case("packed bytes wrong", fix_weight_bytes, QKVZ0, "bytes");
    nf4_case("quantized 1-D param", fix_norm_quantized, NORM0, "quantized");
    nf4_storage_bf16();

    fixtures();
    fuzz();

    nftw(root_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    TEST_DONE();
}
