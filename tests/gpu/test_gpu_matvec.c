/* GPU matrix-vector products (gpu_worker/cuda/matvec.cu) against a float64 CPU reference:
 * NF4 double-quant in both absmax modes, over row lengths that exercise every lane layout
 * (64..4096 columns, partial segments), batched calls with shared and per-weight inputs, views
 * that start inside a nested group; BF16 incl. multi-segment rows; and the error returns. */
#include "gpu_test_util.h"
#include "hmoe/synth.h"

/* Designs 5..8 (tensor cores) round the NF4 code to fp16 (relative <= 3.3e-4 for the NF4
 * table; x is split exactly into fp16 hi + lo); the others are plain fp32. */
static int g_design;
static double g_tc_max_err; /* largest error seen with designs 5..8 */

static double nf4_tol(void) {
    return g_design >= 5 ? 1e-3 : 1e-5;
}

static void note_err(double err) {
    if (g_design >= 5 && err > g_tc_max_err) g_tc_max_err = err;
}

struct nf4_host {
    struct hmoe_tensor t;
    struct hmoe_nf4 q;
    uint8_t *w, *absq;
    float *nested;
};

static void nf4_make(struct nf4_host *h, int64_t rows, int64_t cols) {
    int64_t n = rows * cols, nb = n / 64, ng = (nb + 255) / 256;
    memset(h, 0, sizeof *h);
    h->w = malloc((size_t)n / 2);
    h->absq = malloc((size_t)nb);
    h->nested = malloc((size_t)ng * 4);
    for (int64_t i = 0; i < n / 2; i++)
        h->w[i] = (uint8_t)gt_u64();
    for (int64_t i = 0; i < nb; i++)
        h->absq[i] = (uint8_t)gt_u64();
    for (int64_t i = 0; i < ng; i++)
        h->nested[i] = 0.01f + 0.02f * fabsf(gt_uniform());
    memcpy(h->q.code, hmoe_synth_nf4_code, sizeof h->q.code);
    hmoe_synth_dynamic_map(h->q.nested_code);
    h->q.absmax_q = h->absq;
    h->q.nested_absmax = h->nested;
    h->q.nested_offset = 0.05f;
    h->q.n_blocks = nb;
    h->q.blocksize = 64;
    h->q.nested_blocksize = 256;
    h->q.out_dtype = HMOE_DT_BF16;
    h->t.name = "test.nf4";
    h->t.dtype = HMOE_DT_NF4;
    h->t.ndim = 2;
    h->t.shape[0] = rows;
    h->t.shape[1] = cols;
    h->t.data = h->w;
    h->t.nf4 = &h->q;
}

static void nf4_free(struct nf4_host *h) {
    free(h->w);
    free(h->absq);
    free(h->nested);
}

/* y = W[r0:r0+rows] x in float64, W dequantized exactly as bnb (absmax in fp32). */
static void nf4_ref(const struct nf4_host *h, int64_t r0, int64_t rows, const float *x, double *y) {
    const int64_t cols = h->t.shape[1];
    for (int64_t r = r0; r < r0 + rows; r++) {
        double acc = 0;
        for (int64_t c = 0; c < cols; c++) {
            int64_t i = r * cols + c, b = i / 64;
            float am = h->q.nested_code[h->absq[b]] * h->nested[b / 256];
            am = am + h->q.nested_offset;
            int nib = (i & 1) ? h->w[i / 2] & 15 : h->w[i / 2] >> 4;
            acc += (double)h->q.code[nib] * (double)am * (double)x[c];
        }
        y[r - r0] = acc;
    }
}

static int g_wide; /* rand_vec: magnitudes over 2^-60 .. 2^40 instead of [-2, 2] */

static float *rand_vec(int64_t n) {
    float *x = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        x[i] = gt_uniform() * 2.0f;
        if (g_wide) x[i] = ldexpf(x[i], (int)(gt_u64() % 101) - 60);
    }
    return x;
}

