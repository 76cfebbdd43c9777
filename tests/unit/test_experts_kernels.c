/* The bf16-part expert kernels (avx512bf16, amx) at the kernel level, against a double-precision
 * dot product of the exact NF4 weights and against the fp32 AVX-512 kernel: accuracy (<= 1e-5 of
 * max|ref| per token), the fallbacks they promise (a token with max|x| outside [2^-40, 2^50]
 * and a row group with a NaN absmax give exactly the fp32 kernel's bits; bf16-rounded NF4 rows
 * that qualify do not), the same bits whether tokens come alone or together and whatever the row
 * range of a call, blocksize 128, rows that are no multiple of 16. Skipped (77) where the CPU
 * has no AVX-512 BF16; the amx part runs where AMX is usable (or emulated). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "experts_impl.h"
#include "hmoe/experts.h"
#include "hmoe/experts_synth.h"
#include "hmoe/log.h"
#include "hmoe_test.h"

#if defined(__x86_64__) && defined(HMOE_EXPERTS_X86)

static const float nf4_code[16] = {-1.0f,       -0.6961928f, -0.5250731f, -0.3949175f,
                                   -0.28444138f, -0.18477343f, -0.09105004f, 0.0f,
                                   0.0795803f,  0.1609302f,  0.2461123f,  0.33791524f,
                                   0.44070983f, 0.562617f,   0.72295684f, 1.0f};

struct fix {
    int64_t rows, cols;
    uint8_t *q, *aq;
    float *nabs, ncode[256];
    struct exk_mat m;
};

static void fix_init(struct fix *f, int64_t rows, int64_t cols, int bs, uint64_t *rng)
{
    f->rows = rows;
    f->cols = cols;
    const int64_t n = rows * cols, nb = n / bs, ng = (nb + 255) / 256;
    f->q = malloc((size_t)n / 2);
    f->aq = malloc((size_t)nb);
    f->nabs = malloc((size_t)ng * sizeof(float));
    for (int64_t i = 0; i < n / 2; i++) f->q[i] = (uint8_t)hmoe_exsynth_rand(rng);
    for (int64_t i = 0; i < nb; i++) f->aq[i] = (uint8_t)(hmoe_exsynth_rand(rng) % 255);
    for (int64_t i = 0; i < ng; i++) f->nabs[i] = 0.02f + 0.01f * hmoe_exsynth_uniform(rng);
    for (int i = 0; i < 256; i++) f->ncode[i] = (float)(i + 1) / 256.0f;
    float cmax = 0, cmin = INFINITY;
    for (int k = 0; k < 16; k++) {
        const float a = fabsf(nf4_code[k]);
        cmax = a > cmax ? a : cmax;
        if (a > 0 && a < cmin) cmin = a;
    }
    f->m = (struct exk_mat){.fmt = EXK_NF4,
                            .round = EXK_R_BF16,
                            .rows = rows,
                            .cols = cols,
                            .data = f->q,
                            .eoff = 0,
                            .aq = f->aq,
                            .af = NULL,
                            .nabs = f->nabs,
                            .bs = bs,
                            .nbs = 256,
                            .boff = 0,
                            .noff = 0.003f,
                            .code = nf4_code,
                            .cmax = cmax,
                            .cmin = cmin,
                            .ncode = f->ncode};
}

static void fix_free(struct fix *f)
{
    free(f->q);
    free(f->aq);
    free(f->nabs);
}

/* One token's x in every layout the kernels read. */
struct tok {
    float *x, *e, *o;
    uint16_t *bf, *xa;
    struct exk_x v;
};

static void tok_init(struct tok *t, int64_t cols, float scale, uint64_t *rng)
{
    t->x = malloc((size_t)cols * sizeof(float));
    t->e = malloc((size_t)cols / 2 * sizeof(float));
    t->o = malloc((size_t)cols / 2 * sizeof(float));
    t->bf = aligned_alloc(64, (size_t)EXK_BF_PARTS * cols * sizeof(uint16_t));
    t->xa = aligned_alloc(64, (size_t)EXK_BF_PARTS * cols * sizeof(uint16_t));
    for (int64_t i = 0; i < cols; i++) t->x[i] = (hmoe_exsynth_uniform(rng) - 0.5f) * 2.0f * scale;
    for (int64_t j = 0; j < cols / 2; j++) {
        t->e[j] = t->x[2 * j];
        t->o[j] = t->x[2 * j + 1];
    }
    const float a0 = exk_bf_split_avx512bf16(t->e, cols / 2, t->bf, cols),
                a1 = exk_bf_split_avx512bf16(t->o, cols / 2, t->bf + cols / 2, cols);
    exk_xa_from_bf(t->bf, cols, t->xa);
    t->v = (struct exk_x){.nat = t->x,
                          .e = {t->e, t->e},
                          .o = {t->o, t->o},
                          .bf = t->bf,
                          .bf_ok = exk_bf_x_ok(a0 > a1 ? a0 : a1),
                          .xa = t->xa};
}

static void tok_free(struct tok *t)
{
    free(t->x);
    free(t->e);
    free(t->o);
    free(t->bf);
    free(t->xa);
}

#define NTOK 5

/* all_fp32: the kernel takes none of this shape (amx with blocksize 128): every token must give
 * the fp32 kernel's bits */
