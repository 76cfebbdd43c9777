/* Prepared expert sets: registration, the node-local copy (per-expert contiguous, absmax kept as
 * 8-bit codes), kernel selection by cpuid, and the run: (token, expert) pairs grouped by expert
 * in ascending id, then one pool job in four phases:
 *   0: x of each token into the even/odd layouts (barrier),
 *   1: gate and up rows of I, h = silu(g) * u per (token, expert) pair,
 *   2: down rows of H into y per pair,
 *   3: out[t] += w * y over t's pairs in ascending expert order (rows of H split by thread).
 * Phases 1 and 2 work on the list of (active expert, 16-row unit). Default schedule ("flow"):
 * each thread owns one contiguous range of the list (long sequential streams) and claims a
 * quarter of what is left of it at a time from an atomic cursor; a thread whose range is done
 * steals chunks (~32 KB of weights) from the others' cursors, so a slow or preempted thread
 * does not hold up the step; a down chunk waits only for its own expert's gate/up units (no
 * barrier between 1 and 2). Who computes a row never changes its bits, and phase 3 keeps a
 * fixed order, so the results do not depend on the thread count or the schedule. */
#include "hmoe/experts.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "experts_impl.h"
#include "hmoe/log.h"

#define EXK_ALIGN 64
#define EXK_MAX_RT 256 /* rows per task at most (stack buffers) */

struct exk_tables {
    float code[16];
    float ncode[256];
};

struct exk_piece {
    const void *src;
    size_t off, n;            /* destination offset in the arena, bytes */
    const struct hmoe_nf4 *q; /* set: decode n / 4 double-quant absmax from block b0 (no copy) */
    int64_t b0;
};

struct exk_expert {
    int layer, id;
    struct hmoe_mlp_w src; /* views, read until load */
    struct exk_mat m[3];   /* gate [I, H], up [I, H], down [H, I] */
    int tab[3];            /* NF4 tables index, -1 otherwise */
    struct exk_piece piece[9];
    int n_piece;
    uint64_t nbytes;
};

struct exk_pair {
    int32_t tok;
    float w;
};

/* A thread's range [next, end) of the unit list of one phase; next is claimed atomically. */
struct exk_cursor {
    _Alignas(64) _Atomic int64_t next;
    int64_t end;
};

/* Gate/up units of one active expert not yet finished (flow schedule). */
struct exk_ready {
    _Alignas(64) _Atomic int32_t left;
};

struct hmoe_experts {
    int H, I;
    struct hmoe_experts_opts o;
    enum hmoe_experts_isa isa;
    exk_rows_fn rows;
    struct hmoe_pool *pool;
    int nth;

    struct exk_expert *ex;
    int n_ex, cap_ex;
    int32_t *slot[HMOE_MAX_LAYERS]; /* expert id -> index in ex, -1 = absent */
    int n_slot[HMOE_MAX_LAYERS];
    struct exk_tables *tabs;
    int n_tabs, cap_tabs;

    uint8_t *arena;
    size_t arena_size;
    int loaded;

    /* run workspace, sized at init */
    int max_tok, max_k, max_pairs;
    int hH, hI;             /* (H + 1) / 2, (I + 1) / 2 */
    float *xbuf;            /* [max_tok][4][hH] */
    struct exk_x *xv;       /* [max_tok] */
    float *hbuf;            /* [max_pairs][I + 4 hI] */
    uint16_t *xbf, *hbf;    /* bf16 parts of x [max_tok][EXK_BF_PARTS H], of h [max_pairs][.. I]
                             * (only where avx512bf16 runs and H, I are multiples of 64) */
    uint16_t *xxa, *hxa;    /* the same in the AMX tile layout (only where amx runs) */
    _Atomic int *hflag;     /* [max_pairs] range of h for its bf16 parts: EXK_HF_* bits */
    float *ybuf;            /* [max_pairs][H] down outputs */
    struct exk_x *hv;       /* [max_pairs] */
    int32_t *act;           /* [max_pairs] active experts (index in ex), ascending id */
    int32_t *act_start;     /* [max_pairs + 1] */
    int32_t *mark;          /* [n_ex] position in act, -1 */
    struct exk_pair *pairs; /* [max_pairs] grouped by active expert, tokens ascending */
    int n_act, n_tok;
    const float *x;
    float *out;
    enum hmoe_experts_sched sched;
    struct exk_cursor *cur[2]; /* [pool size] per phase (gate/up, down) */
    struct exk_ready *ready;   /* [max_pairs] */
    int64_t chunk[2];          /* units claimed at a time per phase */
};

#define EXK_UNIT 16 /* rows per work unit (amx: its 16-row groups are absolute, so any schedule
                     * of whole units gives the same bits) */

/* h range bits collected while h is written (exk_bf_x_ok as bits, without a reduction) */
#define EXK_HF_BAD 1   /* some |h| > EXK_BF_XMAX or not finite */
#define EXK_HF_BIG 2   /* some |h| >= EXK_BF_XMIN */
#define EXK_HF_SMALL 4 /* some nonzero |h| < EXK_BF_XMIN */

/* ---- ISA ---------------------------------------------------------------------------------- */

const char *hmoe_experts_isa_name(enum hmoe_experts_isa isa)
{
    switch (isa) {
    case HMOE_ISA_AUTO: return "auto";
    case HMOE_ISA_GENERIC: return "generic";
    case HMOE_ISA_AVX2: return "avx2";
    case HMOE_ISA_AVX512: return "avx512";
    case HMOE_ISA_AVX512BF16: return "avx512bf16";
    case HMOE_ISA_AMX: return "amx";
    default: return "?";
    }
}

