/* Portable C kernel over the prepared layout (any CPU): per NF4 block a 16-entry table of
 * rounded weights, then a plain multiply-add per element. The baseline the ISA variants beat,
 * and the path used when none is supported. */
#include "experts_impl.h"

static void nf4_rows(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                     const struct exk_x *const *xs, float *y, int64_t ldy)
{
    const uint8_t *q = (const uint8_t *)m->data;
    const int64_t cols = m->cols, bs = m->bs;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t g0 = m->eoff + r * cols, g1 = g0 + cols;
        float acc[EXK_REG_TOK][4] = {{0}};
        for (int64_t b = g0 / bs, g = g0; g < g1; b++) {
            int64_t be = (b + 1) * bs < g1 ? (b + 1) * bs : g1;
            float a = exk_absmax(m, b), lut[16];
            for (int k = 0; k < 16; k++) lut[k] = exk_round(m->round, m->code[k] * a);
            for (; g < be; g++) {
                int nib = (g & 1) ? (q[g >> 1] & 15) : (q[g >> 1] >> 4);
                float w = lut[nib];
                int64_t c = g - g0;
                for (int t = 0; t < ntok; t++) acc[t][c & 3] += w * xs[t]->nat[c];
            }
        }
        for (int t = 0; t < ntok; t++)
            y[t * ldy + (r - r0)] = (acc[t][0] + acc[t][1]) + (acc[t][2] + acc[t][3]);
    }
}

static float dense_weight(const struct exk_mat *m, int64_t i)
{
    switch (m->fmt) {
    case EXK_BF16: return exk_bf16_to_f32(((const uint16_t *)m->data)[i]);
    case EXK_F16: return exk_f16_to_f32(((const uint16_t *)m->data)[i]);
    default: return ((const float *)m->data)[i];
    }
}

static void rows_group(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                       const struct exk_x *const *xs, float *y, int64_t ldy)
{
    if (m->fmt == EXK_NF4) {
        nf4_rows(m, r0, r1, ntok, xs, y, ldy);
        return;
    }
    const int64_t cols = m->cols;
    for (int64_t r = r0; r < r1; r++) {
        float acc[EXK_REG_TOK][4] = {{0}};
        for (int64_t c = 0; c < cols; c++) {
            float w = dense_weight(m, r * cols + c);
            for (int t = 0; t < ntok; t++) acc[t][c & 3] += w * xs[t]->nat[c];
        }
        for (int t = 0; t < ntok; t++)
            y[t * ldy + (r - r0)] = (acc[t][0] + acc[t][1]) + (acc[t][2] + acc[t][3]);
    }
}

void exk_rows_generic(const struct exk_mat *m, int64_t r0, int64_t r1, int ntok,
                      const struct exk_x *const *xs, float *y, int64_t ldy)
{
    for (int t = 0; t < ntok; t += EXK_REG_TOK)
        rows_group(m, r0, r1, ntok - t < EXK_REG_TOK ? ntok - t : EXK_REG_TOK, xs + t, y + t * ldy,
                   ldy);
}