static void check_kernel(const char *kn, exk_rows_fn fn, struct fix *f, const char *what,
                         int all_fp32, uint64_t *rng)
{
    const int64_t R = f->rows, C = f->cols;
    /* tokens: normal, below 2^-40, normal x3, above 2^50, all zero */
    const float scales[NTOK] = {1.0f, 0x1p-45f, 3.0f, 0x1p60f, 0.0f};
    struct tok tk[NTOK];
    const struct exk_x *xs[NTOK];
    for (int t = 0; t < NTOK; t++) {
        tok_init(&tk[t], C, scales[t], rng);
        xs[t] = &tk[t].v;
    }
    CHECK(tk[0].v.bf_ok && !tk[1].v.bf_ok && tk[2].v.bf_ok && !tk[3].v.bf_ok && tk[4].v.bf_ok);
    float *y = calloc((size_t)NTOK * R, sizeof(float)), *y1 = calloc((size_t)NTOK * R, 4),
          *y512 = calloc((size_t)NTOK * R, 4), *ys = calloc((size_t)NTOK * R, 4);
    fn(&f->m, 0, R, NTOK, xs, y, R);                /* all tokens, all rows */
    exk_rows_avx512(&f->m, 0, R, NTOK, xs, y512, R); /* the fp32 kernel */
    for (int t = 0; t < NTOK; t++) fn(&f->m, 0, R, 1, xs + t, y1 + t * R, R); /* alone */
    /* other row ranges: any start for avx512bf16; multiples of 16 (the work units) for amx,
     * whose 16-row groups are absolute */
    const int64_t step = fn == exk_rows_amx ? 32 : 24;
    for (int64_t r = 0; r < R; r += step)
        fn(&f->m, r, r + step < R ? r + step : R, NTOK, xs, ys + r, R);
    CHECKF(!memcmp(y, y1, (size_t)NTOK * R * 4), "%s %s: tokens together != alone", kn, what);
    CHECKF(!memcmp(y, ys, (size_t)NTOK * R * 4), "%s %s: row ranges change the bits", kn, what);
    for (int t = 0; t < NTOK; t++) {
        double mx = 0, md = 0;
        int differ = 0, nan_rows = 0;
        for (int64_t r = 0; r < R; r++) {
            double ref = 0;
            for (int64_t c = 0; c < C; c++)
                ref += (double)exk_nf4_weight(&f->m, r * C + c) * (double)tk[t].x[c];
            const float v = y[t * R + r];
            if (isnan(ref)) {
                nan_rows++;
                CHECKF(!memcmp(&v, &y512[t * R + r], 4), "%s %s: NaN row %lld not fp32's", kn,
                       what, (long long)r);
                continue;
            }
            mx = fmax(mx, fabs(ref));
            md = fmax(md, fabs(ref - (double)v));
            differ |= memcmp(&v, &y512[t * R + r], 4) != 0;
        }
        CHECKF(md <= 1e-5 * mx, "%s %s token %d: max diff %.3g vs max|ref| %.3g", kn, what, t, md,
               mx);
        if (t == 1 || t == 3 || all_fp32) /* out of range: exactly the fp32 kernel */
            CHECKF(!memcmp(y + t * R, y512 + t * R, (size_t)R * 4),
                   "%s %s token %d (x out of range): not the fp32 kernel's bits", kn, what, t);
        else if (t != 4 && !nan_rows)
            CHECKF(differ, "%s %s token %d: the fp32 kernel's bits (fell back?)", kn, what, t);
    }
    free(y);
    free(y1);
    free(y512);
    free(ys);
    for (int t = 0; t < NTOK; t++) tok_free(&tk[t]);
}

static void run_shapes(const char *kn, exk_rows_fn fn, uint64_t *rng)
{
    static const struct {
        int64_t rows, cols;
        int bs;
        const char *what;
    } sh[] = {{48, 256, 64, "48 x 256"},
              {40, 192, 64, "40 x 192 (rows no multiple of 16)"},
              {32, 256, 128, "32 x 256, blocksize 128"},
              {64, 2048, 64, "64 x 2048"}};
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        struct fix f;
        fix_init(&f, sh[i].rows, sh[i].cols, sh[i].bs, rng);
        const int all_fp32 = fn == exk_rows_amx && sh[i].bs != 64;
        check_kernel(kn, fn, &f, sh[i].what, all_fp32, rng);
        /* a NaN absmax in row 5: its row group (amx: rows 0-15) takes the fp32 kernel */
        f.ncode[255] = NAN;
        f.aq[5 * (f.cols / sh[i].bs)] = 255;
        check_kernel(kn, fn, &f, "NaN absmax in row 5", all_fp32, rng);
        fix_free(&f);
    }
}

int main(void)
{
    hmoe_log_init("T", HMOE_LOG_LVL_WARN, 0);
    if (!hmoe_experts_isa_supported(HMOE_ISA_AVX512BF16)) TEST_SKIP("no AVX-512 BF16 here\n");
    uint64_t rng = 99;
    run_shapes("avx512bf16", exk_rows_avx512bf16, &rng);
    if (hmoe_experts_isa_supported(HMOE_ISA_AMX))
        run_shapes("amx", exk_rows_amx, &rng);
    else
        fprintf(stderr, "amx: not usable here, not checked\n");
    TEST_DONE();
}

#else
int main(void)
{
    TEST_SKIP("x86-64 kernels not built\n");
}
#endif
