/* hmoe/text.h: text in, text out. Byte-level BPE tokenizer (Hugging Face tokenizer.json, Qwen2
 * style), streaming UTF-8 decoder, chat templates (ChatML, none), sampler (temperature, top-k,
 * top-p, min-p, penalties, seeded PRNG), generation defaults from generation_config.json, and the
 * per-request generation state (stop strings, EOS, length and context limits).
 * Implemented in coordinator/{tokenizer*,chat,sampler,gen}.c; library hmoe_text. */
#ifndef HMOE_TEXT_H
#define HMOE_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "hmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Tokenizer
 * ------------------------------------------------------------------------------------------- */

/* Opaque. Immutable after load except for an internal pre-token cache guarded by a mutex, so one
 * tokenizer may be shared by threads. */
struct hmoe_tokenizer;

/* Loads a Hugging Face tokenizer.json whose model is byte-level BPE (normalizer NFC or none,
 * pre-tokenizer Split(regex)+ByteLevel or ByteLevel). Unsupported features give
 * HMOE_E_UNSUPPORTED, malformed files HMOE_E_FORMAT, a missing file HMOE_E_IO; the message says
 * which. *out is owned by the caller (hmoe_tokenizer_free). */
enum hmoe_status hmoe_tokenizer_load(const char *path, struct hmoe_tokenizer **out);
/* Same from a JSON text in memory (json_len bytes, need not be NUL-terminated). */
enum hmoe_status hmoe_tokenizer_load_json(const char *json, size_t json_len,
                                          struct hmoe_tokenizer **out);
void hmoe_tokenizer_free(struct hmoe_tokenizer *tok); /* NULL: no-op */

/* Number of ids (model vocabulary plus added tokens): max id + 1. */
int32_t hmoe_tokenizer_n_vocab(const struct hmoe_tokenizer *tok);
/* Id of an exact token (byte string as it decodes, e.g. "<|im_end|>" or " the"); -1 if none. */
int32_t hmoe_tokenizer_token_id(const struct hmoe_tokenizer *tok, const char *text);
/* Bytes of one id (not NUL-terminated; *len set); NULL for an unknown id. Valid while tok lives. */
const char *hmoe_tokenizer_token_bytes(const struct hmoe_tokenizer *tok, int32_t id, size_t *len);
/* 1 when id is an added token marked "special": true (skipped by skip_special decoding). */
int hmoe_tokenizer_is_special(const struct hmoe_tokenizer *tok, int32_t id);
/* 1 when id is any added token (special or not). */
int hmoe_tokenizer_is_added(const struct hmoe_tokenizer *tok, int32_t id);

/* A growable id array. Free with hmoe_tokens_free (keeps the struct, frees the data). */
struct hmoe_tokens {
    int32_t *ids;
    size_t n, cap;
};
void hmoe_tokens_free(struct hmoe_tokens *t);
enum hmoe_status hmoe_tokens_push(struct hmoe_tokens *t, int32_t id);

/* Encodes UTF-8 text (len bytes, may contain NUL) and APPENDS the ids to *out.
 * parse_special: 1 = added tokens in the text are matched whole (Hugging Face behaviour, needed
 * for rendered chat templates); 0 = the text is taken literally (safe for untrusted user text).
 * Invalid UTF-8 gives HMOE_E_INVAL with the byte offset in the message. Thread-safe. */
enum hmoe_status hmoe_tokenizer_encode(struct hmoe_tokenizer *tok, const char *text, size_t len,
                                       int parse_special, struct hmoe_tokens *out);

/* Decodes ids to raw bytes, appended to a malloc'd NUL-terminated buffer *out (length *out_len).
 * The bytes may be invalid UTF-8 when ids split a character (use hmoe_utf8_stream for display).
 * skip_special: leave out added tokens marked special. Unknown ids give HMOE_E_INVAL. */
enum hmoe_status hmoe_tokenizer_decode(const struct hmoe_tokenizer *tok, const int32_t *ids,
                                       size_t n, int skip_special, char **out, size_t *out_len);

/* Drops the pre-token cache (benchmarks use it to measure cold encoding). */
void hmoe_tokenizer_cache_clear(struct hmoe_tokenizer *tok);

