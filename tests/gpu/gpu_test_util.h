/* tests/gpu/gpu_test_util.h: helpers shared by the GPU kernel tests: skip without a device,
 * a seeded PRNG (HMOE_TEST_SEED overrides), bf16 conversion, device buffers, the error metric
 * max|out - ref| / max|ref| and a NaN poison for outputs. */
#ifndef HMOE_GPU_TEST_UTIL_H
#define HMOE_GPU_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/gpu.h"
#include "hmoe_test.h"

static uint64_t gt_state = 0x9E3779B97F4A7C15ull;

static inline void gt_seed(void)
{
    const char *s = getenv("HMOE_TEST_SEED");
    gt_state = s ? strtoull(s, NULL, 10) * 0x9E3779B97F4A7C15ull + 1 : 0x1234567ull;
    fprintf(stderr, "seed %s\n", s ? s : "(default)");
}

static inline uint64_t gt_u64(void)
{
    uint64_t z = (gt_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float gt_uniform(void)
{
    return (float)(gt_u64() >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static inline uint16_t gt_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float gt_bf16_f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline struct hmoe_gpu *gt_open(void)
{
    if (hmoe_gpu_device_count() == 0) TEST_SKIP("no CUDA device");
    struct hmoe_gpu *g = NULL;
    if (hmoe_gpu_open(0, &g) != HMOE_OK) {
        fprintf(stderr, "FAIL hmoe_gpu_open: %s\n", hmoe_err_msg());
        exit(1);
    }
    fprintf(stderr, "device: %s\n", hmoe_gpu_describe(g));
    gt_seed();
    return g;
}

/* Device copy of n bytes of host data (NULL src: poisoned with 0xff = NaN for floats). */
static inline void *gt_dev(struct hmoe_gpu *g, const void *src, size_t n)
{
    void *d = NULL;
    if (hmoe_gpu_malloc(g, n, &d) != HMOE_OK) {
        fprintf(stderr, "FAIL malloc: %s\n", hmoe_err_msg());
        exit(1);
    }
    void *tmp = NULL;
    if (!src) {
        tmp = malloc(n ? n : 1);
        memset(tmp, 0xff, n);
        src = tmp;
    }
    if (hmoe_gpu_upload(g, d, src, n) != HMOE_OK) {
        fprintf(stderr, "FAIL upload: %s\n", hmoe_err_msg());
        exit(1);
    }
    free(tmp);
    return d;
}

/* max|out - ref| / max|ref|; NaN anywhere (e.g. an unwritten poisoned output) gives +inf. */
static inline double gt_rel_err(const float *out, const double *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(out[i]) || isnan(ref[i])) return INFINITY;
        double d = fabs((double)out[i] - ref[i]);
        if (d > md) md = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return mr > 0 ? md / mr : md;
}

#endif
