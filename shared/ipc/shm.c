/* shared/ipc/shm.c: POSIX shared-memory regions with a validated header (see hmoe/shm.h). */
#include "hmoe/shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int ident_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 40) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

enum hmoe_status hmoe_shm_name(char *buf, size_t n, const char *run_id, const char *region)
{
    if (!ident_ok(run_id) || !ident_ok(region))
        return hmoe_fail(HMOE_E_INVAL,
                         "shm name: run id '%s' / region '%s' must be 1-40 of "
                         "[A-Za-z0-9_-]",
                         run_id ? run_id : "", region ? region : "");
    int w = snprintf(buf, n, "/hmoe.%s.%s", run_id, region);
    if (w < 0 || (size_t)w >= n) return hmoe_fail(HMOE_E_INVAL, "shm name too long");
    return HMOE_OK;
}

static int name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n >= 2 && n < HMOE_SHM_NAME_MAX && name[0] == '/' && !strchr(name + 1, '/');
}

enum hmoe_status hmoe_shm_create(const char *name, uint32_t layout, size_t data_nbytes,
                                 struct hmoe_shm *out)
{
    memset(out, 0, sizeof *out);
    if (!name_ok(name)) return hmoe_fail(HMOE_E_INVAL, "shm: bad region name '%s'", name);
    size_t page = 4096;
    size_t total = HMOE_SHM_HDR_NBYTES + ((data_nbytes + page - 1) / page) * page;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return hmoe_fail(HMOE_E_IO, "shm_open(%s): %s", name, strerror(errno));
    /* umask may have narrowed it; never wider than 0600 */
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)total) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(name);
        return hmoe_fail(HMOE_E_IO, "shm %s: sizing to %zu bytes: %s", name, total, strerror(e));
    }
    void *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (base == MAP_FAILED) {
        shm_unlink(name);
        return hmoe_fail(HMOE_E_IO, "mmap shm %s (%zu bytes): %s", name, total, strerror(e));
    }
    struct hmoe_shm_hdr *h = base;
    h->version = HMOE_SHM_VERSION;
    h->layout = layout;
    h->nbytes = total;
    h->data_off = HMOE_SHM_HDR_NBYTES;
    h->data_nbytes = total - HMOE_SHM_HDR_NBYTES;
    h->creator_pid = (uint32_t)getpid();
    snprintf(h->name, sizeof h->name, "%s", name);
    /* magic last: an attacher that sees it sees a complete header */
    atomic_thread_fence(memory_order_release);
    __atomic_store_n(&h->magic, HMOE_SHM_MAGIC, __ATOMIC_RELEASE);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->base = base;
    out->nbytes = total;
    out->data = (char *)base + HMOE_SHM_HDR_NBYTES;
    out->data_nbytes = total - HMOE_SHM_HDR_NBYTES;
    out->owner = 1;
    return HMOE_OK;
}

enum hmoe_status hmoe_shm_attach(const char *name, uint32_t layout, size_t min_data_nbytes,
                                 struct hmoe_shm *out)
{
    memset(out, 0, sizeof *out);
    if (!name_ok(name)) return hmoe_fail(HMOE_E_INVAL, "shm: bad region name '%s'", name);
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) return hmoe_fail(HMOE_E_IO, "shm_open(%s): %s", name, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return hmoe_fail(HMOE_E_IO, "fstat shm %s: %s", name, strerror(e));
    }
    if (st.st_size < (off_t)HMOE_SHM_HDR_NBYTES) {
        close(fd);
        return hmoe_fail(HMOE_E_PROTO, "shm %s: %lld bytes, smaller than its header", name,
                         (long long)st.st_size);
    }
    size_t total = (size_t)st.st_size;
    void *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (base == MAP_FAILED) return hmoe_fail(HMOE_E_IO, "mmap shm %s: %s", name, strerror(e));
    const struct hmoe_shm_hdr *h = base;
    enum hmoe_status bad = HMOE_OK;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != HMOE_SHM_MAGIC)
        bad = hmoe_fail(HMOE_E_PROTO, "shm %s: bad magic 0x%016llx", name,
                        (unsigned long long)h->magic);
    else if (h->version != HMOE_SHM_VERSION)
        bad = hmoe_fail(HMOE_E_PROTO, "shm %s: version %u, expected %u", name, h->version,
                        HMOE_SHM_VERSION);
    else if (h->layout != layout)
        bad = hmoe_fail(HMOE_E_PROTO, "shm %s: layout 0x%08x, expected 0x%08x", name, h->layout,
                        layout);
    else if (h->nbytes != total)
        bad = hmoe_fail(HMOE_E_PROTO, "shm %s: header says %llu bytes, object has %zu", name,
                        (unsigned long long)h->nbytes, total);
    else if (h->data_off < sizeof *h || h->data_off > total || h->data_nbytes > total - h->data_off)
        bad = hmoe_fail(HMOE_E_PROTO, "shm %s: data range [%llu, +%llu) outside %zu bytes", name,
                        (unsigned long long)h->data_off, (unsigned long long)h->data_nbytes, total);
    else if (h->data_nbytes < min_data_nbytes)
        bad = hmoe_fail(HMOE_E_PROTO, "shm %s: %llu data bytes, need %zu", name,
                        (unsigned long long)h->data_nbytes, min_data_nbytes);
    if (bad != HMOE_OK) {
        munmap(base, total);
        return bad;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    out->base = base;
    out->nbytes = total;
    out->data = (char *)base + h->data_off;
    out->data_nbytes = h->data_nbytes;
    out->owner = 0;
    return HMOE_OK;
}

void hmoe_shm_close(struct hmoe_shm *s)
{
    if (!s || !s->base) return;
    munmap(s->base, s->nbytes);
    if (s->owner) shm_unlink(s->name);
    memset(s, 0, sizeof *s);
}

static int scan_run(const char *run_id, int do_unlink)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "hmoe.%s%s", run_id ? run_id : "", run_id ? "." : "");
    DIR *d = opendir("/dev/shm");
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0) continue;
        if (do_unlink) {
            char nm[300];
            snprintf(nm, sizeof nm, "/%s", de->d_name);
            if (shm_unlink(nm) == 0) n++;
        } else {
            n++;
        }
    }
    closedir(d);
    return n;
}

int hmoe_shm_unlink_run(const char *run_id)
{
    if (!ident_ok(run_id)) return 0;
    return scan_run(run_id, 1);
}

int hmoe_shm_sweep_stale(void)
{
    DIR *d = opendir("/dev/shm");
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "hmoe.", 5) != 0) continue;
        char *end;
        long pid = strtol(de->d_name + 5, &end, 10);
        if (end == de->d_name + 5 || *end != '-' || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive, or not ours */
        char nm[300];
        snprintf(nm, sizeof nm, "/%s", de->d_name);
        if (shm_unlink(nm) == 0) n++;
    }
    closedir(d);
    return n;
}

int hmoe_shm_count_run(const char *run_id)
{
    return scan_run(run_id, 0);
}