/* Checks that s[0..len) is valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
 * Returns len when valid, else the byte offset of the first invalid sequence. */
size_t hmoe_utf8_valid_prefix(const char *s, size_t len);

/* ---------------------------------------------------------------------------------------------
 * Streaming UTF-8 decoder: bytes in, complete characters out. Never emits half a character;
 * invalid bytes become U+FFFD (one per maximal invalid subpart, as Rust's from_utf8_lossy and
 * Python's errors="replace" do).
 * ------------------------------------------------------------------------------------------- */
struct hmoe_utf8_stream {
    unsigned char pend[4]; /* bytes of an incomplete character */
    int n_pend;
};
void hmoe_utf8_stream_init(struct hmoe_utf8_stream *st);
/* Feeds len bytes; writes the complete text to *out (malloc'd, NUL-terminated, *out_len bytes).
 * flush=1 also ends the stream: an incomplete tail becomes U+FFFD. */
enum hmoe_status hmoe_utf8_stream_feed(struct hmoe_utf8_stream *st, const char *bytes, size_t len,
                                       int flush, char **out, size_t *out_len);

/* ---------------------------------------------------------------------------------------------
 * Chat templates
 * ------------------------------------------------------------------------------------------- */
enum hmoe_chat_template {
    HMOE_CHAT_CHATML = 0, /* <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n */
    HMOE_CHAT_NONE = 1,   /* raw text: the message contents concatenated, nothing added */
};
/* Parses "chatml" | "none" (also "raw"); returns -1 when unknown. */
int hmoe_chat_template_parse(const char *name);
const char *hmoe_chat_template_name(enum hmoe_chat_template t);

struct hmoe_chat_msg {
    char *role;    /* "system", "user", "assistant", "tool"; owned by the history */
    char *content; /* UTF-8; owned by the history */
};
/* A conversation: optional system prompt plus turns. Not thread-safe. */
struct hmoe_chat {
    char *system; /* NULL or "" = no system message */
    struct hmoe_chat_msg *msgs;
    size_t n, cap;
};
void hmoe_chat_init(struct hmoe_chat *c);
void hmoe_chat_free(struct hmoe_chat *c); /* frees the strings; c itself is the caller's */
enum hmoe_status hmoe_chat_set_system(struct hmoe_chat *c, const char *system);
/* Appends a copy of (role, content). Roles must be non-empty ASCII letters/_ (no newlines). */
enum hmoe_status hmoe_chat_add(struct hmoe_chat *c, const char *role, const char *content);
/* Removes the last message (e.g. an unanswered user turn after Ctrl-C). */
void hmoe_chat_pop(struct hmoe_chat *c);
/* Renders the conversation to a malloc'd string (*out), adding the generation prompt
 * ("<|im_start|>assistant\n" for ChatML) when add_generation_prompt. */
enum hmoe_status hmoe_chat_render(const struct hmoe_chat *c, enum hmoe_chat_template t,
                                  int add_generation_prompt, char **out);

/* ---------------------------------------------------------------------------------------------
 * Sampling
 * ------------------------------------------------------------------------------------------- */
struct hmoe_sampling_params {
    float temperature;       /* 0 = greedy (argmax, ties to the lowest id) */
    int32_t top_k;           /* 0 = off */
    float top_p;             /* 1 = off; keep the smallest top set whose mass >= top_p */
    float min_p;             /* 0 = off; keep tokens with p >= min_p * p_max */
    float repeat_penalty;    /* 1 = off; llama.cpp: logit>0 ? logit/rp : logit*rp */
    int32_t repeat_last_n;   /* window of recent tokens (prompt + generated); 0 = off, -1 = all */
    float presence_penalty;  /* 0 = off; OpenAI: logit -= presence * (count > 0) */
    float frequency_penalty; /* 0 = off; OpenAI: logit -= frequency * count (generated tokens) */
    int64_t seed;            /* -1 = random */
};
/* Built-in defaults (no generation_config.json): temperature 0.7, top_k 20, top_p 0.8 (Qwen3-Next
 * model card), min_p 0, penalties off, repeat_last_n 64, seed -1. */
