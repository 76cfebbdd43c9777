/* shared/ipc/xq_compute.c: reference expert FFN over (token, expert) pairs, bit-identical to
 * the CPU forward pass's in-process experts (same hmoe_matmul, same silu, same products). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/tensor.h"
#include "hmoe/xq.h"

static inline float silu(float x)
{
    return x / (1.0f + expf(-x));
}

enum hmoe_status hmoe_xq_scratch_init(struct hmoe_xq_scratch *s, int H, int I, int cap_rows,
                                      int cap_pairs)
{
    memset(s, 0, sizeof *s);
    s->H = H;
    s->I = I;
    s->cap_rows = cap_rows;
    s->cap_pairs = cap_pairs;
    s->xe = malloc((size_t)cap_rows * H * sizeof(float));
    s->ye = malloc((size_t)cap_rows * H * sizeof(float));
    s->ge = malloc((size_t)cap_rows * I * sizeof(float));
    s->ue = malloc((size_t)cap_rows * I * sizeof(float));
    s->order = malloc((size_t)cap_pairs * sizeof(int32_t));
    if (!s->xe || !s->ye || !s->ge || !s->ue || !s->order) {
        hmoe_xq_scratch_free(s);
        return hmoe_fail(HMOE_E_NOMEM, "expert scratch (%d rows)", cap_rows);
    }
    return HMOE_OK;
}

void hmoe_xq_scratch_free(struct hmoe_xq_scratch *s)
{
    free(s->xe);
    free(s->ye);
    free(s->ge);
    free(s->ue);
    free(s->order);
    memset(s, 0, sizeof *s);
}

static int by_expert(const void *a, const void *b, void *arg)
{
    const struct hmoe_xq_pair *pairs = arg;
    const struct hmoe_xq_pair *pa = &pairs[*(const int32_t *)a];
    const struct hmoe_xq_pair *pb = &pairs[*(const int32_t *)b];
    if (pa->expert != pb->expert) return pa->expert < pb->expert ? -1 : 1;
    return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

enum hmoe_status hmoe_xq_compute(struct hmoe_xq_scratch *s, const struct hmoe_mlp_w *experts,
                                 int n_experts, const struct hmoe_xq_pair *pairs, int n_pairs,
                                 const float *x, float *out)
{
    const int H = s->H, I = s->I;
    if (n_pairs > s->cap_pairs)
        return hmoe_fail(HMOE_E_INVAL, "%d pairs exceed the scratch (%d)", n_pairs, s->cap_pairs);
    for (int p = 0; p < n_pairs; p++) {
        if (pairs[p].expert < 0 || pairs[p].expert >= n_experts)
            return hmoe_fail(HMOE_E_INVAL, "pair %d: expert %d outside [0, %d)", p, pairs[p].expert,
                             n_experts);
        s->order[p] = p;
    }
    qsort_r(s->order, (size_t)n_pairs, sizeof(int32_t), by_expert, (void *)pairs);
    for (int i = 0; i < n_pairs;) {
        const int e = pairs[s->order[i]].expert;
        int j = i;
        while (j < n_pairs && pairs[s->order[j]].expert == e && j - i < s->cap_rows)
            j++;
        const int ne = j - i;
        for (int r = 0; r < ne; r++)
            memcpy(s->xe + (size_t)r * H, x + (size_t)pairs[s->order[i + r]].tok * H,
                   (size_t)H * sizeof(float));
        const struct hmoe_mlp_w *w = &experts[e];
        if (w->gate.shape[0] != I)
            return hmoe_fail(HMOE_E_INVAL, "expert %d: intermediate %lld, expected %d", e,
                             (long long)w->gate.shape[0], I);
        hmoe_matmul(&w->gate, s->xe, s->ge, ne);
        hmoe_matmul(&w->up, s->xe, s->ue, ne);
        for (size_t q = 0; q < (size_t)ne * I; q++)
            s->ge[q] = silu(s->ge[q]) * s->ue[q];
        hmoe_matmul(&w->down, s->ge, s->ye, ne);
        for (int r = 0; r < ne; r++) {
            const int p = s->order[i + r];
            const float wp = pairs[p].w;
            float *o = out + (size_t)p * H;
            const float *y = s->ye + (size_t)r * H;
            for (int d = 0; d < H; d++)
                o[d] = wp * y[d];
        }
        i = j;
    }
    return HMOE_OK;
}