int hmoe_experts_isa_supported(enum hmoe_experts_isa isa)
{
    switch (isa) {
    case HMOE_ISA_GENERIC: return 1;
#if defined(__x86_64__) && defined(HMOE_EXPERTS_X86)
    case HMOE_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    case HMOE_ISA_AVX512:
        __builtin_cpu_init();
        return hmoe_experts_isa_supported(HMOE_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    case HMOE_ISA_AVX512BF16:
        return hmoe_experts_isa_supported(HMOE_ISA_AVX512) && __builtin_cpu_supports("avx512bf16");
    case HMOE_ISA_AMX:
        return hmoe_experts_isa_supported(HMOE_ISA_AVX512BF16) && exk_amx_usable();
#endif
    default: return 0;
    }
}

enum hmoe_experts_isa hmoe_experts_isa_best(void)
{
    /* avx512bf16 and amx are not picked: on the GPU machine's Xeon VDPBF16PS costs about four
     * FMAs and both were slower than avx512 (1.6-2.2x, 1.4-1.7x); on Zen 5 avx512bf16 is no
     * faster either (docs/experts.md). They stay available by name. */
    if (hmoe_experts_isa_supported(HMOE_ISA_AVX512)) return HMOE_ISA_AVX512;
    if (hmoe_experts_isa_supported(HMOE_ISA_AVX2)) return HMOE_ISA_AVX2;
    return HMOE_ISA_GENERIC;
}

static exk_rows_fn isa_fn(enum hmoe_experts_isa isa)
{
    switch (isa) {
#if defined(__x86_64__) && defined(HMOE_EXPERTS_X86)
    case HMOE_ISA_AVX2: return exk_rows_avx2;
    case HMOE_ISA_AVX512: return exk_rows_avx512;
    case HMOE_ISA_AVX512BF16: return exk_rows_avx512bf16;
    case HMOE_ISA_AMX: return exk_rows_amx;
#endif
    default: return exk_rows_generic;
    }
}

/* ---- init / free -------------------------------------------------------------------------- */

static void *zalloc(size_t n)
{
    void *p = aligned_alloc(EXK_ALIGN, (n + EXK_ALIGN - 1) / EXK_ALIGN * EXK_ALIGN);
    if (p) memset(p, 0, n);
    return p;
}

enum hmoe_status hmoe_experts_init(const struct hmoe_experts_opts *o, int hidden, int inter,
                                   struct hmoe_experts **out)
{
    *out = NULL;
    if (!o || hidden <= 0 || inter <= 0 || hidden > (1 << 20) || inter > (1 << 20) ||
        o->max_tokens < 0 || o->max_tokens > 4096 || o->max_top_k < 0 || o->max_top_k > 64)
        return hmoe_fail(HMOE_E_INVAL, "experts: bad options (H %d, I %d)", hidden, inter);
    enum hmoe_experts_isa isa = o->isa == HMOE_ISA_AUTO ? hmoe_experts_isa_best() : o->isa;
    if (isa <= HMOE_ISA_AUTO || isa >= HMOE_ISA_COUNT || !hmoe_experts_isa_supported(isa))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "experts: ISA %s not supported on this CPU/build",
                         hmoe_experts_isa_name(isa));
    struct hmoe_experts *ex = calloc(1, sizeof *ex);
    if (!ex) return hmoe_fail(HMOE_E_NOMEM, "experts");
    ex->H = hidden;
    ex->I = inter;
    ex->o = *o;
    ex->isa = isa;
    ex->rows = isa_fn(isa);
    ex->max_tok = o->max_tokens ? o->max_tokens : 64;
    ex->max_k = o->max_top_k ? o->max_top_k : 16;
    ex->max_pairs = ex->max_tok * ex->max_k;
    ex->hH = (hidden + 1) / 2;
    ex->hI = (inter + 1) / 2;
    ex->sched = HMOE_SCHED_FLOW;
    /* about 32 KB of NF4 weights per claim: gate+up 16 x H / 2 x 2 bytes, down 16 x I / 2 */
    ex->chunk[0] = 32768 / ((int64_t)EXK_UNIT * ex->hH * 2);
    ex->chunk[1] = 32768 / ((int64_t)EXK_UNIT * ex->hI);
    for (int i = 0; i < 2; i++) ex->chunk[i] = ex->chunk[i] < 1 ? 1 : ex->chunk[i];
    enum hmoe_status st = hmoe_pool_init(&o->pool, &ex->pool);
    if (st != HMOE_OK) {
        free(ex);
        return st;
    }
    ex->nth = hmoe_pool_size(ex->pool);
    size_t mp = (size_t)ex->max_pairs;
    ex->xbuf = zalloc((size_t)ex->max_tok * 4 * (size_t)ex->hH * sizeof(float));
    ex->xv = zalloc((size_t)ex->max_tok * sizeof *ex->xv);
    ex->hbuf = zalloc(mp * ((size_t)inter + 4 * (size_t)ex->hI) * sizeof(float));
    ex->hv = zalloc(mp * sizeof *ex->hv);
    ex->ybuf = zalloc(mp * (size_t)hidden * sizeof(float));
    ex->act = zalloc(mp * sizeof *ex->act);
    ex->act_start = zalloc((mp + 1) * sizeof *ex->act_start);
    ex->pairs = zalloc(mp * sizeof *ex->pairs);
    ex->cur[0] = zalloc((size_t)ex->nth * sizeof *ex->cur[0]);
    ex->cur[1] = zalloc((size_t)ex->nth * sizeof *ex->cur[1]);
    ex->ready = zalloc(mp * sizeof *ex->ready);
    if (!ex->xbuf || !ex->xv || !ex->hbuf || !ex->hv || !ex->ybuf || !ex->act || !ex->act_start ||
        !ex->pairs || !ex->cur[0] || !ex->cur[1] || !ex->ready) {
        hmoe_experts_free(ex);
        return hmoe_fail(HMOE_E_NOMEM, "experts: workspace for %d tokens", ex->max_tok);
    }
    for (int t = 0; t < ex->max_tok; t++) {
        float *b = ex->xbuf + (size_t)t * 4 * ex->hH;
        ex->xv[t].e[0] = b;
        ex->xv[t].o[0] = b + ex->hH;
        ex->xv[t].e[1] = b + 2 * ex->hH;
        ex->xv[t].o[1] = b + 3 * ex->hH;
    }
    for (size_t p = 0; p < mp; p++) {
        float *b = ex->hbuf + p * ((size_t)inter + 4 * (size_t)ex->hI);
        ex->hv[p].nat = b;
        ex->hv[p].e[0] = b + inter;
        ex->hv[p].o[0] = b + inter + ex->hI;
        ex->hv[p].e[1] = b + inter + 2 * ex->hI;
        ex->hv[p].o[1] = b + inter + 3 * ex->hI;
    }
    if (hmoe_experts_isa_supported(HMOE_ISA_AVX512BF16) && (hidden % 64 == 0 || inter % 64 == 0)) {
        const size_t np = EXK_BF_PARTS;
        if (hidden % 64 == 0) ex->xbf = zalloc((size_t)ex->max_tok * np * hidden * sizeof(uint16_t));
        if (inter % 64 == 0) ex->hbf = zalloc(mp * np * inter * sizeof(uint16_t));
        ex->hflag = zalloc(mp * sizeof *ex->hflag);
        if ((hidden % 64 == 0 && !ex->xbf) || (inter % 64 == 0 && !ex->hbf) || !ex->hflag) {
            hmoe_experts_free(ex);
            return hmoe_fail(HMOE_E_NOMEM, "experts: bf16 workspace for %d tokens", ex->max_tok);
        }
        for (int t = 0; ex->xbf && t < ex->max_tok; t++)
            ex->xv[t].bf = ex->xbf + (size_t)t * np * hidden;
        for (size_t p = 0; ex->hbf && p < mp; p++) ex->hv[p].bf = ex->hbf + p * np * inter;
    }
#if defined(__x86_64__) && defined(HMOE_EXPERTS_X86)
    /* cpuid only: the tile permission is asked for when amx is chosen, not by every set */
    if (hmoe_experts_isa_supported(HMOE_ISA_AVX512BF16) && exk_amx_cpu()) {
        const size_t np = EXK_BF_PARTS;
        if (hidden % 64 == 0) ex->xxa = zalloc((size_t)ex->max_tok * np * hidden * sizeof(uint16_t));
        if (inter % 64 == 0) ex->hxa = zalloc(mp * np * inter * sizeof(uint16_t));
        if ((hidden % 64 == 0 && !ex->xxa) || (inter % 64 == 0 && !ex->hxa)) {
            hmoe_experts_free(ex);
            return hmoe_fail(HMOE_E_NOMEM, "experts: AMX workspace for %d tokens", ex->max_tok);
        }
        for (int t = 0; ex->xxa && t < ex->max_tok; t++)
            ex->xv[t].xa = ex->xxa + (size_t)t * np * hidden;
        for (size_t p = 0; ex->hxa && p < mp; p++) ex->hv[p].xa = ex->hxa + p * np * inter;
    }
#endif
    HMOE_LOG_DEBUG("experts: H %d I %d, %s kernels, pool %s", hidden, inter,
                   hmoe_experts_isa_name(isa), hmoe_pool_describe(ex->pool));
    *out = ex;
    return HMOE_OK;
}