void hmoe_sampling_params_default(struct hmoe_sampling_params *p);
/* Checks ranges (temperature >= 0, top_p in (0,1], min_p in [0,1], repeat_penalty > 0, ...). */
enum hmoe_status hmoe_sampling_params_check(const struct hmoe_sampling_params *p);

/* Per-request sampler: parameters, PRNG, penalty history. Not thread-safe; one per request. */
struct hmoe_sampler;
/* n_vocab: length of the logits vectors. A seed of -1 draws one from the OS (the drawn value is
 * in hmoe_sampler_seed). */
enum hmoe_status hmoe_sampler_init(const struct hmoe_sampling_params *p, int32_t n_vocab,
                                   struct hmoe_sampler **out);
void hmoe_sampler_free(struct hmoe_sampler *s);
uint64_t hmoe_sampler_seed(const struct hmoe_sampler *s);
/* Records a token of the context. prompt=1: prompt token (repeat window only); prompt=0: a
 * generated token (repeat window and presence/frequency counts). */
enum hmoe_status hmoe_sampler_accept(struct hmoe_sampler *s, int32_t id, int prompt);
/* Applies the penalties to logits[0..n_vocab) in place (used by sample; exposed for tests). */
void hmoe_sampler_apply_penalties(const struct hmoe_sampler *s, float *logits);
/* Samples one id from logits (n_vocab floats, not modified). Does NOT accept the id. */
enum hmoe_status hmoe_sampler_sample(struct hmoe_sampler *s, const float *logits, int32_t *out_id);
/* The candidate set the last sample drew from (after all filters): ids and probabilities, in
 * descending order of probability when the set has at most 4096 entries (else unordered; with
 * no filter at all it is the whole vocabulary in id order). Valid until the next sample call. */
size_t hmoe_sampler_last_candidates(const struct hmoe_sampler *s, const int32_t **ids,
                                    const float **probs);

/* ---------------------------------------------------------------------------------------------
 * Generation defaults (config.json + generation_config.json)
 * ------------------------------------------------------------------------------------------- */
#define HMOE_GEN_MAX_EOS 16
struct hmoe_gen_defaults {
    struct hmoe_sampling_params sampling;
    int32_t eos_ids[HMOE_GEN_MAX_EOS]; /* union of both files' eos_token_id (int or list) */
    int n_eos;
    int32_t bos_id;      /* -1 when none */
    int32_t max_context; /* config.json max_position_embeddings, 0 when absent */
};
/* Reads <model_dir>/config.json and <model_dir>/generation_config.json (each optional: a missing
 * file keeps the built-in defaults; a malformed one is HMOE_E_FORMAT). do_sample=false means
 * temperature 0. */
enum hmoe_status hmoe_gen_defaults_load(const char *model_dir, struct hmoe_gen_defaults *out);
/* Same from JSON texts (either may be NULL). */
enum hmoe_status hmoe_gen_defaults_parse(const char *config_json, const char *gen_config_json,
                                         struct hmoe_gen_defaults *out);
/* Adds an EOS id if not present (HMOE_E_RANGE when the list is full). */
enum hmoe_status hmoe_gen_defaults_add_eos(struct hmoe_gen_defaults *d, int32_t id);

/* ---------------------------------------------------------------------------------------------
 * Generation state: one per request. The coordinator feeds every sampled token; the state returns
 * the text that is safe to stream (complete UTF-8, no possible start of a stop string) and, when
 * the request is over, the finish reason.
 * ------------------------------------------------------------------------------------------- */
enum hmoe_finish {
    HMOE_FINISH_NONE = 0,    /* keep going */
    HMOE_FINISH_EOS,         /* an EOS id was sampled (its text is not emitted) */
    HMOE_FINISH_STOP_STRING, /* a stop string appeared (it and what follows are not emitted) */
    HMOE_FINISH_LENGTH,      /* max_new_tokens reached */
    HMOE_FINISH_CONTEXT,     /* the context window is full */
    HMOE_FINISH_ABORT,       /* cancelled by the caller (hmoe_gen_abort) */
};
const char *hmoe_finish_str(enum hmoe_finish f);        /* "eos", "stop", "length", ... */
const char *hmoe_finish_openai(enum hmoe_finish f);     /* "stop" | "length" | NULL (none) */

