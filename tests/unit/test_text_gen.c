/* test_text_gen.c: chat templates (ChatML string and its encoding equal the HF fixture), the
 * generation defaults from config.json/generation_config.json, prompt fitting (refusal and left
 * truncation), and the generation state: stop strings split across tokens, EOS lists, special
 * tokens hidden, UTF-8 never split, length and context limits, abort. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "hmoe/text.h"
#include "hmoe_test.h"

#define TOK_DIR HMOE_TEST_DATA "/tokenizer"

static struct hmoe_tokenizer *tok;

/* Feeds text one byte token at a time (every character split across tokens); returns the
 * concatenated output (static buffer) and the finish reason. Checks that every piece is valid
 * UTF-8 and never contains a prefix of a held stop string prematurely. */
static char outbuf[4096];
static enum hmoe_finish feed_bytes(struct hmoe_gen *g, const char *s, size_t *n_out)
{
    size_t w = 0;
    enum hmoe_finish f = HMOE_FINISH_NONE;
    for (size_t i = 0; s[i] && f == HMOE_FINISH_NONE; i++) {
        char b[2] = {s[i], 0};
        int32_t id = hmoe_tokenizer_token_id(tok, b);
        CHECK(id >= 0);
        const char *t;
        size_t tn;
        enum hmoe_status st;
        f = hmoe_gen_feed(g, id, &t, &tn, &st);
        CHECK(st == HMOE_OK);
        CHECK(hmoe_utf8_valid_prefix(t, tn) == tn);
        CHECK(strlen(t) == tn);
        memcpy(outbuf + w, t, tn);
        w += tn;
    }
    outbuf[w] = 0;
    *n_out = w;
    return f;
}

static struct hmoe_gen *mk(struct hmoe_gen_params *p, size_t n_prompt)
{
    struct hmoe_gen *g = NULL;
    CHECKF(hmoe_gen_init(p, tok, n_prompt, &g) == HMOE_OK, "%s", hmoe_err_msg());
    return g;
}

static void test_stop_strings(void)
{
    struct hmoe_gen_params p;
    hmoe_gen_params_default(&p);
    p.stop[0] = "<END>";
    p.n_stop = 1;
    size_t n;

    /* split across byte tokens; text before is streamed, the stop string is not */
    struct hmoe_gen *g = mk(&p, 5);
    CHECK(feed_bytes(g, "Hi \xc3\xa9! <END> more", &n) == HMOE_FINISH_STOP_STRING);
    CHECK(!strcmp(outbuf, "Hi \xc3\xa9! "));
    CHECK(hmoe_gen_finish(g) == HMOE_FINISH_STOP_STRING);
    const char *t;
    size_t tn;
    CHECK(hmoe_gen_feed(g, 40, &t, &tn, NULL) == HMOE_FINISH_STOP_STRING && tn == 0);
    hmoe_gen_free(g);

    /* a partial match is held, then released when it diverges */
    g = mk(&p, 5);
    int32_t lt = hmoe_tokenizer_token_id(tok, "<"), e = hmoe_tokenizer_token_id(tok, "E");
    int32_t x = hmoe_tokenizer_token_id(tok, "x");
    CHECK(hmoe_gen_feed(g, lt, &t, &tn, NULL) == HMOE_FINISH_NONE && tn == 0);
    CHECK(hmoe_gen_feed(g, e, &t, &tn, NULL) == HMOE_FINISH_NONE && tn == 0);
    CHECK(hmoe_gen_feed(g, x, &t, &tn, NULL) == HMOE_FINISH_NONE && tn == 3 && !strcmp(t, "<Ex"));
    /* "<<END": the first '<' is released, the second held */
    CHECK(hmoe_gen_feed(g, lt, &t, &tn, NULL) == HMOE_FINISH_NONE && tn == 0);
    CHECK(hmoe_gen_feed(g, lt, &t, &tn, NULL) == HMOE_FINISH_NONE && tn == 1 && !strcmp(t, "<"));
    CHECK(hmoe_gen_abort(g, &t, &tn) == HMOE_FINISH_ABORT && tn == 1 && !strcmp(t, "<"));
    hmoe_gen_free(g);

    /* several stop strings: the earliest occurrence wins */
    p.stop[0] = "bar";
    p.stop[1] = "oba";
    p.n_stop = 2;
    g = mk(&p, 5);
    CHECK(feed_bytes(g, "foobar", &n) == HMOE_FINISH_STOP_STRING && !strcmp(outbuf, "fo"));
    hmoe_gen_free(g);

    /* a stop string inside one multi-byte token, and a multi-byte stop string */
    p.stop[0] = "\xc3\xa9t\xc3\xa9";
    p.n_stop = 1;
    g = mk(&p, 5);
    CHECK(feed_bytes(g, "l'\xc3\xa9t\xc3\xa9 x", &n) == HMOE_FINISH_STOP_STRING &&
          !strcmp(outbuf, "l'"));
    hmoe_gen_free(g);
    struct hmoe_tokens ids = {0};
    const char *s = "hello world, hello";
    CHECK(hmoe_tokenizer_encode(tok, s, strlen(s), 1, &ids) == HMOE_OK);
    p.stop[0] = "lo wo";
    g = mk(&p, 5);
    size_t w = 0;
    enum hmoe_finish f = HMOE_FINISH_NONE;
    for (size_t i = 0; i < ids.n && !f; i++) {
        f = hmoe_gen_feed(g, ids.ids[i], &t, &tn, NULL);
        memcpy(outbuf + w, t, tn);
        w += tn;
    }
    outbuf[w] = 0;
    CHECK(f == HMOE_FINISH_STOP_STRING && !strcmp(outbuf, "hel"));
    hmoe_gen_free(g);
    hmoe_tokens_free(&ids);

    /* bad stop strings */
    p.stop[0] = "";
    CHECK(hmoe_gen_init(&p, tok, 5, &g) == HMOE_E_INVAL);
    p.stop[0] = "\xff";
    CHECK(hmoe_gen_init(&p, tok, 5, &g) == HMOE_E_INVAL);
}

