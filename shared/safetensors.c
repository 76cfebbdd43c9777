/* safetensors reader: mmap one file read-only, parse its JSON header with cJSON and validate
 * every entry (dtype, shape, offsets) against the file before exposing it. Layout of a file:
 * u64 little-endian N | N bytes of JSON header | data; data_offsets are relative to the data. */
#include "hmoe/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    int size;
    enum hmoe_dtype dt;
} st_dtypes[] = {
    {"F32", 4, HMOE_DT_F32},      {"F16", 2, HMOE_DT_F16},      {"BF16", 2, HMOE_DT_BF16},
    {"U8", 1, HMOE_DT_U8},        {"I8", 1, HMOE_DT_NONE},      {"BOOL", 1, HMOE_DT_NONE},
    {"I16", 2, HMOE_DT_NONE},     {"U16", 2, HMOE_DT_NONE},     {"I32", 4, HMOE_DT_NONE},
    {"U32", 4, HMOE_DT_NONE},     {"I64", 8, HMOE_DT_NONE},     {"U64", 8, HMOE_DT_NONE},
    {"F64", 8, HMOE_DT_NONE},     {"F8_E4M3", 1, HMOE_DT_NONE}, {"F8_E5M2", 1, HMOE_DT_NONE},
    {"F8_E8M0", 1, HMOE_DT_NONE}, {"C64", 8, HMOE_DT_NONE},
};

int hmoe_st_dtype_parse(const char *s, enum hmoe_dtype *dt)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *dt = st_dtypes[i].dt;
            return st_dtypes[i].size;
        }
    }
    *dt = HMOE_DT_NONE;
    return 0;
}

const char *hmoe_st_printable(const char *s, char *buf, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    buf[i] = '\0';
    if (s[i] && cap >= 4) memcpy(buf + cap - 4, "...", 4);
    return buf;
}

void hmoe_st_close(struct hmoe_st_file *f)
{
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->file_size);
    free(f->tensors);
    free(f->names);
    free(f->path);
    free(f);
}

const struct hmoe_st_tensor *hmoe_st_find(const struct hmoe_st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* Reads a JSON number that must be a non-negative integer that fits in uint64 (exactly
 * representable as a double, i.e. < 2^53, which covers every real file). */
static int json_u64(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return 0;
    *v = (uint64_t)d;
    return 1;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Validates one header entry `e` (key e->string) and fills *t. */
static enum hmoe_status parse_entry(const struct hmoe_st_file *f, const cJSON *e,
                                    struct hmoe_st_tensor *t)
{
    char nmbuf[256], dtbuf[24];
    const char *nm = hmoe_st_printable(e->string, nmbuf, sizeof nmbuf);
    if (!cJSON_IsObject(e))
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': header entry is not an object", f->path,
                         nm);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo))
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: tensor '%s': entry needs string 'dtype', list 'shape' and list "
                         "'data_offsets'",
                         f->path, nm);
    int esz = hmoe_st_dtype_parse(jd->valuestring, &t->dtype);
    if (esz == 0)
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': unknown dtype '%s'", f->path, nm,
                         hmoe_st_printable(jd->valuestring, dtbuf, sizeof dtbuf));
    snprintf(t->dtype_str, sizeof t->dtype_str, "%s", jd->valuestring);
    t->elem_size = esz;
    int nd = cJSON_GetArraySize(js);
    if (nd > HMOE_ST_MAX_DIMS)
        return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': %d dims (max %d)", f->path, nm, nd,
                         HMOE_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach (d, js) {
        uint64_t v;
        if (!json_u64(d, &v) || v > (uint64_t)INT64_MAX)
            return hmoe_fail(HMOE_E_FORMAT,
                             "%s: tensor '%s': shape[%d] is not a non-negative integer", f->path,
                             nm, i);
        if (__builtin_mul_overflow(numel, v, &numel) || numel > (uint64_t)INT64_MAX / 8)
            return hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s': shape overflows", f->path, nm);
        t->shape[i++] = (int64_t)v;
    }
    t->numel = (int64_t)numel;
    t->nbytes = numel * (uint64_t)esz;
    uint64_t off[2];
    if (cJSON_GetArraySize(jo) != 2 || !json_u64(cJSON_GetArrayItem(jo, 0), &off[0]) ||
        !json_u64(cJSON_GetArrayItem(jo, 1), &off[1]))
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: tensor '%s': data_offsets must be two non-negative integers", f->path,
                         nm);
    if (off[0] > off[1] || off[1] > f->data_size)
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] out of range (data is %llu "
                         "bytes)",
                         f->path, nm, (unsigned long long)off[0], (unsigned long long)off[1],
                         (unsigned long long)f->data_size);
    if (off[1] - off[0] != t->nbytes)
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: tensor '%s': data_offsets span %llu bytes but %s shape needs %llu",
                         f->path, nm, (unsigned long long)(off[1] - off[0]), t->dtype_str,
                         (unsigned long long)t->nbytes);
    t->data = f->data_base + off[0];
    t->file = f;
    return HMOE_OK;
}

