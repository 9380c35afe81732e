#include "data_cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../autograd/check.h"
#include "shard.h"
#include "tokenizer.h"

static const char k_usage[] =
    "usage: hydra-data encode INPUT.txt --out DIR [--val-frac F]\n"
    "           byte-tokenise INPUT.txt into DIR/train.bin and DIR/val.bin (the last F of\n"
    "           the text, default 0.1, 0 <= F < 1, is validation); creates DIR\n"
    "       hydra-data info SHARD\n"
    "           print a token shard's header and counts\n";

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "hydra-data: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", k_usage);
    va_end(ap);
    return HY_EXIT_USAGE;
}

// ---------------------------------------------------------------- encode

// The whole input, read before DIR is touched so a bad input changes nothing.
static unsigned char *read_file(const char *path, int64_t *n) {
    FILE *f = fopen(path, "rb");
    HY_REQUIRE(f != NULL, "%s: cannot open input text: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        hy_die(HY_EXIT_USAGE, "%s: not a regular file (expected a text file)", path);
    }
    unsigned char *buf = hy_xmalloc((size_t)st.st_size);
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != (size_t)st.st_size) {
        free(buf);
        hy_die(HY_EXIT_USAGE, "%s: read %zu of %lld bytes: %s", path, got, (long long)st.st_size,
               bad ? strerror(errno) : "file changed while reading");
    }
    *n = (int64_t)got;
    return buf;
}

// mkdir -p for the output directory.
static void make_dirs(const char *dir) {
    char p[1024];
    HY_REQUIRE(strlen(dir) < sizeof p, "output directory path too long: %.60s...", dir);
    strcpy(p, dir);
    for (char *s = p + 1;; s++) {
        int end = *s == '\0';
        if (*s == '/' || end) {
            *s = '\0';
            struct stat st;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                hy_die(HY_EXIT_USAGE, "%s: cannot create directory: %s", p, strerror(errno));
            HY_REQUIRE(stat(p, &st) == 0 && S_ISDIR(st.st_mode),
                       "%s: exists and is not a directory (expected an output directory)", p);
            if (end) break;
            *s = '/';
        }
    }
}

static void write_split(const char *dir, const char *name, const int32_t *ids, int64_t n) {
    char path[1100];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    // Byte ids are 0..255, so the int32 ids reinterpret safely as uint32.
    hy_shard_write(path, (const uint32_t *)ids, n, 1);
    printf("  %-9s %12lld tokens -> %s\n", name, (long long)n, path);
}

static int parse_val_frac(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0 && v < 1)) return 0;
    *out = v;
    return 1;
}

static int cmd_encode(int argc, char **argv) {
    const char *input = NULL, *out = NULL;
    double val_frac = 0.1;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--val-frac") && i + 1 < argc) {
            if (!parse_val_frac(argv[++i], &val_frac))
                return usage_error("--val-frac '%s': expected a number with 0 <= F < 1", argv[i]);
        } else if (argv[i][0] == '-' && argv[i][1])
            return usage_error("encode: unknown option or missing value: %s", argv[i]);
        else if (!input)
            input = argv[i];
        else
            return usage_error("encode: more than one input file (extra: %s)", argv[i]);
    }
    if (!input) return usage_error("encode: no INPUT.txt given");
    if (!out) return usage_error("encode: no --out DIR given");

    int64_t n;
    unsigned char *text = read_file(input, &n);
    if (n == 0) {
        free(text);
        hy_die(HY_EXIT_USAGE, "%s: empty input: nothing to encode", input);
    }
    int32_t *ids = hy_xmalloc(sizeof(int32_t) * (size_t)n);
    hy_tok_encode(text, n, ids);
    free(text);
    int64_t n_val = (int64_t)llround((double)n * val_frac), n_train = n - n_val;

    make_dirs(out);
    printf("hydra-data encode: %s (%lld bytes, byte tokenizer, vocab %d)\n", input, (long long)n,
           HY_TOK_VOCAB);
    write_split(out, "train", ids, n_train);
    write_split(out, "val", ids + n_train, n_val);
    free(ids);
    return 0;
}

// ---------------------------------------------------------------- info

static int cmd_info(int argc, char **argv) {
    if (argc != 3) return usage_error("info: expected exactly one SHARD");
    hy_shard s;
    hy_shard_open(&s, argv[2], 0);  // no vocab to check against: report the range instead
    uint32_t lo = UINT32_MAX, hi = 0;
    for (int64_t i = 0; i < s.n; i++) {
        uint32_t t = hy_shard_get(&s, i);
        if (t < lo) lo = t;
        if (t > hi) hi = t;
    }
    printf("%s\n", s.path);
    printf("  format       %s, version %d\n",
           s.format == HY_SHARD_HYDT ? "HydraLM shard (HYDT)" : "llm.c shard", s.version);
    printf("  header       %zu bytes\n", s.header_bytes);
    printf("  token width  %d byte(s)\n", s.width);
    printf("  tokens       %lld\n", (long long)s.n);
    printf("  file size    %zu bytes\n", s.map_bytes);
    if (s.n > 0)
        printf("  token ids    %u .. %u (needs vocab_size >= %llu)\n", lo, hi,
               (unsigned long long)hi + 1);
    hy_shard_close(&s);
    return 0;
}

int hy_data_main(int argc, char **argv) {
    if (argc < 2) return usage_error("no command given");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        printf("%s", k_usage);
        return 0;
    }
    if (!strcmp(argv[1], "encode")) return cmd_encode(argc, argv);
    if (!strcmp(argv[1], "info")) return cmd_info(argc, argv);
    return usage_error("unknown command '%s'", argv[1]);
}
