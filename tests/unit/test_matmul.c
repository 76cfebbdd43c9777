/* test_matmul: hmoe_matmul (y = x W^T) against a naive double-precision loop on random data,
 * for F32, BF16, F16 and NF4 (double quant, bf16 out) weights, row views, and several shapes
 * including n_tok 1 and 7, odd n_out (row tiles with a remainder) and n_in not a multiple of 16.
 * Prints a rough speed figure for a 2048x2048 bf16 matrix. */
#include <stdint.h>
#include <time.h>

#include "hmoe/tensor.h"
#include "hmoe_test.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

struct wbuf {
    struct hmoe_tensor t;
    struct hmoe_nf4 q;
    void *data;
    uint8_t *absmax_q;
    float nested[64];
};

/* Builds an [n_out, n_in] weight of dtype dt with random contents. */
static void make_weight(struct wbuf *w, enum hmoe_dtype dt, int64_t n_out, int64_t n_in)
{
    memset(w, 0, sizeof *w);
    int64_t n = n_out * n_in;
    w->t.name = "w";
    w->t.dtype = dt;
    w->t.ndim = 2;
    w->t.shape[0] = n_out;
    w->t.shape[1] = n_in;
    if (dt == HMOE_DT_F32) {
        float *d = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            d[i] = frand();
        w->data = d;
    } else if (dt == HMOE_DT_BF16 || dt == HMOE_DT_F16) {
        uint16_t *d = malloc(2 * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            /* random bit patterns in a sane range: sign, small exponent, random mantissa */
            uint16_t m = (uint16_t)(rng >> 20);
            frand();
            d[i] = dt == HMOE_DT_BF16 ? (uint16_t)((m & 0x807f) | 0x3c00)
                                      : (uint16_t)((m & 0x83ff) | 0x3000);
        }
        w->data = d;
    } else {
        uint8_t *d = malloc((size_t)(n + 1) / 2);
        for (int64_t i = 0; i < (n + 1) / 2; i++)
            d[i] = (uint8_t)(rng >> 33), frand();
        w->data = d;
        w->q.blocksize = 64;
        w->q.nested_blocksize = 256;
        w->q.n_blocks = (n + 63) / 64;
        w->absmax_q = malloc((size_t)w->q.n_blocks);
        for (int64_t b = 0; b < w->q.n_blocks; b++)
            w->absmax_q[b] = (uint8_t)(rng >> 35), frand();
        for (int g = 0; g < 64; g++)
            w->nested[g] = 0.5f + 0.5f * frand();
        for (int k = 0; k < 16; k++)
            w->q.code[k] = -1.0f + (float)k / 7.5f;
        for (int k = 0; k < 256; k++)
            w->q.nested_code[k] = (float)k / 255.0f;
        w->q.nested_offset = 0.01f;
        w->q.absmax_q = w->absmax_q;
        w->q.nested_absmax = w->nested;
        w->q.out_dtype = HMOE_DT_BF16;
        w->t.nf4 = &w->q;
    }
    w->t.data = w->data;
}

static void free_weight(struct wbuf *w)
{
    free(w->data);
    free(w->absmax_q);
}

/* Naive reference: W read element by element through hmoe_tensor_read_f32 (tested on its own
 * in test_nf4), accumulated in double. */
static void naive(const struct hmoe_tensor *w, const float *x, double *y, int n_tok)
{
    int64_t n_out = w->shape[0], n_in = hmoe_tensor_cols(w);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++)
            hmoe_tensor_read_f32(w, o * n_in + i, 1, &row[i]);
        for (int t = 0; t < n_tok; t++) {
            double s = 0;
            for (int64_t i = 0; i < n_in; i++)
                s += (double)row[i] * (double)x[t * n_in + i];
            y[t * n_out + o] = s;
        }
    }
    free(row);
}

