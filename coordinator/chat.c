/* chat.c: conversation history and chat templates. ChatML (Qwen): each message renders as
 * "<|im_start|>{role}\n{content}<|im_end|>\n" and the generation prompt is
 * "<|im_start|>assistant\n" (MODEL.md §8; no default system prompt). "none" is raw text: the
 * contents concatenated. The rendered string is then encoded with special tokens parsed. */
#include <stdlib.h>
#include <string.h>

#include "hmoe/text.h"

int hmoe_chat_template_parse(const char *name)
{
    if (!name) return -1;
    if (!strcmp(name, "chatml") || !strcmp(name, "qwen") || !strcmp(name, "qwen2") ||
        !strcmp(name, "qwen3"))
        return HMOE_CHAT_CHATML;
    if (!strcmp(name, "none") || !strcmp(name, "raw")) return HMOE_CHAT_NONE;
    return -1;
}

const char *hmoe_chat_template_name(enum hmoe_chat_template t)
{
    return t == HMOE_CHAT_CHATML ? "chatml" : t == HMOE_CHAT_NONE ? "none" : "?";
}

void hmoe_chat_init(struct hmoe_chat *c)
{
    memset(c, 0, sizeof *c);
}

void hmoe_chat_free(struct hmoe_chat *c)
{
    if (!c) return;
    free(c->system);
    for (size_t i = 0; i < c->n; i++) {
        free(c->msgs[i].role);
        free(c->msgs[i].content);
    }
    free(c->msgs);
    memset(c, 0, sizeof *c);
}

enum hmoe_status hmoe_chat_set_system(struct hmoe_chat *c, const char *system)
{
    char *s = NULL;
    if (system && *system) {
        size_t n = strlen(system);
        if (hmoe_utf8_valid_prefix(system, n) != n)
            return hmoe_fail(HMOE_E_INVAL, "system prompt is not valid UTF-8");
        if (!(s = strdup(system))) return hmoe_fail(HMOE_E_NOMEM, "chat: out of memory");
    }
    free(c->system);
    c->system = s;
    return HMOE_OK;
}

static int role_ok(const char *r)
{
    if (!*r || strlen(r) > 32) return 0;
    for (; *r; r++)
        if (!((*r >= 'a' && *r <= 'z') || (*r >= 'A' && *r <= 'Z') || *r == '_')) return 0;
    return 1;
}

enum hmoe_status hmoe_chat_add(struct hmoe_chat *c, const char *role, const char *content)
{
    if (!role || !role_ok(role))
        return hmoe_fail(HMOE_E_INVAL, "chat: bad role '%s' (letters and _ only)",
                         role ? role : "");
    if (!content) content = "";
    size_t n = strlen(content);
    if (hmoe_utf8_valid_prefix(content, n) != n)
        return hmoe_fail(HMOE_E_INVAL, "chat: message is not valid UTF-8 (at byte %zu)",
                         hmoe_utf8_valid_prefix(content, n));
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 8;
        struct hmoe_chat_msg *m = realloc(c->msgs, nc * sizeof *m);
        if (!m) return hmoe_fail(HMOE_E_NOMEM, "chat: out of memory");
        c->msgs = m;
        c->cap = nc;
    }
    char *r = strdup(role), *t = strdup(content);
    if (!r || !t) {
        free(r);
        free(t);
        return hmoe_fail(HMOE_E_NOMEM, "chat: out of memory");
    }
    c->msgs[c->n].role = r;
    c->msgs[c->n].content = t;
    c->n++;
    return HMOE_OK;
}

void hmoe_chat_pop(struct hmoe_chat *c)
{
    if (!c->n) return;
    c->n--;
    free(c->msgs[c->n].role);
    free(c->msgs[c->n].content);
}

struct sbuf {
    char *b;
    size_t n, cap;
    int oom;
};

static void put(struct sbuf *s, const char *t)
{
    size_t k = strlen(t);
    if (s->oom) return;
    if (s->n + k + 1 > s->cap) {
        size_t nc = s->cap ? s->cap : 256;
        while (nc < s->n + k + 1) nc *= 2;
        char *q = realloc(s->b, nc);
        if (!q) {
            s->oom = 1;
            return;
        }
        s->b = q;
        s->cap = nc;
    }
    memcpy(s->b + s->n, t, k);
    s->n += k;
    s->b[s->n] = 0;
}

static void chatml_msg(struct sbuf *s, const char *role, const char *content)
{
    put(s, "<|im_start|>");
    put(s, role);
    put(s, "\n");
    put(s, content);
    put(s, "<|im_end|>\n");
}

enum hmoe_status hmoe_chat_render(const struct hmoe_chat *c, enum hmoe_chat_template t,
                                  int add_generation_prompt, char **out)
{
    *out = NULL;
    struct sbuf s = {0};
    put(&s, ""); /* an empty conversation still gives "" */
    if (t == HMOE_CHAT_CHATML) {
        if (c->system && *c->system) chatml_msg(&s, "system", c->system);
        for (size_t i = 0; i < c->n; i++) chatml_msg(&s, c->msgs[i].role, c->msgs[i].content);
        if (add_generation_prompt) put(&s, "<|im_start|>assistant\n");
    } else if (t == HMOE_CHAT_NONE) {
        if (c->system) put(&s, c->system);
        for (size_t i = 0; i < c->n; i++) put(&s, c->msgs[i].content);
    } else {
        return hmoe_fail(HMOE_E_INVAL, "chat: unknown template %d", (int)t);
    }
    if (s.oom) {
        free(s.b);
        return hmoe_fail(HMOE_E_NOMEM, "chat: out of memory");
    }
    *out = s.b;
    return HMOE_OK;
}
