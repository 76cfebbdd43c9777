/* hmoe-synth-write round trip: a synth model written as a sharded HF + bnb checkpoint and read
 * back with hmoe_model_open gives the same config and bit-identical tensors (incl. NF4 state). */
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "hmoe/synth.h"
#include "hmoe_test.h"

static size_t data_bytes(const struct hmoe_tensor *t)
{
    int64_t n = hmoe_tensor_numel(t);
    switch (t->dtype) {
    case HMOE_DT_NF4: return (size_t)(n + 1) / 2;
    case HMOE_DT_F32: return (size_t)n * 4;
    case HMOE_DT_U8: return (size_t)n;
    default: return (size_t)n * 2;
    }
}

static void same_tensor(const struct hmoe_tensor *a, const struct hmoe_tensor *b)
{
    CHECKF(a->dtype == b->dtype, "%s: dtype %d vs %d", a->name ? a->name : "?", a->dtype, b->dtype);
    if (a->dtype == HMOE_DT_NONE || a->dtype != b->dtype) return;
    CHECKF(b->name && !strcmp(a->name, b->name), "%s vs %s", a->name, b->name ? b->name : "NULL");
    CHECKF(a->ndim == b->ndim, "%s: ndim", a->name);
    for (int d = 0; d < a->ndim && d < 4; d++) CHECKF(a->shape[d] == b->shape[d], "%s: shape", a->name);
    const uint8_t *pa = (const uint8_t *)a->data + (a->dtype == HMOE_DT_NF4 ? a->elem0 / 2 : 0);
    const uint8_t *pb = (const uint8_t *)b->data + (b->dtype == HMOE_DT_NF4 ? b->elem0 / 2 : 0);
    CHECKF(!memcmp(pa, pb, data_bytes(a)), "%s: data differs", a->name);
    if (a->dtype != HMOE_DT_NF4) return;
    const struct hmoe_nf4 *qa = a->nf4, *qb = b->nf4;
    CHECKF(qb && qb->absmax_q && qb->nested_absmax, "%s: no double-quant state", a->name);
    if (!qb || !qb->absmax_q || !qb->nested_absmax) return;
    CHECK(qa->n_blocks == qb->n_blocks && qa->blocksize == qb->blocksize);
    CHECK(qa->nested_blocksize == qb->nested_blocksize && qa->out_dtype == qb->out_dtype);
    CHECKF(qa->nested_offset == qb->nested_offset, "%s: nested_offset %.9g vs %.9g", a->name,
           (double)qa->nested_offset, (double)qb->nested_offset);
    CHECK(!memcmp(qa->code, qb->code, sizeof qa->code));
    CHECK(!memcmp(qa->nested_code, qb->nested_code, sizeof qa->nested_code));
    CHECKF(!memcmp(qa->absmax_q, qb->absmax_q, (size_t)qa->n_blocks), "%s: absmax", a->name);
    size_t ng = (size_t)((qa->n_blocks + qa->nested_blocksize - 1) / qa->nested_blocksize);
    CHECKF(!memcmp(qa->nested_absmax, qb->nested_absmax, ng * 4), "%s: nested_absmax", a->name);
}

static void same_mlp(const struct hmoe_mlp_w *a, const struct hmoe_mlp_w *b)
{
    same_tensor(&a->gate, &b->gate);
    same_tensor(&a->up, &b->up);
    same_tensor(&a->down, &b->down);
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static void roundtrip(const char *spec, uint64_t shard)
{
    char dir[] = "/tmp/hmoe-synth-rt-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct hmoe_model *a = NULL, *b = NULL;
    CHECK(hmoe_synth_open(spec, &a) == HMOE_OK);
    if (!a) return;
    enum hmoe_status st = hmoe_synth_write(a, dir, shard);
    CHECKF(st == HMOE_OK, "write: %s", hmoe_err_msg());
    st = hmoe_model_open(dir, &b);
    CHECKF(st == HMOE_OK, "open: %s", hmoe_err_msg());
    if (b) {
        const struct hmoe_config *ca = &a->cfg, *cb = &b->cfg;
        CHECK(ca->hidden_size == cb->hidden_size && ca->num_layers == cb->num_layers);
        CHECK(ca->vocab_size == cb->vocab_size && ca->head_dim == cb->head_dim);
        CHECK(ca->rotary_dim == cb->rotary_dim && ca->rope_theta == cb->rope_theta);
        CHECK(ca->rms_norm_eps == cb->rms_norm_eps && ca->num_experts == cb->num_experts);
        CHECK(ca->num_experts_per_tok == cb->num_experts_per_tok && cb->quantized);
        CHECK(ca->linear_num_value_heads == cb->linear_num_value_heads);
        CHECK(ca->eos_token_ids[0] == cb->eos_token_ids[0] && ca->bos_token_id == cb->bos_token_id);
        CHECK(!memcmp(ca->layer_types, cb->layer_types, sizeof ca->layer_types));
        same_tensor(&a->embed, &b->embed);
        same_tensor(&a->final_norm, &b->final_norm);
        same_tensor(&a->lm_head, &b->lm_head);
        for (int l = 0; l < ca->num_layers && l < cb->num_layers; l++) {
            const struct hmoe_layer_w *x = &a->layers[l], *y = &b->layers[l];
            CHECK(x->kind == y->kind);
            const struct hmoe_tensor *tx[] = {&x->input_norm, &x->post_norm, &x->q_proj, &x->k_proj,
                                              &x->v_proj, &x->o_proj, &x->q_norm, &x->k_norm,
                                              &x->in_proj_qkvz, &x->in_proj_ba, &x->conv1d,
                                              &x->dt_bias, &x->A_log, &x->lin_norm, &x->out_proj,
                                              &x->router, &x->shared_gate};
            const struct hmoe_tensor *ty[] = {&y->input_norm, &y->post_norm, &y->q_proj, &y->k_proj,
                                              &y->v_proj, &y->o_proj, &y->q_norm, &y->k_norm,
                                              &y->in_proj_qkvz, &y->in_proj_ba, &y->conv1d,
                                              &y->dt_bias, &y->A_log, &y->lin_norm, &y->out_proj,
                                              &y->router, &y->shared_gate};
            for (size_t i = 0; i < sizeof tx / sizeof tx[0]; i++) same_tensor(tx[i], ty[i]);
            same_mlp(&x->shared, &y->shared);
            CHECK(y->experts != NULL);
            for (int e = 0; y->experts && e < ca->num_experts; e++)
                same_mlp(&x->experts[e], &y->experts[e]);
        }
    }
    hmoe_model_close(b);
    hmoe_synth_close(a);
    rm_dir(dir);
}

int main(void)
{
    roundtrip("synth:tiny?seed=3", 1u << 18); /* several shards + index */
    roundtrip("synth:tiny", (uint64_t)1 << 32); /* one model.safetensors */
    TEST_DONE();
}
