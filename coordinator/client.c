/* coordinator/client.c: hmoe, the client CLI. `hmoe -p "IDS"` sends a prompt (token ids for
 * now) to the coordinator in the run dir, prints each token to stdout as it arrives and ends
 * with a stats line on stderr (tokens, tok/s, time to first token). `hmoe status` shows the
 * workers, their NUMA nodes and the expert placement. Exit codes: 0 ok, 1 usage, 2 the request
 * failed, 3 the coordinator is unreachable or went silent. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "hmoe/ctrl.h"
#include "hmoe/worker_link.h"
#include "hmoe/zmq_util.h"

static volatile sig_atomic_t interrupted;
static void on_sigint(int s)
{
    (void)s;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: hmoe [generate] -p IDS [options]\n"
               "       hmoe status [options]\n\n"
               "  -p, --prompt IDS        prompt as token ids (\"1 2 3\" or \"1,2,3\")\n"
               "  -n, --n-predict N       tokens to generate (-1 = until EOS or context full) "
               "(default 16)\n"
               "      --temp N            sampling temperature (only 0 = greedy for now) "
               "(default 0)\n"
               "      --ignore-eos        keep generating past end-of-sequence tokens\n"
               "      --run-dir DIR       the cluster's run dir (env HMOE_RUN_DIR)\n"
               "      --connect EP        coordinator endpoint instead (ipc://DIR/client)\n"
               "      --timeout-ms N      give up when the coordinator is silent this long "
               "(default 120000)\n"
               "  -h, --help              this help\n\n"
               "Exit codes: 0 ok, 1 usage, 2 request failed, 3 coordinator unreachable.\n");
}

static int parse_ids(const char *s, int32_t **out, size_t *n)
{
    size_t cap = 64;
    *n = 0;
    *out = malloc(cap * sizeof **out);
    if (!*out) return 0;
    while (*s) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n') s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > INT32_MAX) return 0;
        if (*n == cap) {
            cap *= 2;
            int32_t *p = realloc(*out, cap * sizeof **out);
            if (!p) return 0;
            *out = p;
        }
        (*out)[(*n)++] = (int32_t)v;
        s = end;
    }
    return *n > 0;
}

static void print_status(const Hmoe__StatusReply *s)
{
    printf("model:   %s\n", s->model);
    if (s->model_info)
        printf("         hidden %u, %u layers, vocab %u, %u experts top-%u, context %u\n",
               s->model_info->hidden_size, s->model_info->num_layers, s->model_info->vocab_size,
               s->model_info->num_experts, s->model_info->experts_per_tok,
               s->model_info->max_ctx);
    printf("run dir: %s\n", s->run_dir);
    printf("workers:\n");
    for (size_t i = 0; i < s->n_workers; i++) {
        const Hmoe__WorkerStatus *w = s->workers[i];
        char node[32];
        if (w->role == HMOE__ROLE__ROLE_GPU) snprintf(node, sizeof node, "-");
        else snprintf(node, sizeof node, "%d%s", w->numa_node, w->bound ? "" : " (unbound)");
        printf("  %s%-3u pid %-7u %-8s node %-12s experts %-6u %8.1f MiB  restarts %u\n",
               w->role == HMOE__ROLE__ROLE_GPU ? "G" : "E", w->id, w->pid, w->state, node,
               w->n_experts_owned, (double)w->shard_bytes / 1048576.0, w->restarts);
    }
    const Hmoe__ExpertPlacement *p = s->placement;
    if (p && p->num_experts) {
        unsigned counts[258] = {0};
        for (size_t i = 0; i < p->home.len; i++) counts[p->home.data[i] == 255 ? 257 : p->home.data[i]]++;
        printf("placement (v%u, %u layers x %u experts):\n", p->version, p->num_layers,
               p->num_experts);
        printf("  G0 (resident): %u experts, %.1f MiB\n", counts[0],
               (double)p->resident_bytes / 1048576.0);
        for (int i = 1; i < 257; i++)
            if (counts[i]) printf("  E%d: %u experts\n", i - 1, counts[i]);
        for (uint32_t l = 0; l < p->num_layers && l < 4; l++) {
            printf("  layer %u:", l);
            for (uint32_t e = 0; e < p->num_experts && e < 32; e++) {
                uint8_t h = p->home.data[(size_t)l * p->num_experts + e];
                if (h == 255) {
                    printf(" (dense)");
                    break;
                }
                printf(h ? " E%d" : " G", h - 1);
            }
            printf(p->num_experts > 32 ? " ...\n" : "\n");
        }
    } else {
        printf("placement: not reported yet\n");
    }
    printf("served:  %llu requests, %llu tokens\n", (unsigned long long)s->requests,
           (unsigned long long)s->tokens_generated);
}

int main(int argc, char **argv)
{
    const char *run_dir = getenv("HMOE_RUN_DIR");
    const char *connect = NULL, *prompt = NULL;
    int n_predict = 16, ignore_eos = 0, timeout_ms = 120000, status = 0;
    float temp = 0.0f;
    int argi = 1;
    if (argc > 1 && !strcmp(argv[1], "status")) status = 1, argi = 2;
    else if (argc > 1 && !strcmp(argv[1], "generate")) argi = 2;
    enum { O_RUN = 256, O_CONN, O_TEMP, O_IGN, O_TO };
    static const struct option lo[] = {{"prompt", 1, 0, 'p'},      {"n-predict", 1, 0, 'n'},
                                       {"temp", 1, 0, O_TEMP},     {"ignore-eos", 0, 0, O_IGN},
                                       {"run-dir", 1, 0, O_RUN},   {"connect", 1, 0, O_CONN},
                                       {"timeout-ms", 1, 0, O_TO}, {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    optind = argi;
    opterr = 0;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "p:n:h", lo, NULL)) != -1) {
        switch (c) {
        case 'p': prompt = optarg; break;
        case 'n':
            n_predict = (int)strtol(optarg, &end, 10);
            if (*end || n_predict < -1) {
                fprintf(stderr, "error: -n %s: expected -1 or a count\nsee --help\n", optarg);
                return 1;
            }
            break;
        case O_TEMP:
            temp = strtof(optarg, &end);
            if (*end || temp < 0) {
                fprintf(stderr, "error: --temp %s\nsee --help\n", optarg);
                return 1;
            }
            break;
        case O_IGN: ignore_eos = 1; break;
        case O_RUN: run_dir = optarg; break;
        case O_CONN: connect = optarg; break;
        case O_TO:
            timeout_ms = (int)strtol(optarg, &end, 10);
            if (*end || timeout_ms < 1) {
                fprintf(stderr, "error: --timeout-ms %s\nsee --help\n", optarg);
                return 1;
            }
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "error: unknown or incomplete option '%s'\nsee --help\n",
                    argv[optind - 1]);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'\nsee --help\n", argv[optind]);
        return 1;
    }
    char ep[300];
    if (connect) snprintf(ep, sizeof ep, "%s", connect);
    else if (!run_dir) {
        fprintf(stderr, "error: no cluster given\nhint: pass --run-dir DIR (printed by "
                        "hmoe-launch) or set HMOE_RUN_DIR\n");
        return 1;
    } else if (hmoe_zmq_endpoint(ep, sizeof ep, run_dir, "client")) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        return 1;
    }
    if (!connect) {
        char sock[400];
        snprintf(sock, sizeof sock, "%s/client", run_dir);
        if (access(sock, F_OK) != 0) {
            fprintf(stderr, "error: no coordinator socket at %s\nhint: is the cluster running? "
                            "(deploy/hmoe-launch)\n", sock);
            return 3;
        }
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (!status && (!prompt || !parse_ids(prompt, &ids, &n_ids))) {
        fprintf(stderr, "error: %s\nhint: -p \"1 2 3\" (token ids; text prompts come with the "
                        "tokenizer)\n", prompt ? "prompt must be token ids" : "no prompt given");
        free(ids);
        return 1;
    }
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    void *ctx = hmoe_zmq_ctx_new(), *sock = NULL;
    struct hmoe_ctrl_arena a;
    if (!ctx || hmoe_ctrl_arena_init(&a, 0) ||
        hmoe_zmq_socket(ctx, ZMQ_DEALER, NULL, HMOE_CTRL_MAX_MSG, &sock) ||
        hmoe_zmq_connect(sock, ep)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        return 3;
    }
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Request r = HMOE__REQUEST__INIT;
    Hmoe__SamplingParams sp = HMOE__SAMPLING_PARAMS__INIT;
    Hmoe__StatusRequest sr = HMOE__STATUS_REQUEST__INIT;
    uint64_t req_id = ((uint64_t)getpid() << 20) ^ hmoe_now_us();
    if (status) {
        e.body_case = HMOE__ENVELOPE__BODY_STATUS_REQUEST;
        e.status_request = &sr;
    } else {
        r.request_id = req_id;
        r.tokens = ids;
        r.n_tokens = n_ids;
        r.n_predict = n_predict;
        r.prompt = (char *)"";
        sp.temperature = temp;
        sp.ignore_eos = ignore_eos;
        r.sampling = &sp;
        e.body_case = HMOE__ENVELOPE__BODY_REQUEST;
        e.request = &r;
    }
    e.seq = 1;
    int rc = 0;
    uint64_t t0 = hmoe_now_us(), t_first = 0;
    unsigned n_tok = 0;
    if (hmoe_ctrl_send(sock, NULL, 0, &e)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        rc = 3;
        goto out;
    }
    for (;;) {
        struct hmoe_ctrl_msg m;
        uint64_t waited = 0;
        enum hmoe_status st;
        /* wait in short slices so Ctrl-C is noticed */
        do {
            st = hmoe_ctrl_recv(sock, 0, 200, &a, &m);
            waited += 200;
        } while (st == HMOE_E_TIMEOUT && !interrupted && waited < (uint64_t)timeout_ms);
        if (interrupted) {
            fprintf(stderr, "\ninterrupted\n");
            rc = 130;
            break;
        }
        if (st == HMOE_E_TIMEOUT) {
            fprintf(stderr, "error: no answer from the coordinator at %s within %d ms\n"
                            "hint: is the cluster running? (hmoe status)\n", ep, timeout_ms);
            rc = 3;
            break;
        }
        if (st) {
            fprintf(stderr, "error: bad reply from the coordinator: %s\n", hmoe_err_msg());
            rc = 3;
            break;
        }
        Hmoe__Envelope *x = m.env;
        if (x->body_case == HMOE__ENVELOPE__BODY_STATUS_REPLY && status) {
            print_status(x->status_reply);
            break;
        }
        if (x->body_case == HMOE__ENVELOPE__BODY_ERROR) {
            fflush(stdout);
            fprintf(stderr, "%serror: %s\n", n_tok ? "\n" : "", x->error->message);
            if (x->error->hint[0]) fprintf(stderr, "hint: %s\n", x->error->hint);
            rc = 2;
            break;
        }
        if (x->body_case == HMOE__ENVELOPE__BODY_TOKEN && x->token->request_id == req_id) {
            if (!t_first) t_first = hmoe_now_us();
            n_tok++;
            if (x->token->text[0]) fputs(x->token->text, stdout);
            else printf("%s%d", n_tok > 1 ? " " : "", x->token->id);
            fflush(stdout);
            continue;
        }
        if (x->body_case == HMOE__ENVELOPE__BODY_DONE && x->done->request_id == req_id) {
            printf("\n");
            fflush(stdout);
            const Hmoe__Done *d = x->done;
            double gen_s = (double)d->gen_us / 1e6;
            fprintf(stderr, "# %u tokens (%s): %.2f tok/s; TTFT %.1f ms; prompt %u tokens "
                            "in %.1f ms\n",
                    d->n_gen, d->finish_reason,
                    d->n_gen > 1 && gen_s > 0 ? (double)(d->n_gen - 1) / gen_s : 0.0,
                    (double)d->ttft_us / 1e3, d->n_prompt, (double)d->prompt_us / 1e3);
            break;
        }
    }
    if (rc == 130 && n_tok) {
        double s = (double)(hmoe_now_us() - t0) / 1e6;
        fprintf(stderr, "# %u tokens (interrupted): %.2f tok/s; TTFT %.1f ms\n", n_tok,
                s > 0 ? n_tok / s : 0.0, t_first ? (double)(t_first - t0) / 1e3 : 0.0);
    }
out:
    hmoe_zmq_close(sock);
    hmoe_zmq_ctx_term(ctx);
    hmoe_ctrl_arena_free(&a);
    free(ids);
    return rc;
}