static void test_eos_special_limits(void)
{
    int32_t im_end = hmoe_tokenizer_token_id(tok, "<|im_end|>");
    int32_t eot = hmoe_tokenizer_token_id(tok, "<|endoftext|>");
    int32_t im_start = hmoe_tokenizer_token_id(tok, "<|im_start|>");
    int32_t think = hmoe_tokenizer_token_id(tok, "<think>");
    int32_t a = hmoe_tokenizer_token_id(tok, "a");
    int32_t eos[2] = {im_end, eot};
    struct hmoe_gen_params p;
    hmoe_gen_params_default(&p);
    p.eos_ids = eos;
    p.n_eos = 2;
    p.stop[0] = "ab";
    p.n_stop = 1;
    const char *t;
    size_t tn;
    /* each EOS of the list ends the request; held text is flushed; EOS text hidden */
    for (int k = 0; k < 2; k++) {
        struct hmoe_gen *g = mk(&p, 3);
        CHECK(hmoe_gen_feed(g, a, &t, &tn, NULL) == HMOE_FINISH_NONE && tn == 0);
        CHECK(hmoe_gen_feed(g, eos[k], &t, &tn, NULL) == HMOE_FINISH_EOS);
        CHECK(tn == 1 && !strcmp(t, "a"));
        CHECK(!strcmp(hmoe_finish_openai(hmoe_gen_finish(g)), "stop"));
        hmoe_gen_free(g);
    }
    /* ignore_eos: go on, EOS text still hidden; special tokens hidden, non-special shown */
    p.ignore_eos = 1;
    p.n_stop = 0;
    struct hmoe_gen *g = mk(&p, 3);
    CHECK(hmoe_gen_feed(g, im_end, &t, &tn, NULL) == HMOE_FINISH_NONE && tn == 0);
    CHECK(hmoe_gen_feed(g, im_start, &t, &tn, NULL) == HMOE_FINISH_NONE && tn == 0);
    CHECK(hmoe_gen_feed(g, think, &t, &tn, NULL) == HMOE_FINISH_NONE && !strcmp(t, "<think>"));
    enum hmoe_status st;
    CHECK(hmoe_gen_feed(g, 1 << 30, &t, &tn, &st) == HMOE_FINISH_NONE && st == HMOE_E_INVAL);
    CHECK(hmoe_gen_n_generated(g) == 3);
    hmoe_gen_free(g);
    /* skip_special = 0 shows special tokens */
    p.skip_special = 0;
    g = mk(&p, 3);
    CHECK(hmoe_gen_feed(g, im_start, &t, &tn, NULL) == HMOE_FINISH_NONE &&
          !strcmp(t, "<|im_start|>"));
    hmoe_gen_free(g);

    /* max new tokens: the last token's text is included, held text flushed */
    hmoe_gen_params_default(&p);
    p.max_new_tokens = 3;
    p.stop[0] = "xyz";
    p.n_stop = 1;
    g = mk(&p, 3);
    size_t n;
    CHECK(feed_bytes(g, "abxq", &n) == HMOE_FINISH_LENGTH && !strcmp(outbuf, "abx"));
    CHECK(!strcmp(hmoe_finish_openai(HMOE_FINISH_LENGTH), "length"));
    hmoe_gen_free(g);
    /* context: 7 prompt tokens in a context of 10 leave 3 */
    hmoe_gen_params_default(&p);
    p.n_ctx = 10;
    g = mk(&p, 7);
    CHECK(feed_bytes(g, "abcdef", &n) == HMOE_FINISH_CONTEXT && !strcmp(outbuf, "abc"));
    hmoe_gen_free(g);
    /* UTF-8 held across tokens and flushed as U+FFFD when the request ends mid-character */
    p.n_ctx = 4096;
    p.max_new_tokens = 2;
    g = mk(&p, 3);
    CHECK(feed_bytes(g, "a\xe2\x82\xac", &n) == HMOE_FINISH_LENGTH &&
          !strcmp(outbuf, "a\xef\xbf\xbd"));
    hmoe_gen_free(g);
    CHECK(hmoe_gen_init(&p, tok, 4096, &g) == HMOE_E_RANGE);
    p.max_new_tokens = 0;
    CHECK(hmoe_gen_init(&p, tok, 3, &g) == HMOE_E_INVAL);
}

