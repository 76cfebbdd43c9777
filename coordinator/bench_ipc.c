/* coordinator/bench_ipc.c: hmoe-bench-ipc, round-trip latency of one MoE layer's hand-off
 * between two processes: the producer writes a hidden state (H f32) and k (token, expert,
 * weight) pairs, the expert-worker stand-in writes k weighted output rows (k x H f32) back.
 * Through the shared-memory expert queue with doorbells (spin then futex, and futex only), and
 * the same payload as a ZeroMQ ipc:// DEALER/ROUTER round trip. Prints median, p99 and mean. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "hmoe/doorbell.h"
#include "hmoe/shm.h"
#include "hmoe/worker_link.h"
#include "hmoe/xq.h"
#include "hmoe/zmq_util.h"

static int H = 2048, K = 10, ITERS = 20000, WARM = 1000;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *ns, int n)
{
    double mean = 0;
    for (int i = 0; i < n; i++)
        mean += (double)ns[i];
    mean /= n;
    qsort(ns, (size_t)n, sizeof *ns, cmp_u64);
    printf("| %-34s | %9.2f | %9.2f | %9.2f |\n", what, (double)ns[n / 2] / 1e3,
           (double)ns[(size_t)((double)n * 0.99)] / 1e3, mean / 1e3);
    fflush(stdout);
}

/* The "expert": out[p] = w_p * x[tok_p] (touches the same bytes a real answer writes). */
static void fake_experts(const float *x, const struct hmoe_xq_pair *pairs, int np, float *out)
{
    for (int p = 0; p < np; p++) {
        const float *xi = x + (size_t)pairs[p].tok * H;
        float *o = out + (size_t)p * H;
        for (int d = 0; d < H; d++)
            o[d] = pairs[p].w * xi[d];
    }
}

static int bench_shm(uint32_t spin_us, uint64_t *ns)
{
    char name[HMOE_SHM_NAME_MAX], run[32];
    snprintf(run, sizeof run, "bench%d", (int)getpid());
    struct hmoe_shm s;
    struct hmoe_xq q;
    if (hmoe_shm_name(name, sizeof name, run, "e0") ||
        hmoe_shm_create(name, HMOE_XQ_LAYOUT, hmoe_xq_shm_size((uint32_t)H, 1, (uint32_t)K), &s) ||
        hmoe_xq_shm_init(&s, (uint32_t)H, 1, (uint32_t)K, &q)) {
        fprintf(stderr, "shm: %s\n", hmoe_err_msg());
        return 0;
    }
    pid_t pid = fork();
    if (pid == 0) {
        struct hmoe_shm a;
        struct hmoe_xq cq;
        if (hmoe_shm_attach(name, HMOE_XQ_LAYOUT, 0, &a) || hmoe_xq_open(&a, (uint32_t)H, &cq))
            _exit(2);
        atomic_store(&cq.ctl->alive, 1);
        uint32_t last = 0;
        struct hmoe_doorbell_wait w = {spin_us, 5000, NULL};
        for (;;) {
            uint32_t now;
            if (hmoe_doorbell_wait_change(&cq.ctl->req, last, &now, &w)) _exit(3);
            last = now;
            if (cq.ctl->n_pairs < 0) break;
            fake_experts(cq.x, cq.pairs, cq.ctl->n_pairs, cq.out);
            hmoe_doorbell_set(&cq.ctl->resp, now);
        }
        hmoe_shm_close(&a);
        _exit(0);
    }
    float *x = malloc((size_t)H * sizeof(float)), *acc = calloc((size_t)H, sizeof(float));
    for (int d = 0; d < H; d++)
        x[d] = (float)d * 1e-3f;
    struct hmoe_doorbell_wait w = {spin_us, 5000, NULL};
    int ok = 1;
    for (int it = 0; it < WARM + ITERS && ok; it++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        const uint64_t t0n = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        memcpy(q.x, x, (size_t)H * sizeof(float));
        for (int p = 0; p < K; p++)
            q.pairs[p] = (struct hmoe_xq_pair){0, p, 0.1f, 0};
        q.ctl->layer = 0;
        q.ctl->n_tok = 1;
        q.ctl->n_pairs = K;
        uint32_t r = hmoe_doorbell_ring(&q.ctl->req);
        ok = hmoe_doorbell_wait_for(&q.ctl->resp, r, &w) == HMOE_OK;
        for (int p = 0; p < K; p++)
            for (int d = 0; d < H; d++)
                acc[d] += q.out[(size_t)p * H + d];
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (it >= WARM)
            ns[it - WARM] = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec - t0n;
    }
    q.ctl->n_pairs = -1;
    hmoe_doorbell_ring(&q.ctl->req);
    waitpid(pid, NULL, 0);
    hmoe_shm_close(&s);
    if (acc[1] == 12345.0f) printf("\n"); /* keep acc alive */
    free(x);
    free(acc);
    if (!ok) fprintf(stderr, "shm round trip failed: %s\n", hmoe_err_msg());
    return ok;
}