static enum hmoe_status parse_header(struct hmoe_st_file *f)
{
    const uint8_t *p = f->map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | p[i];
    if (n > f->file_size - 8)
        return hmoe_fail(HMOE_E_FORMAT,
                         "%s: header length %llu runs past the end of the file (%zu bytes)",
                         f->path, (unsigned long long)n, f->file_size);
    if (n > HMOE_ST_MAX_HEADER)
        return hmoe_fail(HMOE_E_FORMAT, "%s: header length %llu is over the %u-byte limit", f->path,
                         (unsigned long long)n, HMOE_ST_MAX_HEADER);
    if (n < 2) return hmoe_fail(HMOE_E_FORMAT, "%s: header is empty", f->path);
    f->header_len = n;
    f->data_base = p + 8 + n;
    f->data_size = f->file_size - 8 - n;

    /* cJSON gets a NUL-terminated private copy, so no parser path can read the mapping's end. */
    char *txt = malloc(n + 1);
    if (!txt) return hmoe_fail(HMOE_E_NOMEM, "%s: no memory for the header", f->path);
    memcpy(txt, p + 8, n);
    txt[n] = '\0';
    cJSON *root = cJSON_ParseWithLength(txt, n);
    free(txt);
    if (!root) return hmoe_fail(HMOE_E_FORMAT, "%s: header is not valid JSON", f->path);
    enum hmoe_status st = HMOE_OK;
    if (!cJSON_IsObject(root)) {
        st = hmoe_fail(HMOE_E_FORMAT, "%s: header is not a JSON object", f->path);
        goto out;
    }
    size_t name_bytes = 0;
    int count = 0;
    const cJSON *e;
    cJSON_ArrayForEach (e, root) {
        if (!e->string) {
            st = hmoe_fail(HMOE_E_FORMAT, "%s: header entry without a name", f->path);
            goto out;
        }
        if (strcmp(e->string, "__metadata__") == 0) continue;
        name_bytes += strlen(e->string) + 1;
        count++;
    }
    f->tensors = calloc(count ? (size_t)count : 1, sizeof *f->tensors);
    f->names = malloc(name_bytes ? name_bytes : 1);
    if (!f->tensors || !f->names) {
        st = hmoe_fail(HMOE_E_NOMEM, "%s: no memory for %d header entries", f->path, count);
        goto out;
    }
    char *np = f->names;
    cJSON_ArrayForEach (e, root) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        struct hmoe_st_tensor *t = &f->tensors[f->n_tensors];
        size_t len = strlen(e->string) + 1;
        memcpy(np, e->string, len);
        t->name = np;
        np += len;
        st = parse_entry(f, e, t);
        if (st != HMOE_OK) goto out;
        f->n_tensors++;
    }
    /* Duplicate keys (legal JSON for cJSON) would make lookups ambiguous: refuse them. */
    if (f->n_tensors > 1) {
        const char **tmp = malloc((size_t)f->n_tensors * sizeof *tmp);
        if (!tmp) {
            st = hmoe_fail(HMOE_E_NOMEM, "%s: no memory", f->path);
            goto out;
        }
        for (int i = 0; i < f->n_tensors; i++)
            tmp[i] = f->tensors[i].name;
        qsort(tmp, (size_t)f->n_tensors, sizeof *tmp, cmp_name);
        for (int i = 1; i < f->n_tensors; i++) {
            if (strcmp(tmp[i - 1], tmp[i]) == 0) {
                char nb[256];
                st = hmoe_fail(HMOE_E_FORMAT, "%s: tensor '%s' appears twice in the header",
                               f->path, hmoe_st_printable(tmp[i], nb, sizeof nb));
                break;
            }
        }
        free(tmp);
    }
out:
    cJSON_Delete(root);
    return st;
}

enum hmoe_status hmoe_st_open(const char *path, struct hmoe_st_file **out)
{
    *out = NULL;
    struct hmoe_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return hmoe_fail(HMOE_E_NOMEM, "%s: no memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        enum hmoe_status st = hmoe_fail(HMOE_E_IO, "%s: cannot open: %s", path, strerror(errno));
        hmoe_st_close(f);
        return st;
    }
    struct stat sb;
    enum hmoe_status st = HMOE_OK;
    if (fstat(fd, &sb) != 0) {
        st = hmoe_fail(HMOE_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        st = hmoe_fail(HMOE_E_IO, "%s: not a regular file", path);
    } else if (sb.st_size < 8) {
        st = hmoe_fail(HMOE_E_FORMAT, "%s: file is %lld bytes, too short for a safetensors header",
                       path, (long long)sb.st_size);
    } else {
        f->file_size = (size_t)sb.st_size;
        void *m = mmap(NULL, f->file_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            st = hmoe_fail(HMOE_E_IO, "%s: mmap failed: %s", path, strerror(errno));
        else
            f->map = m;
    }
    close(fd);
    if (st == HMOE_OK) st = parse_header(f);
    if (st != HMOE_OK) {
        hmoe_st_close(f);
        return st;
    }
    *out = f;
    return HMOE_OK;
}
