/* hmoe-bench-gpu: achieved bandwidth of the decode matvec kernels on the 80B shapes
 * (synth:qwen3-next-80b-a3b weights) against the device's measured copy bandwidth (cudaMemcpy
 * D2D, bytes read + written). Each shape rotates over enough weight copies to exceed the L2
 * several times; times are medians of CUDA-event-timed runs, plain stream launches and CUDA
 * graph replays. Bandwidth = weight bytes read (nibbles + absmax data, or bf16) / time. */
#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "common.cuh"
#include "hmoe/log.h"
#include "hmoe/synth.h"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "error: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,                   \
                    cudaGetErrorString(e_));                                                       \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)
#define HK(call)                                                                                   \
    do {                                                                                           \
        if ((call) != HMOE_OK) {                                                                   \
            fprintf(stderr, "error: %s:%d: %s\n", __FILE__, __LINE__, hmoe_err_msg());             \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/* Copy bandwidth: (read + written bytes) / time of a large D2D cudaMemcpy, median of reps. */
static double copy_bw(cudaStream_t s, size_t bytes, double *ms_out) {
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMemsetAsync(a, 0x5a, bytes, s));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++)
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
    std::vector<double> t;
    for (int r = 0; r < 15; r++) {
        CK(cudaEventRecord(e0, s));
        CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms);
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(a));
    CK(cudaFree(b));
    *ms_out = median(t);
    return 2.0 * (double)bytes / (*ms_out * 1e-3) / 1e9;
}

struct shape_case {
    const char *name;
    std::vector<const struct hmoe_tensor *> src; /* host tensors to upload (cycled) */
    int batch;                                   /* weights per call */
    int per_input;                               /* batched: one input per weight */
};

struct result {
    char name[64];
    char mode[8];
    double bytes, us_stream, us_graph, gbs_stream, gbs_graph;
};

/* Uploads copies of the case's tensors until they cover >= min_bytes, then times
 * `calls` consecutive calls rotating over them. */
