/* tests/proto/test_proto_roundtrip.c: every Envelope body survives encode -> decode with its
 * fields intact; the version check, empty body and size caps are enforced. */
#include "hmoe/ctrl.h"
#include "hmoe_test.h"

static Hmoe__Envelope *roundtrip(struct hmoe_ctrl_arena *a, Hmoe__Envelope *e)
{
    uint8_t *b;
    size_t n;
    CHECK(hmoe_ctrl_encode(e, &b, &n) == HMOE_OK);
    Hmoe__Envelope *d = NULL;
    enum hmoe_status st = hmoe_ctrl_decode(a, b, n, &d);
    CHECKF(st == HMOE_OK, "%s: %s", hmoe_ctrl_body_name(e->body_case), hmoe_err_msg());
    free(b);
    if (d) CHECK(d->body_case == e->body_case && d->seq == e->seq);
    return d;
}

int main(void)
{
    struct hmoe_ctrl_arena a;
    CHECK(hmoe_ctrl_arena_init(&a, 0) == HMOE_OK);

    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    e.seq = 42;

    Hmoe__Hello h = HMOE__HELLO__INIT;
    h.role = HMOE__ROLE__ROLE_CPU_EXPERT;
    h.id = 3;
    h.pid = 1234;
    h.version = (char *)"0.1.0";
    e.body_case = HMOE__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    Hmoe__Envelope *d = roundtrip(&a, &e);
    if (d) {
        CHECK(d->hello->role == HMOE__ROLE__ROLE_CPU_EXPERT && d->hello->id == 3);
        CHECK(d->hello->pid == 1234 && strcmp(d->hello->version, "0.1.0") == 0);
        CHECK(d->proto_version == HMOE_CTRL_PROTO_VERSION);
    }

    Hmoe__WorkerConfig c = HMOE__WORKER_CONFIG__INIT;
    char *regions[] = {(char *)"/hmoe.r.e0", (char *)"/hmoe.r.e1"};
    c.model = (char *)"synth:tiny";
    c.n_regions = 2;
    c.regions = regions;
    c.resident_bytes = 1ull << 40;
    c.numa_node = -1;
    e.body_case = HMOE__ENVELOPE__BODY_CONFIG;
    e.config = &c;
    d = roundtrip(&a, &e);
    if (d) {
        CHECK(d->config->n_regions == 2 && strcmp(d->config->regions[1], "/hmoe.r.e1") == 0);
        CHECK(d->config->resident_bytes == 1ull << 40 && d->config->numa_node == -1);
        CHECK(strcmp(d->config->model, "synth:tiny") == 0);
    }

    int32_t toks[5] = {1, 2, 3, 151643, 0};
    Hmoe__Request r = HMOE__REQUEST__INIT;
    Hmoe__SamplingParams sp = HMOE__SAMPLING_PARAMS__INIT;
    sp.temperature = 0.7f;
    sp.top_k = 40;
    r.request_id = 7;
    r.n_tokens = 5;
    r.tokens = toks;
    r.n_predict = -1;
    r.sampling = &sp;
    e.body_case = HMOE__ENVELOPE__BODY_REQUEST;
    e.request = &r;
    d = roundtrip(&a, &e);
    if (d) {
        CHECK(d->request->n_tokens == 5 && d->request->tokens[3] == 151643);
        CHECK(d->request->n_predict == -1 && d->request->sampling);
        CHECK(d->request->sampling && d->request->sampling->top_k == 40);
    }

    unsigned char home[6] = {0, 1, 2, 255, 1, 0};
    Hmoe__ExpertPlacement p = HMOE__EXPERT_PLACEMENT__INIT;
    p.num_layers = 2;
    p.num_experts = 3;
    p.home.len = 6;
    p.home.data = home;
    e.body_case = HMOE__ENVELOPE__BODY_PLACEMENT;
    e.placement = &p;
    d = roundtrip(&a, &e);
    if (d) CHECK(d->placement->home.len == 6 && d->placement->home.data[3] == 255);
    /* a home table that does not match its shape is rejected */
    p.num_experts = 4;
    uint8_t *b;
    size_t n;
    CHECK(hmoe_ctrl_encode(&e, &b, &n) == HMOE_OK);
    CHECK(hmoe_ctrl_decode(&a, b, n, &d) == HMOE_E_PROTO);
    free(b);

    Hmoe__StepEnd se = HMOE__STEP_END__INIT;
    se.status = HMOE_E_PEER_DEAD;
    se.error = (char *)"expert worker E1 died";
    e.body_case = HMOE__ENVELOPE__BODY_STEP_END;
    e.step_end = &se;
    d = roundtrip(&a, &e);
    if (d) CHECK(d->step_end->status == HMOE_E_PEER_DEAD);

    Hmoe__Error er = HMOE__ERROR__INIT;
    er.code = HMOE_E_INVAL;
    er.message = (char *)"bad";
    er.hint = (char *)"try again";
    e.body_case = HMOE__ENVELOPE__BODY_ERROR;
    e.error = &er;
    d = roundtrip(&a, &e);
    if (d) CHECK(strcmp(d->error->hint, "try again") == 0);

    Hmoe__Heartbeat hb = HMOE__HEARTBEAT__INIT;
    e.body_case = HMOE__ENVELOPE__BODY_HEARTBEAT;
    e.heartbeat = &hb;
    roundtrip(&a, &e);

    /* wrong protocol version */
    CHECK(hmoe_ctrl_encode(&e, &b, &n) == HMOE_OK);
    {
        Hmoe__Envelope *x = hmoe__envelope__unpack(NULL, n, b);
        CHECK(x != NULL);
        x->proto_version = 2;
        size_t n2 = hmoe__envelope__get_packed_size(x);
        uint8_t *b2 = malloc(n2);
        hmoe__envelope__pack(x, b2);
        CHECK(hmoe_ctrl_decode(&a, b2, n2, &d) == HMOE_E_PROTO);
        CHECK(strstr(hmoe_err_msg(), "version") != NULL);
        free(b2);
        hmoe__envelope__free_unpacked(x, NULL);
    }
    free(b);

    /* no body */
    Hmoe__Envelope empty = HMOE__ENVELOPE__INIT;
    CHECK(hmoe_ctrl_encode(&empty, &b, &n) == HMOE_OK);
    CHECK(hmoe_ctrl_decode(&a, b, n, &d) == HMOE_E_PROTO);
    free(b);
    CHECK(hmoe_ctrl_decode(&a, "", 0, &d) == HMOE_E_PROTO);

    /* size cap on encode and decode */
    static int32_t many[300000];
    r.n_tokens = 300000;
    r.tokens = many;
    for (int i = 0; i < 300000; i++)
        many[i] = 100000 + i; /* 3 bytes each: > 1 MiB? no: check */
    e.body_case = HMOE__ENVELOPE__BODY_REQUEST;
    e.request = &r;
    CHECK(hmoe_ctrl_encode(&e, &b, &n) == HMOE_OK);        /* ~900 KB: under the byte cap */
    CHECK(hmoe_ctrl_decode(&a, b, n, &d) == HMOE_E_PROTO); /* over the token cap */
    free(b);
    static unsigned char big[HMOE_CTRL_MAX_MSG + 1];
    CHECK(hmoe_ctrl_decode(&a, big, sizeof big, &d) == HMOE_E_PROTO);

    /* an arena too small for the message fails cleanly */
    struct hmoe_ctrl_arena small;
    CHECK(hmoe_ctrl_arena_init(&small, 256) == HMOE_OK);
    r.n_tokens = 1000;
    CHECK(hmoe_ctrl_encode(&e, &b, &n) == HMOE_OK);
    CHECK(hmoe_ctrl_decode(&small, b, n, &d) == HMOE_E_PROTO);
    CHECK(hmoe_ctrl_decode(&a, b, n, &d) == HMOE_OK);
    free(b);
    hmoe_ctrl_arena_free(&small);

    hmoe_ctrl_arena_free(&a);
    TEST_DONE();
}