static int bench_zmq(uint64_t *ns)
{
    char dir[] = "/tmp/hmoe-bench-XXXXXX";
    if (!mkdtemp(dir)) return 0;
    char ep[300];
    hmoe_zmq_endpoint(ep, sizeof ep, dir, "b");
    const size_t req_n = (size_t)H * 4 + (size_t)K * sizeof(struct hmoe_xq_pair);
    const size_t rep_n = (size_t)K * H * 4;
    pid_t pid = fork();
    if (pid == 0) {
        void *ctx = zmq_ctx_new(), *s;
        if (hmoe_zmq_socket(ctx, ZMQ_DEALER, "W", -1, &s) || hmoe_zmq_connect(s, ep)) _exit(2);
        char *in = malloc(req_n), *out = malloc(rep_n);
        zmq_send(s, "hi", 2, 0);
        for (;;) {
            int n = zmq_recv(s, in, req_n, 0);
            if (n <= 1) break;
            fake_experts((const float *)in, (const struct hmoe_xq_pair *)(in + (size_t)H * 4), K,
                         (float *)out);
            zmq_send(s, out, rep_n, 0);
        }
        zmq_close(s);
        zmq_ctx_term(ctx);
        _exit(0);
    }
    void *ctx = zmq_ctx_new(), *s;
    if (hmoe_zmq_socket(ctx, ZMQ_ROUTER, NULL, -1, &s) || hmoe_zmq_bind(s, ep)) return 0;
    char id[16], hi[8];
    int idn = zmq_recv(s, id, sizeof id, 0);
    zmq_recv(s, hi, sizeof hi, 0);
    char *in = calloc(1, req_n), *out = malloc(rep_n);
    float *acc = calloc((size_t)H, sizeof(float));
    struct hmoe_xq_pair *pairs = (struct hmoe_xq_pair *)(in + (size_t)H * 4);
    for (int p = 0; p < K; p++)
        pairs[p] = (struct hmoe_xq_pair){0, p, 0.1f, 0};
    for (int it = 0; it < WARM + ITERS; it++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t t0 = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        zmq_send(s, id, (size_t)idn, ZMQ_SNDMORE);
        zmq_send(s, in, req_n, 0);
        zmq_recv(s, id, sizeof id, 0);
        zmq_recv(s, out, rep_n, 0);
        const float *o = (const float *)out;
        for (int p = 0; p < K; p++)
            for (int d = 0; d < H; d++)
                acc[d] += o[(size_t)p * H + d];
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (it >= WARM)
            ns[it - WARM] = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec - t0;
    }
    zmq_send(s, id, (size_t)idn, ZMQ_SNDMORE);
    zmq_send(s, "", 0, 0);
    waitpid(pid, NULL, 0);
    zmq_close(s);
    zmq_ctx_term(ctx);
    char p[400];
    snprintf(p, sizeof p, "%s/b", dir);
    unlink(p);
    rmdir(dir);
    free(in);
    free(out);
    free(acc);
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"hidden", 1, 0, 'H'}, {"pairs", 1, 0, 'k'},
                                       {"iters", 1, 0, 'n'},  {"spin-us", 1, 0, 's'},
                                       {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    int c, spin = 50;
    while ((c = getopt_long(argc, argv, "H:k:n:s:h", lo, NULL)) != -1) {
        switch (c) {
        case 'H':
            H = atoi(optarg);
            break;
        case 'k':
            K = atoi(optarg);
            break;
        case 'n':
            ITERS = atoi(optarg);
            break;
        case 's':
            spin = atoi(optarg);
            break;
        case 'h':
            printf("usage: hmoe-bench-ipc [-H hidden=2048] [-k pairs=10] [-n iters=20000] "
                   "[-s spin_us=50]\n"
                   "Round trip of one MoE layer's expert hand-off (hidden state in, k weighted "
                   "expert rows out)\nthrough shared memory + doorbells vs ZeroMQ ipc://.\n");
            return 0;
        default:
            fprintf(stderr, "see --help\n");
            return 1;
        }
    }
    if (H < 1 || H > 65536 || K < 1 || K > 64 || ITERS < 100 || spin < 0) {
        fprintf(stderr, "error: bad sizes\nsee --help\n");
        return 1;
    }
    WARM = ITERS / 10;
    uint64_t *ns = malloc((size_t)ITERS * sizeof *ns);
    printf("# hand-off of H=%d f32 + %d pairs in, %d x %d f32 out (%.1f KiB round trip), %d "
           "iterations, %ld cpus\n",
           H, K, K, H, (double)((size_t)H * 4 * (size_t)(K + 1)) / 1024.0, ITERS,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("| %-34s | %9s | %9s | %9s |\n", "transport", "median us", "p99 us", "mean us");
    printf("|%s|%s|%s|%s|\n", "------------------------------------", "-----------", "-----------",
           "-----------");
    char what[64];
    snprintf(what, sizeof what, "shm + doorbell (spin %d us)", spin);
    if (bench_shm((uint32_t)spin, ns)) report(what, ns, ITERS);
    if (bench_shm(0, ns)) report("shm + doorbell (futex only)", ns, ITERS);
    if (bench_zmq(ns)) report("zmq ipc:// DEALER/ROUTER", ns, ITERS);
    free(ns);
    return 0;
}
