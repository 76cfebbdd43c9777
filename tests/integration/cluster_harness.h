/* tests/integration/cluster_harness.h: a real cluster for a test (header-only, one test per
 * program): hmoe-coordinator started in a fresh run dir with its stdout on a pipe until it
 * prints its ready line, a client socket on the run dir, and the stop by SIGTERM that checks the
 * coordinator exits 0 and leaves no /dev/shm object (strict: also no run dir and no worker).
 * Used by tests/integration/cluster_test.c and tests/gpu/cluster_cuda_test.c. */
#ifndef HMOE_TEST_CLUSTER_HARNESS_H
#define HMOE_TEST_CLUSTER_HARNESS_H

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "hmoe/ctrl.h"
#include "hmoe/worker_link.h"
#include "hmoe/zmq_util.h"
#include "hmoe_test.h"

extern char **environ;

static char base_dir[64], run_dir[128];
static pid_t coord_pid;
static int coord_out = -1;
static void *zctx;

/* Starts `hmoe-coordinator -m model --run-dir RUN extra...` (extra NULL-terminated, at most 40);
 * returns 1 once it printed its ready line within ready_ms. */
static int cluster_spawn(const char *model, const char *const *extra, int ready_ms)
{
    snprintf(base_dir, sizeof base_dir, "/tmp/hmoe-ct-XXXXXX");
    if (!mkdtemp(base_dir)) return 0;
    snprintf(run_dir, sizeof run_dir, "%s/run", base_dir);
    const char *bin = HMOE_BIN_DIR "/hmoe-coordinator";
    const char *argv[48] = {bin, "-m", model, "--run-dir", run_dir};
    int n = 5;
    for (int i = 0; extra[i] && n < 47; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    int pfd[2];
    if (pipe(pfd) != 0) return 0;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    int rc = posix_spawn(&coord_pid, bin, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        fprintf(stderr, "spawn %s: %s\n", bin, strerror(rc));
        return 0;
    }
    coord_out = pfd[0];
    char buf[4096];
    size_t got = 0;
    uint64_t end = hmoe_now_ms() + (uint64_t)ready_ms;
    while (hmoe_now_ms() < end) {
        struct pollfd p = {coord_out, POLLIN, 0};
        if (poll(&p, 1, 200) > 0) {
            ssize_t r = read(coord_out, buf + got, sizeof buf - 1 - got);
            if (r <= 0) break; /* the coordinator exited */
            got += (size_t)r;
            buf[got] = 0;
            if (strstr(buf, "ready: listening on ")) return 1;
        }
    }
    fprintf(stderr, "coordinator never became ready; stdout: %.*s\n", (int)got, buf);
    return 0;
}

static int count_shm_of_coord(void)
{
    char prefix[48];
    snprintf(prefix, sizeof prefix, "hmoe.%d-", (int)coord_pid);
    DIR *d = opendir("/dev/shm");
    int k = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (!strncmp(de->d_name, prefix, strlen(prefix))) k++;
    if (d) closedir(d);
    return k;
}

static int count_children_of(pid_t parent)
{
    DIR *d = opendir("/proc");
    int k = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char p[300], line[512];
        snprintf(p, sizeof p, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(p, "r");
        if (!f) continue;
        if (fgets(line, sizeof line, f)) {
            char *rp = strrchr(line, ')');
            int ppid = 0;
            char st;
            if (rp && sscanf(rp + 1, " %c %d", &st, &ppid) == 2 && ppid == parent) k++;
        }
        fclose(f);
    }
    if (d) closedir(d);
    return k;
}

/* SIGTERM, then: exit status 0 within 15 s and no /dev/shm object left; strict: the cluster had
 * shm objects before, the run dir is gone and no worker is left. */
static void cluster_stop(int strict)
{
    if (coord_pid <= 0) return;
    if (strict) CHECK(count_shm_of_coord() > 0);
    kill(coord_pid, SIGTERM);
    int status = -1;
    uint64_t end = hmoe_now_ms() + 15000;
    pid_t r = 0;
    while (hmoe_now_ms() < end && (r = waitpid(coord_pid, &status, WNOHANG)) == 0)
        usleep(20000);
    if (r == 0) {
        kill(coord_pid, SIGKILL);
        waitpid(coord_pid, &status, 0);
        CHECKF(0, "coordinator did not stop within 15 s");
    } else {
        CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "coordinator status 0x%x", status);
    }
    CHECKF(count_shm_of_coord() == 0, "%d shm objects left", count_shm_of_coord());
    if (strict) {
        struct stat st;
        CHECKF(stat(run_dir, &st) != 0, "run dir %s left behind", run_dir);
        usleep(100000);
        CHECKF(count_children_of(coord_pid) == 0, "workers left"); /* reparented would be gone */
    }
    rmdir(base_dir);
    close(coord_out);
    coord_pid = 0;
}

/* A DEALER socket on the coordinator's client endpoint (NULL on error). */
static void *client_open(void)
{
    char ep[300];
    void *s = NULL;
    if (hmoe_zmq_endpoint(ep, sizeof ep, run_dir, "client") ||
        hmoe_zmq_socket(zctx, ZMQ_DEALER, NULL, HMOE_CTRL_MAX_MSG, &s) || hmoe_zmq_connect(s, ep))
        return NULL;
    return s;
}

/* Sends a greedy request (ignore EOS) for n_predict tokens after the token prompt on s. */
static enum hmoe_status client_send_greedy(void *s, uint64_t id, const int32_t *prompt, int np,
                                           int n_predict)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Request r = HMOE__REQUEST__INIT;
    Hmoe__SamplingParams sp = HMOE__SAMPLING_PARAMS__INIT;
    sp.ignore_eos = 1;
    r.request_id = id;
    r.tokens = (int32_t *)prompt;
    r.n_tokens = (size_t)np;
    r.n_predict = n_predict;
    r.prompt = (char *)"";
    r.sampling = &sp;
    e.body_case = HMOE__ENVELOPE__BODY_REQUEST;
    e.request = &r;
    return hmoe_ctrl_send(s, NULL, 0, &e);
}

#endif
