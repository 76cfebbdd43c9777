/* gpu_worker/cuda/bench_decmv.cu: hmoe-bench-decmv, the decode matvec kernel (dec_mv.cu) checked
 * against a float64 CPU reference (`--check`: every mode, epilogue, odd row counts, a
 * non-resident expert, the host part) and timed on the 80B-A3B decode shapes (`--bench`):
 * bytes of NF4 weights (nibbles + fp32 absmax) read per second against the device's copy
 * bandwidth (2 GiB device-to-device copy, read + written bytes). Exit 77 without a device. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "dec_mv.h"
#include "hmoe/nf4_code.h"

static const float NF4[16] = HMOE_NF4_CODE;

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define ST(x)                                                                                      \
    do {                                                                                           \
        if ((x) != HMOE_OK) {                                                                      \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, hmoe_err_msg());           \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t rs = 0x1234567ull;
static uint64_t rnd64(void)
{
    uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float uni(void) /* [-1, 1) */
{
    return (float)(rnd64() >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
static float bf16r(float f) /* round to nearest even bf16 (finite inputs) */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* A host NF4 matrix [rows, cols] in the canonical layout, with its device copy. */
struct hmat {
    int rows, cols;
    std::vector<uint8_t> nib;
    std::vector<float> absf;
    uint8_t *d_nib = nullptr;
    float *d_abs = nullptr;
};

static void mk_mat(hmat &m, int rows, int cols, float scale)
{
    m.rows = rows;
    m.cols = cols;
    m.nib.resize((size_t)rows * cols / 2);
    m.absf.resize((size_t)rows * cols / 64);
    for (auto &b : m.nib)
        b = (uint8_t)rnd64();
    for (auto &a : m.absf)
        a = scale * (0.5f + 0.5f * (uni() + 1.f));
}

static void up_mat(hmat &m)
{
    CK(cudaMalloc(&m.d_nib, m.nib.size()));
    CK(cudaMalloc(&m.d_abs, m.absf.size() * 4));
    CK(cudaMemcpy(m.d_nib, m.nib.data(), m.nib.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(m.d_abs, m.absf.data(), m.absf.size() * 4, cudaMemcpyHostToDevice));
}

/* The fast dense kernel (dmv_args.fast): weights fp16(code) * absmax, unrounded. */
static int g_fast = 0;

static double wref(const hmat &m, int r, int c)
{
    const size_t e = (size_t)r * m.cols + c;
    const uint8_t b = m.nib[e / 2];
    const int n = (e & 1) ? (b & 15) : (b >> 4);
    if (g_fast) return (double)__half2float(__float2half_rn(NF4[n])) * m.absf[e / 64];
    return bf16r(NF4[n] * m.absf[e / 64]);
}

static void ref_mv(const hmat &m, const float *x, double *y)
{
    for (int r = 0; r < m.rows; r++) {
        double s = 0;
        for (int c = 0; c < m.cols; c++)
            s += wref(m, r, c) * x[c];
        y[r] = s;
    }
}

static float *dvec(const std::vector<float> &v)
{
    float *p;
    CK(cudaMalloc(&p, v.size() * 4 + 16));
    CK(cudaMemcpy(p, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
    return p;
}

static std::vector<float> hvec(const float *d, size_t n)
{
    std::vector<float> v(n);
    CK(cudaMemcpy(v.data(), d, n * 4, cudaMemcpyDeviceToHost));
    return v;
}

static int n_fail = 0, n_check = 0;
static void cmp(const char *what, const float *got, const double *ref, int n, double tol)
{
    double mx = 0, md = 0;
    for (int i = 0; i < n; i++) {
        mx = fmax(mx, fabs(ref[i]));
        md = fmax(md, isfinite(got[i]) ? fabs(got[i] - ref[i]) : INFINITY);
    }
    const double rel = md / (mx > 0 ? mx : 1);
    n_check++;
    const int bad = !(rel <= tol);
    n_fail += bad;
    printf("%-44s n %6d  max|ref| %9.4g  rel %.3g %s\n", what, n, mx, rel, bad ? "FAIL" : "ok");
}

static std::vector<float> rvec(size_t n, float s)
{
    std::vector<float> v(n);
    for (auto &x : v)
        x = s * uni();
    return v;
}

static void set_code(dmv_args &a)
{
    memcpy(a.code, NF4, sizeof a.code);
    a.rnd = 1;
    a.fast = g_fast;
}

/* ------------------------------------------------------------------------------------------ */

/* One segment of H rows with the residual + norm epilogue; with g_fast the fast kernel must take
 * it (H >= 16 rows per SM). */
static void check_addnorm(cudaStream_t st, int *d_cnt, int pdl, int H, int C)
{
    hmat w;
    mk_mat(w, H, C, 0.05f);
    up_mat(w);
    std::vector<float> x2 = rvec(C, 1.f), h = rvec(H, 2.f), nw = rvec(H, 1.f);
    float *dx2 = dvec(x2), *dh = dvec(h), *dnw = dvec(nw), *dblk, *dxn;
    CK(cudaMalloc(&dblk, H * 4));
    CK(cudaMalloc(&dxn, H * 4));
    dmv_args b;
    memset(&b, 0, sizeof b);
    set_code(b);
    b.mode = DMV_DENSE;
    b.cols = C;
    b.x = dx2;
    b.nseg = 1;
    b.seg[0] = {w.d_nib, w.d_abs, dblk, H};
    b.counter = d_cnt;
    b.epi = DMV_EPI_ADDNORM;
    b.h = dh;
    b.normw = dnw;
    b.xn = dxn;
    b.eps = 1e-6f;
    if (g_fast) {
        n_check++;
        n_fail += !dmv_takes_fast(&b);
        printf("fast kernel takes dense + epilogue [%d, %d]: %s\n", H, C,
               dmv_takes_fast(&b) ? "ok" : "FAIL");
    }
    for (int rep = 0; rep < 3; rep++) { /* the counter must be back at 0 after each launch */
        CK(cudaMemcpy(dh, h.data(), H * 4, cudaMemcpyHostToDevice));
        ST(dmv_launch(st, &b, pdl));
    }
    CK(cudaStreamSynchronize(st));
    std::vector<double> y(H), hr(H), xr(H);
    ref_mv(w, x2.data(), y.data());
    double ss = 0;
    for (int i = 0; i < H; i++) {
        hr[i] = h[i] + (double)(float)y[i];
        ss += hr[i] * hr[i];
    }
    const double inv = 1.0 / sqrt(ss / H + 1e-6);
    for (int i = 0; i < H; i++)
        xr[i] = hr[i] * inv * nw[i];
    cmp("dense + epilogue: h += y", hvec(dh, H).data(), hr.data(), H, 1e-4);
    cmp("dense + epilogue: xn = norm(h)", hvec(dxn, H).data(), xr.data(), H, 1e-4);
}

/* Segments of {rows} x cols in one launch against float64 (odd row counts; with many tiles per
 * block the fast kernel's persistent loop and prefetch ring); with g_fast also the distance to
 * bitsandbytes' rounding. */
static void check_dense_segs(cudaStream_t st, int *d_cnt, int pdl, std::vector<int> rows, int cols)
{
    const int ns = (int)rows.size();
    std::vector<hmat> m(ns);
    std::vector<float> x = rvec(cols, 1.f);
    x[cols / 3] = 40.f; /* one large activation (the fp16 scaling of x) */
    float *dx = dvec(x);
    dmv_args a;
    memset(&a, 0, sizeof a);
    set_code(a);
    a.mode = DMV_DENSE;
    a.cols = cols;
    a.x = dx;
    a.nseg = ns;
    a.counter = d_cnt;
    std::vector<float *> dy(ns);
    for (int s = 0; s < ns; s++) {
        mk_mat(m[s], rows[s], cols, 0.1f);
        up_mat(m[s]);
        CK(cudaMalloc(&dy[s], rows[s] * 4));
        CK(cudaMemset(dy[s], 0xff, rows[s] * 4)); /* NaN: every row must be written */
        a.seg[s] = {m[s].d_nib, m[s].d_abs, dy[s], rows[s]};
    }
    if (g_fast) { /* the fast kernel must take the call, or the check tests the other one */
        n_check++;
        n_fail += !dmv_takes_fast(&a);
        printf("fast kernel takes %d segments x %d columns: %s\n", ns, cols,
               dmv_takes_fast(&a) ? "ok" : "FAIL");
    }
    for (int rep = 0; rep < 2; rep++)
        ST(dmv_launch(st, &a, pdl));
    CK(cudaStreamSynchronize(st));
    for (int s = 0; s < ns; s++) {
        std::vector<double> ref(rows[s]);
        ref_mv(m[s], x.data(), ref.data());
        std::vector<float> got = hvec(dy[s], rows[s]);
        char name[80];
        snprintf(name, sizeof name, "%sdense seg %d [%d, %d]", g_fast ? "fast " : "", s, rows[s],
                 cols);
        cmp(name, got.data(), ref.data(), rows[s], 1e-4);
        if (g_fast) { /* reported, not checked: the difference bitsandbytes' rounding makes */
            g_fast = 0;
            ref_mv(m[s], x.data(), ref.data());
            g_fast = 1;
            double mx = 0, md = 0;
            for (int i = 0; i < rows[s]; i++) {
                mx = fmax(mx, fabs(ref[i]));
                md = fmax(md, fabs(got[i] - ref[i]));
            }
            printf("  (vs bf16(code * absmax) weights: rel %.3g)\n", md / mx);
        }
        CK(cudaFree(dy[s]));
        CK(cudaFree(m[s].d_nib));
        CK(cudaFree(m[s].d_abs));
    }
    CK(cudaFree(dx));
}

static void check_topk(cudaStream_t st, int *d_cnt, int pdl)
{
    const int E = 200, H = 256, k = 7;
    hmat r, sg;
    mk_mat(r, E, H, 0.3f);
    mk_mat(sg, 1, H, 0.3f);
    up_mat(r);
    up_mat(sg);
    std::vector<float> x = rvec(H, 1.f);
    float *dx = dvec(x), *dl, *dsgl, *dtw;
    int32_t *dti;
    CK(cudaMalloc(&dl, E * 4));
    CK(cudaMalloc(&dsgl, 4));
    CK(cudaMalloc(&dtw, k * 4));
    CK(cudaMalloc(&dti, k * 4));
    for (int renorm = 0; renorm < 2; renorm++) {
        dmv_args a;
        memset(&a, 0, sizeof a);
        set_code(a);
        a.mode = DMV_DENSE;
        a.cols = H;
        a.x = dx;
        a.nseg = 2;
        a.seg[0] = {r.d_nib, r.d_abs, dl, E};
        a.seg[1] = {sg.d_nib, sg.d_abs, dsgl, 1};
        a.counter = d_cnt;
        a.epi = DMV_EPI_TOPK;
        a.E = E;
        a.k = k;
        a.renorm = renorm;
        a.ti_out = dti;
        a.tw_out = dtw;
        ST(dmv_launch(st, &a, pdl));
        CK(cudaStreamSynchronize(st));
        std::vector<double> lr(E), sr(1);
        ref_mv(r, x.data(), lr.data());
        ref_mv(sg, x.data(), sr.data());
        std::vector<float> lg = hvec(dl, E);
        cmp("router logits", lg.data(), lr.data(), E, 1e-4);
        cmp("shared-expert gate logit", hvec(dsgl, 1).data(), sr.data(), 1, 1e-4);
        /* top-k of the kernel's own logits (softmax in double) */
        double m = -1e300, s = 0;
        for (int e = 0; e < E; e++)
            m = fmax(m, lg[e]);
        std::vector<double> p(E);
        for (int e = 0; e < E; e++)
            s += (p[e] = exp(lg[e] - m));
        std::vector<int> used(E, 0), ti(k);
        std::vector<double> tw(k);
        double sel = 0;
        for (int j = 0; j < k; j++) {
            int bi = -1;
            for (int e = 0; e < E; e++)
                if (!used[e] && (bi < 0 || p[e] > p[bi])) bi = e;
            used[bi] = 1;
            ti[j] = bi;
            tw[j] = p[bi] / s;
            sel += tw[j];
        }
        if (renorm)
            for (int j = 0; j < k; j++)
                tw[j] /= sel;
        std::vector<int32_t> gti(k);
        CK(cudaMemcpy(gti.data(), dti, k * 4, cudaMemcpyDeviceToHost));
        int same = 1;
        for (int j = 0; j < k; j++)
            same &= gti[j] == ti[j];
        n_check++;
        n_fail += !same;
        printf("%-44s %s\n", renorm ? "top-k indices (renormalised)" : "top-k indices",
               same ? "ok" : "FAIL");
        cmp(renorm ? "top-k weights (renormalised)" : "top-k weights", hvec(dtw, k).data(),
            tw.data(), k, 1e-5);
    }
}

static void check_experts(cudaStream_t st, int *d_cnt, int pdl)
{
    const int H = 256, I = 128, E = 8, k = 4;
    const int64_t n = (int64_t)H * I;
    dmv_args a;
    memset(&a, 0, sizeof a);
    set_code(a);
    a.o_up = n / 2;
    a.o_down = 2 * a.o_up;
    a.o_ag = 3 * a.o_up;
    const int64_t ab = n / 64 * 4;
    a.o_au = a.o_ag + ab;
    a.o_ad = a.o_au + ab;
    a.slot_bytes = a.o_ad + ab;
    /* experts: gate/up [I, H], down [H, I]; slot s holds expert slot_of[e] */
    std::vector<hmat> gm(E + 1), um(E + 1), dm(E + 1);
    for (int e = 0; e <= E; e++) {
        mk_mat(gm[e], I, H, 0.15f);
        mk_mat(um[e], I, H, 0.15f);
        mk_mat(dm[e], H, I, 0.2f);
    }
    const int slot_of[E] = {2, 0, 4, -1, 1, 6, 3, 5}; /* expert 3 is not resident */
    std::vector<uint8_t> pool(7 * a.slot_bytes);
    for (int e = 0; e < E; e++) {
        if (slot_of[e] < 0) continue;
        uint8_t *b = pool.data() + slot_of[e] * a.slot_bytes;
        memcpy(b, gm[e].nib.data(), n / 2);
        memcpy(b + a.o_up, um[e].nib.data(), n / 2);
        memcpy(b + a.o_down, dm[e].nib.data(), n / 2);
        memcpy(b + a.o_ag, gm[e].absf.data(), ab);
        memcpy(b + a.o_au, um[e].absf.data(), ab);
        memcpy(b + a.o_ad, dm[e].absf.data(), ab);
    }
    uint8_t *dpool;
    CK(cudaMalloc(&dpool, pool.size()));
    CK(cudaMemcpy(dpool, pool.data(), pool.size(), cudaMemcpyHostToDevice));
    up_mat(gm[E]);
    up_mat(um[E]);
    up_mat(dm[E]);
    int *dslot;
    CK(cudaMalloc(&dslot, sizeof slot_of));
    CK(cudaMemcpy(dslot, slot_of, sizeof slot_of, cudaMemcpyHostToDevice));
    const int32_t ti[k] = {1, 3, 6, 0};
    std::vector<float> tw = {0.4f, 0.3f, 0.2f, 0.1f}, x = rvec(H, 1.f), sgl = {0.3f};
    std::vector<float> host = rvec(H, 0.5f), h = rvec(H, 1.f), nw = rvec(H, 1.f);
    int32_t *dti;
    CK(cudaMalloc(&dti, sizeof ti));
    CK(cudaMemcpy(dti, ti, sizeof ti, cudaMemcpyHostToDevice));
    float *dtw = dvec(tw), *dx = dvec(x), *dsgl = dvec(sgl), *dhost = dvec(host), *dh = dvec(h),
          *dnw = dvec(nw), *dact, *dout, *dxn;
    CK(cudaMalloc(&dact, (k + 1) * I * 4));
    CK(cudaMemset(dact, 0, (k + 1) * I * 4));
    CK(cudaMalloc(&dout, H * 4));
    CK(cudaMalloc(&dxn, H * 4));
    a.mode = DMV_GATEUP;
    a.pool = dpool;
    a.slot = dslot;
    a.ti = dti;
    a.tw = dtw;
    a.k = k;
    a.E = E;
    a.I = I;
    a.H = H;
    a.has_sh = 1;
    a.sh_w[0] = gm[E].d_nib;
    a.sh_w[1] = um[E].d_nib;
    a.sh_w[2] = dm[E].d_nib;
    a.sh_a[0] = gm[E].d_abs;
    a.sh_a[1] = um[E].d_abs;
    a.sh_a[2] = dm[E].d_abs;
    a.sgl = dsgl;
    a.x = dx;
    a.act = dact;
    a.counter = d_cnt;
    ST(dmv_launch(st, &a, pdl));
    a.mode = DMV_DOWN;
    a.out = dout;
    a.host = dhost;
    a.epi = DMV_EPI_ADDNORM;
    a.h = dh;
    a.normw = dnw;
    a.xn = dxn;
    a.eps = 1e-6f;
    ST(dmv_launch(st, &a, pdl));
    CK(cudaStreamSynchronize(st));
    std::vector<float> act = hvec(dact, (k + 1) * I);
    std::vector<double> out(H, 0.0);
    for (int j = 0; j <= k; j++) {
        const int e = j < k ? ti[j] : E;
        if (j < k && slot_of[e] < 0) continue;
        std::vector<double> gv(I), uv(I), ar(I);
        ref_mv(gm[e], x.data(), gv.data());
        ref_mv(um[e], x.data(), uv.data());
        for (int i = 0; i < I; i++)
            ar[i] = gv[i] / (1 + exp(-gv[i])) * uv[i];
        char name[64];
        snprintf(name, sizeof name, "gate|up + SiLU, %s %d", j < k ? "expert" : "shared", e);
        cmp(name, act.data() + j * I, ar.data(), I, 1e-4);
        const double wj = j < k ? tw[j] : 1.0 / (1.0 + exp(-sgl[0]));
        std::vector<float> xa(I);
        for (int i = 0; i < I; i++)
            xa[i] = act[j * I + i];
        std::vector<double> y(H);
        ref_mv(dm[e], xa.data(), y.data());
        for (int r = 0; r < H; r++)
            out[r] += wj * y[r];
    }
    for (int r = 0; r < H; r++)
        out[r] += host[r];
    std::vector<float> got = hvec(dout, H);
    cmp("down + routing weights + shared + host", got.data(), out.data(), H, 1e-4);
    std::vector<double> hr(H), xr(H);
    double ss = 0;
    for (int i = 0; i < H; i++) {
        hr[i] = h[i] + (double)got[i];
        ss += hr[i] * hr[i];
    }
    for (int i = 0; i < H; i++)
        xr[i] = hr[i] / sqrt(ss / H + 1e-6) * nw[i];
    cmp("down epilogue: xn = norm(h + y)", hvec(dxn, H).data(), xr.data(), H, 1e-4);
}

/* ------------------------------------------------------------------------------------------ */

struct bcase {
    const char *name;
    std::vector<dmv_args> calls; /* rotating over copies of the weights */
    double bytes;                /* weight bytes one call reads */
};

static double time_graph(cudaStream_t st, const std::vector<dmv_args> &calls, int pdl, int reps)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
    for (const auto &c : calls)
        ST(dmv_launch(st, &c, pdl));
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaGraphLaunch(ge, st));
    std::vector<float> ms(reps);
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(e0, st));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms[r], e0, e1));
    }
    std::sort(ms.begin(), ms.end());
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    return ms[reps / 2] * 1e-3 / calls.size();
}