#define HMOE_MAX_STOP 8
struct hmoe_gen_params {
    int32_t max_new_tokens; /* > 0; -1 = no limit, -2 = until the context is full */
    int32_t n_ctx;          /* context window in tokens (prompt + generated), > 0 */
    int ignore_eos;         /* 1: EOS ids do not end the request (their text is still hidden) */
    int skip_special;       /* 1: special added tokens produce no text (default) */
    int truncate_left;      /* 1: an over-long prompt loses its oldest tokens instead of failing */
    const char *stop[HMOE_MAX_STOP]; /* stop strings (UTF-8, non-empty), copied at init */
    int n_stop;
    const int32_t *eos_ids; /* copied at init */
    int n_eos;
};
void hmoe_gen_params_default(struct hmoe_gen_params *p); /* -1 tokens, ctx 4096, skip_special */

/* Checks an encoded prompt against the context: fits when n_prompt < n_ctx (room for at least one
 * new token). Otherwise HMOE_E_RANGE with a clear message, unless truncate_left, which drops the
 * oldest tokens so that n_prompt = n_ctx - reserve (reserve = max_new_tokens when > 0, capped at
 * n_ctx/2; else n_ctx/4; at least 1) and sets *n_dropped. Updates prompt in place. */
enum hmoe_status hmoe_gen_fit_prompt(const struct hmoe_gen_params *p, struct hmoe_tokens *prompt,
                                     size_t *n_dropped);

struct hmoe_gen;
/* tok is borrowed (must outlive the state); n_prompt: the prompt length after fitting. */
enum hmoe_status hmoe_gen_init(const struct hmoe_gen_params *p, const struct hmoe_tokenizer *tok,
                               size_t n_prompt, struct hmoe_gen **out);
void hmoe_gen_free(struct hmoe_gen *g);
/* Feeds one sampled token. *text and *text_len: the text now safe to stream (points into the state,
 * valid until the next call; NUL-terminated; may be empty). Returns the finish reason: after a
 * non-NONE value the request is over and the returned text is its last piece (held-back text is
 * flushed when the end was not a stop string). Feeding after the end is HMOE_FINISH_* again with
 * no text. Unknown ids: the status out-param gets HMOE_E_INVAL. */
enum hmoe_finish hmoe_gen_feed(struct hmoe_gen *g, int32_t id, const char **text,
                               size_t *text_len, enum hmoe_status *st);
/* Ends the request early (Ctrl-C, client gone): returns the held-back text to flush. */
enum hmoe_finish hmoe_gen_abort(struct hmoe_gen *g, const char **text, size_t *text_len);
size_t hmoe_gen_n_generated(const struct hmoe_gen *g);
enum hmoe_finish hmoe_gen_finish(const struct hmoe_gen *g);

/* ---------------------------------------------------------------------------------------------
 * A whole request (coordinator/gen_request.c): chat -> prompt ids (rendered, encoded, fitted to
 * the context), then one call per decode step: logits in, token id and streamable text out.
 * Bundles a sampler and a generation state. Not thread-safe; one per request.
 * ------------------------------------------------------------------------------------------- */
struct hmoe_request;
/* tok is borrowed (must outlive the request; encoding takes its cache lock). The prompt is
 * hmoe_chat_render(chat, tmpl, add_generation_prompt=1) encoded with special tokens parsed.
 * Errors: HMOE_E_RANGE for an over-long prompt without truncation, HMOE_E_INVAL for bad
 * parameters or text; the message says which. */
enum hmoe_status hmoe_request_init(struct hmoe_tokenizer *tok, const struct hmoe_chat *chat,
                                   enum hmoe_chat_template tmpl,
                                   const struct hmoe_sampling_params *sampling,
                                   const struct hmoe_gen_params *gen, struct hmoe_request **out);