void hmoe_experts_free(struct hmoe_experts *ex)
{
    if (!ex) return;
    hmoe_pool_free(ex->pool);
    hmoe_pool_mem_free(ex->arena, ex->arena_size);
    for (int l = 0; l < HMOE_MAX_LAYERS; l++) free(ex->slot[l]);
    free(ex->ex);
    free(ex->tabs);
    free(ex->mark);
    free(ex->xbuf);
    free(ex->xv);
    free(ex->hbuf);
    free(ex->hv);
    free(ex->xbf);
    free(ex->hbf);
    free(ex->xxa);
    free(ex->hxa);
    free(ex->hflag);
    free(ex->ybuf);
    free(ex->act);
    free(ex->act_start);
    free(ex->pairs);
    free(ex->cur[0]);
    free(ex->cur[1]);
    free(ex->ready);
    free(ex);
}

/* ---- registration ------------------------------------------------------------------------- */

static int table_of(struct hmoe_experts *ex, const struct hmoe_nf4 *q)
{
    struct exk_tables t;
    memcpy(t.code, q->code, sizeof t.code);
    memcpy(t.ncode, q->nested_code, sizeof t.ncode);
    /* checkpoints share one table: look at the last few only */
    for (int i = ex->n_tabs - 1; i >= 0 && i >= ex->n_tabs - 8; i--)
        if (!memcmp(&ex->tabs[i], &t, sizeof t)) return i;
    if (ex->n_tabs == ex->cap_tabs) {
        int cap = ex->cap_tabs ? 2 * ex->cap_tabs : 8;
        struct exk_tables *n = realloc(ex->tabs, (size_t)cap * sizeof *n);
        if (!n) return -1;
        ex->tabs = n;
        ex->cap_tabs = cap;
    }
    ex->tabs[ex->n_tabs] = t;
    return ex->n_tabs++;
}