static void bench(cudaStream_t st, int *d_cnt)
{
    /* copy bandwidth */
    const size_t cb = (size_t)2 << 30;
    void *s0, *s1;
    CK(cudaMalloc(&s0, cb));
    CK(cudaMalloc(&s1, cb));
    CK(cudaMemset(s0, 1, cb));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> cms(15);
    for (int r = 0; r < 16; r++) {
        CK(cudaEventRecord(e0, st));
        CK(cudaMemcpyAsync(s1, s0, cb, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        if (r) CK(cudaEventElapsedTime(&cms[r - 1], e0, e1));
    }
    std::sort(cms.begin(), cms.end());
    const double copy_gbs = 2.0 * cb / (cms[7] * 1e-3) / 1e9;
    CK(cudaFree(s0));
    CK(cudaFree(s1));
    printf("copy bandwidth: %.0f GB/s (2 GiB D2D, median of 15, read + written bytes)\n", copy_gbs);
    /* weights: one arena of random bytes; calls point into it at rotating offsets so that the
     * calls of one graph cover >= 1 GiB (far beyond the 50 MB L2) */
    const size_t arena = (size_t)1280 << 20;
    uint8_t *w;
    CK(cudaMalloc(&w, arena));
    {
        std::vector<uint8_t> hb((size_t)64 << 20);
        for (auto &b : hb)
            b = (uint8_t)rnd64();
        for (size_t o = 0; o < arena; o += hb.size())
            CK(cudaMemcpy(w + o, hb.data(), hb.size(), cudaMemcpyHostToDevice));
        /* absmax region must hold finite floats: fill the last 256 MiB with 0.01f */
        std::vector<float> af((size_t)64 << 18, 0.01f);
        for (size_t o = arena - ((size_t)256 << 20); o < arena; o += af.size() * 4)
            CK(cudaMemcpy(w + o, af.data(), af.size() * 4, cudaMemcpyHostToDevice));
    }
    const size_t abs0 = arena - ((size_t)256 << 20), nib_span = abs0;
    size_t no = 0, ao = 0;
    auto take = [&](size_t nb, size_t absb, const uint8_t **pn, const float **pa) {
        if (no + nb > nib_span) no = 0;
        if (ao + absb > ((size_t)256 << 20)) ao = 0;
        *pn = w + no;
        *pa = (const float *)(w + abs0 + ao);
        no += (nb + 255) & ~(size_t)255;
        ao += (absb + 255) & ~(size_t)255;
    };
    float *x, *y, *h, *xn, *act;
    int32_t *ti;
    int *slot;
    CK(cudaMalloc(&x, 65536 * 4));
    CK(cudaMalloc(&y, 65536 * 4));
    CK(cudaMalloc(&h, 65536 * 4));
    CK(cudaMalloc(&xn, 65536 * 4));
    CK(cudaMalloc(&act, 65536 * 4));
    CK(cudaMalloc(&ti, 64 * 4));
    CK(cudaMalloc(&slot, 512 * 4));
    {
        std::vector<float> hx(65536);
        for (auto &v : hx)
            v = uni();
        CK(cudaMemcpy(x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(act, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(h, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
        std::vector<int32_t> t(64);
        for (int i = 0; i < 64; i++)
            t[i] = (i * 37) % 512;
        CK(cudaMemcpy(ti, t.data(), 64 * 4, cudaMemcpyHostToDevice));
        std::vector<int> s(512);
        for (int i = 0; i < 512; i++)
            s[i] = i % 16; /* every expert in the first 16 slots of the call's pool view */
        CK(cudaMemcpy(slot, s.data(), 512 * 4, cudaMemcpyHostToDevice));
    }
    const int H = 2048, I = 512;
    auto dense = [&](const char *name, std::vector<int> rows, int cols, int epi) {
        bcase c;
        c.name = name;
        c.bytes = 0;
        for (int r : rows)
            c.bytes += (double)r * cols / 2 + (double)r * cols / 64 * 4;
        const int ncalls = (int)((1u << 30) / c.bytes) + 1;
        for (int i = 0; i < ncalls; i++) {
            dmv_args a;
            memset(&a, 0, sizeof a);
            set_code(a);
            a.mode = DMV_DENSE;
            a.cols = cols;
            a.x = x;
            a.counter = d_cnt;
            a.nseg = (int)rows.size();
            float *yo = y;
            for (size_t s = 0; s < rows.size(); s++) {
                take((size_t)rows[s] * cols / 2, (size_t)rows[s] * cols / 16, &a.seg[s].w,
                     &a.seg[s].absf);
                a.seg[s].rows = rows[s];
                a.seg[s].y = yo;
                yo += rows[s];
            }
            a.epi = epi;
            a.h = h;
            a.xn = xn;
            a.normw = x;
            a.eps = 1e-6f;
            a.E = rows[0];
            a.k = 10;
            a.renorm = 1;
            a.ti_out = ti + 32;
            a.tw_out = xn + 4096;
            c.calls.push_back(a);
        }
        return c;
    };
    auto experts = [&](const char *name, int mode) {
        bcase c;
        c.name = name;
        const double per = 3.0 * H * I / 2 + 3.0 * H * I / 64 * 4; /* slot bytes */
        c.bytes = 11 * (double)H * I * (mode == DMV_GATEUP ? 2 : 1) * (0.5 + 4.0 / 64);
        const int nslots = (int)(((size_t)1 << 30) / per);
        const int ncalls = nslots / 11;
        for (int i = 0; i < ncalls; i++) {
            dmv_args a;
            memset(&a, 0, sizeof a);
            set_code(a);
            a.mode = mode;
            a.counter = d_cnt;
            /* a pool view starting at slot 11 i: slot table identity, ti = 0..9 spread */
            a.pool = w + (size_t)((size_t)i * 11 * (size_t)per) % (nib_span - 17 * (size_t)per);
            a.pool = (const uint8_t *)((uintptr_t)a.pool & ~(uintptr_t)255);
            a.slot_bytes = ((int64_t)per + 255) & ~(int64_t)255;
            a.o_up = (int64_t)H * I / 2;
            a.o_down = 2 * a.o_up;
            a.o_ag = 3 * a.o_up;
            a.o_au = a.o_ag + (int64_t)H * I / 16;
            a.o_ad = a.o_au + (int64_t)H * I / 16;
            a.slot = slot;
            a.ti = ti + (i % 4);
            a.tw = x;
            a.k = 10;
            a.E = 512;
            a.I = I;
            a.H = H;
            a.has_sh = 1;
            for (int q = 0; q < 3; q++) {
                const uint8_t *pn;
                const float *pa;
                take((size_t)H * I / 2, (size_t)H * I / 16, &pn, &pa);
                a.sh_w[q] = pn;
                a.sh_a[q] = (const float *)(w + abs0); /* finite floats */
            }
            a.sgl = x;
            a.x = x;
            a.act = act;
            a.out = y;
            a.h = h;
            a.xn = xn;
            a.normw = x;
            a.eps = 1e-6f;
            a.epi = mode == DMV_DOWN ? DMV_EPI_ADDNORM : DMV_EPI_NONE;
            c.calls.push_back(a);
        }
        return c;
    };
    /* (the experts' absmax in the pool are random bytes: the products may be inf/NaN, which
     * does not change the time) */
    std::vector<bcase> cases;
    const char *fe = getenv("HMOE_DMV_FAST"); /* with DMV_NCU: profile the fast kernel */
    g_fast = getenv("DMV_NCU") && fe && !strcmp(fe, "1");
    cases.push_back(dense("in_proj_qkvz + in_proj_ba [12288+64, 2048]", {12288, 64}, H, 0));
    cases.push_back(dense("q + k + v [8192+512+512, 2048]", {8192, 512, 512}, H, 0));
    cases.push_back(dense("out_proj [2048, 4096] + add&norm", {2048}, 4096, DMV_EPI_ADDNORM));
    cases.push_back(dense("router + shared gate [512+1, 2048] + top-k", {512, 1}, H,
                          DMV_EPI_TOPK));
    cases.push_back(experts("10+1 experts gate|up [2x512, 2048] + SiLU", DMV_GATEUP));
    cases.push_back(experts("10+1 experts down [2048, 512] + combine", DMV_DOWN));
    /* the kernel's steady state: one weight far larger than a decode call (151 MB, 8 calls over
     * >= 1 GiB), so launch, ramp and the last wave's tail are a small part of each call */
    cases.push_back(dense("one large weight [131072, 2048] (steady state)", {131072}, H, 0));
    if (getenv("DMV_NCU")) { /* each case once (DMV_NCU=N: case N only), plain launches, for a
                              * profiler */
        const int only = atoi(getenv("DMV_NCU")) - 1;
        for (auto &c : cases) {
            if (only >= 0 && &c - &cases[0] != only) continue;
            ST(dmv_launch(st, &c.calls[0], 0));
            CK(cudaStreamSynchronize(st));
        }
        g_fast = 0;
        return;
    }
    printf("\n| call | MB | PDL us | PDL GB/s | %% of copy | plain us | plain GB/s |\n"
           "|---|---:|---:|---:|---:|---:|---:|\n");
    for (auto &c : cases) {
        const double tp = time_graph(st, c.calls, 1, 9), tn = time_graph(st, c.calls, 0, 9);
        printf("| %s | %.2f | %.2f | %.0f | %.1f | %.2f | %.0f |\n", c.name, c.bytes / 1e6, tp * 1e6,
               c.bytes / tp / 1e9, 100.0 * c.bytes / tp / 1e9 / copy_gbs, tn * 1e6,
               c.bytes / tn / 1e9);
    }
    /* the fast dense kernel (HMOE_DMV_FAST=1) on the dense shapes it takes */
    g_fast = 1;
    std::vector<bcase> fcases;
    fcases.push_back(dense("fast: in_proj_qkvz + in_proj_ba [12288+64, 2048]", {12288, 64}, H, 0));
    fcases.push_back(dense("fast: q + k + v [8192+512+512, 2048]", {8192, 512, 512}, H, 0));
    fcases.push_back(dense("fast: one large weight [131072, 2048] (steady state)", {131072}, H, 0));
    g_fast = 0;
    for (auto &c : fcases) {
        const double tp = time_graph(st, c.calls, 1, 9), tn = time_graph(st, c.calls, 0, 9);
        printf("| %s | %.2f | %.2f | %.0f | %.1f | %.2f | %.0f |\n", c.name, c.bytes / 1e6, tp * 1e6,
               c.bytes / tp / 1e9, 100.0 * c.bytes / tp / 1e9 / copy_gbs, tn * 1e6,
               c.bytes / tn / 1e9);
    }
    /* one decode layer's worth of calls in sequence (GDN layer shapes), as a graph */
    std::vector<dmv_args> seq;
    double lb = 0;
    for (int i = 0; i < 24; i++)
        for (int ci : {0, 2, 3, 4, 5}) {
            seq.push_back(cases[ci].calls[i % cases[ci].calls.size()]);
            lb += cases[ci].bytes;
        }
    const double ts = time_graph(st, seq, 1, 9), tsn = time_graph(st, seq, 0, 9);
    printf("| GDN-layer sequence (qkvz+ba, out, router, gate|up, down) x24 | %.2f | %.2f | %.0f "
           "| %.1f | %.2f | %.0f |\n",
           lb / 24 / 1e6, ts * 5e6, lb / (ts * seq.size()) / 1e9,
           100.0 * lb / (ts * seq.size()) / 1e9 / copy_gbs, tsn * 5e6, lb / (tsn * seq.size()) / 1e9);
}

int main(int argc, char **argv)
{
    int check = 0, do_bench = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--check"))
            check = 1;
        else if (!strcmp(argv[i], "--bench"))
            do_bench = 1;
        else {
            fprintf(stderr, "usage: hmoe-bench-decmv [--check] [--bench]\n");
            return 2;
        }
    }
    if (!check && !do_bench) check = do_bench = 1;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "hmoe-bench-decmv: no CUDA device (skipped)\n");
        return 77;
    }
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    int *d_cnt;
    CK(cudaMalloc(&d_cnt, 64));
    CK(cudaMemset(d_cnt, 0, 64));
    if (check) {
        for (int pdl = 0; pdl < 2; pdl++) {
            printf("-- %s\n", pdl ? "PDL launches" : "plain launches");
            check_dense_segs(st, d_cnt, pdl, {37, 16, 1}, 384);
            check_addnorm(st, d_cnt, pdl, 256, 512);
            check_topk(st, d_cnt, pdl);
            check_experts(st, d_cnt, pdl);
            check_dense_segs(st, d_cnt, pdl, {2000, 37}, 2048);
        }
        g_fast = 1; /* the fast dense kernel: same checks against its own weights */
        for (int pdl = 0; pdl < 2; pdl++) {
            printf("-- fast dense kernel, %s\n", pdl ? "PDL launches" : "plain launches");
            check_dense_segs(st, d_cnt, pdl, {8195, 37}, 2048);
            check_dense_segs(st, d_cnt, pdl, {3000, 17, 2100, 999}, 2048);
            check_dense_segs(st, d_cnt, pdl, {12288, 64, 5}, 2048);
            check_addnorm(st, d_cnt, pdl, 8192, 2048);
        }
        g_fast = 0;
        printf("%d checks, %d failed\n", n_check, n_fail);
    }
    if (do_bench) bench(st, d_cnt);
    return n_fail ? 1 : 0;
}
