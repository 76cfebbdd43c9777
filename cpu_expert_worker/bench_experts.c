/* hmoe-bench-experts: how close the NF4 expert kernels get to the machine's read bandwidth.
 * 1) read bandwidth of a STREAM-like sum (AVX-512 / AVX2 loads, 4 streams of adds), 1..N pinned
 *    threads, each over its own part of a buffer >= 8x the last-level cache that it first-touched
 *    itself, timed from a common barrier; median (used for the fractions) and max of N reps;
 * 2) pool wake-up latency (spinning and futex-sleeping workers);
 * 3) effective NF4 weight bandwidth (bytes of packed weights + absmax as stored, i.e. as read,
 *    per second, of the median step; p10 / p90 / fastest step alongside, so stragglers show) of
 *    the expert FFN with k random active experts per step out of E synthetic 80B-A3B-shaped
 *    experts (so the weights come from RAM), for 1, 4, 16, 64 tokens per expert, 1..N threads
 *    and one or more kernel variants (ISA) and work schedules (interleaved step by step, so they
 *    see the same machine state), as % of (1); by default the best ISA the CPU runs. Steps run back to back, or --gap-us apart (the caller busy-waits, as
 *    a decode loop waits for the GPU), while the pool's idle threads spin for --spin-us. */
#include <getopt.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hmoe/experts.h"
#include "hmoe/experts_synth.h"
#include "hmoe/log.h"
#include "hmoe/clock.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- read bandwidth ---- */

struct stream_job {
    struct hmoe_pool *pool;
    const uint64_t *buf;
    size_t n;   /* words in the buffer */
    int passes; /* times each thread reads its part per repetition */
    /* per thread: its part [i0, i1) (2 MB aligned, so no huge page is shared), times, sum */
    size_t i0[1024], i1[1024];
    double t0[1024], t1[1024];
    uint64_t sums[1024];
};

#if defined(__x86_64__)
#include <immintrin.h>

/* Vector read kernels (per-function targets, picked by cpuid): 4 independent 64-byte streams of
 * adds per iteration so the loop is bound by loads, not by an add chain. */
__attribute__((target("avx512f"))) static uint64_t sum_avx512(const uint64_t *b, size_t n)
{
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_add_epi64(s0, _mm512_loadu_si512((const void *)(b + i)));
        s1 = _mm512_add_epi64(s1, _mm512_loadu_si512((const void *)(b + i + 8)));
        s2 = _mm512_add_epi64(s2, _mm512_loadu_si512((const void *)(b + i + 16)));
        s3 = _mm512_add_epi64(s3, _mm512_loadu_si512((const void *)(b + i + 24)));
    }
    /* unsigned lanes: _mm512_reduce_add_epi64 adds as signed (UB on wrap, UBSan reports it) */
    uint64_t t[8], r = 0;
    _mm512_storeu_si512((void *)t,
                        _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
    for (int k = 0; k < 8; k++) r += t[k];
    for (; i < n; i++) r += b[i];
    return r;
}

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *b, size_t n)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(b + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(b + i + 4)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(b + i + 8)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(b + i + 12)));
    }
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t,
                        _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
    uint64_t r = t[0] + t[1] + t[2] + t[3];
    for (; i < n; i++) r += b[i];
    return r;
}
#endif