enum hmoe_status hmoe_experts_add(struct hmoe_experts *ex, int layer, int expert,
                                  const struct hmoe_mlp_w *w)
{
    if (ex->loaded) return hmoe_fail(HMOE_E_INVAL, "experts: add after load");
    if (layer < 0 || layer >= HMOE_MAX_LAYERS || expert < 0 || expert > (1 << 24) || !w)
        return hmoe_fail(HMOE_E_INVAL, "experts: bad layer %d / expert %d", layer, expert);
    enum hmoe_status st;
    if ((st = exk_check_tensor(&w->gate, "gate", ex->I, ex->H)) != HMOE_OK ||
        (st = exk_check_tensor(&w->up, "up", ex->I, ex->H)) != HMOE_OK ||
        (st = exk_check_tensor(&w->down, "down", ex->H, ex->I)) != HMOE_OK) {
        hmoe_err_prefix("layer %d expert %d", layer, expert);
        return st;
    }
    if (expert >= ex->n_slot[layer]) {
        int n = ex->n_slot[layer] ? ex->n_slot[layer] : 64;
        while (n <= expert) n *= 2;
        int32_t *s = realloc(ex->slot[layer], (size_t)n * sizeof *s);
        if (!s) return hmoe_fail(HMOE_E_NOMEM, "experts: slot table");
        for (int i = ex->n_slot[layer]; i < n; i++) s[i] = -1;
        ex->slot[layer] = s;
        ex->n_slot[layer] = n;
    }
    if (ex->slot[layer][expert] >= 0)
        return hmoe_fail(HMOE_E_INVAL, "experts: layer %d expert %d added twice", layer, expert);
    if (ex->n_ex == ex->cap_ex) {
        int cap = ex->cap_ex ? 2 * ex->cap_ex : 64;
        struct exk_expert *n = realloc(ex->ex, (size_t)cap * sizeof *n);
        if (!n) return hmoe_fail(HMOE_E_NOMEM, "experts: %d experts", cap);
        ex->ex = n;
        ex->cap_ex = cap;
    }
    struct exk_expert *e = &ex->ex[ex->n_ex];
    memset(e, 0, sizeof *e);
    e->layer = layer;
    e->id = expert;
    e->src = *w;
    const struct hmoe_tensor *src[3] = {&w->gate, &w->up, &w->down};
    for (int i = 0; i < 3; i++) {
        e->tab[i] = -1;
        if (src[i]->dtype == HMOE_DT_NF4 && (e->tab[i] = table_of(ex, src[i]->nf4)) < 0)
            return hmoe_fail(HMOE_E_NOMEM, "experts: tables");
    }
    ex->slot[layer][expert] = ex->n_ex++;
    return HMOE_OK;
}

enum hmoe_status hmoe_experts_add_model(struct hmoe_experts *ex, const struct hmoe_model *m,
                                        int layer0, int layer1,
                                        int (*keep)(int layer, int expert, void *arg), void *arg)
{
    if (!m || layer0 < 0 || layer1 > m->cfg.num_layers || layer0 > layer1)
        return hmoe_fail(HMOE_E_INVAL, "experts: layers [%d, %d) out of range", layer0, layer1);
    if (m->cfg.hidden_size != ex->H || m->cfg.moe_intermediate_size != ex->I)
        return hmoe_fail(HMOE_E_INVAL, "experts: model H %d I %d, set made for H %d I %d",
                         m->cfg.hidden_size, m->cfg.moe_intermediate_size, ex->H, ex->I);
    for (int l = layer0; l < layer1; l++) {
        if (!m->cfg.layer_is_moe[l]) continue;
        if (!m->layers || !m->layers[l].experts)
            return hmoe_fail(HMOE_E_INVAL, "experts: layer %d has no routed experts", l);
        for (int e = 0; e < m->cfg.num_experts; e++) {
            if (keep && !keep(l, e, arg)) continue;
            enum hmoe_status st = hmoe_experts_add(ex, l, e, &m->layers[l].experts[e]);
            if (st != HMOE_OK) return st;
        }
    }
    return HMOE_OK;
}

/* ---- load --------------------------------------------------------------------------------- */

static size_t align_up(size_t n)
{
    return (n + EXK_ALIGN - 1) / EXK_ALIGN * EXK_ALIGN;
}

static void add_piece(struct exk_expert *e, const void *src, size_t n, size_t *off)
{
    e->piece[e->n_piece++] = (struct exk_piece){src, *off, n, NULL, 0};
    e->nbytes += n;
    *off = align_up(*off + n);
}

/* Plans where matrix i of e goes: fills e->m[i] with offsets (turned into pointers later). */
static void plan_matrix(struct hmoe_experts *ex, struct exk_expert *e, int i, size_t *off)
{
    const struct hmoe_tensor *t = i == 0 ? &e->src.gate : i == 1 ? &e->src.up : &e->src.down;
    struct exk_mat *m = &e->m[i];
    m->rows = t->shape[0];
    m->cols = hmoe_tensor_cols(t);
    int64_t n = m->rows * m->cols;
    m->data = (const void *)(uintptr_t)*off;
    if (t->dtype != HMOE_DT_NF4) {
        m->fmt = t->dtype == HMOE_DT_BF16 ? EXK_BF16 : t->dtype == HMOE_DT_F16 ? EXK_F16 : EXK_F32;
        size_t es = m->fmt == EXK_F32 ? 4 : 2;
        add_piece(e, (const uint8_t *)t->data + (size_t)t->elem0 * es, (size_t)n * es, off);
        return;
    }
    const struct hmoe_nf4 *q = t->nf4;
    m->fmt = EXK_NF4;
    m->round = q->out_dtype == HMOE_DT_BF16  ? EXK_R_BF16
               : q->out_dtype == HMOE_DT_F16 ? EXK_R_F16
                                             : EXK_R_F32;
    m->bs = q->blocksize;
    int64_t b0 = t->elem0 / q->blocksize;
    m->eoff = t->elem0 - b0 * q->blocksize;
    int64_t gend = m->eoff + n, nblk = (gend + m->bs - 1) / m->bs;
    add_piece(e, (const uint8_t *)t->data + (size_t)(b0 * m->bs / 2), (size_t)(gend + 1) / 2, off);
    m->code = ex->tabs[e->tab[i]].code;
    m->ncode = ex->tabs[e->tab[i]].ncode;
    m->cmax = 0.0f;
    m->cmin = INFINITY;
    for (int k = 0; k < 16; k++) {
        float c = fabsf(m->code[k]);
        if (!(c <= m->cmax)) m->cmax = c; /* NaN propagates: the fast rounding is then refused */
        if (c != 0.0f && c < m->cmin) m->cmin = c;
    }
    if (q->absmax_q && ex->o.expand_absmax) { /* decoded once here, exactly as the kernels do */
        m->af = (const float *)(uintptr_t)*off;
        e->piece[e->n_piece++] =
            (struct exk_piece){NULL, *off, (size_t)nblk * sizeof(float), q, b0};
        e->nbytes += (size_t)nblk * sizeof(float);
        *off = align_up(*off + (size_t)nblk * sizeof(float));
    } else if (q->absmax_q) {
        m->nbs = q->nested_blocksize;
        m->boff = (int32_t)(b0 % m->nbs);
        m->noff = q->nested_offset;
        m->aq = (const uint8_t *)(uintptr_t)*off;
        add_piece(e, q->absmax_q + b0, (size_t)nblk, off);
        int64_t ng = (m->boff + nblk + m->nbs - 1) / m->nbs;
        m->nabs = (const float *)(uintptr_t)*off;
        add_piece(e, q->nested_absmax + b0 / m->nbs, (size_t)ng * sizeof(float), off);
    } else {
        m->af = (const float *)(uintptr_t)*off;
        add_piece(e, q->absmax_f32 + b0, (size_t)nblk * sizeof(float), off);
    }
}