static void check_nf4(struct hmoe_gpu *g, int64_t rows, int64_t cols, int64_t r0, int64_t nr) {
    struct nf4_host h;
    nf4_make(&h, rows, cols);
    struct hmoe_tensor view = h.t;
    if (nr) { /* a row view: data stays the whole tensor, elem0 moves */
        view.shape[0] = nr;
        view.elem0 = r0 * cols;
    } else {
        r0 = 0;
        nr = rows;
    }
    float *x = rand_vec(cols);
    double *ref = malloc((size_t)nr * 8);
    float *y = malloc((size_t)nr * 4);
    nf4_ref(&h, r0, nr, x, ref);
    float *d_x = gt_dev(g, x, (size_t)cols * 4);
    for (int mode = 0; mode < 2; mode++) {
        struct hmoe_gpu_w *w = NULL;
        enum hmoe_status st = hmoe_gpu_weight_upload(g, &view, (enum hmoe_gpu_absmax)mode, &w);
        CHECKF(st == HMOE_OK, "upload: %s", hmoe_err_msg());
        if (st) continue;
        CHECK(hmoe_gpu_weight_rows(w) == nr && hmoe_gpu_weight_cols(w) == cols);
        float *d_y = gt_dev(g, NULL, (size_t)nr * 4);
        st = hmoe_gpu_matvec(g, w, d_x, d_y);
        if (!st) st = hmoe_gpu_sync(g);
        CHECKF(st == HMOE_OK, "matvec: %s", hmoe_err_msg());
        hmoe_gpu_download(g, y, d_y, (size_t)nr * 4);
        double err = gt_rel_err(y, ref, (size_t)nr);
        note_err(err);
        CHECKF(err < nf4_tol(), "nf4 [%lld,%lld] rows %lld+%lld mode %d: rel err %.3g",
               (long long)rows, (long long)cols, (long long)r0, (long long)nr, mode, err);
        hmoe_gpu_free(g, d_y);
        hmoe_gpu_weight_free(w);
    }
    hmoe_gpu_free(g, d_x);
    free(x);
    free(ref);
    free(y);
    nf4_free(&h);
}

/* n experts of one shape, shared input (x_stride 0) or one input each. */
static void check_batched(struct hmoe_gpu *g, int n, int64_t rows, int64_t cols, int shared) {
    struct nf4_host h[HMOE_GPU_MAX_BATCH];
    struct hmoe_gpu_w *w[HMOE_GPU_MAX_BATCH];
    int64_t xs = shared ? 0 : cols + 4, ys = rows + 3;
    float *x = rand_vec(xs ? xs * n : cols);
    double *ref = malloc((size_t)(ys * n) * 8);
    float *y = malloc((size_t)(ys * n) * 4);
    for (int j = 0; j < n; j++) {
        nf4_make(&h[j], rows, cols);
        nf4_ref(&h[j], 0, rows, x + j * xs, ref + j * ys);
        for (int64_t r = rows; r < ys; r++)
            ref[j * ys + r] = NAN; /* gaps stay poisoned */
        CHECK(hmoe_gpu_weight_upload(g, &h[j].t, HMOE_GPU_ABSMAX_CODES, &w[j]) == HMOE_OK);
    }
    float *d_x = gt_dev(g, x, (size_t)(xs ? xs * n : cols) * 4);
    float *d_y = gt_dev(g, NULL, (size_t)(ys * n) * 4);
    enum hmoe_status st =
        hmoe_gpu_matvec_batched(g, (const struct hmoe_gpu_w *const *)w, n, d_x, xs, d_y, ys);
    if (!st) st = hmoe_gpu_sync(g);
    CHECKF(st == HMOE_OK, "batched: %s", hmoe_err_msg());
    hmoe_gpu_download(g, y, d_y, (size_t)(ys * n) * 4);
    for (int j = 0; j < n; j++) {
        double err = gt_rel_err(y + j * ys, ref + j * ys, (size_t)rows);
        note_err(err);
        CHECKF(err < nf4_tol(), "batched %d x [%lld,%lld] job %d: %.3g", n, (long long)rows,
               (long long)cols, j, err);
        if (cols <= 2048) CHECKF(isnan(y[j * ys + rows]), "job %d wrote past its rows", j);
    }
    for (int j = 0; j < n; j++) {
        hmoe_gpu_weight_free(w[j]);
        nf4_free(&h[j]);
    }
    hmoe_gpu_free(g, d_x);
    hmoe_gpu_free(g, d_y);
    free(x);
    free(ref);
    free(y);
}