static uint64_t sum_scalar(const uint64_t *b, size_t n)
{
    uint64_t s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += b[i + k];
    for (; i < n; i++) s[0] += b[i];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static uint64_t (*sum_fn)(const uint64_t *, size_t) = sum_scalar;

static void pick_sum(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        sum_fn = sum_avx512;
    else if (__builtin_cpu_supports("avx2"))
        sum_fn = sum_avx2;
#endif
}

/* Thread tid's part of the buffer for nth threads: contiguous, boundaries on 2 MB (a huge page
 * is touched and read by one thread only). */
static void stream_part(struct stream_job *j, int tid, int nth)
{
    const size_t g = (2u << 20) / 8; /* words per 2 MB */
    size_t units = (j->n + g - 1) / g;
    size_t u0 = units * (size_t)tid / (size_t)nth, u1 = units * (size_t)(tid + 1) / (size_t)nth;
    j->i0[tid] = u0 * g < j->n ? u0 * g : j->n;
    j->i1[tid] = u1 * g < j->n ? u1 * g : j->n;
}

/* First touch: each thread writes its own part (the pool's pinned threads, so the pages land on
 * the node of the thread that will read them). */
static void touch_fn(void *arg, int tid, int nth)
{
    struct stream_job *j = arg;
    stream_part(j, tid, nth);
    uint64_t *b = (uint64_t *)j->buf;
    for (size_t i = j->i0[tid]; i < j->i1[tid]; i++) b[i] = i * 0x9e3779b97f4a7c15ull;
}

/* One repetition: all threads meet at a barrier, then each times its own reads of its part. */
static void stream_fn(void *arg, int tid, int nth)
{
    struct stream_job *j = arg;
    (void)nth;
    uint64_t s = 0;
    hmoe_pool_barrier(j->pool);
    j->t0[tid] = hmoe_clock_s();
    for (int p = 0; p < j->passes; p++)
        s += sum_fn(j->buf + j->i0[tid], j->i1[tid] - j->i0[tid]);
    j->t1[tid] = hmoe_clock_s();
    j->sums[tid] = s;
}

struct read_stat {
    double med_gbs, max_gbs, min_gbs; /* over the repetitions */
    double skew_us;                   /* median spread of the threads' start times */
    double rep_ms;                    /* median duration of a repetition */
    int passes;
};

/* Read bandwidth with nth threads over a fresh nbytes buffer first-touched by the same threads:
 * 1 warm-up repetition (also sets the passes so a repetition lasts >= 20 ms), then reps timed
 * ones, each from the earliest start to the latest end of the threads after a common barrier. */
static int read_bw(struct hmoe_pool *pool, struct stream_job *j, size_t nbytes, int nth, int reps,
                   struct read_stat *rs)
{
    void *buf = hmoe_pool_mem_alloc(pool, nbytes);
    double *bw = malloc((size_t)reps * sizeof *bw), *skew = malloc((size_t)reps * sizeof *skew);
    double *dur = malloc((size_t)reps * sizeof *dur);
    if (!buf || !bw || !skew || !dur) {
        if (buf) hmoe_pool_mem_free(buf, nbytes);
        free(bw);
        free(skew);
        free(dur);
        return -1;
    }
    j->pool = pool;
    j->buf = buf;
    j->n = nbytes / 8;
    j->passes = 1;
    hmoe_pool_run(pool, nth, touch_fn, j);
    for (int r = -1; r < reps; r++) {
        hmoe_pool_run(pool, nth, stream_fn, j);
        double a = j->t0[0], b = j->t1[0], last_start = j->t0[0];
        for (int t = 1; t < nth; t++) {
            a = j->t0[t] < a ? j->t0[t] : a;
            b = j->t1[t] > b ? j->t1[t] : b;
            last_start = j->t0[t] > last_start ? j->t0[t] : last_start;
        }
        double dt = b - a;
        if (r < 0) { /* warm-up: passes for a window of >= 20 ms */
            int p = dt > 0 ? (int)(0.02 / dt) + 1 : 1;
            j->passes = p < 1 ? 1 : p > 1000 ? 1000 : p;
            continue;
        }
        bw[r] = (double)j->n * 8 * j->passes / dt / 1e9;
        skew[r] = (last_start - a) * 1e6;
        dur[r] = dt * 1e3;
    }
    qsort(bw, (size_t)reps, sizeof *bw, cmp_double);
    qsort(skew, (size_t)reps, sizeof *skew, cmp_double);
    qsort(dur, (size_t)reps, sizeof *dur, cmp_double);
    *rs = (struct read_stat){.med_gbs =
                                 reps % 2 ? bw[reps / 2] : (bw[reps / 2 - 1] + bw[reps / 2]) / 2,
                             .max_gbs = bw[reps - 1],
                             .min_gbs = bw[0],
                             .skew_us = skew[reps / 2],
                             .rep_ms = dur[reps / 2],
                             .passes = j->passes};
    hmoe_pool_mem_free(buf, nbytes);
    free(bw);
    free(skew);
    free(dur);
    return 0;
}

/* Size of the last-level cache(s): the sum over the distinct instances of the highest cache
 * level in sysfs (all online CPUs); else glibc's sysconf (one instance assumed). 0 = unknown.
 * *src says where it came from. */
static size_t llc_bytes(const char **src)
{
    size_t total = 0;
    int best_level = 0;
    char ids[256][64];
    int nid = 0;
    for (int cpu = 0; cpu < 4096; cpu++) {
        char path[160];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d", cpu);
        if (access(path, F_OK) != 0) {
            if (cpu > 0) break;
            continue;
        }
        FILE *f;
        for (int idx = 0; idx < 16; idx++) {
            char base[200], buf[128];
            int level = 0;
            size_t kb = 0;
            snprintf(base, sizeof base, "%s/cache/index%d/", path, idx);
            char p2[240];
            snprintf(p2, sizeof p2, "%slevel", base);
            if (!(f = fopen(p2, "r"))) break;
            if (fscanf(f, "%d", &level) != 1) level = 0;
            fclose(f);
            snprintf(p2, sizeof p2, "%stype", base);
            if ((f = fopen(p2, "r"))) {
                if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
                fclose(f);
                if (!strncmp(buf, "Instruction", 11)) continue;
            }
            if (level < best_level) continue;
            snprintf(p2, sizeof p2, "%ssize", base);
            if (!(f = fopen(p2, "r"))) continue;
            char unit = 'K';
            if (fscanf(f, "%zu%c", &kb, &unit) < 1) kb = 0;
            fclose(f);
            size_t bytes = unit == 'M' ? kb << 20 : unit == 'G' ? kb << 30 : kb << 10;
            /* the instance: its shared_cpu_list (or id) */
            snprintf(p2, sizeof p2, "%sshared_cpu_list", base);
            buf[0] = 0;
            if ((f = fopen(p2, "r"))) {
                if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
                fclose(f);
            }
            if (level > best_level) { /* a higher level: start over */
                best_level = level;
                total = 0;
                nid = 0;
            }
            char key[64];
            snprintf(key, sizeof key, "%.60s", buf[0] ? buf : "?");
            int seen = 0;
            for (int i = 0; i < nid; i++) seen |= !strcmp(ids[i], key);
            if (!seen && nid < 256) {
                memcpy(ids[nid++], key, sizeof key);
                total += bytes;
            }
        }
    }
    if (total) {
        *src = "sysfs";
        return total;
    }
    long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (v > 0) {
        *src = "sysconf, 1 instance assumed";
        return (size_t)v;
    }
    *src = "unknown";
    return 0;
}

/* MemAvailable from /proc/meminfo in bytes; 0 = unknown. */
static size_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb << 10;
}

