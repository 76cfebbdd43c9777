/* hmoe/tensor.h: a read-only view of one weight tensor as stored in the model (BF16/F16/F32/U8
 * or bitsandbytes NF4), and the dequantizing helpers the CPU math is built on.
 * Tensors never own their data: it lives in the model's mmap'd files or its arena. */
#ifndef HMOE_TENSOR_H
#define HMOE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum hmoe_dtype {
    HMOE_DT_NONE = 0, /* tensor absent */
    HMOE_DT_F32,
    HMOE_DT_F16,
    HMOE_DT_BF16,
    HMOE_DT_U8,
    HMOE_DT_NF4, /* bitsandbytes 4-bit, see struct hmoe_nf4 */
};

const char *hmoe_dtype_name(enum hmoe_dtype dt);

/* Quantization state of one bnb NF4 tensor (MODEL.md §6). Exactly one of absmax_q / absmax_f32
 * is set. Dequantization: absmax[b] = double_quant ? nested_code[absmax_q[b]] *
 * nested_absmax[b / nested_blocksize] + nested_offset : absmax_f32[b];
 * W[i] = code[nibble(i)] * absmax[i / blocksize], nibble(2j) = byte>>4, nibble(2j+1) = byte&15. */
struct hmoe_nf4 {
    const uint8_t *absmax_q;      /* [n_blocks] 8-bit codes (double quant) or NULL */
    const float *absmax_f32;      /* [n_blocks] (no double quant) or NULL */
    const float *nested_absmax;   /* [ceil(n_blocks / nested_blocksize)] (double quant) */
    float code[16];               /* quant_map, read from the file */
    float nested_code[256];       /* nested_quant_map, read from the file (double quant) */
    float nested_offset;
    int64_t n_blocks;
    int32_t blocksize;            /* 64 in practice; any even value > 0 accepted */
    int32_t nested_blocksize;     /* 256 in practice */
    enum hmoe_dtype out_dtype;    /* quant_state dtype: what a dequantized value is rounded to */
};

struct hmoe_tensor {
    const char *name;    /* owned by the model; NULL for absent tensors */
    enum hmoe_dtype dtype;
    int ndim;
    int64_t shape[4];    /* logical shape; for NF4 the quant_state shape [out, in] */
    const void *data;    /* elements (row-major); for NF4 the packed nibbles of the whole tensor */
    int64_t elem0;       /* NF4 views: first logical element of this view in `data`. Float
                          * tensors from hmoe_model_open / hmoe_tensor_rows have elem0 = 0 (data
                          * points at their first element); the readers here honour any elem0 */
    const struct hmoe_nf4 *nf4; /* NF4 only */
};

static inline int64_t hmoe_tensor_numel(const struct hmoe_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return t->ndim ? n : 0;
}

/* Row length of a tensor viewed as 2-D [shape[0], numel/shape[0]]. */
static inline int64_t hmoe_tensor_cols(const struct hmoe_tensor *t)
{
    return t->ndim ? hmoe_tensor_numel(t) / t->shape[0] : 0;
}

/* bf16/f16 <-> f32 (round to nearest even, as torch). */
float hmoe_bf16_to_f32(uint16_t h);
uint16_t hmoe_f32_to_bf16(float f);
float hmoe_f16_to_f32(uint16_t h);

/* The absmax of NF4 block b (fp32, double quant decoded). */
float hmoe_nf4_absmax(const struct hmoe_nf4 *q, int64_t b);

/* Dequantizes elements [i0, i0+n) of the view to f32 (NF4 rounded to out_dtype as bnb does). */
void hmoe_tensor_read_f32(const struct hmoe_tensor *t, int64_t i0, int64_t n, float *out);

/* Returns a view of rows [r0, r0+nr) of dim 0 (the result is 2-D [nr, cols] or keeps trailing
 * dims). For NF4 the row start must fall on a block boundary (asserted). */
struct hmoe_tensor hmoe_tensor_rows(const struct hmoe_tensor *t, int64_t r0, int64_t nr);

/* y[t, o] = sum_i x[t, i] * W[o, i] for a 2-D weight W [n_out, n_in], t < n_tok.
 * x: (n_tok, n_in) f32, y: (n_tok, n_out) f32. Dequantizes each weight row once and reuses it for
 * every token; parallel over output rows (OpenMP when available). */
void hmoe_matmul(const struct hmoe_tensor *w, const float *x, float *y, int n_tok);

#ifdef __cplusplus
}
#endif
#endif