static void check_bf16(struct hmoe_gpu *g, int64_t rows, int64_t cols) {
    uint16_t *wb = malloc((size_t)(rows * cols) * 2);
    for (int64_t i = 0; i < rows * cols; i++)
        wb[i] = gt_bf16(gt_uniform() * 0.05f);
    float *x = rand_vec(cols);
    double *ref = malloc((size_t)rows * 8);
    float *y = malloc((size_t)rows * 4);
    for (int64_t r = 0; r < rows; r++) {
        double acc = 0;
        for (int64_t c = 0; c < cols; c++)
            acc += (double)gt_bf16_f(wb[r * cols + c]) * (double)x[c];
        ref[r] = acc;
    }
    struct hmoe_tensor t = {
        .name = "test.bf16", .dtype = HMOE_DT_BF16, .ndim = 2, .shape = {rows, cols}, .data = wb};
    struct hmoe_gpu_w *w = NULL;
    CHECK(hmoe_gpu_weight_upload(g, &t, HMOE_GPU_ABSMAX_CODES, &w) == HMOE_OK);
    float *d_x = gt_dev(g, x, (size_t)cols * 4);
    float *d_y = gt_dev(g, NULL, (size_t)rows * 4);
    enum hmoe_status st = w ? hmoe_gpu_matvec(g, w, d_x, d_y) : HMOE_E_INVAL;
    if (!st) st = hmoe_gpu_sync(g);
    CHECKF(st == HMOE_OK, "bf16 matvec: %s", hmoe_err_msg());
    hmoe_gpu_download(g, y, d_y, (size_t)rows * 4);
    double err = gt_rel_err(y, ref, (size_t)rows);
    CHECKF(err < 1e-5, "bf16 [%lld,%lld]: %.3g", (long long)rows, (long long)cols, err);
    CHECK(w && hmoe_gpu_weight_bytes(w) == (uint64_t)(rows * cols) * 2);
    hmoe_gpu_weight_free(w);
    hmoe_gpu_free(g, d_x);
    hmoe_gpu_free(g, d_y);
    free(wb);
    free(x);
    free(ref);
    free(y);
}

/* The layout is chosen at upload (tiled under designs 5..8): a weight keeps working after the
 * design changes, and weights of both layouts cannot share a batched call. */
static void check_mixed(struct hmoe_gpu *g) {
    struct nf4_host h;
    nf4_make(&h, 48, 1024);
    float *x = rand_vec(1024);
    double ref[48];
    float y[48];
    nf4_ref(&h, 0, 48, x, ref);
    float *d_x = gt_dev(g, x, 1024 * 4);
    struct hmoe_gpu_w *wt = NULL, *wp = NULL;
    CHECK(hmoe_gpu_set_matvec_kernel(g, 5, -1) == HMOE_OK);
    CHECK(hmoe_gpu_weight_upload(g, &h.t, HMOE_GPU_ABSMAX_CODES, &wt) == HMOE_OK);
    CHECK(hmoe_gpu_set_matvec_kernel(g, 1, -1) == HMOE_OK);
    CHECK(hmoe_gpu_weight_upload(g, &h.t, HMOE_GPU_ABSMAX_CODES, &wp) == HMOE_OK);
    static const int steps[6] = {0, 1, 5, 6, 7, 8};
    for (int k = 0; k < 6 && wt && wp; k++) {
        CHECK(hmoe_gpu_set_matvec_kernel(g, steps[k], -1) == HMOE_OK);
        for (int which = 0; which < 2; which++) {
            float *d_y = gt_dev(g, NULL, 48 * 4);
            enum hmoe_status st = hmoe_gpu_matvec(g, which ? wp : wt, d_x, d_y);
            if (!st) st = hmoe_gpu_sync(g);
            CHECKF(st == HMOE_OK, "mixed: %s", hmoe_err_msg());
            hmoe_gpu_download(g, y, d_y, 48 * 4);
            double err = gt_rel_err(y, ref, 48);
            CHECKF(err < (which ? 1e-5 : 1e-3), "mixed: design step %d layout %s: %.3g", k,
                   which ? "plain" : "tiled", err);
            hmoe_gpu_free(g, d_y);
        }
    }
    const struct hmoe_gpu_w *pair[2] = {wt, wp};
    float *d_y2 = gt_dev(g, NULL, 96 * 4);
    CHECK(hmoe_gpu_matvec_batched(g, pair, 2, d_x, 0, d_y2, 48) == HMOE_E_INVAL);
    hmoe_gpu_free(g, d_y2);
    hmoe_gpu_weight_free(wt);
    hmoe_gpu_weight_free(wp);
    hmoe_gpu_free(g, d_x);
    free(x);
    nf4_free(&h);
}

