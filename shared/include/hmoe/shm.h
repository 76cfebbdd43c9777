/* hmoe/shm.h: named POSIX shared-memory regions. The coordinator creates them (mode 0600,
 * O_EXCL, name "/hmoe.<run-id>.<region>") and unlinks them at exit; workers attach and validate
 * the header {magic, version, nbytes, layout} before touching anything else. Data starts at a
 * 4 KiB-aligned offset after the header. Not thread-safe per object. */
#ifndef HMOE_SHM_H
#define HMOE_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "hmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HMOE_SHM_MAGIC 0x31304d53454f4d48ull /* "HMOESM01" little-endian */
#define HMOE_SHM_VERSION 1u
#define HMOE_SHM_HDR_NBYTES 4096u /* header page; data follows */
#define HMOE_SHM_NAME_MAX 128

struct hmoe_shm_hdr {
    uint64_t magic;    /* HMOE_SHM_MAGIC, written last by the creator */
    uint32_t version;  /* HMOE_SHM_VERSION */
    uint32_t layout;   /* what the data holds (a module's HMOE_*_LAYOUT tag) */
    uint64_t nbytes;   /* whole mapping, header included; equals the object's size */
    uint64_t data_off; /* HMOE_SHM_HDR_NBYTES */
    uint64_t data_nbytes;
    uint32_t creator_pid;
    uint32_t pad;
    char name[HMOE_SHM_NAME_MAX];
};

struct hmoe_shm {
    char name[HMOE_SHM_NAME_MAX];
    void *base;    /* mapping (header) */
    size_t nbytes; /* mapping size */
    void *data;    /* base + data_off */
    size_t data_nbytes;
    int owner; /* created here: close() unlinks */
};

/* Writes "/hmoe.<run_id>.<region>" to buf. run_id and region: [A-Za-z0-9_-], 1..40 chars.
 * Returns HMOE_E_INVAL otherwise. */
enum hmoe_status hmoe_shm_name(char *buf, size_t n, const char *run_id, const char *region);

/* Creates (O_EXCL, 0600), sizes and maps a region with data_nbytes of zeroed data and writes
 * the header. HMOE_E_IO with the errno text on failure (nothing is left behind). */
enum hmoe_status hmoe_shm_create(const char *name, uint32_t layout, size_t data_nbytes,
                                 struct hmoe_shm *out);

/* Attaches an existing region read-write and validates it: the object is at least a header,
 * magic, version and layout match, header nbytes equals the object size, data_off and
 * data_nbytes lie inside it, and data_nbytes >= min_data_nbytes. HMOE_E_IO when it cannot be
 * opened, HMOE_E_PROTO when the header is wrong (the message says which field). */
enum hmoe_status hmoe_shm_attach(const char *name, uint32_t layout, size_t min_data_nbytes,
                                 struct hmoe_shm *out);

/* Unmaps; the owner also unlinks the name. A zeroed struct is a no-op. */
void hmoe_shm_close(struct hmoe_shm *s);

/* Unlinks every /dev/shm/hmoe.<run_id>.* object (leftovers of a crashed run). Returns the
 * number removed, or -1 when /dev/shm cannot be read. */
int hmoe_shm_unlink_run(const char *run_id);

/* Unlinks /dev/shm objects "hmoe.<pid>-*" whose creating coordinator <pid> no longer exists
 * (left by a coordinator that was SIGKILLed). Returns the number removed. */
int hmoe_shm_sweep_stale(void);

/* Counts /dev/shm objects whose name starts with "hmoe.<run_id>." (run_id NULL: "hmoe."). */
int hmoe_shm_count_run(const char *run_id);

#ifdef __cplusplus
}
#endif
#endif