/* ---- wake-up latency ---- */

static void empty_fn(void *arg, int tid, int nth)
{
    (void)arg;
    (void)tid;
    (void)nth;
}

static double wake_us(struct hmoe_pool *pool, int spin_us, int iters)
{
    hmoe_pool_set_spin(pool, spin_us);
    double *t = malloc((size_t)iters * sizeof *t);
    if (!t) return -1;
    for (int i = 0; i < iters; i++) {
        if (spin_us == 0) {
            struct timespec ts = {0, 200000}; /* let the workers fall asleep */
            nanosleep(&ts, NULL);
        }
        double t0 = hmoe_clock_s();
        hmoe_pool_run(pool, hmoe_pool_size(pool), empty_fn, NULL);
        t[i] = (hmoe_clock_s() - t0) * 1e6;
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_double);
    double med = t[iters / 2];
    free(t);
    hmoe_pool_set_spin(pool, 1000);
    return med;
}

/* ---- options ---- */

struct opts {
    int threads, reps, experts, active, hidden, inter, node, json, expand_absmax, spin_us, gap_us;
    int sched[HMOE_SCHED_COUNT], n_sched;
    int isa[HMOE_ISA_COUNT], n_isa; /* enum hmoe_experts_isa; AUTO = the best supported */
    size_t stream_mb; /* 0 = auto: 8x the last-level cache, at least 512 MB */
    int stream_reps;
    double ref_read_gbs; /* 0 = none */
    int tokens[8], n_tokens;
    int tlist[32], n_tlist; /* explicit thread counts (-T) */
    uint64_t seed;
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: hmoe-bench-experts [-t threads] [-T list] [-r reps] [-o md|json] [-e experts]\n"
        "         [-k active] [-H hidden] [-I inter] [-n numa-node] [--isa LIST]\n"
        "         [--tokens 1,4,16,64] [--stream-mb MB] [--seed N] [--absmax-f32]\n"
        "         [--sched flow,steal,static] [--spin-us N] [--gap-us N]\n"
        "         [--stream-reps N] [--ref-read-gbs X]\n"
        "  -t  largest thread count (default: one per core of the node); runs 1,2,4,..,t\n"
        "  -T  explicit list of thread counts to run, e.g. -T 16 or -T 1,8,16\n"
        "  -r  timed steps per point (default 30)\n"
        "  -e  synthetic experts in memory (default 512, 512 x 1.6 MB = 0.8 GB)\n"
        "  -k  active experts per step (default 10)\n"
        "  --absmax-f32  decode the double-quant absmax to fp32 at load (more bytes, less work)\n"
        "  --isa  kernels to compare, interleaved step by step: auto (default: the best this\n"
        "         CPU runs), generic, avx2, avx512, avx512bf16, e.g. --isa avx512,avx512bf16\n"
        "  --sched  work schedules to compare, interleaved step by step (default flow)\n"
        "  --spin-us  how long idle pool threads spin before sleeping (default 1000)\n"
        "  --gap-us  busy-wait between steps, as the GPU part of a decode step (default 0)\n"
        "  --stream-mb  read-bandwidth buffer (default: 8x the last-level cache, at least\n"
        "               512 MB, at most half of MemAvailable)\n"
        "  --stream-reps  timed repetitions of the read kernel per thread count (default 9);\n"
        "                 the median is used for the fraction, the max is printed beside it\n"
        "  --ref-read-gbs  a reference read bandwidth (e.g. 96.8 from DEVICE.md): also print\n"
        "                  the NF4 GB/s as a fraction of it\n");
}