static void check_errors(struct hmoe_gpu *g) {
    struct nf4_host h, h2;
    nf4_make(&h, 8, 128);
    nf4_make(&h2, 8, 256);
    struct hmoe_gpu_w *w = NULL, *w2 = NULL;
    CHECK(hmoe_gpu_weight_upload(g, &h.t, HMOE_GPU_ABSMAX_CODES, &w) == HMOE_OK);
    CHECK(hmoe_gpu_weight_upload(g, &h2.t, HMOE_GPU_ABSMAX_CODES, &w2) == HMOE_OK);
    const struct hmoe_gpu_w *pair[2] = {w, w2};
    CHECK(hmoe_gpu_matvec_batched(g, pair, 2, NULL, 0, NULL, 8) == HMOE_E_INVAL);
    CHECK(hmoe_gpu_matvec_batched(g, pair, 0, NULL, 0, NULL, 8) == HMOE_E_INVAL);
    CHECK(hmoe_gpu_matvec_batched(g, pair, HMOE_GPU_MAX_BATCH + 1, NULL, 0, NULL, 8) ==
          HMOE_E_INVAL);
    const struct hmoe_gpu_w *same[2] = {w, w};
    CHECK(hmoe_gpu_matvec_batched(g, same, 2, NULL, 0, NULL, 4) == HMOE_E_INVAL); /* y overlap */
    struct hmoe_tensor bad = h.t;
    bad.shape[0] = 16;
    bad.shape[1] = 64 + 0; /* fine shape, odd view start below */
    bad.elem0 = 32;
    struct hmoe_gpu_w *wb = NULL;
    CHECK(hmoe_gpu_weight_upload(g, &bad, HMOE_GPU_ABSMAX_CODES, &wb) == HMOE_E_UNSUPPORTED);
    bad = h.t;
    bad.shape[0] = 4 * 128 / 96;
    bad.shape[1] = 96; /* cols % 64 != 0 */
    CHECK(hmoe_gpu_weight_upload(g, &bad, HMOE_GPU_ABSMAX_CODES, &wb) == HMOE_E_UNSUPPORTED);
    float f32[4] = {0};
    struct hmoe_tensor tf = {
        .name = "f32", .dtype = HMOE_DT_F32, .ndim = 2, .shape = {2, 2}, .data = f32};
    CHECK(hmoe_gpu_weight_upload(g, &tf, HMOE_GPU_ABSMAX_CODES, &wb) == HMOE_E_UNSUPPORTED);
    CHECK(wb == NULL && hmoe_err_msg()[0]);
    hmoe_gpu_weight_free(w);
    hmoe_gpu_weight_free(w2);
    nf4_free(&h);
    nf4_free(&h2);
}

int main(void) {
    struct hmoe_gpu *g = gt_open();
    static const int64_t shapes[][2] = {{12288 / 16, 2048}, {64, 4096}, {2048 / 4, 512}, {37, 64},
                                        {33, 128},          {35, 192},  {31, 256},       {29, 1536},
                                        {17, 2112},         {1, 2048},  {3, 640}};
    /* HMOE_MATVEC_DESIGNS=5,6 limits the designs (e.g. for compute-sanitizer runs) */
    const char *only = getenv("HMOE_MATVEC_DESIGNS");
    for (int v = 0; v <= 8; v++) { /* every kernel design (hmoe_gpu_set_matvec_kernel) */
        if (only && !strchr(only, '0' + v)) continue;
        CHECK(hmoe_gpu_set_matvec_kernel(g, v, v % 3) == HMOE_OK);
        g_design = v;
        fprintf(stderr, "matvec design nf4 %d bf16 %d\n", v, v % 3);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            check_nf4(g, shapes[i][0], shapes[i][1], 0, 0);
        check_nf4(g, 40, 512, 3, 29);    /* view starting at block 24 of nested group 0 */
        check_nf4(g, 300, 2048, 9, 200); /* view starting inside nested group 1 */
        check_batched(g, 10, 512, 2048, 1);
        check_batched(g, 10, 2048, 512, 0);
        check_batched(g, 3, 40, 4096, 0);
        check_bf16(g, 300, 2048);
        check_bf16(g, 9, 4104);
        check_bf16(g, 5, 40);
        if (v >= 5) { /* x over 100 binary orders of magnitude (per-block scaling) */
            g_wide = 1;
            check_nf4(g, 96, 2048, 0, 0);
            check_nf4(g, 40, 4096, 0, 0);
            check_batched(g, 4, 64, 512, 0);
            g_wide = 0;
        }
    }
    check_mixed(g);
    fprintf(stderr, "designs 5..8: largest error %.3g (limit 1e-3)\n", g_tc_max_err);
    if (!only || strpbrk(only, "5678")) CHECK(g_tc_max_err > 0); /* they did run and round */
    CHECK(hmoe_gpu_set_matvec_kernel(g, 9, 0) == HMOE_E_INVAL);
    CHECK(hmoe_gpu_set_matvec_kernel(g, 0, 3) == HMOE_E_INVAL);
    check_errors(g);
    hmoe_gpu_close(g);
    TEST_DONE();
}
