/* bench_tokenizer.c: hmoe-bench-tokenizer, encoding throughput of the BPE tokenizer on one core.
 *   hmoe-bench-tokenizer --tokenizer FILE [--input FILE] [--mb N] [--chunk KB] [-r N]
 * Without --input it generates N MB of English-like text (common words, punctuation, numbers,
 * 10% random rare words) from a fixed seed. Reports MB/s for a cold pass (empty pre-token cache)
 * and warm passes, plus tokens/s and bytes/token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hmoe/text.h"
#include "hmoe/clock.h"

static const char *WORDS[] = {
    "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "his", "on",
    "be", "at", "by", "this", "had", "not", "are", "but", "from", "or", "have", "an", "they",
    "which", "one", "you", "were", "her", "all", "she", "there", "would", "their", "we", "him",
    "been", "has", "when", "who", "will", "more", "no", "if", "out", "so", "said", "what", "up",
    "its", "about", "into", "than", "them", "can", "only", "other", "new", "some", "could",
    "time", "these", "two", "may", "then", "do", "first", "any", "my", "now", "such", "like",
    "our", "over", "man", "me", "even", "most", "made", "after", "also", "did", "many", "before",
    "must", "through", "back", "years", "where", "much", "your", "way", "well", "down", "should",
    "because", "each", "just", "those", "people", "how", "too", "little", "state", "good",
    "very", "make", "world", "still", "own", "see", "men", "work", "long", "get", "here",
    "between", "both", "life", "being", "under", "never", "day", "same", "another", "know",
    "while", "last", "might", "us", "great", "old", "year", "off", "come", "since", "against",
    "go", "came", "right", "used", "take", "three", "himself", "few", "house", "use", "during",
    "without", "again", "place", "American", "around", "however", "home", "small", "found",
    "Mrs", "thought", "went", "say", "part", "once", "general", "high", "upon", "school",
    "every", "don't", "does", "got", "united", "left", "number", "course", "war", "until",
    "always", "away", "something", "fact", "though", "water", "less", "public", "put", "think",
    "almost", "hand", "enough", "far", "took", "head", "yet", "government", "system", "better",
    "set", "told", "nothing", "night", "end", "why", "called", "didn't", "eyes", "find", "going",
    "look", "asked", "later", "knew", "point", "next", "program", "city", "business", "give",
    "group", "toward", "young", "days", "let", "room", "president", "side", "social", "given",
    "present", "several", "order", "national", "second", "possible", "rather", "per", "face",
    "among", "form", "important", "often", "things", "looked", "early", "white", "case", "John",
    "become", "large", "big", "need", "four", "within", "felt", "along", "children", "saw",
    "best", "church", "ever", "least", "power", "development", "light", "thing", "seemed",
    "family", "interest", "want", "members", "mind", "country", "area", "others", "done",
    "turned", "although", "open", "God", "service", "certain", "kind", "problem", "began",
    "different", "door", "thus", "help", "sense", "means", "whole", "matter", "perhaps", "itself",
    "York", "it's", "times", "law", "human", "line", "above", "name", "example", "action",
    "company", "hands", "local", "show", "whether", "five", "history", "gave", "today", "either",
};

static uint64_t rng_state = 0x853C49E6748FEA9Bull;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static char *gen_text(size_t n)
{
    char *b = malloc(n + 64);
    if (!b) return NULL;
    size_t w = 0, nw = sizeof WORDS / sizeof *WORDS;
    int sentence_start = 1;
    while (w < n) {
        uint32_t r = rnd() % 100;
        char word[32];
        if (r < 10) { /* rare word: random letters */
            int len = 3 + (int)(rnd() % 9);
            for (int i = 0; i < len; i++) word[i] = (char)('a' + rnd() % 26);
            word[len] = 0;
        } else if (r < 13) {
            snprintf(word, sizeof word, "%u", rnd() % 100000);
        } else {
            snprintf(word, sizeof word, "%s", WORDS[rnd() % nw]);
        }
        if (sentence_start && word[0] >= 'a' && word[0] <= 'z') word[0] = (char)(word[0] - 32);
        sentence_start = 0;
        size_t l = strlen(word);
        memcpy(b + w, word, l);
        w += l;
        r = rnd() % 100;
        if (r < 6) {
            b[w++] = '.';
            sentence_start = 1;
        } else if (r < 12) {
            b[w++] = ',';
        }
        if (sentence_start && rnd() % 8 == 0) {
            b[w++] = '\n';
            if (rnd() % 2) b[w++] = '\n';
        } else {
            b[w++] = ' ';
        }
    }
    b[w] = 0;
    return b;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        *len = (size_t)n;
    }
    return b;
}

