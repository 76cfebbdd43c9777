/* hmoe-synth-write: builds a synth: model in memory and writes it as a Hugging Face + bnb-4bit
 * checkpoint directory (config.json, safetensors shards, index). Usage: see --help. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmoe/log.h"
#include "hmoe/synth.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hmoe-synth-write -m SPEC [-o DIR] [--shard-size MIB]\n"
            "  -m, --model SPEC      synth:qwen3-next-80b-a3b | synth:small | synth:tiny,\n"
            "                        options ?seed=N&layers=N (seed 1, all layers)\n"
            "  -o, --out DIR         output directory (created if missing); without it the\n"
            "                        model is only generated (timing, size)\n"
            "      --shard-size MIB  largest shard in MiB (4096)\n"
            "  -h, --help            this text\n");
}

int main(int argc, char **argv)
{
    const char *spec = NULL, *out = NULL;
    unsigned long long shard_mib = 4096;
    hmoe_log_init("W", HMOE_LOG_LVL_INFO, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s: unknown option or missing value; see --help\n", a);
            return 1;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            spec = argv[++i];
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            out = argv[++i];
        } else if (!strcmp(a, "--shard-size")) {
            char *end;
            shard_mib = strtoull(argv[++i], &end, 10);
            if (*end || shard_mib == 0 || argv[i][0] == '-') {
                fprintf(stderr, "error: --shard-size %s: want a positive number; see --help\n",
                        argv[i]);
                return 1;
            }
        } else {
            fprintf(stderr, "error: unknown option %s; see --help\n", a);
            return 1;
        }
    }
    if (!spec) {
        fprintf(stderr, "error: -m SPEC is required; see --help\n");
        return 1;
    }
    struct hmoe_model *m = NULL;
    enum hmoe_status st = hmoe_synth_open(spec, &m);
    if (!st && out) st = hmoe_synth_write(m, out, (uint64_t)shard_mib << 20);
    if (!st && !out)
        printf("%s: %.2f GiB generated (not written)\n", spec, (double)hmoe_synth_nbytes(m) / 1073741824.0);
    hmoe_synth_close(m);
    if (st) {
        fprintf(stderr, "error: %s\n", hmoe_err_msg());
        return 1;
    }
    return 0;
}