static result run_case(struct hmoe_gpu *g, const shape_case &c, enum hmoe_gpu_absmax mode,
                       size_t min_bytes, double copy_gbs, const std::vector<int> &variants,
                       std::vector<result> &all) {
    const bool is_bf16 = c.src[0]->dtype == HMOE_DT_BF16;
    const int64_t rows = c.src[0]->shape[0], cols = c.src[0]->shape[1];
    float *d_x, *d_y;
    const int64_t xs = c.per_input ? cols : 0;
    CK(cudaMalloc(&d_x, (size_t)(cols * c.batch) * 4));
    CK(cudaMalloc(&d_y, (size_t)(rows * c.batch) * 4));
    std::vector<float> hx((size_t)(cols * c.batch));
    for (size_t i = 0; i < hx.size(); i++)
        hx[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    HK(hmoe_gpu_upload(g, d_x, hx.data(), hx.size() * 4));
    cudaStream_t s = g->stream;
    std::vector<struct hmoe_gpu_w *> ws;
    int ncalls = 0;
    auto launch_all = [&]() {
        for (int k = 0; k < ncalls; k++)
            HK(hmoe_gpu_matvec_batched(g,
                                       (const struct hmoe_gpu_w *const *)&ws[(size_t)k * c.batch],
                                       c.batch, d_x, xs, d_y, rows));
    };
    result best;
    memset(&best, 0, sizeof best);
    for (int v : variants) {
        HK(hmoe_gpu_set_matvec_kernel(g, is_bf16 ? -1 : v, is_bf16 ? v : -1));
        /* uploaded under the design: the NF4 device layout depends on it (designs 5..8: tiled) */
        size_t total = 0;
        for (size_t i = 0; total < min_bytes || ws.size() < (size_t)c.batch * 2; i++) {
            struct hmoe_gpu_w *w;
            HK(hmoe_gpu_weight_upload(g, c.src[i % c.src.size()], mode, &w));
            total += hmoe_gpu_weight_bytes(w);
            ws.push_back(w);
        }
        ncalls = (int)(ws.size() / (size_t)c.batch);
        double bytes_call = 0;
        for (int b = 0; b < c.batch; b++)
            bytes_call += (double)hmoe_gpu_weight_bytes(ws[b]);
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        launch_all(); /* warm-up (also sets the kernels' attributes) */
        CK(cudaStreamSynchronize(s));
        std::vector<double> ts, tg;
        for (int r = 0; r < 7; r++) {
            CK(cudaEventRecord(e0, s));
            launch_all();
            CK(cudaEventRecord(e1, s));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            ts.push_back(ms * 1e3 / ncalls);
        }
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        launch_all();
        CK(cudaStreamEndCapture(s, &graph));
        CK(cudaGraphInstantiate(&exec, graph, 0));
        CK(cudaGraphLaunch(exec, s));
        CK(cudaStreamSynchronize(s));
        for (int r = 0; r < 7; r++) {
            CK(cudaEventRecord(e0, s));
            CK(cudaGraphLaunch(exec, s));
            CK(cudaEventRecord(e1, s));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            tg.push_back(ms * 1e3 / ncalls);
        }
        CK(cudaGetLastError());
        CK(cudaGraphExecDestroy(exec));
        CK(cudaGraphDestroy(graph));
        CK(cudaEventDestroy(e0));
        CK(cudaEventDestroy(e1));
        result res;
        memset(&res, 0, sizeof res);
        snprintf(res.name, sizeof res.name, "%s", c.name);
        snprintf(res.mode, sizeof res.mode, "%s%d",
                 is_bf16                         ? "bf16/"
                 : mode == HMOE_GPU_ABSMAX_CODES ? "cod/"
                                                 : "f32/",
                 v);
        res.bytes = bytes_call;
        res.us_stream = median(ts);
        res.us_graph = median(tg);
        res.gbs_stream = bytes_call / (res.us_stream * 1e-6) / 1e9;
        res.gbs_graph = bytes_call / (res.us_graph * 1e-6) / 1e9;
        printf("%-28s %-7s %9.2f MB %9.2f us %8.1f GB/s (%5.1f%%) | graph %9.2f us %8.1f GB/s "
               "(%5.1f%%)  [%d copies]\n",
               res.name, res.mode, bytes_call / 1e6, res.us_stream, res.gbs_stream,
               100.0 * res.gbs_stream / copy_gbs, res.us_graph, res.gbs_graph,
               100.0 * res.gbs_graph / copy_gbs, ncalls);
        fflush(stdout);
        all.push_back(res);
        if (res.gbs_graph > best.gbs_graph) best = res;
        for (auto w : ws)
            hmoe_gpu_weight_free(w);
        ws.clear();
    }
    CK(cudaFree(d_x));
    CK(cudaFree(d_y));
    return best;
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: hmoe-bench-gpu [-m SPEC] [--min-mib N] [--copy-mib N] [--designs LIST]\n"
        "  -m, --model SPEC  synth model with the 80B shapes (synth:qwen3-next-80b-a3b?layers=4)\n"
        "  --min-mib N       weight copies per case cover at least N MiB (512)\n"
        "  --copy-mib N      buffer size of the D2D copy measurement (2048)\n"
        "  --designs LIST    NF4 matvec designs to time, comma-separated 0..8 (1,5,6,7,8)\n"
        "  -h, --help        this text\n");
}