/* "1,4,16" -> list (at most cap values in [1, hi]); 0 or -1 on a bad list. */
static int parse_list(const char *s, int *list, int *n, int cap, int hi)
{
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > hi || *n == cap || (*end && *end != ',')) return -1;
        list[(*n)++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return *n ? 0 : -1;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static const char *sched_name(int k)
{
    return hmoe_experts_sched_name((enum hmoe_experts_sched)k);
}

static const char *isa_name(int k)
{
    return hmoe_experts_isa_name((enum hmoe_experts_isa)k);
}

/* "flow,static" -> list of the indices k < count whose name(k) is listed; -1 on an unknown or
 * repeated name. */
static int parse_names(const char *s, int count, const char *(*name)(int), int *list, int *n_out)
{
    int n_list = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        int found = -1;
        for (int k = 0; k < count; k++) {
            const char *nm = name(k);
            if (strlen(nm) == n && !strncmp(s, nm, n)) found = k;
        }
        for (int i = 0; i < n_list; i++)
            if (list[i] == found) found = -1;
        if (found < 0 || n_list == count) return -1;
        list[n_list++] = found;
        s += n;
        if (*s == ',' && *++s == 0) return -1;
    }
    *n_out = n_list;
    return n_list ? 0 : -1;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.reps = 30,
                       .experts = 512,
                       .active = 10,
                       .hidden = 2048,
                       .inter = 512,
                       .node = -1,
                       .isa = {HMOE_ISA_AUTO},
                       .n_isa = 1,
                       .stream_reps = 9,
                       .tokens = {1, 4, 16, 64},
                       .n_tokens = 4,
                       .spin_us = 1000,
                       .sched = {HMOE_SCHED_FLOW},
                       .n_sched = 1,
                       .seed = 1};
    static const struct option lo[] = {{"isa", required_argument, 0, 1},
                                       {"tokens", required_argument, 0, 2},
                                       {"stream-mb", required_argument, 0, 3},
                                       {"seed", required_argument, 0, 4},
                                       {"absmax-f32", no_argument, 0, 5},
                                       {"sched", required_argument, 0, 6},
                                       {"spin-us", required_argument, 0, 7},
                                       {"gap-us", required_argument, 0, 8},
                                       {"stream-reps", required_argument, 0, 9},
                                       {"ref-read-gbs", required_argument, 0, 10},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int c, v;
    while ((c = getopt_long(argc, argv, "t:T:r:o:e:k:H:I:n:h", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 't': bad = parse_int(optarg, 1, 1024, &o->threads); break;
        case 'r': bad = parse_int(optarg, 1, 100000, &o->reps); break;
        case 'o':
            if (!strcmp(optarg, "md"))
                o->json = 0;
            else if (!strcmp(optarg, "json"))
                o->json = 1;
            else
                bad = 1;
            break;
        case 'e': bad = parse_int(optarg, 1, 1 << 20, &o->experts); break;
        case 'k': bad = parse_int(optarg, 1, 64, &o->active); break;
        case 'H': bad = parse_int(optarg, 2, 1 << 16, &o->hidden); break;
        case 'I': bad = parse_int(optarg, 2, 1 << 16, &o->inter); break;
        case 'n': bad = parse_int(optarg, -1, 1024, &o->node); break;
        case 1: bad = parse_names(optarg, HMOE_ISA_COUNT, isa_name, o->isa, &o->n_isa); break;
        case 2: bad = parse_list(optarg, o->tokens, &o->n_tokens, 8, 4096); break;
        case 'T': bad = parse_list(optarg, o->tlist, &o->n_tlist, 32, 4096); break;
        case 3:
            bad = parse_int(optarg, 1, 1 << 20, &v);
            o->stream_mb = (size_t)v;
            break;
        case 4:
            bad = parse_int(optarg, 0, 1 << 30, &v);
            o->seed = (uint64_t)v;
            break;
        case 5: o->expand_absmax = 1; break;
        case 6:
            bad = parse_names(optarg, HMOE_SCHED_COUNT, sched_name, o->sched, &o->n_sched);
            break;
        case 7: bad = parse_int(optarg, 0, 1000000, &o->spin_us); break;
        case 8: bad = parse_int(optarg, 0, 1000000, &o->gap_us); break;
        case 9: bad = parse_int(optarg, 1, 10000, &o->stream_reps); break;
        case 10: {
            char *end;
            double d = strtod(optarg, &end);
            bad = end == optarg || *end || !(d > 0 && d < 1e6);
            o->ref_read_gbs = d;
            break;
        }
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (bad) {
            char sh[3] = {'-', (char)c, 0};
            const char *nm = c == 1   ? "--isa"
                             : c == 2 ? "--tokens"
                             : c == 3 ? "--stream-mb"
                             : c == 4 ? "--seed"
                             : c == 6 ? "--sched"
                             : c == 7 ? "--spin-us"
                             : c == 8 ? "--gap-us"
                             : c == 9 ? "--stream-reps"
                             : c == 10 ? "--ref-read-gbs"
                                      : sh;
            fprintf(stderr, "hmoe-bench-experts: bad value for %s: %s\n", nm, optarg ? optarg : "");
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hmoe-bench-experts: unexpected argument %s\n", argv[optind]);
        return -1;
    }
    if (o->active > o->experts) {
        fprintf(stderr, "hmoe-bench-experts: -k %d > -e %d\n", o->active, o->experts);
        return -1;
    }
    return 0;
}

/* ---- main ---- */

struct point {
    int threads, tokens, isa, sched;
    /* step times over the reps (us): fastest, 10th percentile, median, 90th percentile */
    double read_gbs, best_us, p10_us, step_us, p90_us, nf4_gbs, best_gbs;
};

static void busy_wait_us(int us)
{
    double until = hmoe_clock_s() + us * 1e-6;
    while (hmoe_clock_s() < until) {
    }
}

int main(int argc, char **argv)
{
    hmoe_log_init("B", HMOE_LOG_LVL_WARN, 0);
    pick_sum();
    struct opts o;
    if (parse_opts(argc, argv, &o) != 0) return 1;

    struct hmoe_experts_opts eo = {
        .pool = {.n_threads = o.threads,
                 .numa_node = o.node,
                 .spin_us = o.spin_us ? o.spin_us : -1,
                 .bind_caller = 1},
        .isa = (enum hmoe_experts_isa)o.isa[0],
        .max_tokens = 64,
        .max_top_k = o.active,
        .expand_absmax = o.expand_absmax};
    struct hmoe_experts *ex;
    if (hmoe_experts_init(&eo, o.hidden, o.inter, &ex) != HMOE_OK) {
        fprintf(stderr, "hmoe-bench-experts: %s\n", hmoe_err_msg());
        return 1;
    }
    struct hmoe_pool *pool = hmoe_experts_pool(ex);
    int nmax = hmoe_pool_size(pool);
    for (int i = 0; i < o.n_isa; i++) { /* AUTO -> the ISA it stands for; each one supported */
        if (hmoe_experts_set_isa(ex, (enum hmoe_experts_isa)o.isa[i]) != HMOE_OK) {
            fprintf(stderr, "hmoe-bench-experts: %s\n", hmoe_err_msg());
            hmoe_experts_free(ex);
            return 1;
        }
        o.isa[i] = (int)hmoe_experts_isa_used(ex);
    }
    const int nvar = o.n_isa * o.n_sched; /* kernel variant x schedule, interleaved */

    /* synthetic experts: bnb NF4, blocksize 64, double quant, bf16 (the unsloth checkpoint) */
    struct hmoe_exsynth_spec spec = {
        .dtype = HMOE_DT_NF4, .blocksize = 64, .double_quant = 1, .out_dtype = HMOE_DT_BF16};
    struct hmoe_exsynth_expert *se = calloc((size_t)o.experts, sizeof *se);
    uint64_t rng = o.seed;
    double tg = hmoe_clock_s();
    for (int e = 0; se && e < o.experts; e++) {
        if (hmoe_exsynth_expert_init(&se[e], &spec, o.hidden, o.inter, &rng) != HMOE_OK) {
            fprintf(stderr, "hmoe-bench-experts: %s\n", hmoe_err_msg());
            return 2;
        }
        struct hmoe_mlp_w w = hmoe_exsynth_expert_w(&se[e]);
        if (hmoe_experts_add(ex, 0, e, &w) != HMOE_OK) {
            fprintf(stderr, "hmoe-bench-experts: %s\n", hmoe_err_msg());
            return 2;
        }
    }
    if (!se || hmoe_experts_load(ex) != HMOE_OK) {
        fprintf(stderr, "hmoe-bench-experts: load: %s\n", hmoe_err_msg());
        return 2;
    }
    for (int e = 0; e < o.experts; e++) hmoe_exsynth_expert_free(&se[e]);
    free(se);
    double load_s = hmoe_clock_s() - tg;
    uint64_t eb = hmoe_experts_nbytes(ex, 0, 0);

    /* thread counts 1, 2, 4, .., nmax */
    int tl[32], ntl = 0;
    if (o.n_tlist) {
        for (int i = 0; i < o.n_tlist; i++) tl[ntl++] = o.tlist[i] < nmax ? o.tlist[i] : nmax;
    } else {
        for (int t = 1; t < nmax && ntl < 31; t *= 2) tl[ntl++] = t;
        tl[ntl++] = nmax;
    }

    /* read bandwidth: a buffer far larger than the last-level cache (so at most ~1/8 of it can
     * still be cached from the previous repetition), capped by the memory available */
    const char *llc_src = "";
    size_t llc = llc_bytes(&llc_src), avail = mem_available(), sbytes;
    if (o.stream_mb) {
        sbytes = o.stream_mb << 20;
        if (avail && sbytes > avail / 10 * 9) {
            fprintf(stderr,
                    "hmoe-bench-experts: --stream-mb %zu exceeds 90%% of MemAvailable (%zu MB)\n",
                    o.stream_mb, avail >> 20);
            hmoe_experts_free(ex);
            return 1;
        }
    } else {
        sbytes = llc ? 8 * llc : (size_t)2048 << 20;
        if (sbytes < (size_t)512 << 20) sbytes = (size_t)512 << 20;
        if (avail && sbytes > avail / 2) sbytes = avail / 2;
    }
    sbytes = (sbytes + ((2u << 20) - 1)) & ~(size_t)((2u << 20) - 1); /* whole 2 MB pages */
    if (llc && sbytes < 8 * llc)
        fprintf(stderr,
                "hmoe-bench-experts: warning: read buffer %zu MB is only %.1fx the last-level "
                "cache (%zu MB): part of it may be read from the cache\n",
                sbytes >> 20, (double)sbytes / (double)llc, llc >> 20);
    struct stream_job *sj = calloc(1, sizeof *sj);
    if (!sj) return 2;
    struct read_stat rs[32];
    for (int i = 0; i < ntl; i++)
        if (read_bw(pool, sj, sbytes, tl[i], o.stream_reps, &rs[i]) != 0) {
            fprintf(stderr, "hmoe-bench-experts: read buffer of %zu MB: %s\n", sbytes >> 20,
                    hmoe_err_msg());
            return 2;
        }

    double wake_spin = wake_us(pool, 1000, 2000), wake_sleep = wake_us(pool, 0, 200);

    /* expert FFN */
    int maxtok = 1;
    for (int i = 0; i < o.n_tokens; i++) maxtok = o.tokens[i] > maxtok ? o.tokens[i] : maxtok;
    float *x = malloc((size_t)maxtok * o.hidden * sizeof *x);
    float *out = calloc((size_t)maxtok * o.hidden, sizeof *out);
    int32_t *idx = malloc((size_t)maxtok * o.active * sizeof *idx);
    float *wts = malloc((size_t)maxtok * o.active * sizeof *wts);
    struct point *pts = calloc((size_t)ntl * o.n_tokens * nvar, sizeof *pts);
    double *steps = malloc((size_t)o.reps * nvar * sizeof *steps);
    if (!x || !out || !idx || !wts || !pts || !steps) return 2;
    for (size_t i = 0; i < (size_t)maxtok * o.hidden; i++) x[i] = hmoe_exsynth_uniform(&rng) - 0.5f;
    int npts = 0;
    for (int ti = 0; ti < ntl; ti++) {
        hmoe_experts_set_threads(ex, tl[ti]);
        for (int k = 0; k < o.n_tokens; k++) {
            int nt = o.tokens[k];
            for (int rep = -2; rep < o.reps; rep++) { /* 2 warm-up steps */
                for (int si = 0; si < nvar; si++) {
                    /* the variants take turns in a rotating order */
                    int sc = (si + (rep < 0 ? 0 : rep)) % nvar;
                    hmoe_experts_set_isa(ex, (enum hmoe_experts_isa)o.isa[sc / o.n_sched]);
                    hmoe_experts_set_sched(ex, (enum hmoe_experts_sched)o.sched[sc % o.n_sched]);
                    int32_t act[64];
                    for (int a = 0; a < o.active; a++) { /* distinct random experts */
                        int e, dup;
                        do {
                            e = (int)(hmoe_exsynth_rand(&rng) % (uint64_t)o.experts);
                            dup = 0;
                            for (int b = 0; b < a; b++) dup |= act[b] == e;
                        } while (dup);
                        act[a] = e;
                    }
                    for (int t = 0; t < nt; t++)
                        for (int a = 0; a < o.active; a++) {
                            idx[t * o.active + a] = act[a];
                            wts[t * o.active + a] = 1.0f / (float)o.active;
                        }
                    if (o.gap_us) busy_wait_us(o.gap_us);
                    double t0 = hmoe_clock_s();
                    if (hmoe_experts_run(ex, 0, nt, o.active, x, idx, wts, out) != HMOE_OK) {
                        fprintf(stderr, "hmoe-bench-experts: run: %s\n", hmoe_err_msg());
                        return 2;
                    }
                    if (rep >= 0) steps[(size_t)sc * o.reps + rep] = hmoe_clock_s() - t0;
                }
            }
            for (int sc = 0; sc < nvar; sc++) {
                double *st = steps + (size_t)sc * o.reps;
                qsort(st, (size_t)o.reps, sizeof *st, cmp_double);
                double step = st[o.reps / 2], best = st[0];
                pts[npts++] = (struct point){tl[ti],
                                             nt,
                                             o.isa[sc / o.n_sched],
                                             o.sched[sc % o.n_sched],
                                             rs[ti].med_gbs,
                                             best * 1e6,
                                             st[o.reps / 10] * 1e6,
                                             step * 1e6,
                                             st[o.reps * 9 / 10] * 1e6,
                                             (double)eb * o.active / step / 1e9,
                                             (double)eb * o.active / best / 1e9};
            }
        }
    }

    char isa[128] = ""; /* the kernels compared, "avx512,avx512bf16" */
    for (int i = 0; i < o.n_isa; i++)
        snprintf(isa + strlen(isa), sizeof isa - strlen(isa), "%s%s", i ? "," : "",
                 isa_name(o.isa[i]));
    if (o.json) {
        printf("{\"isa\":\"%s\",\"pool\":\"%s\",\"experts\":%d,\"active\":%d,\"hidden\":%d,"
               "\"inter\":%d,\"expert_bytes\":%llu,\"load_s\":%.3f,\"wake_spin_us\":%.2f,"
               "\"wake_futex_us\":%.2f,\"absmax_f32\":%d,\"spin_us\":%d,\"gap_us\":%d,"
               "\"llc_bytes\":%zu,\"llc_source\":\"%s\",\"stream_bytes\":%zu,"
               "\"stream_reps\":%d,\"ref_read_gbs\":%.2f,\"read_gbs\":[",
               isa, hmoe_pool_describe(pool), o.experts, o.active, o.hidden, o.inter,
               (unsigned long long)eb, load_s, wake_spin, wake_sleep, o.expand_absmax, o.spin_us,
               o.gap_us, llc, llc_src, sbytes, o.stream_reps, o.ref_read_gbs);
        for (int i = 0; i < ntl; i++)
            printf("%s{\"threads\":%d,\"gbs\":%.2f,\"max_gbs\":%.2f,\"min_gbs\":%.2f,"
                   "\"rep_ms\":%.2f,\"passes\":%d,\"start_skew_us\":%.1f}",
                   i ? "," : "", tl[i], rs[i].med_gbs, rs[i].max_gbs, rs[i].min_gbs, rs[i].rep_ms,
                   rs[i].passes, rs[i].skew_us);
        printf("],\"points\":[");
        for (int i = 0; i < npts; i++)
            printf("%s{\"threads\":%d,\"tokens\":%d,\"isa\":\"%s\",\"sched\":\"%s\","
                   "\"step_us\":%.1f,"
                   "\"p10_us\":%.1f,\"p90_us\":%.1f,\"best_us\":%.1f,\"nf4_gbs\":%.2f,"
                   "\"best_nf4_gbs\":%.2f,\"read_gbs\":%.2f,\"fraction\":%.3f,"
                   "\"fraction_ref\":%.3f}",
                   i ? "," : "", pts[i].threads, pts[i].tokens, isa_name(pts[i].isa),
                   sched_name(pts[i].sched), pts[i].step_us,
                   pts[i].p10_us, pts[i].p90_us, pts[i].best_us, pts[i].nf4_gbs, pts[i].best_gbs,
                   pts[i].read_gbs, pts[i].nf4_gbs / pts[i].read_gbs,
                   o.ref_read_gbs > 0 ? pts[i].nf4_gbs / o.ref_read_gbs : 0.0);
        printf("]}\n");
    } else {
        printf("# hmoe-bench-experts\n\n");
        printf("- kernels: %s%s; pool: %s\n", isa, o.expand_absmax ? " (absmax fp32)" : "",
               hmoe_pool_describe(pool));
        printf("- %d synthetic NF4 experts (H %d, I %d, blocksize 64, double quant), %.2f MB "
               "each incl. absmax, %.2f GB in all; %d active per step; load %.1f s\n",
               o.experts, o.hidden, o.inter, (double)eb / 1e6,
               (double)hmoe_experts_total_bytes(ex) / 1e9, o.active, load_s);
        printf("- pool wake-up (empty job round trip, median): %.2f us spinning, %.2f us from "
               "futex sleep\n",
               wake_spin, wake_sleep);
        printf("- idle pool threads spin %d us; %d us busy-wait between steps\n", o.spin_us,
               o.gap_us);
        printf("- read bandwidth: %zu MB buffer (%.1fx the last-level cache of %zu MB, %s), "
               "first touched by the reading threads, barrier start, %d timed repetitions\n\n",
               sbytes >> 20, llc ? (double)sbytes / (double)llc : 0.0, llc >> 20, llc_src,
               o.stream_reps);
        printf("| threads | read GB/s median | max | min | ms a repetition | passes | start "
               "skew us |\n|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int i = 0; i < ntl; i++)
            printf("| %d | %.1f | %.1f | %.1f | %.1f | %d | %.1f |\n", tl[i], rs[i].med_gbs,
                   rs[i].max_gbs, rs[i].min_gbs, rs[i].rep_ms, rs[i].passes, rs[i].skew_us);
        printf("\nstep times of %d steps (us): fastest, p10, median, p90; NF4 GB/s of the median "
               "and of the fastest step; of read BW: median NF4 GB/s / median read GB/s",
               o.reps);
        if (o.ref_read_gbs > 0)
            printf("; of ref: median NF4 GB/s / %.1f GB/s (--ref-read-gbs)", o.ref_read_gbs);
        printf("\n\n| threads | read GB/s | tokens/expert | kernels | sched | best us | p10 us | "
               "median us | p90 us | NF4 GB/s | best NF4 GB/s | of read BW |%s\n",
               o.ref_read_gbs > 0 ? " of ref |" : "");
        printf("|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|%s\n",
               o.ref_read_gbs > 0 ? "---:|" : "");
        for (int i = 0; i < npts; i++) {
            printf("| %d | %.1f | %d | %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f%% |",
                   pts[i].threads, pts[i].read_gbs, pts[i].tokens, isa_name(pts[i].isa),
                   sched_name(pts[i].sched), pts[i].best_us,
                   pts[i].p10_us, pts[i].step_us, pts[i].p90_us, pts[i].nf4_gbs, pts[i].best_gbs,
                   100.0 * pts[i].nf4_gbs / pts[i].read_gbs);
            if (o.ref_read_gbs > 0) printf(" %.0f%% |", 100.0 * pts[i].nf4_gbs / o.ref_read_gbs);
            printf("\n");
        }
    }
    free(x);
    free(out);
    free(idx);
    free(wts);
    free(pts);
    free(steps);
    free(sj);
    hmoe_experts_free(ex);
    return 0;
}
