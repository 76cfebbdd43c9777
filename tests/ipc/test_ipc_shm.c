/* tests/ipc/test_ipc_shm.c: shm regions: create is 0600 and exclusive, attach validates every
 * header field (magic, version, layout, size, data range), the expert-queue geometry is
 * checked, and close unlinks so nothing is left in /dev/shm. */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hmoe/shm.h"
#include "hmoe/xq.h"
#include "hmoe_test.h"

static char run_id[32];

static void corrupt(const char *name, size_t off, const void *v, size_t n)
{
    int fd = shm_open(name, O_RDWR, 0);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, v, n, (off_t)off) == (ssize_t)n);
    close(fd);
}

int main(void)
{
    snprintf(run_id, sizeof run_id, "t%d", (int)getpid());
    char name[HMOE_SHM_NAME_MAX];
    CHECK(hmoe_shm_name(name, sizeof name, run_id, "e0") == HMOE_OK);
    CHECK(strncmp(name, "/hmoe.", 6) == 0);
    CHECK(hmoe_shm_name(name, sizeof name, "bad/id", "e0") == HMOE_E_INVAL);
    CHECK(hmoe_shm_name(name, sizeof name, run_id, "") == HMOE_E_INVAL);
    CHECK(hmoe_shm_name(name, sizeof name, run_id, "e0") == HMOE_OK);

    struct hmoe_shm s, a;
    CHECK(hmoe_shm_create(name, 0x1234, 10000, &s) == HMOE_OK);
    CHECK(s.data_nbytes >= 10000 && s.owner);
    struct hmoe_shm dup;
    CHECK(hmoe_shm_create(name, 0x1234, 100, &dup) == HMOE_E_IO); /* O_EXCL */
    char path[256];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(hmoe_shm_count_run(run_id) == 1);

    /* good attach sees the creator's data */
    ((char *)s.data)[5] = 'x';
    CHECK(hmoe_shm_attach(name, 0x1234, 10000, &a) == HMOE_OK);
    CHECK(((char *)a.data)[5] == 'x' && !a.owner);
    hmoe_shm_close(&a);
    /* wrong layout, too little data */
    CHECK(hmoe_shm_attach(name, 0x9999, 0, &a) == HMOE_E_PROTO);
    CHECK(strstr(hmoe_err_msg(), "layout") != NULL);
    CHECK(hmoe_shm_attach(name, 0x1234, 1u << 20, &a) == HMOE_E_PROTO);
    /* missing region */
    CHECK(hmoe_shm_attach("/hmoe.none.zz", 0x1234, 0, &a) == HMOE_E_IO);

    /* corrupt each header field in turn */
    struct hmoe_shm_hdr h = *(struct hmoe_shm_hdr *)s.base;
    uint64_t bad64 = 0xdeadbeef;
    uint32_t bad32 = 99;
    corrupt(name, offsetof(struct hmoe_shm_hdr, magic), &bad64, 8);
    CHECK(hmoe_shm_attach(name, 0x1234, 0, &a) == HMOE_E_PROTO);
    CHECK(strstr(hmoe_err_msg(), "magic") != NULL);
    corrupt(name, offsetof(struct hmoe_shm_hdr, magic), &h.magic, 8);
    corrupt(name, offsetof(struct hmoe_shm_hdr, version), &bad32, 4);
    CHECK(hmoe_shm_attach(name, 0x1234, 0, &a) == HMOE_E_PROTO);
    CHECK(strstr(hmoe_err_msg(), "version") != NULL);
    corrupt(name, offsetof(struct hmoe_shm_hdr, version), &h.version, 4);
    corrupt(name, offsetof(struct hmoe_shm_hdr, nbytes), &bad64, 8);
    CHECK(hmoe_shm_attach(name, 0x1234, 0, &a) == HMOE_E_PROTO);
    corrupt(name, offsetof(struct hmoe_shm_hdr, nbytes), &h.nbytes, 8);
    uint64_t huge = 1ull << 62;
    corrupt(name, offsetof(struct hmoe_shm_hdr, data_nbytes), &huge, 8);
    CHECK(hmoe_shm_attach(name, 0x1234, 0, &a) == HMOE_E_PROTO);
    corrupt(name, offsetof(struct hmoe_shm_hdr, data_nbytes), &h.data_nbytes, 8);
    corrupt(name, offsetof(struct hmoe_shm_hdr, data_off), &huge, 8);
    CHECK(hmoe_shm_attach(name, 0x1234, 0, &a) == HMOE_E_PROTO);
    corrupt(name, offsetof(struct hmoe_shm_hdr, data_off), &h.data_off, 8);
    CHECK(hmoe_shm_attach(name, 0x1234, 0, &a) == HMOE_OK);
    hmoe_shm_close(&a);
    /* truncated object: size no longer matches the header */
    {
        int fd = shm_open(name, O_RDWR, 0);
        CHECK(fd >= 0 && ftruncate(fd, 4096) == 0);
        close(fd);
        CHECK(hmoe_shm_attach(name, 0x1234, 0, &a) == HMOE_E_PROTO);
        fd = shm_open(name, O_RDWR, 0);
        CHECK(fd >= 0 && ftruncate(fd, 100) == 0);
        close(fd);
        CHECK(hmoe_shm_attach(name, 0x1234, 0, &a) == HMOE_E_PROTO);
    }
    hmoe_shm_close(&s); /* unmaps what is still mapped and unlinks */
    CHECK(hmoe_shm_count_run(run_id) == 0);

    /* expert queue layout and validation */
    size_t need = hmoe_xq_shm_size(64, 4, 8);
    CHECK(hmoe_shm_create(name, HMOE_XQ_LAYOUT, need, &s) == HMOE_OK);
    struct hmoe_xq q, q2;
    CHECK(hmoe_xq_shm_init(&s, 64, 4, 8, &q) == HMOE_OK);
    CHECK(hmoe_xq_shm_init(&s, 64, 4000, 8, &q2) == HMOE_E_INVAL);
    CHECK(hmoe_xq_shm_init(&s, 64, 4, 8, &q) == HMOE_OK);
    CHECK(hmoe_shm_attach(name, HMOE_XQ_LAYOUT, need, &a) == HMOE_OK);
    CHECK(hmoe_xq_open(&a, 64, &q2) == HMOE_OK);
    q.x[3] = 2.5f;
    CHECK(q2.x[3] == 2.5f && q2.ctl->cap_pairs == 8);
    CHECK(hmoe_xq_open(&a, 128, &q2) == HMOE_E_PROTO); /* other model */
    q.ctl->cap_tok = 1000000;                          /* geometry larger than the region */
    CHECK(hmoe_xq_open(&a, 64, &q2) == HMOE_E_PROTO);
    q.ctl->cap_tok = 4;
    q.ctl->out_off += 64; /* offsets that do not match */
    CHECK(hmoe_xq_open(&a, 64, &q2) == HMOE_E_PROTO);
    hmoe_shm_close(&a);
    /* a leftover of a crashed run is swept by run id */
    struct hmoe_shm leak;
    char name2[HMOE_SHM_NAME_MAX];
    CHECK(hmoe_shm_name(name2, sizeof name2, run_id, "logits") == HMOE_OK);
    CHECK(hmoe_shm_create(name2, 1, 10, &leak) == HMOE_OK);
    munmap(leak.base, leak.nbytes);
    CHECK(hmoe_shm_count_run(run_id) == 2);
    CHECK(hmoe_shm_unlink_run(run_id) == 2);
    CHECK(hmoe_shm_count_run(run_id) == 0);
    s.owner = 0;
    hmoe_shm_close(&s);

    /* objects of a coordinator that no longer exists are swept; a live one's are kept */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char dead_id[32], live_id[32];
    snprintf(dead_id, sizeof dead_id, "%d-ab", (int)dead);
    snprintf(live_id, sizeof live_id, "%d-cd", (int)getpid());
    struct hmoe_shm s1, s2;
    CHECK(hmoe_shm_name(name, sizeof name, dead_id, "e0") == HMOE_OK);
    CHECK(hmoe_shm_create(name, 1, 10, &s1) == HMOE_OK);
    CHECK(hmoe_shm_name(name2, sizeof name2, live_id, "e0") == HMOE_OK);
    CHECK(hmoe_shm_create(name2, 1, 10, &s2) == HMOE_OK);
    CHECK(hmoe_shm_sweep_stale() >= 1);
    CHECK(hmoe_shm_count_run(dead_id) == 0);
    CHECK(hmoe_shm_count_run(live_id) == 1);
    s1.owner = 0;
    hmoe_shm_close(&s1);
    hmoe_shm_close(&s2);
    CHECK(hmoe_shm_count_run(live_id) == 0);
    TEST_DONE();
}
