/* shared/ipc/xq.c: layout and validation of the expert queue region (see hmoe/xq.h). */
#include "hmoe/xq.h"

#include <stddef.h>
#include <string.h>

static size_t align64(size_t n)
{
    return (n + 63u) & ~(size_t)63u;
}

static void offsets(uint32_t hidden, uint32_t cap_tok, uint32_t cap_pairs, uint64_t *x, uint64_t *p,
                    uint64_t *o, size_t *end)
{
    *x = align64(sizeof(struct hmoe_xq_ctl));
    *p = align64(*x + (size_t)cap_tok * hidden * sizeof(float));
    *o = align64(*p + (size_t)cap_pairs * sizeof(struct hmoe_xq_pair));
    *end = *o + (size_t)cap_pairs * hidden * sizeof(float);
}

size_t hmoe_xq_shm_size(uint32_t hidden, uint32_t cap_tok, uint32_t cap_pairs)
{
    uint64_t x, p, o;
    size_t end;
    offsets(hidden, cap_tok, cap_pairs, &x, &p, &o, &end);
    return end;
}

static void map(struct hmoe_shm *s, struct hmoe_xq *q)
{
    q->ctl = s->data;
    q->x = (float *)((char *)s->data + q->ctl->x_off);
    q->pairs = (struct hmoe_xq_pair *)((char *)s->data + q->ctl->pairs_off);
    q->out = (float *)((char *)s->data + q->ctl->out_off);
}

enum hmoe_status hmoe_xq_shm_init(struct hmoe_shm *s, uint32_t hidden, uint32_t cap_tok,
                                  uint32_t cap_pairs, struct hmoe_xq *q)
{
    if (!hidden || !cap_tok || !cap_pairs) return hmoe_fail(HMOE_E_INVAL, "xq: zero geometry");
    uint64_t x, p, o;
    size_t end;
    offsets(hidden, cap_tok, cap_pairs, &x, &p, &o, &end);
    if (end > s->data_nbytes)
        return hmoe_fail(HMOE_E_INVAL, "xq: region %s has %zu bytes, needs %zu", s->name,
                         s->data_nbytes, end);
    struct hmoe_xq_ctl *c = s->data;
    memset(c, 0, sizeof *c);
    c->hidden = hidden;
    c->cap_tok = cap_tok;
    c->cap_pairs = cap_pairs;
    c->x_off = x;
    c->pairs_off = p;
    c->out_off = o;
    map(s, q);
    return HMOE_OK;
}

enum hmoe_status hmoe_xq_open(struct hmoe_shm *s, uint32_t hidden, struct hmoe_xq *q)
{
    memset(q, 0, sizeof *q);
    if (s->data_nbytes < sizeof(struct hmoe_xq_ctl))
        return hmoe_fail(HMOE_E_PROTO, "xq %s: too small", s->name);
    const struct hmoe_xq_ctl *c = s->data;
    uint64_t x, p, o;
    size_t end;
    if (!c->hidden || !c->cap_tok || !c->cap_pairs || c->cap_tok > (1u << 20) ||
        c->cap_pairs > (1u << 24) || c->hidden > (1u << 20))
        return hmoe_fail(HMOE_E_PROTO, "xq %s: bad geometry H=%u tok=%u pairs=%u", s->name,
                         c->hidden, c->cap_tok, c->cap_pairs);
    offsets(c->hidden, c->cap_tok, c->cap_pairs, &x, &p, &o, &end);
    if (c->x_off != x || c->pairs_off != p || c->out_off != o || end > s->data_nbytes)
        return hmoe_fail(HMOE_E_PROTO, "xq %s: layout does not match its geometry", s->name);
    if (hidden && c->hidden != hidden)
        return hmoe_fail(HMOE_E_PROTO, "xq %s: hidden size %u, model has %u", s->name, c->hidden,
                         hidden);
    map(s, q);
    return HMOE_OK;
}
