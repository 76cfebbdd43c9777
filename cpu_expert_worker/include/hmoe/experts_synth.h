/* hmoe/experts_synth.h: random expert weights in the model's tensor formats (bnb NF4 with or
 * without double quant, BF16, F16, F32), for the kernel tests and hmoe-bench-experts. The
 * values are plausible (|W| around 0.01-0.05), not a trained model. */
#ifndef HMOE_EXPERTS_SYNTH_H
#define HMOE_EXPERTS_SYNTH_H

#include <stdint.h>

#include "hmoe/model.h"
#include "hmoe/status.h"
#include "hmoe/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One generated tensor; t is the view (t.nf4 points into this struct: do not move it). */
struct hmoe_exsynth_tensor {
    struct hmoe_tensor t;
    struct hmoe_nf4 nf4;
    void *data;  /* elements or packed nibbles */
    uint8_t *aq; /* NF4 double quant: absmax codes */
    float *af;   /* NF4 plain: fp32 absmax */
    float *nabs; /* NF4 double quant: nested absmax */
};

struct hmoe_exsynth_spec {
    enum hmoe_dtype dtype;     /* NF4, BF16, F16 or F32 */
    int blocksize;             /* NF4 (even > 0; 64 in practice) */
    int double_quant;          /* NF4: 8-bit absmax codes + nested absmax (blocksize 256) */
    enum hmoe_dtype out_dtype; /* NF4: BF16 / F16 / F32 */
    int64_t elem0;             /* the view starts this many elements into the data */
};

/* Fills st with a random [rows, cols] tensor; *rng is a splitmix64 state. HMOE_E_INVAL on a bad
 * spec, HMOE_E_NOMEM. */
enum hmoe_status hmoe_exsynth_tensor_init(struct hmoe_exsynth_tensor *st,
                                          const struct hmoe_exsynth_spec *spec, int64_t rows,
                                          int64_t cols, uint64_t *rng);
void hmoe_exsynth_tensor_free(struct hmoe_exsynth_tensor *st); /* NULL-safe, idempotent */

/* Random routed expert: gate [I, H], up [I, H], down [H, I], all of one spec. */
struct hmoe_exsynth_expert {
    struct hmoe_exsynth_tensor gate, up, down;
};
enum hmoe_status hmoe_exsynth_expert_init(struct hmoe_exsynth_expert *e,
                                          const struct hmoe_exsynth_spec *spec, int hidden,
                                          int inter, uint64_t *rng);
void hmoe_exsynth_expert_free(struct hmoe_exsynth_expert *e);
/* The views as the kernels take them (pointers into e). */
struct hmoe_mlp_w hmoe_exsynth_expert_w(const struct hmoe_exsynth_expert *e);

uint64_t hmoe_exsynth_rand(uint64_t *rng); /* splitmix64 */
float hmoe_exsynth_uniform(uint64_t *rng); /* [0, 1) */

#ifdef __cplusplus
}
#endif
#endif
