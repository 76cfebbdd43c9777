/* coordinator/client.c: hmoe, the client CLI. `hmoe -p TEXT` (or `--tokens "1 2 3"`) sends a
 * prompt to the coordinator in the run dir, prints each token's text (or id) to stdout as it
 * arrives and ends with a stats line on stderr (tokens, tok/s, time to first token). Sampling
 * and generation flags come from helper tok's option table (hmoe/text.h) when it is built. `hmoe
 * status` shows the workers, their NUMA nodes and the expert placement. Exit codes: 0 ok, 1 usage,
 * 2 the request failed, 3 the coordinator is unreachable or went silent. */
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
#ifdef HMOE_HAVE_TEXT
#include "hmoe/text.h"
#endif

static volatile sig_atomic_t interrupted;
static void on_sigint(int s)
{
    (void)s;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: hmoe [run|generate] (-p TEXT | --tokens IDS) [options]\n"
               "       hmoe chat [options]      (also -cnv: interactive, history kept here)\n"
               "       hmoe status [options]\n\n"
               "Cluster:\n"
               "      --tokens IDS        prompt as token ids (\"1 2 3\" or \"1,2,3\"); greedy "
               "unless sampling flags are given\n"
               "      --run-dir DIR       the cluster's run dir (env HMOE_RUN_DIR)\n"
               "      --connect EP        coordinator endpoint instead (ipc://DIR/client)\n"
               "      --timeout-ms N      give up when the coordinator is silent this long "
               "(default 120000)\n"
               "  -h, --help              this help\n\n");
#ifdef HMOE_HAVE_TEXT
    hmoe_text_opts_help(f);
#else
    fprintf(f, "  -p, --prompt TEXT  -n, --n-predict N  --ignore-eos  --temp N (0 only)\n");
#endif
    fprintf(f, "\nText prompts use the sampling defaults of the model's generation_config.json;"
               "\ntoken-id prompts are greedy unless sampling flags are given.\n"
               "Exit codes: 0 ok, 1 usage, 2 request failed, 3 coordinator unreachable.\n");
}