static const void *rebase(const void *off, uint8_t *base)
{
    return off ? base + (uintptr_t)off : NULL;
}

struct load_job {
    struct hmoe_experts *ex;
};

/* Gives back the whole pages inside [p + 8, p + n - 8) (release_source): the bytes at a piece's
 * ends may be shared with a neighbouring piece (a nested-absmax group straddling two experts, half
 * an NF4 byte) and are kept. */
static void release_src(const void *p, size_t n)
{
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (!p || n <= 16) return;
    uintptr_t a = ((uintptr_t)p + 8 + pg - 1) & ~(pg - 1), b = ((uintptr_t)p + n - 8) & ~(pg - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

static void load_fn(void *arg, int tid, int nth)
{
    struct hmoe_experts *ex = ((struct load_job *)arg)->ex;
    int i0 = (int)((int64_t)ex->n_ex * tid / nth), i1 = (int)((int64_t)ex->n_ex * (tid + 1) / nth);
    for (int i = i0; i < i1; i++) {
        struct exk_expert *e = &ex->ex[i];
        for (int k = 0; k < e->n_piece; k++) {
            const struct exk_piece *pc = &e->piece[k];
            if (!pc->q) {
                memcpy(ex->arena + pc->off, pc->src, pc->n);
                continue;
            }
            float *af = (float *)(ex->arena + pc->off);
            for (int64_t b = 0; b < (int64_t)(pc->n / sizeof(float)); b++) {
                int64_t g = pc->b0 + b;
                float sc = pc->q->nested_code[pc->q->absmax_q[g]] *
                           pc->q->nested_absmax[g / pc->q->nested_blocksize];
                af[b] = sc + pc->q->nested_offset;
            }
        }
        for (int k = 0; ex->o.release_source && k < e->n_piece; k++) {
            const struct exk_piece *pc = &e->piece[k];
            if (pc->q)
                release_src(pc->q->absmax_q + pc->b0, pc->n / sizeof(float));
            else
                release_src(pc->src, pc->n);
        }
    }
}

enum hmoe_status hmoe_experts_load(struct hmoe_experts *ex)
{
    if (ex->loaded) return hmoe_fail(HMOE_E_INVAL, "experts: loaded twice");
    size_t off = 0;
    for (int i = 0; i < ex->n_ex; i++) {
        struct exk_expert *e = &ex->ex[i];
        for (int k = 0; k < 3; k++) plan_matrix(ex, e, k, &off);
    }
    ex->arena_size = off ? off : EXK_ALIGN;
    ex->arena = hmoe_pool_mem_alloc(ex->pool, ex->arena_size);
    if (!ex->arena) return HMOE_E_NOMEM;
    for (int i = 0; i < ex->n_ex; i++) {
        struct exk_expert *e = &ex->ex[i];
        for (int k = 0; k < 3; k++) {
            struct exk_mat *m = &e->m[k];
            m->data = ex->arena + (uintptr_t)m->data; /* offsets of aq/af/nabs are > 0 */
            if (m->fmt == EXK_NF4) {
                m->aq = m->aq ? ex->arena + (uintptr_t)m->aq : NULL;
                m->af = m->af ? (const float *)rebase(m->af, ex->arena) : NULL;
                m->nabs = m->aq ? (const float *)rebase(m->nabs, ex->arena) : NULL;
            }
        }
    }
    /* the pool's own threads copy, so the pages are first touched on the node */
    struct load_job job = {ex};
    hmoe_pool_run(ex->pool, ex->nth, load_fn, &job);
    ex->mark = malloc((size_t)(ex->n_ex ? ex->n_ex : 1) * sizeof *ex->mark);
    if (!ex->mark) return hmoe_fail(HMOE_E_NOMEM, "experts: marks");
    for (int i = 0; i < ex->n_ex; i++) {
        ex->mark[i] = -1;
        memset(&ex->ex[i].src, 0, sizeof ex->ex[i].src); /* never read again */
        for (int k = 0; k < 9; k++) ex->ex[i].piece[k].src = ex->ex[i].piece[k].q = NULL;
    }
    ex->loaded = 1;
    HMOE_LOG_INFO("experts: %d experts, %.1f MB node-local, %s kernels, %s", ex->n_ex,
                  (double)ex->arena_size / 1e6, hmoe_experts_isa_name(ex->isa),
                  hmoe_pool_describe(ex->pool));
    return HMOE_OK;
}

/* ---- run ---------------------------------------------------------------------------------- */

/* Writes v[0..n) into the even/odd layouts of xv (see struct exk_x). */
static void split_pairs(const float *v, int n, const struct exk_x *xv)
{
    float *e0 = (float *)xv->e[0], *o0 = (float *)xv->o[0], *e1 = (float *)xv->e[1],
          *o1 = (float *)xv->o[1];
    for (int j = 0; 2 * j + 1 < n; j++) {
        e0[j] = v[2 * j];
        o0[j] = v[2 * j + 1];
    }
    if (n & 1) e0[n / 2] = v[n - 1];
    for (int j = 0; 2 * j + 2 < n; j++) {
        e1[j] = v[2 * j + 1];
        o1[j] = v[2 * j + 2];
    }
    if (!(n & 1) && n >= 2) e1[(n - 2) / 2] = v[n - 1];
}

static inline void put_h(const struct exk_x *hv, int64_t r, float v)
{
    ((float *)hv->nat)[r] = v;
    if (r & 1) {
        ((float *)hv->o[0])[r >> 1] = v;
        ((float *)hv->e[1])[(r - 1) >> 1] = v;
    } else {
        ((float *)hv->e[0])[r >> 1] = v;
        if (r >= 2) ((float *)hv->o[1])[(r - 2) >> 1] = v;
    }
}

/* Which bf16 parts the kernels of ex read: 0 none, 1 the bf layout (avx512bf16), 2 the AMX
 * tile layout (amx); only where the buffers exist (H, I multiples of 64). */
static inline int bf_mode(const struct hmoe_experts *ex, const void *buf)
{
    if (!buf) return 0;
    return ex->isa == HMOE_ISA_AVX512BF16 ? 1 : ex->isa == HMOE_ISA_AMX ? 2 : 0;
}

/* h[r] = v into the bf16 parts of hv (mode 1: bf layout of struct exk_x; 2: exk_xa_pos; I =
 * cols); returns its EXK_HF_* range bits. */
static inline int put_h_bf(const struct exk_x *hv, int mode, int64_t r, float v, int64_t I)
{
    if (mode == 1)
        exk_bf_split1(v, (uint16_t *)hv->bf + ((r & 1) ? I / 2 : 0) + (r >> 1), I);
    else
        exk_bf_split1(v, (uint16_t *)hv->xa + exk_xa_pos(r, 0), 2);
    const float a = fabsf(v);
    if (!(a <= EXK_BF_XMAX)) return EXK_HF_BAD;
    return a >= EXK_BF_XMIN ? EXK_HF_BIG : a != 0.0f ? EXK_HF_SMALL : 0;
}

static inline int hflag_ok(int f)
{
    return !(f & EXK_HF_BAD) && ((f & EXK_HF_BIG) || !(f & EXK_HF_SMALL));
}

/* Gate and up rows [r0, r1) of active expert a for all its pairs; h into the pair layouts. */
static void task_gate_up(struct hmoe_experts *ex, int a, int64_t r0, int64_t r1)
{
    const struct exk_expert *e = &ex->ex[ex->act[a]];
    const int bf = bf_mode(ex, ex->isa == HMOE_ISA_AMX ? (void *)ex->hxa : (void *)ex->hbf);
    float yg[EXK_MAX_TOK * EXK_MAX_RT], yu[EXK_MAX_TOK * EXK_MAX_RT];
    const struct exk_x *xs[EXK_MAX_TOK];
    for (int64_t q0 = r0; q0 < r1; q0 += EXK_MAX_RT) {
        const int64_t q1 = q0 + EXK_MAX_RT < r1 ? q0 + EXK_MAX_RT : r1;
        for (int p = ex->act_start[a]; p < ex->act_start[a + 1]; p += EXK_MAX_TOK) {
            int ng =
                ex->act_start[a + 1] - p < EXK_MAX_TOK ? ex->act_start[a + 1] - p : EXK_MAX_TOK;
            for (int i = 0; i < ng; i++) xs[i] = &ex->xv[ex->pairs[p + i].tok];
            ex->rows(&e->m[0], q0, q1, ng, xs, yg, EXK_MAX_RT);
            ex->rows(&e->m[1], q0, q1, ng, xs, yu, EXK_MAX_RT);
            for (int i = 0; i < ng; i++) {
                int fl = 0;
                for (int64_t r = q0; r < q1; r++) {
                    float g = yg[i * EXK_MAX_RT + (r - q0)], u = yu[i * EXK_MAX_RT + (r - q0)];
                    const float h = g / (1.0f + expf(-g)) * u;
                    put_h(&ex->hv[p + i], r, h);
                    if (bf) fl |= put_h_bf(&ex->hv[p + i], bf, r, h, ex->I);
                }
                /* published to the down tasks by the unit count (release) or the barrier */
                if (fl) atomic_fetch_or_explicit(&ex->hflag[p + i], fl, memory_order_relaxed);
            }
        }
    }
}

/* Down rows [r0, r1) of active expert a for all its pairs, into ybuf. */
static void task_down(struct hmoe_experts *ex, int a, int64_t r0, int64_t r1)
{
    const struct exk_expert *e = &ex->ex[ex->act[a]];
    const struct exk_x *hs[EXK_MAX_TOK];
    struct exk_x hl[EXK_MAX_TOK]; /* with the range verdict of the bf16 parts */
    const int bf = bf_mode(ex, ex->isa == HMOE_ISA_AMX ? (void *)ex->hxa : (void *)ex->hbf);
    for (int p = ex->act_start[a]; p < ex->act_start[a + 1]; p += EXK_MAX_TOK) {
        int ng = ex->act_start[a + 1] - p < EXK_MAX_TOK ? ex->act_start[a + 1] - p : EXK_MAX_TOK;
        for (int i = 0; i < ng; i++) {
            hs[i] = &ex->hv[p + i];
            if (!bf) continue;
            hl[i] = ex->hv[p + i];
            hl[i].bf_ok =
                hflag_ok(atomic_load_explicit(&ex->hflag[p + i], memory_order_relaxed));
            hs[i] = &hl[i];
        }
        ex->rows(&e->m[2], r0, r1, ng, hs, ex->ybuf + (size_t)p * ex->H + r0, ex->H);
    }
}

typedef void (*exk_task_fn)(struct hmoe_experts *, int, int64_t, int64_t);

static inline void spin_pause(unsigned i)
{
    if (i >= 4096) { /* a long wait: the thread we wait for may be preempted */
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Runs fn over units [k, k1) of the phase's list (active expert a, rows of a unit). Phase 1
 * (gate/up) under the flow schedule counts finished units per expert; phase 2 (down) waits for
 * its expert's count to reach zero. */
static void do_units(struct hmoe_experts *ex, int phase, int64_t k, int64_t k1, exk_task_fn fn)
{
    const int64_t rows = phase == 0 ? ex->I : ex->H, per = (rows + EXK_UNIT - 1) / EXK_UNIT;
    const int flow = ex->sched == HMOE_SCHED_FLOW;
    while (k < k1) {
        int a = (int)(k / per);
        int64_t kend = (a + 1) * per < k1 ? (a + 1) * per : k1;
        int64_t r0 = (k - a * per) * EXK_UNIT, r1 = (kend - a * per) * EXK_UNIT;
        if (flow && phase == 1)
            for (unsigned i = 0; atomic_load_explicit(&ex->ready[a].left, memory_order_acquire);
                 i++)
                spin_pause(i);
        fn(ex, a, r0, r1 < rows ? r1 : rows);
        if (flow && phase == 0)
            atomic_fetch_sub_explicit(&ex->ready[a].left, (int32_t)(kend - k),
                                      memory_order_release);
        k = kend;
    }
}

/* Claims units of cursor c into [*k0, *k1): the owner a quarter of what is left (at least n), so
 * it streams long runs and leaves small pieces for the end, a thief n; 0 when it is used up. */
static inline int claim(struct exk_cursor *c, int64_t n, int own, int64_t *k0, int64_t *k1)
{
    int64_t k = atomic_load_explicit(&c->next, memory_order_relaxed);
    if (k >= c->end) return 0;
    if (own && (c->end - k) / 4 > n) n = (c->end - k) / 4;
    k = atomic_fetch_add_explicit(&c->next, n, memory_order_relaxed);
    if (k >= c->end) return 0;
    *k0 = k;
    *k1 = k + n < c->end ? k + n : c->end;
    return 1;
}

/* One phase (0 = gate/up, 1 = down) on thread tid: its own range chunk by chunk, then chunks
 * stolen from the other threads' ranges (from tid + 1 on) until every unit is claimed. The static
 * schedule runs the own range in one piece and steals nothing. */
static void run_phase(struct hmoe_experts *ex, int phase, int tid, int nth, exk_task_fn fn)
{
    int64_t k0, k1;
    struct exk_cursor *cur = ex->cur[phase];
    if (ex->sched == HMOE_SCHED_STATIC) {
        do_units(ex, phase, atomic_load_explicit(&cur[tid].next, memory_order_relaxed),
                 cur[tid].end, fn);
        return;
    }
    for (int i = 0; i < nth; i++) {
        struct exk_cursor *c = &cur[(tid + i) % nth];
        while (claim(c, ex->chunk[phase], i == 0, &k0, &k1)) do_units(ex, phase, k0, k1, fn);
    }
}

/* Before the job (published by the pool's doorbell): every thread's ranges, the flow counts. */
static void plan_phases(struct hmoe_experts *ex, int nth)
{
    for (int ph = 0; ph < 2; ph++) {
        const int64_t rows = ph == 0 ? ex->I : ex->H;
        const int64_t total = (rows + EXK_UNIT - 1) / EXK_UNIT * ex->n_act;
        for (int t = 0; t < nth; t++) {
            atomic_store_explicit(&ex->cur[ph][t].next, total * t / nth, memory_order_relaxed);
            ex->cur[ph][t].end = total * (t + 1) / nth;
        }
    }
    const int32_t per_i = (int32_t)((ex->I + EXK_UNIT - 1) / EXK_UNIT);
    for (int a = 0; a < ex->n_act; a++)
        atomic_store_explicit(&ex->ready[a].left, per_i, memory_order_relaxed);
    for (int p = 0; ex->hflag && p < ex->act_start[ex->n_act]; p++)
        atomic_store_explicit(&ex->hflag[p], 0, memory_order_relaxed);
}

static void run_fn(void *arg, int tid, int nth)
{
    struct hmoe_experts *ex = arg;
    for (int t = tid; t < ex->n_tok; t += nth) {
        ex->xv[t].nat = ex->x + (int64_t)t * ex->H;
        split_pairs(ex->xv[t].nat, ex->H, &ex->xv[t]);
        ex->xv[t].bf_ok = 0;
#if defined(__x86_64__) && defined(HMOE_EXPERTS_X86)
        const int mode = bf_mode(ex, ex->isa == HMOE_ISA_AMX ? (void *)ex->xv[t].xa : ex->xv[t].bf);
        if (mode && ex->xv[t].bf) { /* parts of the even, odd halves (then the AMX layout) */
            uint16_t *b = (uint16_t *)ex->xv[t].bf;
            const float a0 = exk_bf_split_avx512bf16(ex->xv[t].e[0], ex->hH, b, ex->H),
                        a1 = exk_bf_split_avx512bf16(ex->xv[t].o[0], ex->hH, b + ex->hH, ex->H);
            ex->xv[t].bf_ok = exk_bf_x_ok(a0 != a0 || a1 != a1 ? NAN : a0 > a1 ? a0 : a1);
            if (mode == 2) exk_xa_from_bf(b, ex->H, (uint16_t *)ex->xv[t].xa);
        }
#endif
    }
    hmoe_pool_barrier(ex->pool);
    run_phase(ex, 0, tid, nth, task_gate_up);
    if (ex->sched != HMOE_SCHED_FLOW) hmoe_pool_barrier(ex->pool);
    run_phase(ex, 1, tid, nth, task_down);
    hmoe_pool_barrier(ex->pool);
    const int64_t units = (ex->H + EXK_UNIT - 1) / EXK_UNIT;
    int64_t h0 = units * tid / nth * EXK_UNIT, h1 = units * (tid + 1) / nth * EXK_UNIT;
    if (h1 > ex->H) h1 = ex->H;
    for (int a = 0; a < ex->n_act; a++)
        for (int p = ex->act_start[a]; p < ex->act_start[a + 1]; p++) {
            const float w = ex->pairs[p].w, *y = ex->ybuf + (size_t)p * ex->H;
            float *o = ex->out + (int64_t)ex->pairs[p].tok * ex->H;
            for (int64_t r = h0; r < h1; r++) o[r] += w * y[r];
        }
}

/* Groups the (token, slot) pairs of tokens [t0, t0 + n) by expert; returns pairs found. */
static int group_pairs(struct hmoe_experts *ex, int layer, int t0, int n, int top_k,
                       const int32_t *idx, const float *wts)
{
    const int32_t *slot = ex->slot[layer];
    int n_act = 0;
    for (int t = t0; t < t0 + n; t++)
        for (int k = 0; k < top_k; k++) {
            int32_t id = idx[(int64_t)t * top_k + k];
            if (id < 0) continue;
            int32_t e = slot[id];
            if (ex->mark[e] < 0) {
                ex->mark[e] = n_act;
                ex->act[n_act] = e;
                ex->act_start[n_act] = 0;
                n_act++;
            }
            ex->act_start[ex->mark[e]]++;
        }
    /* ascending expert id (insertion sort of counts along) */
    for (int i = 1; i < n_act; i++) {
        int32_t e = ex->act[i], c = ex->act_start[i];
        int j = i;
        for (; j > 0 && ex->ex[ex->act[j - 1]].id > ex->ex[e].id; j--) {
            ex->act[j] = ex->act[j - 1];
            ex->act_start[j] = ex->act_start[j - 1];
        }
        ex->act[j] = e;
        ex->act_start[j] = c;
    }
    int total = 0;
    for (int i = 0; i < n_act; i++) {
        int c = ex->act_start[i];
        ex->act_start[i] = total;
        ex->mark[ex->act[i]] = total; /* fill cursor */
        total += c;
    }
    ex->act_start[n_act] = total;
    for (int t = t0; t < t0 + n; t++)
        for (int k = 0; k < top_k; k++) {
            int32_t id = idx[(int64_t)t * top_k + k];
            if (id < 0) continue;
            int32_t e = slot[id];
            ex->pairs[ex->mark[e]++] = (struct exk_pair){t - t0, wts[(int64_t)t * top_k + k]};
        }
    for (int i = 0; i < n_act; i++) ex->mark[ex->act[i]] = -1;
    ex->n_act = n_act;
    return total;
}

enum hmoe_status hmoe_experts_run(struct hmoe_experts *ex, int layer, int n_tok, int top_k,
                                  const float *x, const int32_t *idx, const float *wts, float *out)
{
    if (!ex->loaded) return hmoe_fail(HMOE_E_INVAL, "experts: run before load");
    if (layer < 0 || layer >= HMOE_MAX_LAYERS || n_tok < 0 || top_k < 0 || top_k > ex->max_k)
        return hmoe_fail(HMOE_E_INVAL, "experts: bad run (layer %d, %d tokens, top_k %d of %d)",
                         layer, n_tok, top_k, ex->max_k);
    if (n_tok == 0 || top_k == 0) return HMOE_OK;
    if (!x || !idx || !wts || !out) return hmoe_fail(HMOE_E_INVAL, "experts: NULL buffer");
    for (int64_t i = 0; i < (int64_t)n_tok * top_k; i++) {
        int32_t id = idx[i];
        if (id >= 0 && (id >= ex->n_slot[layer] || ex->slot[layer][id] < 0))
            return hmoe_fail(HMOE_E_INVAL, "experts: layer %d expert %d is not held here", layer,
                             id);
    }
    for (int t0 = 0; t0 < n_tok; t0 += ex->max_tok) {
        int n = n_tok - t0 < ex->max_tok ? n_tok - t0 : ex->max_tok;
        if (group_pairs(ex, layer, t0, n, top_k, idx, wts) == 0) continue;
        ex->n_tok = n;
        ex->x = x + (int64_t)t0 * ex->H;
        ex->out = out + (int64_t)t0 * ex->H;
        plan_phases(ex, ex->nth);
        hmoe_pool_run(ex->pool, ex->nth, run_fn, ex);
    }
    return HMOE_OK;
}

uint64_t hmoe_experts_nbytes(const struct hmoe_experts *ex, int layer, int expert)
{
    if (layer < 0 || layer >= HMOE_MAX_LAYERS || expert < 0 || expert >= ex->n_slot[layer] ||
        ex->slot[layer][expert] < 0)
        return 0;
    return ex->ex[ex->slot[layer][expert]].nbytes;
}

uint64_t hmoe_experts_total_bytes(const struct hmoe_experts *ex)
{
    return ex->loaded ? ex->arena_size : 0;
}

void hmoe_experts_set_threads(struct hmoe_experts *ex, int n)
{
    int sz = hmoe_pool_size(ex->pool);
    ex->nth = n < 1 ? 1 : n > sz ? sz : n;
}

enum hmoe_status hmoe_experts_set_isa(struct hmoe_experts *ex, enum hmoe_experts_isa isa)
{
    if (isa == HMOE_ISA_AUTO) isa = hmoe_experts_isa_best();
    if (isa <= HMOE_ISA_AUTO || isa >= HMOE_ISA_COUNT || !hmoe_experts_isa_supported(isa))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "experts: ISA %s not supported",
                         hmoe_experts_isa_name(isa));
    ex->isa = isa;
    ex->rows = isa_fn(isa);
    return HMOE_OK;
}

enum hmoe_status hmoe_experts_set_sched(struct hmoe_experts *ex, enum hmoe_experts_sched s)
{
    if ((int)s < 0 || s >= HMOE_SCHED_COUNT)
        return hmoe_fail(HMOE_E_INVAL, "experts: unknown schedule %d", (int)s);
    ex->sched = s;
    return HMOE_OK;
}

const char *hmoe_experts_sched_name(enum hmoe_experts_sched s)
{
    switch (s) {
    case HMOE_SCHED_FLOW: return "flow";
    case HMOE_SCHED_STEAL: return "steal";
    case HMOE_SCHED_STATIC: return "static";
    default: return "?";
    }
}

struct hmoe_pool *hmoe_experts_pool(struct hmoe_experts *ex)
{
    return ex->pool;
}

enum hmoe_experts_isa hmoe_experts_isa_used(const struct hmoe_experts *ex)
{
    return ex->isa;
}
