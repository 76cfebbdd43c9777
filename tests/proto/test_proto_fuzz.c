/* tests/proto/test_proto_fuzz.c: fixed-seed fuzz of the Envelope decoder with truncated,
 * bit-flipped, spliced and random inputs. Passing means: no crash, no sanitizer report, every
 * accepted message is re-encodable, every rejection carries a message. */
#include "hmoe/ctrl.h"
#include "hmoe_test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static int n_ok, n_bad;

static void try_decode(struct hmoe_ctrl_arena *a, const uint8_t *b, size_t n)
{
    Hmoe__Envelope *d = NULL;
    hmoe_err_clear();
    enum hmoe_status st = hmoe_ctrl_decode(a, b, n, &d);
    if (st == HMOE_OK) {
        n_ok++;
        CHECK(d != NULL);
        uint8_t *r;
        size_t rn;
        CHECK(hmoe_ctrl_encode(d, &r, &rn) == HMOE_OK);
        free(r);
    } else {
        n_bad++;
        CHECK(st == HMOE_E_PROTO && d == NULL && hmoe_err_msg()[0] != '\0');
    }
}

/* A few valid seeds of different bodies. */
static size_t make_seed(int k, uint8_t **out)
{
    Hmoe__Envelope e = HMOE__ENVELOPE__INIT;
    Hmoe__Hello h = HMOE__HELLO__INIT;
    Hmoe__Request r = HMOE__REQUEST__INIT;
    Hmoe__SamplingParams sp = HMOE__SAMPLING_PARAMS__INIT;
    Hmoe__StatusReply s = HMOE__STATUS_REPLY__INIT;
    Hmoe__WorkerStatus ws = HMOE__WORKER_STATUS__INIT, *wsp[2] = {&ws, &ws};
    Hmoe__ExpertPlacement p = HMOE__EXPERT_PLACEMENT__INIT;
    Hmoe__WorkerConfig c = HMOE__WORKER_CONFIG__INIT;
    char *regions[] = {(char *)"/hmoe.x.e0", (char *)"/hmoe.x.e1"};
    int32_t toks[16];
    unsigned char home[8] = {0, 1, 1, 2, 255, 0, 1, 2};
    for (int i = 0; i < 16; i++)
        toks[i] = (int32_t)(i * 9973);
    e.seq = (uint64_t)k * 1000003u;
    switch (k % 4) {
    case 0:
        h.role = HMOE__ROLE__ROLE_GPU;
        h.version = (char *)"v";
        e.body_case = HMOE__ENVELOPE__BODY_HELLO;
        e.hello = &h;
        break;
    case 1:
        r.tokens = toks;
        r.n_tokens = 16;
        r.prompt = (char *)"hello";
        r.sampling = &sp;
        e.body_case = HMOE__ENVELOPE__BODY_REQUEST;
        e.request = &r;
        break;
    case 2:
        p.num_layers = 2;
        p.num_experts = 4;
        p.home.len = 8;
        p.home.data = home;
        s.n_workers = 2;
        s.workers = wsp;
        ws.state = (char *)"ready";
        s.placement = &p;
        e.body_case = HMOE__ENVELOPE__BODY_STATUS_REPLY;
        e.status_reply = &s;
        break;
    default:
        c.model = (char *)"/models/x";
        c.n_regions = 2;
        c.regions = regions;
        e.body_case = HMOE__ENVELOPE__BODY_CONFIG;
        e.config = &c;
        break;
    }
    size_t n;
    if (hmoe_ctrl_encode(&e, out, &n) != HMOE_OK) HMOE_ABORT("seed encode");
    return n;
}

int main(void)
{
    struct hmoe_ctrl_arena a;
    CHECK(hmoe_ctrl_arena_init(&a, 1u << 20) == HMOE_OK);
    uint8_t buf[4096];

    for (int k = 0; k < 4; k++) {
        uint8_t *seed;
        size_t n = make_seed(k, &seed);
        /* the seed itself decodes */
        Hmoe__Envelope *d;
        CHECK(hmoe_ctrl_decode(&a, seed, n, &d) == HMOE_OK);
        /* every truncation (copied so ASan sees reads past the end) */
        for (size_t t = 0; t < n; t++) {
            uint8_t *cp = malloc(t ? t : 1);
            memcpy(cp, seed, t);
            try_decode(&a, cp, t);
            free(cp);
        }
        /* bit flips, byte overwrites, splices */
        for (int it = 0; it < 4000; it++) {
            size_t m = n;
            memcpy(buf, seed, n);
            int edits = 1 + (int)(rnd() % 4);
            for (int j = 0; j < edits; j++) {
                size_t pos = rnd() % m;
                switch (rnd() % 4) {
                case 0:
                    buf[pos] ^= (uint8_t)(1u << (rnd() % 8));
                    break;
                case 1:
                    buf[pos] = (uint8_t)rnd();
                    break;
                case 2:
                    buf[pos] = 0xff;
                    break; /* huge varints / lengths */
                default:
                    if (m + 8 < sizeof buf) { /* insert bytes */
                        memmove(buf + pos + 4, buf + pos, m - pos);
                        for (int q = 0; q < 4; q++)
                            buf[pos + (size_t)q] = (uint8_t)rnd();
                        m += 4;
                    }
                }
            }
            uint8_t *cp = malloc(m);
            memcpy(cp, buf, m);
            try_decode(&a, cp, m);
            free(cp);
        }
        free(seed);
    }
    /* pure random bytes of random lengths */
    for (int it = 0; it < 20000; it++) {
        size_t m = rnd() % 300;
        uint8_t *cp = malloc(m ? m : 1);
        for (size_t j = 0; j < m; j++)
            cp[j] = (uint8_t)rnd();
        try_decode(&a, cp, m);
        free(cp);
    }
    /* a length prefix claiming far more than the buffer */
    const uint8_t claim[] = {0x08, 0x01, 0xa2, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00};
    try_decode(&a, claim, sizeof claim);
    CHECK(n_bad > 1000 && n_ok > 0);
    fprintf(stderr, "fuzz: %d accepted, %d rejected\n", n_ok, n_bad);
    hmoe_ctrl_arena_free(&a);
    TEST_DONE();
}