static void test_fit_prompt(void)
{
    struct hmoe_gen_params p;
    hmoe_gen_params_default(&p);
    p.n_ctx = 10;
    struct hmoe_tokens t = {0};
    for (int i = 0; i < 9; i++) CHECK(hmoe_tokens_push(&t, 100 + i) == HMOE_OK);
    size_t dropped = 99;
    CHECK(hmoe_gen_fit_prompt(&p, &t, &dropped) == HMOE_OK && t.n == 9 && dropped == 0);
    CHECK(hmoe_tokens_push(&t, 109) == HMOE_OK);
    CHECK(hmoe_gen_fit_prompt(&p, &t, &dropped) == HMOE_E_RANGE && t.n == 10);
    CHECK(strstr(hmoe_err_msg(), "10 tokens") && strstr(hmoe_err_msg(), "truncat"));
    p.truncate_left = 1;
    p.max_new_tokens = 3;
    CHECK(hmoe_gen_fit_prompt(&p, &t, &dropped) == HMOE_OK);
    CHECK(t.n == 7 && dropped == 3 && t.ids[0] == 103 && t.ids[6] == 109);
    t.n = 0;
    CHECK(hmoe_gen_fit_prompt(&p, &t, &dropped) == HMOE_E_INVAL); /* empty prompt */
    hmoe_tokens_free(&t);
}

static void test_defaults(void)
{
    struct hmoe_gen_defaults d;
    const char *cfg = "{\"eos_token_id\": 151645, \"bos_token_id\": 151643, "
                      "\"max_position_embeddings\": 262144}";
    const char *gen = "{\"bos_token_id\":151643,\"do_sample\":true,\"eos_token_id\":[151645,"
                      "151643],\"pad_token_id\":151643,\"temperature\":0.7,\"top_k\":20,"
                      "\"top_p\":0.8}";
    CHECK(hmoe_gen_defaults_parse(cfg, gen, &d) == HMOE_OK);
    CHECK(d.n_eos == 2 && d.eos_ids[0] == 151645 && d.eos_ids[1] == 151643);
    CHECK(d.bos_id == 151643 && d.max_context == 262144);
    CHECK_NEAR(d.sampling.temperature, 0.7, 1e-6);
    CHECK(d.sampling.top_k == 20);
    CHECK_NEAR(d.sampling.top_p, 0.8, 1e-6);
    CHECK(d.sampling.min_p == 0.0f && d.sampling.repeat_penalty == 1.0f);
    CHECK(hmoe_gen_defaults_parse(NULL, "{\"do_sample\": false, \"temperature\": 0.9, "
                                        "\"repetition_penalty\": 1.05, \"min_p\": 0.05}",
                                  &d) == HMOE_OK);
    CHECK(d.sampling.temperature == 0.0f && d.n_eos == 0);
    CHECK_NEAR(d.sampling.repeat_penalty, 1.05, 1e-6);
    CHECK_NEAR(d.sampling.min_p, 0.05, 1e-6);
    CHECK(hmoe_gen_defaults_parse("{\"eos_token_id\": \"x\"}", NULL, &d) == HMOE_E_FORMAT);
    CHECK(hmoe_gen_defaults_parse(NULL, "{\"temperature\": -2}", &d) == HMOE_E_FORMAT);
    CHECK(hmoe_gen_defaults_parse("[1", NULL, &d) == HMOE_E_FORMAT);

    /* from a model directory */
    char dir[] = "/tmp/hmoe_textgen_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(gen, f);
        fclose(f);
    }
    CHECK(hmoe_gen_defaults_load(dir, &d) == HMOE_OK && d.n_eos == 2 && d.sampling.top_k == 20);
    unlink(path);
    rmdir(dir);
}

