/* tests/ipc/test_ipc_doorbell.c: doorbells across processes (fork): ping-pong wakes with and
 * without spinning, a wait times out when nobody rings, and a waiter whose peer is killed ends
 * with PEER_DEAD as soon as the supervisor clears `alive`, not after the timeout. */
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hmoe/doorbell.h"
#include "hmoe_test.h"

struct shared {
    struct hmoe_doorbell ping, pong;
    _Atomic uint32_t alive;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void pingpong(struct shared *sh, uint32_t spin_us, int rounds)
{
    uint32_t base = hmoe_doorbell_read(&sh->ping);
    pid_t pid = fork();
    if (pid == 0) {
        struct hmoe_doorbell_wait w = {spin_us, 5000, NULL};
        uint32_t seen = base;
        for (int i = 0; i < rounds; i++) {
            if (hmoe_doorbell_wait_change(&sh->ping, seen, &seen, &w) != HMOE_OK) _exit(3);
            hmoe_doorbell_set(&sh->pong, seen);
        }
        _exit(0);
    }
    struct hmoe_doorbell_wait w = {spin_us, 5000, NULL};
    int ok = 1;
    for (int i = 0; i < rounds && ok; i++) {
        uint32_t r = hmoe_doorbell_ring(&sh->ping);
        ok = hmoe_doorbell_wait_for(&sh->pong, r, &w) == HMOE_OK;
    }
    CHECKF(ok, "spin %u: %s", spin_us, hmoe_err_msg());
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    struct shared *sh =
        mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);

    pingpong(sh, 0, 200);  /* futex only */
    pingpong(sh, 50, 200); /* spin then futex */

    /* timeout when nobody rings */
    struct hmoe_doorbell_wait w = {10, 150, NULL};
    double t0 = now_ms();
    CHECK(hmoe_doorbell_wait_for(&sh->pong, 12345, &w) == HMOE_E_TIMEOUT);
    double dt = now_ms() - t0;
    CHECKF(dt >= 140 && dt < 1000, "timeout took %.1f ms", dt);

    /* dead peer: the child would answer after 10 s; we SIGKILL it and the "supervisor"
     * clears alive + kicks; the waiter must return PEER_DEAD well before its 5 s timeout */
    atomic_store(&sh->alive, 1);
    pid_t pid = fork();
    if (pid == 0) {
        sleep(10);
        hmoe_doorbell_ring(&sh->pong);
        _exit(0);
    }
    pid_t sup = fork();
    if (sup == 0) {
        usleep(100000);
        kill(pid, SIGKILL);
        atomic_store(&sh->alive, 0);
        hmoe_doorbell_kick(&sh->pong);
        _exit(0);
    }
    struct hmoe_doorbell_wait wd = {20, 5000, &sh->alive};
    t0 = now_ms();
    enum hmoe_status st =
        hmoe_doorbell_wait_change(&sh->pong, hmoe_doorbell_read(&sh->pong), NULL, &wd);
    dt = now_ms() - t0;
    CHECKF(st == HMOE_E_PEER_DEAD, "status %d", st);
    CHECKF(dt < 1000, "dead peer noticed after %.1f ms", dt);
    int status;
    waitpid(pid, &status, 0);
    waitpid(sup, &status, 0);
    munmap(sh, sizeof *sh);
    TEST_DONE();
}