void hmoe_request_free(struct hmoe_request *r);
/* Prompt ids to prefill (valid while r lives); *n_dropped: tokens cut by left truncation. */
const int32_t *hmoe_request_prompt(const struct hmoe_request *r, size_t *n, size_t *n_dropped);
uint64_t hmoe_request_seed(const struct hmoe_request *r);
/* One decode step on the logits of the last position (n_vocab floats): samples, records the
 * token and returns the finish reason, the sampled id (to feed to the model when NONE) and the
 * text safe to stream (valid until the next call). *st gets HMOE_OK or the failure. */
enum hmoe_finish hmoe_request_step(struct hmoe_request *r, const float *logits, int32_t *id,
                                   const char **text, size_t *text_len, enum hmoe_status *st);
/* Ctrl-C / client gone: ends the request, returns the held-back text. */
enum hmoe_finish hmoe_request_abort(struct hmoe_request *r, const char **text, size_t *text_len);
size_t hmoe_request_n_generated(const struct hmoe_request *r);

/* ---------------------------------------------------------------------------------------------
 * Client options for sampling and generation (coordinator/cli_opts.c): one table drives argv
 * parsing, HMOE_ARG_* environment variables and the "Sampling"/"Generation" groups of --help.
 * Flag names follow CLI.md (llama.cpp). Strings are borrowed from argv/environ.
 * ------------------------------------------------------------------------------------------- */
enum {
    HMOE_TOPT_TEMP = 1u << 0,
    HMOE_TOPT_TOP_K = 1u << 1,
    HMOE_TOPT_TOP_P = 1u << 2,
    HMOE_TOPT_MIN_P = 1u << 3,
    HMOE_TOPT_REPEAT_PENALTY = 1u << 4,
    HMOE_TOPT_REPEAT_LAST_N = 1u << 5,
    HMOE_TOPT_PRESENCE = 1u << 6,
    HMOE_TOPT_FREQUENCY = 1u << 7,
    HMOE_TOPT_SEED = 1u << 8,
};
struct hmoe_text_opts {
    struct hmoe_sampling_params sampling; /* values given; see set */
    uint32_t set;                         /* HMOE_TOPT_* bits of the sampling fields given */
    int32_t n_predict;                    /* -n: -1 = no limit, -2 = until the context is full */
    int32_t ctx_size;                     /* -c: 0 = from the model */
    const char *prompt;                   /* -p: the prompt text */
    const char *prompt_file;              /* -f: read the prompt from this file */
    const char *system_prompt;            /* -sys */
    const char *chat_template;            /* "chatml" (default) | "none" */
    const char *stop[HMOE_MAX_STOP];      /* -r / --stop, repeatable */
    int n_stop;
    int ignore_eos;
    int truncate_left; /* --truncate left|none */
};
void hmoe_text_opts_init(struct hmoe_text_opts *o);
/* Applies the HMOE_ARG_* variables of the table (call before the argv pass: the CLI wins).
 * A malformed value is HMOE_E_INVAL naming the variable. */
enum hmoe_status hmoe_text_opts_env(struct hmoe_text_opts *o);
/* Tries argv[*i] (and its value) against the table. Returns 1 when consumed (*i then points at
 * the last argument used), 0 when the flag is not in the table, -1 on a bad or missing value
 * (message set: "--temp: expected a number in [0, 100], got 'x'"). */
int hmoe_text_opts_parse(struct hmoe_text_opts *o, int argc, char **argv, int *i);
/* Prints the Sampling and Generation groups: aliases, metavariable, meaning, default, env. */
void hmoe_text_opts_help(FILE *f);
/* Resolves one request: sampling = model defaults d (NULL: built-in) overridden by the options
 * given; gen gets max tokens, context (ctx_size, else model_ctx, else 4096), stop strings,
 * ignore_eos, truncation and d's EOS ids (gen->eos_ids points into d). */
enum hmoe_status hmoe_text_opts_resolve(const struct hmoe_text_opts *o,
                                        const struct hmoe_gen_defaults *d, int32_t model_ctx,
                                        struct hmoe_sampling_params *sampling,
                                        struct hmoe_gen_params *gen);

#ifdef __cplusplus
}
#endif
#endif