static char *find_case(const char *hex, size_t *n_ids, int32_t **ids)
{
    FILE *f = fopen(TOK_DIR "/cases.jsonl", "r");
    if (!f) return NULL;
    static char line[1 << 16];
    char *found = NULL;
    while (fgets(line, sizeof line, f)) {
        cJSON *c = cJSON_Parse(line);
        if (!c) continue;
        if (!strcmp(cJSON_GetObjectItem(c, "hex")->valuestring, hex)) {
            cJSON *a = cJSON_GetObjectItem(c, "ids");
            *n_ids = (size_t)cJSON_GetArraySize(a);
            *ids = malloc((*n_ids + 1) * sizeof **ids);
            for (size_t i = 0; i < *n_ids; i++)
                (*ids)[i] = (int32_t)cJSON_GetArrayItem(a, (int)i)->valuedouble;
            found = line;
        }
        cJSON_Delete(c);
        if (found) break;
    }
    fclose(f);
    return found;
}

static void test_chat(void)
{
    CHECK(hmoe_chat_template_parse("chatml") == HMOE_CHAT_CHATML);
    CHECK(hmoe_chat_template_parse("none") == HMOE_CHAT_NONE);
    CHECK(hmoe_chat_template_parse("llama9") == -1);
    struct hmoe_chat c;
    hmoe_chat_init(&c);
    char *s;
    CHECK(hmoe_chat_add(&c, "user", "hi") == HMOE_OK);
    CHECK(hmoe_chat_render(&c, HMOE_CHAT_CHATML, 1, &s) == HMOE_OK);
    const char *want1 = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    CHECK(!strcmp(s, want1));
    /* its encoding equals Hugging Face's for the same string (fixture case) */
    char hex[256] = "";
    for (size_t i = 0; want1[i]; i++) sprintf(hex + 2 * i, "%02x", (unsigned char)want1[i]);
    size_t n_ref = 0;
    int32_t *ref = NULL;
    CHECK(find_case(hex, &n_ref, &ref) != NULL);
    struct hmoe_tokens ids = {0};
    CHECK(hmoe_tokenizer_encode(tok, s, strlen(s), 1, &ids) == HMOE_OK);
    CHECK(ref && ids.n == n_ref && !memcmp(ids.ids, ref, n_ref * sizeof *ref));
    CHECK(ids.ids[0] == hmoe_tokenizer_token_id(tok, "<|im_start|>"));
    free(ref);
    hmoe_tokens_free(&ids);
    free(s);

    /* system prompt and multi-turn history */
    CHECK(hmoe_chat_set_system(&c, "Be brief.") == HMOE_OK);
    CHECK(hmoe_chat_add(&c, "assistant", "Hello!") == HMOE_OK);
    CHECK(hmoe_chat_add(&c, "user", "2+2?") == HMOE_OK);
    CHECK(hmoe_chat_render(&c, HMOE_CHAT_CHATML, 1, &s) == HMOE_OK);
    CHECK(!strcmp(s, "<|im_start|>system\nBe brief.<|im_end|>\n"
                     "<|im_start|>user\nhi<|im_end|>\n"
                     "<|im_start|>assistant\nHello!<|im_end|>\n"
                     "<|im_start|>user\n2+2?<|im_end|>\n"
                     "<|im_start|>assistant\n"));
    free(s);
    CHECK(hmoe_chat_render(&c, HMOE_CHAT_CHATML, 0, &s) == HMOE_OK);
    CHECK(strstr(s, "2+2?<|im_end|>\n") && s[strlen(s) - 1] == '\n' &&
          !strstr(s, "2+2?<|im_end|>\n<|im_start|>assistant"));
    free(s);
    CHECK(hmoe_chat_render(&c, HMOE_CHAT_NONE, 1, &s) == HMOE_OK);
    CHECK(!strcmp(s, "Be brief.hiHello!2+2?"));
    free(s);
    hmoe_chat_pop(&c);
    CHECK(c.n == 2);
    CHECK(hmoe_chat_add(&c, "us\ner", "x") == HMOE_E_INVAL);
    CHECK(hmoe_chat_add(&c, "user", "bad \xc3") == HMOE_E_INVAL);
    CHECK(hmoe_chat_set_system(&c, "\xff") == HMOE_E_INVAL);
    CHECK(c.n == 2);
    hmoe_chat_free(&c);
    hmoe_chat_free(&c); /* idempotent */
}