static void check_one(const struct hmoe_tensor *w, int n_tok, const char *what)
{
    int64_t n_out = w->shape[0], n_in = hmoe_tensor_cols(w);
    float *x = malloc(sizeof(float) * (size_t)(n_tok * n_in));
    float *y = malloc(sizeof(float) * (size_t)(n_tok * n_out));
    double *r = malloc(sizeof(double) * (size_t)(n_tok * n_out));
    for (int64_t i = 0; i < n_tok * n_in; i++)
        x[i] = frand();
    hmoe_matmul(w, x, y, n_tok);
    naive(w, x, r, n_tok);
    double maxerr = 0, maxref = 0;
    for (int64_t i = 0; i < n_tok * n_out; i++) {
        double e = fabs((double)y[i] - r[i]);
        if (e > maxerr) maxerr = e;
        if (fabs(r[i]) > maxref) maxref = fabs(r[i]);
    }
    /* fp32 accumulation of n_in products of magnitude <= ~2 */
    double tol = 1e-6 * (double)n_in * 4 + 1e-6;
    CHECKF(maxerr <= tol, "%s %s [%lld, %lld] n_tok %d: max err %.3g (tol %.3g, max |y| %.3g)",
           what, hmoe_dtype_name(w->dtype), (long long)n_out, (long long)n_in, n_tok, maxerr, tol,
           maxref);
    free(x);
    free(y);
    free(r);
}

__attribute__((unused)) static void speed(void)
{
    struct wbuf w;
    make_weight(&w, HMOE_DT_BF16, 2048, 2048);
    float *x = calloc(2048 * 8, sizeof(float)), *y = calloc(2048 * 8, sizeof(float));
    for (int i = 0; i < 2048 * 8; i++)
        x[i] = frand();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int reps = 5;
    for (int r = 0; r < reps; r++)
        hmoe_matmul(&w.t, x, y, 1);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s1 = ((double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9) / reps;
    clock_gettime(CLOCK_MONOTONIC, &a);
    hmoe_matmul(&w.t, x, y, 8);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s8 = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    fprintf(stderr,
            "bf16 2048x2048: n_tok 1 %.2f ms (%.2f GFLOP/s), n_tok 8 %.2f ms (%.2f GFLOP/s)\n",
            s1 * 1e3, 2.0 * 2048 * 2048 / s1 * 1e-9, s8 * 1e3, 8 * 2.0 * 2048 * 2048 / s8 * 1e-9);
    free(x);
    free(y);
    free_weight(&w);
}

/* The result must not depend on the thread count (each output row is one thread's dot). */
static void thread_invariance(void)
{
#ifdef _OPENMP
    struct wbuf w;
    make_weight(&w, HMOE_DT_NF4, 512, 2048); /* 8M MACs with 8 tokens: several threads */
    float *x = malloc(sizeof(float) * 2048 * 8), *y1 = malloc(sizeof(float) * 512 * 8),
          *y4 = malloc(sizeof(float) * 512 * 8);
    for (int i = 0; i < 2048 * 8; i++)
        x[i] = frand();
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    hmoe_matmul(&w.t, x, y1, 8);
    omp_set_num_threads(4);
    hmoe_matmul(&w.t, x, y4, 8);
    omp_set_num_threads(saved);
    CHECK(memcmp(y1, y4, sizeof(float) * 512 * 8) == 0);
    free(x);
    free(y1);
    free(y4);
    free_weight(&w);
#endif
}

int main(void)
{
    const enum hmoe_dtype dts[] = {HMOE_DT_F32, HMOE_DT_BF16, HMOE_DT_F16, HMOE_DT_NF4};
    const int64_t shapes[][2] = {{1, 64}, {5, 64}, {13, 100}, {64, 192}, {257, 128}, {3, 1000}};
    const int toks[] = {1, 2, 7};
    for (size_t d = 0; d < 4; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            if (dts[d] == HMOE_DT_NF4 && shapes[s][1] % 64) continue;
            struct wbuf w;
            make_weight(&w, dts[d], shapes[s][0], shapes[s][1]);
            for (size_t t = 0; t < 3; t++)
                check_one(&w.t, toks[t], "full");
            /* a row view starting at row 1 (NF4: a block-aligned start since n_in % 64 == 0) */
            if (shapes[s][0] > 2) {
                struct hmoe_tensor v = hmoe_tensor_rows(&w.t, 1, shapes[s][0] - 2);
                check_one(&v, 7, "view");
            }
            free_weight(&w);
        }
    /* a misaligned f32 weight takes the dequantizing path, not the direct one */
    {
        struct wbuf w;
        make_weight(&w, HMOE_DT_F32, 9, 33);
        uint8_t *raw = malloc(9 * 33 * 4 + 1);
        memcpy(raw + 1, w.data, 9 * 33 * 4);
        struct hmoe_tensor t = w.t;
        t.data = raw + 1;
        check_one(&t, 7, "unaligned");
        free(raw);
        free_weight(&w);
    }
    thread_invariance();
#if !defined(__SANITIZE_ADDRESS__) && defined(NDEBUG)
    speed(); /* a figure only; meaningless in sanitizer or debug builds */
#endif
    TEST_DONE();
}
