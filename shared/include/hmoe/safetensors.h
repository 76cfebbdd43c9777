/* hmoe/safetensors.h: one .safetensors file mapped read-only (mmap) with its header parsed and
 * validated. The header is hostile input: every length, dtype, shape and offset is checked
 * against the file before any tensor is exposed. Tensors point into the mapping (no copies). */
#ifndef HMOE_SAFETENSORS_H
#define HMOE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "hmoe/status.h"
#include "hmoe/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HMOE_ST_MAX_DIMS 8
#define HMOE_ST_MAX_HEADER (100u << 20) /* bytes; larger headers are refused */

struct hmoe_st_file;

/* One tensor entry of the header. */
struct hmoe_st_tensor {
    const char *name;      /* owned by the file */
    char dtype_str[12];    /* as in the file: "BF16", "F32", "I64", ... */
    enum hmoe_dtype dtype; /* F32/F16/BF16/U8; HMOE_DT_NONE for other (unusable) dtypes */
    int elem_size;         /* bytes per element */
    int ndim;              /* 0 = scalar (numel 1) */
    int64_t shape[HMOE_ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* inside the mapping; may be unaligned in odd files */
    uint64_t nbytes;  /* numel * elem_size, checked against data_offsets */
    const struct hmoe_st_file *file;
};

struct hmoe_st_file {
    char *path;         /* as given to hmoe_st_open */
    const uint8_t *map; /* whole file, read-only */
    size_t file_size;
    uint64_t header_len;
    const uint8_t *data_base; /* map + 8 + header_len */
    uint64_t data_size;
    int n_tensors;
    struct hmoe_st_tensor *tensors; /* [n_tensors], header order */
    char *names;                    /* storage for the names */
};

/* Opens and validates one file. Errors (HMOE_E_IO, HMOE_E_FORMAT, HMOE_E_NOMEM) name the file
 * and, where it applies, the tensor. `__metadata__` is ignored. Duplicate names are an error. */
enum hmoe_status hmoe_st_open(const char *path, struct hmoe_st_file **out);
void hmoe_st_close(struct hmoe_st_file *f); /* NULL is a no-op */

/* Linear search by name (the model builds its own hash table); NULL when absent. */
const struct hmoe_st_tensor *hmoe_st_find(const struct hmoe_st_file *f, const char *name);

/* Parses a safetensors dtype string; returns the element size in bytes (0 = unknown) and sets
 * *dt (HMOE_DT_NONE for known but unusable dtypes). */
int hmoe_st_dtype_parse(const char *s, enum hmoe_dtype *dt);

/* Copies s into buf (cap >= 4) for error messages: printable ASCII kept, other bytes as '?',
 * long strings cut with "...". Hostile names then cannot break the one-line messages. */
const char *hmoe_st_printable(const char *s, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