static int parse_ids(const char *s, int32_t **out, size_t *n)
{
    size_t cap = 64;
    *n = 0;
    *out = malloc(cap * sizeof **out);
    if (!*out) return 0;
    while (*s) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n')
            s++;
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
               s->model_info->num_experts, s->model_info->experts_per_tok, s->model_info->max_ctx);
    printf("run dir: %s\n", s->run_dir);
    printf("workers:\n");
    for (size_t i = 0; i < s->n_workers; i++) {
        const Hmoe__WorkerStatus *w = s->workers[i];
        char node[32];
        if (w->role == HMOE__ROLE__ROLE_GPU)
            snprintf(node, sizeof node, "-");
        else
            snprintf(node, sizeof node, "%d%s", w->numa_node, w->bound ? "" : " (unbound)");
        printf("  %s%-3u pid %-7u %-8s node %-12s experts %-6u %8.1f MiB  restarts %u\n",
               w->role == HMOE__ROLE__ROLE_GPU ? "G" : "E", w->id, w->pid, w->state, node,
               w->n_experts_owned, (double)w->shard_bytes / 1048576.0, w->restarts);
        if (w->role == HMOE__ROLE__ROLE_GPU)
            printf("        %llu steps, %.1f ms computing, %.1f ms waiting for expert workers, "
                   "%llu pairs offloaded\n",
                   (unsigned long long)w->requests, (double)w->busy_us / 1e3,
                   (double)w->wait_us / 1e3, (unsigned long long)w->pairs);
        else
            printf("        %llu hand-offs, %llu pairs, %.1f ms computing, RSS %.1f MiB\n",
                   (unsigned long long)w->requests, (unsigned long long)w->pairs,
                   (double)w->busy_us / 1e3, (double)w->rss_bytes / 1048576.0);
    }
    const Hmoe__ExpertPlacement *p = s->placement;
    if (p && p->num_experts) {
        unsigned counts[258] = {0};
        for (size_t i = 0; i < p->home.len; i++)
            counts[p->home.data[i] == 255 ? 257 : p->home.data[i]]++;
        printf("placement (v%u, %u layers x %u experts):\n", p->version, p->num_layers,
               p->num_experts);
        if (p->backend && !strcmp(p->backend, "cuda"))
            printf("  G0 (resident in VRAM, backend cuda): %u experts, %.1f MiB; VRAM %.2f of "
                   "%.2f GiB budget used\n",
                   counts[0], (double)p->resident_bytes / 1048576.0,
                   (double)p->vram_used / 1073741824.0, (double)p->vram_budget / 1073741824.0);
        else
            printf("  G0 (resident, backend cpu): %u experts, %.1f MiB\n", counts[0],
                   (double)p->resident_bytes / 1048576.0);
        if (counts[254]) printf("  G0 host CPU: %u experts\n", counts[254]);
        for (int i = 1; i < 254; i++)
            if (counts[i]) printf("  E%d: %u experts\n", i - 1, counts[i]);
        for (uint32_t l = 0; l < p->num_layers && l < 4; l++) {
            printf("  layer %u:", l);
            for (uint32_t e = 0; e < p->num_experts && e < 32; e++) {
                uint8_t h = p->home.data[(size_t)l * p->num_experts + e];
                if (h == 255) {
                    printf(" (dense)");
                    break;
                }
                if (h == 254)
                    printf(" H");
                else
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

struct strbuf {
    char *b;
    size_t n, cap;
};

static void sb_add(struct strbuf *sb, const char *s, size_t n)
{
    if (!sb || !n) return;
    if (sb->n + n + 1 > sb->cap) {
        size_t cap = (sb->n + n + 1) * 2;
        char *p = realloc(sb->b, cap);
        if (!p) return;
        sb->b = p;
        sb->cap = cap;
    }
    memcpy(sb->b + sb->n, s, n);
    sb->n += n;
    sb->b[sb->n] = 0;
}

/* Sends one envelope on a fresh DEALER and handles the answer stream: tokens to stdout (text,
 * or ids when !text_mode), a Done stats line or an Error on stderr, a StatusReply printed.
 * reply collects the streamed text. Closing the socket (Ctrl-C) makes the coordinator drop the
 * request at its next token. Returns the exit code (0, 2, 3 or 130). */
static int exchange(void *ctx, struct hmoe_ctrl_arena *a, const char *ep, Hmoe__Envelope *e,
                    int timeout_ms, int text_mode, int status, struct strbuf *reply)
{
    void *sock = NULL;
    if (hmoe_zmq_socket(ctx, ZMQ_DEALER, NULL, HMOE_CTRL_MAX_MSG, &sock) ||
        hmoe_zmq_connect(sock, ep)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        hmoe_zmq_close(sock);
        return 3;
    }
    /* a socket monitor tells when the connection to the coordinator drops (it died): the
     * client then fails at once instead of waiting for --timeout-ms */
    void *mon = NULL;
    if (zmq_socket_monitor(sock, "inproc://hmoe-client-mon", ZMQ_EVENT_DISCONNECTED) == 0 &&
        (mon = zmq_socket(ctx, ZMQ_PAIR)) &&
        (zmq_setsockopt(mon, ZMQ_LINGER, &(int){0}, sizeof(int)) != 0 ||
         zmq_connect(mon, "inproc://hmoe-client-mon") != 0)) {
        zmq_close(mon);
        mon = NULL;
    }
    const uint64_t req_id =
        e->body_case == HMOE__ENVELOPE__BODY_REQUEST ? e->request->request_id : 0;
    e->seq = 1;
    int rc = 0;
    uint64_t t0 = hmoe_now_us(), t_first = 0;
    unsigned n_tok = 0;
    if (hmoe_ctrl_send(sock, NULL, 0, e)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        rc = 3;
        goto out;
    }
    for (;;) {
        struct hmoe_ctrl_msg m;
        uint64_t waited = 0;
        enum hmoe_status st;
        int gone = 0;
        /* wait in short slices so Ctrl-C and a lost connection are noticed */
        do {
            st = hmoe_ctrl_recv(sock, 0, 200, a, &m);
            waited += 200;
            if (st == HMOE_E_TIMEOUT && mon) {
                zmq_msg_t ev;
                zmq_msg_init(&ev);
                if (zmq_msg_recv(&ev, mon, ZMQ_DONTWAIT) >= 0) gone = 1;
                zmq_msg_close(&ev);
                while (zmq_msg_init(&ev) == 0 && zmq_msg_recv(&ev, mon, ZMQ_DONTWAIT) >= 0)
                    zmq_msg_close(&ev); /* the event's second frame */
                zmq_msg_close(&ev);
            }
        } while (st == HMOE_E_TIMEOUT && !gone && !interrupted && waited < (uint64_t)timeout_ms);
        if (gone) {
            fflush(stdout);
            fprintf(stderr,
                    "%serror: the connection to the coordinator at %s was lost\n"
                    "hint: the cluster stopped or crashed; see its log\n",
                    n_tok ? "\n" : "", ep);
            rc = 3;
            break;
        }
        if (interrupted) {
            fflush(stdout);
            fprintf(stderr, "\ninterrupted\n");
            rc = 130;
            break;
        }
        if (st == HMOE_E_TIMEOUT) {
            fprintf(stderr,
                    "error: no answer from the coordinator at %s within %d ms\n"
                    "hint: is the cluster running? (hmoe status)\n",
                    ep, timeout_ms);
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
            if (text_mode) {
                fputs(x->token->text, stdout);
                sb_add(reply, x->token->text, strlen(x->token->text));
            } else {
                printf("%s%d", n_tok > 1 ? " " : "", x->token->id);
            }
            fflush(stdout);
            continue;
        }
        if (x->body_case == HMOE__ENVELOPE__BODY_DONE && x->done->request_id == req_id) {
            printf("\n");
            fflush(stdout);
            const Hmoe__Done *d = x->done;
            double gen_s = (double)d->gen_us / 1e6;
            fprintf(stderr,
                    "# %u tokens (%s): %.2f tok/s; TTFT %.1f ms; prompt %u tokens in %.1f ms\n",
                    d->n_gen, d->finish_reason,
                    d->n_gen > 1 && gen_s > 0 ? (double)(d->n_gen - 1) / gen_s : 0.0,
                    (double)d->ttft_us / 1e3, d->n_prompt, (double)d->prompt_us / 1e3);
            break;
        }
    }
    if (rc == 130 && n_tok) {
        double sec = (double)(hmoe_now_us() - t0) / 1e6;
        fprintf(stderr, "# %u tokens (interrupted): %.2f tok/s; TTFT %.1f ms\n", n_tok,
                sec > 0 ? n_tok / sec : 0.0, t_first ? (double)(t_first - t0) / 1e3 : 0.0);
    }
out:
    if (mon) {
        zmq_socket_monitor(sock, NULL, 0);
        zmq_close(mon);
    }
    hmoe_zmq_close(sock);
    return rc;
}

int main(int argc, char **argv)
{
    const char *run_dir = getenv("HMOE_RUN_DIR");
    const char *connect = NULL, *ids_arg = NULL;
    int timeout_ms = 120000, status = 0;
    int argi = 1, chat = 0;
    if (argc > 1 && !strcmp(argv[1], "status"))
        status = 1, argi = 2;
    else if (argc > 1 && !strcmp(argv[1], "chat"))
        chat = 1, argi = 2;
    else if (argc > 1 && (!strcmp(argv[1], "run") || !strcmp(argv[1], "generate")))
        argi = 2;
#ifdef HMOE_HAVE_TEXT
    struct hmoe_text_opts o;
    hmoe_text_opts_init(&o);
    if (hmoe_text_opts_env(&o)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        return 1;
    }
#else
    struct {
        const char *prompt;
        int n_predict, ignore_eos;
        float temp;
    } o = {NULL, -1, 0, 0.0f};
#endif
    for (int i = argi; i < argc; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "-cnv") || !strcmp(f, "--conversation")) {
            chat = 1;
        } else if (!strcmp(f, "--tokens") && v) {
            ids_arg = v, i++;
        } else if (!strcmp(f, "--run-dir") && v) {
            run_dir = v, i++;
        } else if (!strcmp(f, "--connect") && v) {
            connect = v, i++;
        } else if (!strcmp(f, "--timeout-ms") && v) {
            timeout_ms = (int)strtol(v, &end, 10);
            if (*end || timeout_ms < 1) {
                fprintf(stderr, "error: --timeout-ms %s\nsee --help\n", v);
                return 1;
            }
            i++;
        } else {
#ifdef HMOE_HAVE_TEXT
            int r = hmoe_text_opts_parse(&o, argc, argv, &i);
            if (r < 0) {
                fprintf(stderr, "error: %s\nsee --help\n", hmoe_err_msg());
                return 1;
            }
            if (r > 0) continue;
#else
            if ((!strcmp(f, "-p") || !strcmp(f, "--prompt")) && v) {
                o.prompt = v, i++;
                continue;
            }
            if ((!strcmp(f, "-n") || !strcmp(f, "--n-predict")) && v) {
                o.n_predict = (int)strtol(v, &end, 10), i++;
                if (!*end && o.n_predict >= -2) continue;
            } else if (!strcmp(f, "--ignore-eos")) {
                o.ignore_eos = 1;
                continue;
            } else if (!strcmp(f, "--temp") && v) {
                o.temp = strtof(v, &end), i++;
                if (!*end && o.temp == 0.0f) continue;
            }
#endif
            fprintf(stderr, "error: unknown or incomplete option '%s'\nsee --help\n", f);
            return 1;
        }
    }
    char ep[300];
    if (connect)
        snprintf(ep, sizeof ep, "%s", connect);
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
            fprintf(stderr,
                    "error: no coordinator socket at %s\nhint: is the cluster running? "
                    "(deploy/hmoe-launch)\n",
                    sock);
            return 3;
        }
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    const char *text = o.prompt;
    char *file_text = NULL;
#ifdef HMOE_HAVE_TEXT
    if (o.prompt_file) {
        FILE *pf = fopen(o.prompt_file, "rb");
        size_t cap = 0, n = 0;
        while (pf) {
            if (n + 4096 + 1 > cap) {
                char *q = realloc(file_text, cap = cap * 2 + 8192);
                if (!q) break;
                file_text = q;
            }
            size_t r = fread(file_text + n, 1, 4096, pf);
            n += r;
            if (r == 0) break;
        }
        if (!pf || !file_text) {
            fprintf(stderr, "error: cannot read prompt file %s\n", o.prompt_file);
            if (pf) fclose(pf);
            free(file_text);
            return 1;
        }
        fclose(pf);
        file_text[n] = 0;
        text = file_text;
    }
#endif
    if (!status && ids_arg && !parse_ids(ids_arg, &ids, &n_ids)) {
        fprintf(stderr, "error: --tokens expects token ids (\"1 2 3\")\n");
        free(ids);
        return 1;
    }
    if (chat && ids_arg) {
        fprintf(stderr, "error: chat takes text, not --tokens\n");
        free(ids);
        return 1;
    }
    if (!status && !chat && !ids_arg && !text) {
        fprintf(stderr, "error: no prompt given\nhint: -p \"text\" or --tokens \"1 2 3\"\n");
        return 1;
    }
    /* no SA_RESTART: Ctrl-C must also end a blocking read of the chat prompt */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    void *ctx = hmoe_zmq_ctx_new();
    struct hmoe_ctrl_arena a;
    if (!ctx || hmoe_ctrl_arena_init(&a, 0)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        return 3;
    }
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Request r = HMOE__REQUEST__INIT;
    Hmoe__SamplingParams sp = HMOE__SAMPLING_PARAMS__INIT;
    Hmoe__StatusRequest sr = HMOE__STATUS_REQUEST__INIT;
    int rc = 0;
    if (status) {
        e.body_case = HMOE__ENVELOPE__BODY_STATUS_REQUEST;
        e.status_request = &sr;
        rc = exchange(ctx, &a, ep, &e, timeout_ms, 0, 1, NULL);
        goto out;
    }
    r.tokens = ids;
    r.n_tokens = n_ids;
    r.n_predict = o.n_predict;
    r.prompt = (char *)(ids ? "" : text ? text : "");
    sp.ignore_eos = o.ignore_eos;
#ifdef HMOE_HAVE_TEXT
    sp.temperature = o.sampling.temperature;
    sp.top_k = o.sampling.top_k;
    sp.top_p = o.sampling.top_p;
    sp.min_p = o.sampling.min_p;
    sp.repeat_penalty = o.sampling.repeat_penalty;
    sp.repeat_last_n = o.sampling.repeat_last_n;
    sp.presence_penalty = o.sampling.presence_penalty;
    sp.frequency_penalty = o.sampling.frequency_penalty;
    sp.seed = o.sampling.seed;
    sp.set = o.set;
    r.system_prompt = (char *)(o.system_prompt ? o.system_prompt : "");
    r.chat_template = (char *)(o.chat_template ? o.chat_template : "");
    r.chat = !o.chat_template || strcmp(o.chat_template, "none") != 0;
    r.truncate_left = o.truncate_left;
    r.ctx_size = o.ctx_size;
    r.n_stop = (size_t)o.n_stop;
    r.stop = (char **)o.stop;
#else
    sp.temperature = o.temp;
    r.chat = 1;
#endif
    r.sampling = &sp;
    e.body_case = HMOE__ENVELOPE__BODY_REQUEST;
    e.request = &r;
    if (!chat) {
        r.request_id = ((uint64_t)getpid() << 20) ^ hmoe_now_us();
        rc = exchange(ctx, &a, ep, &e, timeout_ms, !ids, 0, NULL);
        goto out;
    }
    /* interactive chat: the whole history goes with every turn (the cluster keeps no state);
     * Ctrl-C interrupts a reply, Ctrl-C or EOF at the prompt ends the session */
    {
        Hmoe__ChatMessage **hist = NULL;
        size_t n_hist = 0;
        char *line = NULL;
        size_t cap = 0;
        for (;;) {
            interrupted = 0;
            if (isatty(STDIN_FILENO)) {
                fprintf(stderr, "> ");
                fflush(stderr);
            }
            ssize_t n = getline(&line, &cap, stdin);
            if (n < 0 || interrupted) {
                if (isatty(STDIN_FILENO)) fputc('\n', stderr);
                break;
            }
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = 0;
            if (!n) continue;
            if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
            struct strbuf reply = {0};
            r.request_id = ((uint64_t)getpid() << 20) ^ hmoe_now_us();
            r.prompt = line;
            r.n_history = n_hist;
            r.history = hist;
            int t = exchange(ctx, &a, ep, &e, timeout_ms, 1, 0, &reply);
            if (t == 3) {
                rc = 3;
                free(reply.b);
                break;
            }
            Hmoe__ChatMessage **nh = realloc(hist, (n_hist + 2) * sizeof *hist);
            Hmoe__ChatMessage *um = malloc(sizeof *um), *am = malloc(sizeof *am);
            char *uc = strdup(line);
            if (!nh || !um || !am || !uc) {
                fprintf(stderr, "error: out of memory\n");
                free(nh ? NULL : hist);
                free(um);
                free(am);
                free(uc);
                free(reply.b);
                hist = nh;
                rc = 2;
                break;
            }
            hist = nh;
            hmoe__chat_message__init(um);
            hmoe__chat_message__init(am);
            um->role = (char *)"user";
            um->content = uc;
            am->role = (char *)"assistant";
            am->content = reply.b ? reply.b : strdup("");
            hist[n_hist++] = um;
            hist[n_hist++] = am;
        }
        for (size_t i = 0; i < n_hist; i++) {
            free(hist[i]->content);
            free(hist[i]);
        }
        free(hist);
        free(line);
    }
out:
    hmoe_zmq_ctx_term(ctx);
    hmoe_ctrl_arena_free(&a);
    free(ids);
    free(file_text);
    return rc;
}