/* CPU time of this thread: the figure for "one core", independent of other load */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Encodes text in chunks ending at a newline or space; returns seconds, sets *n_tok. */
static double pass(struct hmoe_tokenizer *tok, const char *text, size_t len, size_t chunk,
                   size_t *n_tok, int *err, double *wall)
{
    struct hmoe_tokens ids = {0};
    double t0 = now_s(), w0 = hmoe_clock_s();
    size_t pos = 0;
    *n_tok = 0;
    while (pos < len) {
        size_t end = pos + chunk < len ? pos + chunk : len;
        while (end < len && text[end] != ' ' && text[end] != '\n') end++; /* whole words */
        ids.n = 0;
        if (hmoe_tokenizer_encode(tok, text + pos, end - pos, 1, &ids)) {
            fprintf(stderr, "error: %s\n", hmoe_err_msg());
            *err = 1;
            break;
        }
        *n_tok += ids.n;
        pos = end;
    }
    double t = now_s() - t0;
    *wall = hmoe_clock_s() - w0;
    hmoe_tokens_free(&ids);
    return t;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *input = NULL;
    double mb = 16;
    int reps = 3;
    size_t chunk_kb = 64;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "--tokenizer") || !strcmp(argv[i], "-t")) && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--input") && i + 1 < argc)
            input = argv[++i];
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk_kb = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: hmoe-bench-tokenizer --tokenizer FILE [--input FILE] [--mb N (16)] "
                   "[--chunk KB (64)] [-r N (3)]\n");
            return 0;
        } else {
            fprintf(stderr, "error: unknown or incomplete option '%s' (see --help)\n", argv[i]);
            return 1;
        }
    }
    if (!path || mb <= 0 || reps < 1 || chunk_kb < 1) {
        fprintf(stderr, "error: --tokenizer FILE is required; --mb, --chunk, -r positive\n");
        return 1;
    }
    struct hmoe_tokenizer *tok;
    if (hmoe_tokenizer_load(path, &tok)) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        return 2;
    }
    size_t len = 0;
    char *text = input ? read_file(input, &len) : gen_text((size_t)(mb * 1e6));
    if (!text) {
        fprintf(stderr, "error: cannot read or generate the input\n");
        hmoe_tokenizer_free(tok);
        return 2;
    }
    if (!input) len = strlen(text);
    size_t n_tok = 0;
    int err = 0;
    hmoe_tokenizer_cache_clear(tok);
    double wc, w, best_w = 1e30;
    double tc = pass(tok, text, len, chunk_kb * 1024, &n_tok, &err, &wc);
    double best = 1e30;
    for (int r = 0; r < reps && !err; r++) {
        double t = pass(tok, text, len, chunk_kb * 1024, &n_tok, &err, &w);
        if (t < best) best = t;
        if (w < best_w) best_w = w;
    }
    if (!err) {
        printf("input: %s, %.2f MB, %zu tokens, %.2f bytes/token\n",
               input ? input : "generated English", (double)len / 1e6, n_tok,
               (double)len / (double)(n_tok ? n_tok : 1));
        printf("cold (empty cache): %.1f MB/s, %.0f tokens/s per CPU second (wall %.1f MB/s)\n",
               (double)len / 1e6 / tc, (double)n_tok / tc, (double)len / 1e6 / wc);
        printf("warm (best of %d):  %.1f MB/s, %.0f tokens/s per CPU second (wall %.1f MB/s)\n",
               reps, (double)len / 1e6 / best, (double)n_tok / best, (double)len / 1e6 / best_w);
    }
    free(text);
    hmoe_tokenizer_free(tok);
    return err ? 2 : 0;
}