int main(int argc, char **argv) {
    const char *spec = "synth:qwen3-next-80b-a3b?layers=4";
    long min_mib = 512, copy_mib = 2048;
    const char *designs = "1,5,6,7,8";
    hmoe_log_init("B", HMOE_LOG_LVL_INFO, 0);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s: unknown option or missing value; see --help\n", argv[i]);
            return 1;
        }
        if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model"))
            spec = argv[++i];
        else if (!strcmp(argv[i], "--min-mib"))
            min_mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--copy-mib"))
            copy_mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--designs"))
            designs = argv[++i];
        else {
            fprintf(stderr, "error: unknown option %s; see --help\n", argv[i]);
            return 1;
        }
    }
    if (min_mib <= 0 || copy_mib <= 0) {
        fprintf(stderr, "error: sizes must be positive; see --help\n");
        return 1;
    }
    if (hmoe_gpu_device_count() == 0) {
        fprintf(stderr, "error: no CUDA device\n");
        return 1;
    }
    struct hmoe_gpu *g;
    HK(hmoe_gpu_open(0, &g));
    printf("device: %s\n", hmoe_gpu_describe(g));
    double copy_ms;
    const double cbw = copy_bw(g->stream, (size_t)copy_mib << 20, &copy_ms);
    printf("copy bandwidth (D2D cudaMemcpy %ld MiB, read+write): %.1f GB/s (%.3f ms)\n", copy_mib,
           cbw, copy_ms);
    struct hmoe_model *m;
    HK(hmoe_synth_open(spec, &m));
    const struct hmoe_config *c = &m->cfg;
    int full = -1, lin = -1;
    for (int l = 0; l < c->num_layers; l++) {
        if (c->layer_types[l] == HMOE_LAYER_FULL && full < 0) full = l;
        if (c->layer_types[l] == HMOE_LAYER_LINEAR && lin < 0) lin = l;
    }
    if (full < 0 || lin < 0) {
        fprintf(stderr, "error: %s needs a full-attention and a linear layer (layers >= 4)\n",
                spec);
        return 1;
    }
    std::vector<shape_case> cases;
    char nm[5][64];
    auto add = [&](const char *fmt, const struct hmoe_tensor *t, int k,
                   std::vector<const struct hmoe_tensor *> src, int batch, int per_input) {
        snprintf(nm[k], sizeof nm[k], fmt, (long long)t->shape[0], (long long)t->shape[1]);
        shape_case sc = {nm[k], src, batch, per_input};
        cases.push_back(sc);
    };
    const struct hmoe_layer_w *L = &m->layers[lin], *F = &m->layers[full];
    add("in_proj_qkvz [%lld,%lld]", &L->in_proj_qkvz, 0, {&L->in_proj_qkvz}, 1, 0);
    add("q_proj [%lld,%lld]", &F->q_proj, 1, {&F->q_proj}, 1, 0);
    add("out_proj [%lld,%lld]", &L->out_proj, 2, {&L->out_proj}, 1, 0);
    std::vector<const struct hmoe_tensor *> gates, downs;
    for (int l = 0; l < c->num_layers; l++)
        for (int e = 0; e < c->num_experts; e++) {
            gates.push_back(&m->layers[l].experts[e].gate);
            downs.push_back(&m->layers[l].experts[e].down);
        }
    add("10x expert gate [%lld,%lld]", &gates[0][0], 3, gates, 10, 0);
    add("10x expert down [%lld,%lld]", &downs[0][0], 4, downs, 10, 1);
    std::vector<result> res, all;
    printf("%-28s %-7s %12s %12s %21s | %s\n", "case", "absm/k", "bytes/call", "time/call",
           "bandwidth (% copy)", "CUDA graph replay");
    /* NF4: design 1 (best of the fp32 table designs, measured before), 5 (tensor cores, tiled),
     * 6 (5 with programmatic dependent launch), 7 (6 with two tiles per warp), 8 (6 with
     * persistent thread blocks) by default */
    std::vector<int> nf4v, bf16v = {1};
    for (const char *p = designs; *p;) {
        char *end;
        const long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 8 || (*end && *end != ',')) {
            fprintf(stderr, "error: --designs %s: want a comma-separated list of 0..8\n", designs);
            return 1;
        }
        nf4v.push_back((int)v);
        p = *end ? end + 1 : end;
    }
    for (auto &sc : cases)
        for (int mode = 0; mode < 2; mode++)
            res.push_back(
                run_case(g, sc, (enum hmoe_gpu_absmax)mode, (size_t)min_mib << 20, cbw, nf4v, all));
    shape_case lm = {"lm_head bf16 [151936,2048]", {&m->lm_head}, 1, 0};
    res.push_back(run_case(g, lm, HMOE_GPU_ABSMAX_CODES, 1, cbw, bf16v, all));
    printf("\nsummary: best design per case (graph replay, %% of copy bandwidth %.0f GB/s):\n",
           cbw);
    for (auto &r : res)
        printf("  %-28s %-7s %8.2f us %8.1f GB/s %5.1f%%\n", r.name, r.mode, r.us_graph,
               r.gbs_graph, 100.0 * r.gbs_graph / cbw);
    hmoe_synth_close(m);
    hmoe_gpu_close(g);
    return 0;
}
