/* tests/fakes/fake_expert.c: hmoe-fake-expert, a stand-in for hmoe-cpu-worker that speaks the
 * worker protocol (Hello, WorkerConfig, Ready, heartbeats, Shutdown) and serves its expert queue
 * badly on purpose, chosen by HMOE_FAKE_MODE: "hang" never answers a hand-off (the GPU worker
 * must time out and the coordinator must replace it), "error" answers every hand-off with a
 * failure status and message. Used by the cluster tests through --cpu-worker-bin. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "hmoe/log.h"
#include "hmoe/shm.h"
#include "hmoe/worker_link.h"
#include "hmoe/xq.h"

int main(int argc, char **argv)
{
    struct hmoe_worker_args a;
    if (hmoe_worker_args_parse(argc, argv, &a) != HMOE_OK) {
        fprintf(stderr, "hmoe-fake-expert: %s\n", hmoe_err_msg());
        return 1;
    }
    const char *mode = getenv("HMOE_FAKE_MODE");
    if (!mode) mode = "hang";
    char role[16];
    snprintf(role, sizeof role, "E%d", a.id);
    hmoe_log_init(role, HMOE_LOG_LVL_INFO, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    static struct hmoe_worker_link link;
    if (hmoe_worker_link_open(&link, a.ctrl, role, HMOE__ROLE__ROLE_CPU_EXPERT, (uint32_t)a.id))
        return 2;
    struct hmoe_shm shm = {0};
    struct hmoe_xq q = {0};
    uint32_t last = 0;
    int ready = 0;
    for (;;) {
        struct hmoe_ctrl_msg m;
        enum hmoe_status st = hmoe_worker_link_poll(&link, 10, &m);
        if (st == HMOE_E_PEER_DEAD) break;
        if (st == HMOE_OK && m.env->body_case == HMOE__ENVELOPE__BODY_SHUTDOWN) break;
        if (st == HMOE_OK && m.env->body_case == HMOE__ENVELOPE__BODY_CONFIG && !ready) {
            const Hmoe__WorkerConfig *c = m.env->config;
            if (c->n_regions != 1 || hmoe_shm_attach(c->regions[0], HMOE_XQ_LAYOUT, 0, &shm) ||
                hmoe_xq_open(&shm, 0, &q))
                return 2;
            last = hmoe_doorbell_read(&q.ctl->req);
            atomic_store(&q.ctl->alive, 1);
            Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
            Hmoe__Ready r = HMOE__READY__INIT;
            r.numa_node = -1;
            r.attached = 1;
            e.body_case = HMOE__ENVELOPE__BODY_READY;
            e.ready = &r;
            hmoe_worker_link_send(&link, &e);
            ready = 1;
            HMOE_LOG_INFO("fake expert worker ready (mode %s)", mode);
        }
        if (!ready) continue;
        uint32_t now = hmoe_doorbell_read(&q.ctl->req);
        if (now == last) continue;
        last = now;
        if (!strcmp(mode, "error")) {
            q.ctl->status = HMOE_E_INVAL;
            snprintf(q.ctl->error, sizeof q.ctl->error, "fake expert failure (layer %d)",
                     q.ctl->layer);
            hmoe_doorbell_set(&q.ctl->resp, now);
        } /* "hang": never answer, but keep the control link alive */
    }
    hmoe_shm_close(&shm);
    hmoe_worker_link_close(&link);
    return 0;
}