static void test_cli_opts(void)
{
    struct hmoe_text_opts o;
    hmoe_text_opts_init(&o);
    setenv("HMOE_ARG_TEMP", "0.3", 1);
    setenv("HMOE_ARG_TOP_K", "7", 1);
    CHECK(hmoe_text_opts_env(&o) == HMOE_OK);
    char *argv[] = {"hmoe", "--temp", "0.9", "--top-p=0.5", "-n", "12", "-r", "User:",
                    "--stop", "###", "--ignore-eos", "--truncate", "left", "-s", "1234",
                    "-sys", "Be brief.", "--chat-template", "none", "--model", "x"};
    int argc = (int)(sizeof argv / sizeof *argv), unknown = 0;
    for (int i = 1; i < argc; i++) {
        int r = hmoe_text_opts_parse(&o, argc, argv, &i);
        CHECKF(r >= 0, "%s: %s", argv[i], hmoe_err_msg());
        if (r == 0) unknown++; /* --model and x are the caller's */
    }
    CHECK(unknown == 2);
    CHECK_NEAR(o.sampling.temperature, 0.9, 1e-6); /* the CLI beats the env */
    CHECK(o.sampling.top_k == 7);                  /* env alone */
    CHECK_NEAR(o.sampling.top_p, 0.5, 1e-6);
    CHECK(o.n_predict == 12 && o.n_stop == 2 && !strcmp(o.stop[1], "###") && o.ignore_eos);
    CHECK(o.truncate_left && o.sampling.seed == 1234 && !strcmp(o.system_prompt, "Be brief."));
    CHECK(!strcmp(o.chat_template, "none"));
    unsetenv("HMOE_ARG_TEMP");
    unsetenv("HMOE_ARG_TOP_K");

    /* model defaults fill what was not given */
    struct hmoe_gen_defaults d;
    CHECK(hmoe_gen_defaults_parse(NULL, "{\"temperature\":0.6,\"top_k\":40,\"top_p\":0.95,"
                                        "\"min_p\":0.02,\"eos_token_id\":[5,6]}", &d) == HMOE_OK);
    struct hmoe_sampling_params sp;
    struct hmoe_gen_params gp;
    CHECK(hmoe_text_opts_resolve(&o, &d, 32768, &sp, &gp) == HMOE_OK);
    CHECK_NEAR(sp.temperature, 0.9, 1e-6);
    CHECK(sp.top_k == 7);
    CHECK_NEAR(sp.min_p, 0.02, 1e-6);
    CHECK(gp.n_ctx == 32768 && gp.max_new_tokens == 12 && gp.n_eos == 2 && gp.eos_ids[1] == 6);
    CHECK(gp.n_stop == 2 && gp.ignore_eos && gp.truncate_left);

    /* bad values are refused with the flag named */
    const char *bad[][2] = {{"--temp", "hot"}, {"--top-p", "1.5"}, {"--top-k", "-1"},
                            {"-n", "1e3"},     {"--truncate", "right"}, {"--chat-template", "x"}};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        char *av[] = {"hmoe", (char *)bad[k][0], (char *)bad[k][1]};
        int i = 1;
        CHECK(hmoe_text_opts_parse(&o, 3, av, &i) == -1);
        CHECKF(strstr(hmoe_err_msg(), bad[k][1]) != NULL, "%s", hmoe_err_msg());
    }
    char *av[] = {"hmoe", "--temp"};
    int i = 1;
    CHECK(hmoe_text_opts_parse(&o, 2, av, &i) == -1 && strstr(hmoe_err_msg(), "needs a value"));
    setenv("HMOE_ARG_MIN_P", "lots", 1);
    CHECK(hmoe_text_opts_env(&o) == HMOE_E_INVAL && strstr(hmoe_err_msg(), "HMOE_ARG_MIN_P"));
    unsetenv("HMOE_ARG_MIN_P");

    /* --help lists every flag with its default and env var */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    if (!f) return;
    hmoe_text_opts_help(f);
    fclose(f);
    CHECK(strstr(buf, "--temp N") && strstr(buf, "(default: model, else 0.7)"));
    CHECK(strstr(buf, "-n, --n-predict N") && strstr(buf, "[env: HMOE_ARG_TOP_K]"));
    CHECK(strstr(buf, "Sampling:") && strstr(buf, "--repeat-penalty"));
    free(buf);
}

/* hmoe-tokenize end to end: ids, decode, exit codes */
static void test_tokenize_tool(void)
{
    char dir[] = "/tmp/hmoe_tok_cli_XXXXXX";
    if (!mkdtemp(dir)) return;
    char in[128], out[128], cmd[1024];
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    FILE *f = fopen(in, "w");
    fputs("Hello world", f);
    fclose(f);
    const char *bin = HMOE_BIN_DIR "/hmoe-tokenize";
    snprintf(cmd, sizeof cmd, "%s --tokenizer %s/tokenizer.json < %s > %s", bin, TOK_DIR, in, out);
    CHECK(system(cmd) == 0);
    char line[256] = "";
    f = fopen(out, "r");
    if (f) {
        CHECK(fgets(line, sizeof line, f) != NULL);
        fclose(f);
    }
    CHECKF(!strcmp(line, "39 1428 337 1504 552\n"), "got '%s'", line); /* the HF fixture ids */
    snprintf(cmd, sizeof cmd, "%s -t %s/tokenizer.json --decode < %s > %s/dec", bin, TOK_DIR, out,
             dir);
    CHECK(system(cmd) == 0);
    snprintf(line, sizeof line, "%s/dec", dir);
    f = fopen(line, "r");
    line[0] = 0;
    if (f) {
        CHECK(fgets(line, sizeof line, f) != NULL);
        fclose(f);
    }
    CHECK(!strcmp(line, "Hello world"));
    f = fopen(in, "w");
    fputs("bad \xff", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -t %s/tokenizer.json < %s > %s 2>%s/err", bin, TOK_DIR, in, out,
             dir);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "grep -q 'invalid UTF-8 in the input at byte 4' %s/err", dir);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s < %s > %s 2>&1", bin, in, out);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1); /* no --tokenizer: usage */
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* A whole request against a toy "model" whose logits spell a fixed answer, then EOS. */
static void test_request(void)
{
    int32_t nv = hmoe_tokenizer_n_vocab(tok);
    float *logits = malloc((size_t)nv * sizeof *logits);
    struct hmoe_tokens ans = {0};
    const char *answer = "Hello, w\xc3\xb6rld! This is a test.";
    CHECK(hmoe_tokenizer_encode(tok, answer, strlen(answer), 0, &ans) == HMOE_OK);
    int32_t im_end = hmoe_tokenizer_token_id(tok, "<|im_end|>");
    CHECK(hmoe_tokens_push(&ans, im_end) == HMOE_OK);
    struct hmoe_gen_defaults d;
    CHECK(hmoe_gen_defaults_parse("{\"eos_token_id\": 3002}",
                                  "{\"eos_token_id\": [3002, 3000], \"temperature\": 0.7, "
                                  "\"top_k\": 20, \"top_p\": 0.8}", &d) == HMOE_OK);
    CHECK(im_end == 3002);
    struct hmoe_chat c;
    hmoe_chat_init(&c);
    CHECK(hmoe_chat_set_system(&c, "You are terse.") == HMOE_OK);
    CHECK(hmoe_chat_add(&c, "user", "Say hello.") == HMOE_OK);
    struct hmoe_text_opts o;
    hmoe_text_opts_init(&o);
    o.sampling.seed = 11;
    o.set |= HMOE_TOPT_SEED;
    struct hmoe_sampling_params sp;
    struct hmoe_gen_params gp;
    CHECK(hmoe_text_opts_resolve(&o, &d, 4096, &sp, &gp) == HMOE_OK);
    struct hmoe_request *r = NULL;
    CHECKF(hmoe_request_init(tok, &c, HMOE_CHAT_CHATML, &sp, &gp, &r) == HMOE_OK, "%s",
           hmoe_err_msg());
    if (!r) return;
    size_t np, dropped;
    const int32_t *p = hmoe_request_prompt(r, &np, &dropped);
    CHECK(np > 10 && dropped == 0 && p[0] == hmoe_tokenizer_token_id(tok, "<|im_start|>"));
    CHECK(hmoe_request_seed(r) == 11);
    char got[256] = "";
    size_t w = 0, step = 0;
    enum hmoe_finish f = HMOE_FINISH_NONE;
    while (f == HMOE_FINISH_NONE && step < ans.n) {
        for (int32_t i = 0; i < nv; i++) logits[i] = 0.0f;
        logits[ans.ids[step++]] = 10.0f; /* p ~ 0.998 at temperature 0.7 */
        const char *t;
        size_t tn;
        int32_t id;
        enum hmoe_status st;
        f = hmoe_request_step(r, logits, &id, &t, &tn, &st);
        CHECK(st == HMOE_OK && id == ans.ids[step - 1]);
        memcpy(got + w, t, tn);
        w += tn;
    }
    got[w] = 0;
    CHECK(f == HMOE_FINISH_EOS && !strcmp(got, answer));
    CHECK(hmoe_request_n_generated(r) == ans.n);
    hmoe_request_free(r);

    /* seeded sampling on a flat distribution reproduces; the limit ends it */
    int32_t seqs[2][16];
    for (int run = 0; run < 2; run++) {
        sp.temperature = 1.0f;
        sp.top_k = 0;
        sp.top_p = 1.0f;
        sp.seed = 99;
        gp.max_new_tokens = 16;
        CHECK(hmoe_request_init(tok, &c, HMOE_CHAT_CHATML, &sp, &gp, &r) == HMOE_OK);
        if (!r) return;
        for (int32_t i = 0; i < nv; i++) logits[i] = i >= 65 && i < 91 ? 1.0f : -INFINITY;
        f = HMOE_FINISH_NONE;
        for (int k = 0; k < 16; k++) {
            const char *t;
            size_t tn;
            enum hmoe_status st;
            f = hmoe_request_step(r, logits, &seqs[run][k], &t, &tn, &st);
            CHECK(st == HMOE_OK && seqs[run][k] >= 65 && seqs[run][k] < 91);
        }
        CHECK(f == HMOE_FINISH_LENGTH);
        hmoe_request_free(r);
    }
    CHECK(!memcmp(seqs[0], seqs[1], sizeof seqs[0]));

    /* a prompt longer than the context: refused, or truncated when asked */
    gp.n_ctx = 8;
    CHECK(hmoe_request_init(tok, &c, HMOE_CHAT_CHATML, &sp, &gp, &r) == HMOE_E_RANGE && !r);
    CHECK(strstr(hmoe_err_msg(), "context holds 8") != NULL);
    gp.truncate_left = 1;
    gp.max_new_tokens = 2;
    CHECK(hmoe_request_init(tok, &c, HMOE_CHAT_CHATML, &sp, &gp, &r) == HMOE_OK);
    if (r) {
        p = hmoe_request_prompt(r, &np, &dropped);
        CHECK(np == 6 && dropped > 0);
        hmoe_request_free(r);
    }
    hmoe_chat_free(&c);
    hmoe_tokens_free(&ans);
    free(logits);
}

int main(void)
{
    if (hmoe_tokenizer_load(TOK_DIR "/tokenizer.json", &tok) != HMOE_OK) {
        fprintf(stderr, "%s\n", hmoe_err_msg());
        return 1;
    }
    test_stop_strings();
    test_eos_special_limits();
    test_fit_prompt();
    test_defaults();
    test_chat();
    test_cli_opts();
    test_tokenize_tool();
    test_request();
    hmoe_tokenizer_free(tok);
    TEST_DONE();
}
