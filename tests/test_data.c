// The data layer: byte tokenizer, token shards (HydraLM and llm.c formats),
// the step-seeded loader, the MQAR and passkey generators and hydra-data.
// Every file lives under a fresh mkdtemp() directory that the test removes.
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/data_cli.h"
#include "../data/loader.h"
#include "../data/shard.h"
#include "../data/synthetic.h"
#include "../data/tokenizer.h"
#include "harness.h"

// ---------------------------------------------------------------- helpers

static char g_dir[256];

static const char *tmp_dir(void) {
    strcpy(g_dir, "/tmp/hydra-test-data.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        exit(1);
    }
    return g_dir;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

// dir/name in one of 8 rotating buffers: fine for arguments, copy to keep.
static const char *in_dir(const char *dir, const char *name) {
    static char buf[8][640];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 640, "%.500s/%.120s", dir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

// The whole file, NUL-terminated; *n gets its size.
static char *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (n) *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    buf[got] = '\0';
    if (n) *n = (long)got;
    return buf;
}

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

// Entries in `dir` besides . and ..: checks that no *.tmp.* file is left over.
static int count_entries(const char *dir) {
    int n = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    return n;
}

// hy_data_main with a NULL-terminated list of arguments.
static int run_cli(const char *first, ...) {
    char *argv[16];
    int argc = 0;
    argv[argc++] = (char *)"hydra-data";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 15; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return hy_data_main(argc, argv);
}

// ---------------------------------------------------------------- tokenizer

HY_TEST(data_tokenizer_round_trip, "cpu") {
    unsigned char text[300], back[300];
    for (int i = 0; i < 256; i++) text[i] = (unsigned char)i;  // every byte, NUL included
    memcpy(text + 256, "Hello, wörld!\n", 15);
    int64_t n = 256 + 15;
    int32_t ids[300];
    HY_ASSERT(hy_tok_encode(text, n, ids) == n, "encode returns the byte count");
    for (int i = 0; i < 256; i++) HY_ASSERT(ids[i] == i, "id of byte %d is %d", i, ids[i]);
    HY_ASSERT(hy_tok_decode(ids, n, back) == n, "decode returns the token count");
    HY_ASSERT(memcmp(text, back, (size_t)n) == 0, "decode(encode(text)) == text");

    int32_t bad[3] = {65, 256, 66};
    HY_EXPECT_ERROR(hy_tok_decode(bad, 3, back), HY_EXIT_USAGE, "token id 256 at position 1");
    bad[1] = -1;
    HY_EXPECT_ERROR(hy_tok_decode(bad, 3, back), HY_EXIT_USAGE, "token id -1");
}

// ---------------------------------------------------------------- shards

HY_TEST(data_shard_round_trip, "cpu") {
    const char *dir = tmp_dir();
    const int widths[3] = {1, 2, 4};
    const uint32_t maxes[3] = {255, 65535, 2000000000u};
    for (int w = 0; w < 3; w++) {
        int64_t n = 1000 + w;
        uint32_t *tok = malloc(sizeof(uint32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) tok[i] = (uint32_t)((i * 2654435761u) % maxes[w]);
        tok[n - 1] = maxes[w] - 1;  // the top of the width's range survives
        char path[640];
        snprintf(path, sizeof path, "%s/%s", dir, "s.bin");
        hy_shard_write(path, tok, n, widths[w]);

        long size;
        char *raw = slurp(path, &size);
        HY_ASSERT(size == HY_SHARD_HEADER_BYTES + n * widths[w], "width %d: file size %ld",
                  widths[w], size);
        HY_ASSERT(memcmp(raw, "HYDT", 4) == 0, "magic bytes spell HYDT");
        free(raw);

        hy_shard s;
        hy_shard_open(&s, path, (int)maxes[w]);
        HY_ASSERT(s.width == widths[w] && s.n == n && s.format == HY_SHARD_HYDT,
                  "width %d: header read back as width %d, n %lld", widths[w], s.width,
                  (long long)s.n);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += hy_shard_get(&s, i) != tok[i];
        HY_ASSERT(bad == 0, "width %d: %d tokens differ", widths[w], bad);
        int32_t part[10];
        hy_shard_read(&s, n - 10, 10, part);
        HY_ASSERT((uint32_t)part[9] == tok[n - 1], "hy_shard_read of the last tokens");
        hy_shard_close(&s);
        free(tok);
        HY_ASSERT(count_entries(dir) == 1, "no temporary file is left next to the shard");
    }
    // An empty shard is valid (an empty validation split, say).
    hy_shard_write(in_dir(dir, "empty.bin"), NULL, 0, 2);
    hy_shard s;
    hy_shard_open(&s, in_dir(dir, "empty.bin"), 256);
    HY_ASSERT(s.n == 0 && s.width == 2, "empty shard reads back empty");
    hy_shard_close(&s);
    rm_tree(dir);
}

// An llm.c shard: 256 x int32 header (magic, version, count) then uint16.
static void write_llmc(const char *path, int32_t magic, int32_t version, int32_t count,
                       const uint16_t *tok, int n) {
    int32_t header[256] = {0};
    header[0] = magic;
    header[1] = version;
    header[2] = count;
    FILE *f = fopen(path, "wb");
    fwrite(header, sizeof header, 1, f);
    fwrite(tok, sizeof(uint16_t), (size_t)n, f);
    fclose(f);
}

HY_TEST(data_shard_llmc, "cpu") {
    const char *dir = tmp_dir();
    uint16_t tok[500];
    for (int i = 0; i < 500; i++) tok[i] = (uint16_t)(i * 97 % 50257);
    char path[640];
    snprintf(path, sizeof path, "%s/%s", dir, "fineweb_train_000001.bin");
    write_llmc(path, 20240520, 1, 500, tok, 500);
    hy_shard s;
    hy_shard_open(&s, path, 50257);
    HY_ASSERT(s.format == HY_SHARD_LLMC && s.width == 2 && s.n == 500,
              "llm.c header: format %d width %d n %lld", s.format, s.width, (long long)s.n);
    HY_ASSERT(s.header_bytes == 1024, "llm.c header is 1024 bytes");
    int bad = 0;
    for (int i = 0; i < 500; i++) bad += hy_shard_get(&s, i) != tok[i];
    HY_ASSERT(bad == 0, "%d llm.c tokens differ", bad);
    hy_shard_close(&s);

    // The loader finds llm.c-named shards in a directory without train.bin.
    hy_loader l;
    hy_loader_open(&l, dir, "train", 50257, 1, 0, 1);
    HY_ASSERT(l.n_shards == 1 && hy_loader_tokens(&l) == 500, "loader found the llm.c shard");
    hy_loader_close(&l);

    write_llmc(path, 20240520, 1, 501, tok, 500);
    HY_EXPECT_ERROR(hy_shard_open(&s, path, 50257), HY_EXIT_USAGE, "truncated");
    write_llmc(path, 20240520, 7, 500, tok, 500);
    HY_EXPECT_ERROR(hy_shard_open(&s, path, 50257), HY_EXIT_USAGE, "version 7");
    write_llmc(path, 20240520, 1, 500, tok, 500);
    HY_EXPECT_ERROR(hy_shard_open(&s, path, 1000), HY_EXIT_USAGE, "is >= vocab_size 1000");
    rm_tree(dir);
}

HY_TEST(data_shard_errors, "cpu") {
    const char *dir = tmp_dir();
    hy_shard s;
    uint32_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = (uint32_t)i;

    char junk[640];
    snprintf(junk, sizeof junk, "%s/%s", dir, "junk.bin");
    write_bytes(junk, "this is plain text, not a shard at all.", 39);
    HY_EXPECT_ERROR(hy_shard_open(&s, junk, 256), HY_EXIT_USAGE, "junk.bin: bad magic");
    write_bytes(junk, "HY", 2);
    HY_EXPECT_ERROR(hy_shard_open(&s, junk, 256), HY_EXIT_USAGE, "junk.bin");
    write_bytes(junk, "", 0);
    HY_EXPECT_ERROR(hy_shard_open(&s, junk, 256), HY_EXIT_USAGE, "junk.bin");

    // Truncated body, truncated header, and bytes beyond the count.
    char cut[640];
    snprintf(cut, sizeof cut, "%s/%s", dir, "cut.bin");
    hy_shard_write(cut, tok, 40, 2);
    HY_ASSERT(truncate(cut, HY_SHARD_HEADER_BYTES + 79) == 0, "truncate");
    HY_EXPECT_ERROR(hy_shard_open(&s, cut, 256), HY_EXIT_USAGE, "cut.bin: truncated");
    HY_ASSERT(truncate(cut, 20) == 0, "truncate");
    HY_EXPECT_ERROR(hy_shard_open(&s, cut, 256), HY_EXIT_USAGE, "cut.bin: truncated header");
    hy_shard_write(cut, tok, 40, 2);
    HY_ASSERT(truncate(cut, HY_SHARD_HEADER_BYTES + 81) == 0, "extend");
    HY_EXPECT_ERROR(hy_shard_open(&s, cut, 256), HY_EXIT_USAGE, "more than");

    // Bad version and width in an otherwise valid header. (Static: these
    // must survive the longjmp out of each expected error.)
    static long size;
    hy_shard_write(cut, tok, 40, 1);
    static char *raw;
    raw = slurp(cut, &size);
    raw[4] = 9;
    write_bytes(cut, raw, (size_t)size);
    HY_EXPECT_ERROR(hy_shard_open(&s, cut, 256), HY_EXIT_USAGE, "unsupported shard version 9");
    raw[4] = 1, raw[8] = 3;
    write_bytes(cut, raw, (size_t)size);
    HY_EXPECT_ERROR(hy_shard_open(&s, cut, 256), HY_EXIT_USAGE, "token width 3");
    free(raw);

    // A token id the model's vocab cannot embed.
    char big[640];
    snprintf(big, sizeof big, "%s/%s", dir, "train.bin");
    tok[12] = 70000;
    hy_shard_write(big, tok, 40, 4);
    HY_EXPECT_ERROR(hy_shard_open(&s, big, 256), HY_EXIT_USAGE,
                    "train.bin: token 70000 at position 12 is >= vocab_size 256");
    tok[12] = 12;

    HY_EXPECT_ERROR(hy_shard_open(&s, in_dir(dir, "missing.bin"), 256), HY_EXIT_USAGE,
                    "missing.bin: cannot open");
    HY_EXPECT_ERROR(hy_shard_open(&s, dir, 256), HY_EXIT_USAGE, "not a regular file");

    // Failed writes leave an existing shard exactly as it was, and no litter.
    char keep[640];
    snprintf(keep, sizeof keep, "%s/%s", dir, "keep.bin");
    hy_shard_write(keep, tok, 40, 1);
    static long before_n, after_n;
    static char *before, *after;
    before = slurp(keep, &before_n);
    int entries = count_entries(dir);
    uint32_t wide[3] = {1, 300, 2};
    HY_EXPECT_ERROR(hy_shard_write(keep, wide, 3, 1), HY_EXIT_USAGE,
                    "keep.bin: token 300 at position 1 does not fit in 1 byte");
    HY_EXPECT_ERROR(hy_shard_write(keep, tok, 40, 3), HY_EXIT_USAGE, "keep.bin: token width 3");
    // A directory squatting on the temporary name makes creating it fail
    // (this works as root too, unlike a read-only directory).
    char squat[700];
    snprintf(squat, sizeof squat, "%s.tmp.%ld", keep, (long)getpid());
    HY_ASSERT(mkdir(squat, 0755) == 0, "mkdir %s", squat);
    HY_EXPECT_ERROR(hy_shard_write(keep, tok, 20, 2), HY_EXIT_USAGE, "keep.bin: cannot write");
    rmdir(squat);
    if (geteuid() != 0) {  // root ignores directory permissions
        chmod(dir, 0555);
        HY_EXPECT_ERROR(hy_shard_write(keep, tok, 20, 2), HY_EXIT_USAGE, "keep.bin");
        chmod(dir, 0755);
    }
    after = slurp(keep, &after_n);
    HY_ASSERT(after_n == before_n && memcmp(before, after, (size_t)before_n) == 0,
              "failed writes left keep.bin unchanged");
    HY_ASSERT(count_entries(dir) == entries, "failed writes left no temporary file");
    free(before);
    free(after);
    HY_EXPECT_ERROR(hy_shard_write(in_dir(dir, "no/such/dir/x.bin"), tok, 4, 1), HY_EXIT_USAGE,
                    "x.bin: cannot write");
    rm_tree(dir);
}

// ---------------------------------------------------------------- loader

// A shard whose token i is (base + i) % mod: windows are recognisable.
static void counting_shard(const char *path, int64_t n, uint32_t base, uint32_t mod, int width) {
    uint32_t *tok = malloc(sizeof(uint32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) tok[i] = (uint32_t)((base + i) % mod);
    hy_shard_write(path, tok, n, width);
    free(tok);
}

static int same(const int32_t *a, const int32_t *b, int n) {
    return memcmp(a, b, sizeof(int32_t) * (size_t)n) == 0;
}

HY_TEST(data_loader_deterministic, "cpu") {
    const char *dir = tmp_dir();
    counting_shard(in_dir(dir, "train.bin"), 5000, 0, 60000, 2);
    enum { B = 4, T = 32 };
    int32_t in1[B * T], tg1[B * T], in2[B * T], tg2[B * T];
    hy_loader l0, l1;
    hy_loader_open(&l0, dir, "train", 65536, 1234, 0, 2);
    hy_loader_open(&l1, dir, "train", 65536, 1234, 1, 2);

    hy_loader_batch(&l0, 7, B, T, in1, tg1);
    hy_loader_batch(&l0, 7, B, T, in2, tg2);
    HY_ASSERT(same(in1, in2, B * T) && same(tg1, tg2, B * T), "same seed and step, same batch");
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int32_t x = in1[b * T + t], y = tg1[b * T + t];
            HY_ASSERT(y == x + 1, "row %d: target %d is not the next token after %d", b, y, x);
            if (t + 1 < T) HY_ASSERT(in1[b * T + t + 1] == y, "targets = inputs shifted by one");
        }
    HY_ASSERT(!same(in1, in1 + T, T), "rows within a batch differ");

    hy_loader_batch(&l0, 8, B, T, in2, tg2);
    HY_ASSERT(!same(in1, in2, B * T), "a different step gives a different batch");
    hy_loader_batch(&l1, 7, B, T, in2, tg2);
    HY_ASSERT(!same(in1, in2, B * T), "rank 1 draws differently from rank 0");

    // A fresh loader (a resumed run) sees the same data for the same step.
    hy_loader again;
    hy_loader_open(&again, in_dir(dir, "train.bin"), "train", 65536, 1234, 0, 2);
    hy_loader_batch(&again, 7, B, T, in2, tg2);
    HY_ASSERT(same(in1, in2, B * T), "a reopened loader repeats step 7 exactly");
    hy_loader_close(&again);
    hy_loader_open(&again, dir, "train", 65536, 1235, 0, 2);
    hy_loader_batch(&again, 7, B, T, in2, tg2);
    HY_ASSERT(!same(in1, in2, B * T), "another seed, other data");
    hy_loader_close(&again);

    // Every start position is reachable: over many steps, windows cover the shard.
    int64_t lo = 5000, hi = -1;
    for (int step = 0; step < 400; step++) {
        hy_loader_batch(&l0, step, B, T, in2, tg2);
        for (int b = 0; b < B; b++) {
            if (in2[b * T] < lo) lo = in2[b * T];
            if (in2[b * T] > hi) hi = in2[b * T];
        }
    }
    HY_ASSERT(lo < 50 && hi > 5000 - T - 50 && hi <= 5000 - T - 1,
              "start positions span the shard: %lld .. %lld", (long long)lo, (long long)hi);
    hy_loader_close(&l0);
    hy_loader_close(&l1);
    rm_tree(dir);
}

HY_TEST(data_loader_sources, "cpu") {
    const char *dir = tmp_dir();
    counting_shard(in_dir(dir, "part_a_train.bin"), 300, 0, 1u << 30, 4);
    counting_shard(in_dir(dir, "part_b_train.bin"), 300, 100000, 1u << 30, 4);
    counting_shard(in_dir(dir, "x_val.bin"), 200, 0, 256, 1);
    hy_loader l;
    char pattern[600];
    snprintf(pattern, sizeof pattern, "%s/part_*_train.bin", dir);
    hy_loader_open(&l, pattern, "train", 1 << 30, 5, 0, 1);
    HY_ASSERT(l.n_shards == 2 && hy_loader_tokens(&l) == 600, "glob opened both shards");
    enum { B = 8, T = 16 };
    int32_t in[B * T], tg[B * T];
    int from_b = 0;
    for (int step = 0; step < 20; step++) {
        hy_loader_batch(&l, step, B, T, in, tg);
        for (int b = 0; b < B; b++) from_b += in[b * T] >= 100000;
    }
    HY_ASSERT(from_b > 40 && from_b < 120, "both shards are drawn from (%d of 160 rows)", from_b);
    hy_loader_close(&l);

    snprintf(pattern, sizeof pattern, "%s/x_{split}.bin", dir);
    hy_loader_open(&l, pattern, "val", 256, 5, 0, 1);
    HY_ASSERT(l.n_shards == 1 && hy_loader_tokens(&l) == 200, "{split} became val");
    HY_EXPECT_ERROR(hy_loader_batch(&l, 0, 2, 200, in, tg), HY_EXIT_USAGE,
                    "x_val.bin: 200 tokens, too short");
    hy_loader_close(&l);

    HY_EXPECT_ERROR(hy_loader_open(&l, in_dir(dir, "nothing_*.bin"), "train", 256, 1, 0, 1),
                    HY_EXIT_USAGE, "nothing_*.bin: no token shard found");
    HY_EXPECT_ERROR(hy_loader_open(&l, dir, "val2", 256, 1, 0, 1), HY_EXIT_USAGE, "val2");
    HY_EXPECT_ERROR(hy_loader_open(&l, dir, "train", 256, 1, 2, 2), HY_EXIT_USAGE, "rank 2");
    // A vocab too small for the tokens in a matched shard names the shard.
    HY_EXPECT_ERROR(hy_loader_open(&l, dir, "train", 256, 1, 0, 1), HY_EXIT_USAGE,
                    "part_a_train.bin: token 256 at position 256");
    rm_tree(dir);
    const char *empty = tmp_dir();
    HY_EXPECT_ERROR(hy_loader_open(&l, empty, "val", 256, 1, 0, 1), HY_EXIT_USAGE, "no val data");
    rm_tree(empty);
}

HY_TEST(data_loader_eval, "cpu") {
    const char *dir = tmp_dir();
    enum { N = 1001, B = 3, T = 10 };  // 100 windows of 11 tokens, stride 10
    counting_shard(in_dir(dir, "val.bin"), N, 0, 1u << 20, 4);
    hy_loader l;
    hy_loader_open(&l, dir, "val", 1 << 20, 9, 0, 1);
    HY_ASSERT(hy_loader_eval_windows(&l, T) == 100, "100 windows");
    int64_t nb = hy_loader_eval_batches(&l, B, T);
    HY_ASSERT(nb == 34, "34 batches of 3 cover 100 windows (got %lld)", (long long)nb);
    int32_t in[B * T], tg[B * T], in2[B * T], tg2[B * T];
    int seen[100] = {0};
    for (int64_t i = 0; i < nb; i++) {
        hy_loader_eval_batch(&l, i, B, T, in, tg);
        hy_loader_eval_batch(&l, i, B, T, in2, tg2);
        HY_ASSERT(same(in, in2, B * T) && same(tg, tg2, B * T), "eval batch %lld repeats",
                  (long long)i);
        for (int b = 0; b < B; b++) {
            HY_ASSERT(in[b * T] % T == 0, "windows start on multiples of T");
            HY_ASSERT(tg[b * T + T - 1] == in[b * T] + T, "targets end one token later");
            if (i * B + b < 100) seen[in[b * T] / T]++;
        }
    }
    int once = 0;
    for (int k = 0; k < 100; k++) once += seen[k] == 1;
    HY_ASSERT(once == 100, "a full pass visits every window exactly once (%d did)", once);
    // The first batches are spread over the split, not its first pages.
    hy_loader_eval_batch(&l, 0, B, T, in, tg);
    int32_t lo = in[0], hi = in[0];
    for (int b = 1; b < B; b++) {
        if (in[b * T] < lo) lo = in[b * T];
        if (in[b * T] > hi) hi = in[b * T];
    }
    HY_ASSERT(hi - lo > N / 3, "first eval batch spans %d..%d", lo, hi);
    hy_loader_close(&l);

    // Two ranks split the windows between them.
    hy_loader r0, r1;
    hy_loader_open(&r0, dir, "val", 1 << 20, 9, 0, 2);
    hy_loader_open(&r1, dir, "val", 1 << 20, 9, 1, 2);
    hy_loader_eval_batch(&r0, 0, B, T, in, tg);
    hy_loader_eval_batch(&r1, 0, B, T, in2, tg2);
    for (int a = 0; a < B; a++)
        for (int b = 0; b < B; b++)
            HY_ASSERT(in[a * T] != in2[b * T], "ranks evaluate different windows");
    hy_loader_close(&r0);
    hy_loader_close(&r1);
    rm_tree(dir);
}

// ---------------------------------------------------------------- MQAR

// The number of labelled positions of one row: its pair count.
static int row_pairs(const int32_t *tg, int L) {
    int n = 0;
    for (int t = 0; t < L; t++) n += tg[t] != HY_IGNORE_INDEX;
    return n;
}

// Check one MQAR sequence against the protocol; returns its first query slot.
static void check_mqar_row(const hy_mqar_config *c, const int32_t *in, const int32_t *tg,
                           int *slot0_used) {
    int V = c->vocab_size, L = c->seq_len, P = c->n_pairs;
    int answers = 0, bad = 0;
    unsigned char *queried = calloc((size_t)V, 1);
    for (int i = 0; i < P; i++) {
        int k = in[2 * i], v = in[2 * i + 1];
        bad += !(k >= 1 && k < V / 2) + !(v >= V / 2 && v < V);
        for (int j = 0; j < i; j++) bad += in[2 * j] == k;  // keys distinct
        bad += tg[2 * i] != HY_IGNORE_INDEX || tg[2 * i + 1] != HY_IGNORE_INDEX;
    }
    HY_ASSERT(bad == 0, "keys distinct in [1, V/2), values in [V/2, V), no loss on context");
    for (int t = 2 * P; t < L; t++) {
        int key = -1;
        for (int i = 0; i < P; i++)
            if (in[t] == in[2 * i]) key = i;
        if (tg[t] != HY_IGNORE_INDEX) {
            answers++;
            HY_ASSERT(key >= 0 && tg[t] == in[2 * key + 1],
                      "query at %d: target %d is not the value paired with key %d", t, tg[t],
                      in[t]);
            HY_ASSERT((t - 2 * P) % 2 == 0, "queries sit at even offsets");
            if (key >= 0) queried[in[t]]++;
        } else
            HY_ASSERT(key < 0, "position %d holds key %d but has no target", t, in[t]);
    }
    HY_ASSERT(answers == P, "%d answer positions, expected n_pairs = %d", answers, P);
    for (int i = 0; i < P; i++) HY_ASSERT(queried[in[2 * i]] == 1, "every key queried once");
    *slot0_used += tg[2 * P] != HY_IGNORE_INDEX;
    free(queried);
}

HY_TEST(data_mqar_protocol, "cpu") {
    hy_mqar_config c = hy_mqar_defaults(256, 16);
    enum { B = 64 };
    int32_t *in = malloc(sizeof(int32_t) * B * 256), *tg = malloc(sizeof(int32_t) * B * 256);
    int32_t *in2 = malloc(sizeof(int32_t) * B * 256);
    hy_rng r, r2;
    hy_rng_seed(&r, 42);
    hy_rng_seed(&r2, 42);
    hy_mqar_batch(&c, &r, B, in, tg);
    int slot0 = 0;
    for (int b = 0; b < B; b++) check_mqar_row(&c, in + b * 256, tg + b * 256, &slot0);
    hy_mqar_batch(&c, &r2, B, in2, tg);
    HY_ASSERT(same(in, in2, B * 256), "same generator state, same batch");

    // Power law a = 0.01: the slot right after the context is nearly always a
    // query; a = 1 (uniform) uses it about n_pairs / slots = 16/112 of the time.
    HY_ASSERT(slot0 > B * 8 / 10, "a = 0.01: slot 0 queried in %d of %d", slot0, B);
    c.power_a = 1.0f;
    hy_mqar_batch(&c, &r, B, in, tg);
    int uni = 0;
    for (int b = 0; b < B; b++) check_mqar_row(&c, in + b * 256, tg + b * 256, &uni);
    HY_ASSERT(uni < B * 4 / 10, "a = 1: slot 0 queried in %d of %d", uni, B);

    // Tight fit: 4 * n_pairs == seq_len, odd length, small vocab.
    hy_mqar_config tight = {40, 65, 16, 0.01f, 0};
    hy_mqar_batch(&tight, &r, 4, in, tg);
    for (int b = 0; b < 4; b++) check_mqar_row(&tight, in + b * 65, tg + b * 65, &uni);

    hy_mqar_config bad = hy_mqar_defaults(60, 16);
    HY_EXPECT_ERROR(hy_mqar_check(&bad), HY_EXIT_USAGE, "4 * n_pairs = 64 exceeds seq_len 60");
    HY_EXPECT_ERROR(hy_mqar_batch(&bad, &r, 1, in, tg), HY_EXIT_USAGE, "seq_len 60");
    bad = hy_mqar_defaults(256, 16);
    bad.vocab_size = 32;
    HY_EXPECT_ERROR(hy_mqar_check(&bad), HY_EXIT_USAGE, "vocab_size 32 is too small");
    bad.vocab_size = 8192, bad.power_a = 0;
    HY_EXPECT_ERROR(hy_mqar_check(&bad), HY_EXIT_USAGE, "power_a");
    bad = hy_mqar_defaults(256, 16);
    bad.min_pairs = 17;
    HY_EXPECT_ERROR(hy_mqar_check(&bad), HY_EXIT_USAGE, "min_pairs 17");
    free(in);
    free(tg);
    free(in2);
}

// A training mixture: every row follows the protocol with its own pair count,
// the counts cover [min_pairs, n_pairs] log-uniformly (as many rows per
// octave), and min_pairs = n_pairs is the fixed count.
HY_TEST(data_mqar_pair_mixture, "cpu") {
    enum { B = 512, L = 300 };
    hy_mqar_config c = hy_mqar_defaults(L, 64);
    c.min_pairs = 4;
    int32_t *in = malloc(sizeof(int32_t) * B * L), *tg = malloc(sizeof(int32_t) * B * L);
    hy_rng r;
    hy_rng_seed(&r, 7);
    hy_mqar_batch(&c, &r, B, in, tg);
    int below16 = 0, lo = 1 << 30, hi = 0, slot0 = 0;
    for (int b = 0; b < B; b++) {
        hy_mqar_config one = c;
        one.n_pairs = row_pairs(tg + b * L, L), one.min_pairs = 0;
        check_mqar_row(&one, in + b * L, tg + b * L, &slot0);
        below16 += one.n_pairs < 16;
        lo = one.n_pairs < lo ? one.n_pairs : lo;
        hi = one.n_pairs > hi ? one.n_pairs : hi;
    }
    // P(P < 16) = ln(16/4) / ln(65/4) = 0.497; 512 rows: sd 0.022.
    HY_ASSERT(below16 > B * 40 / 100 && below16 < B * 60 / 100, "%d of %d rows below 16 pairs", below16, B);
    HY_ASSERT(lo == 4 && hi == 64, "pair counts span [%d, %d], expected [4, 64]", lo, hi);
    c.min_pairs = 64;
    hy_mqar_batch(&c, &r, 8, in, tg);
    for (int b = 0; b < 8; b++) HY_ASSERT(row_pairs(tg + b * L, L) == 64, "min_pairs = n_pairs: fixed count");
    free(in);
    free(tg);
}

// ---------------------------------------------------------------- passkey

// inputs plus the last target: the whole seq_len + 1 byte text.
static void passkey_text(const int32_t *in, const int32_t *tg, int L, char *out) {
    for (int t = 0; t < L; t++) out[t] = (char)in[t];
    out[L] = (char)tg[L - 1];
    out[L + 1] = '\0';
}

static void check_passkey(const hy_passkey_config *c, const int32_t *in, const int32_t *tg,
                          const hy_passkey_item *it) {
    int L = c->seq_len, nd = c->n_digits;
    char *text = malloc((size_t)L + 2), want[128];
    passkey_text(in, tg, L, text);
    snprintf(want, sizeof want, "What is the pass key? The pass key is %s", it->answer);
    HY_ASSERT((int)strlen(it->answer) == nd, "answer has %d digits", nd);
    HY_ASSERT(strlen(text) >= strlen(want) && !strcmp(text + L + 1 - strlen(want), want),
              "text ends with the question and answer");
    snprintf(want, sizeof want, "The pass key is %s. Remember it. %s is the pass key. ", it->answer,
             it->answer);
    HY_ASSERT(!strncmp(text + it->needle_pos, want, strlen(want)), "needle at needle_pos");
    int with_loss = 0;
    for (int t = 0; t < L; t++) with_loss += tg[t] != HY_IGNORE_INDEX;
    HY_ASSERT(with_loss == nd, "loss on %d positions, expected the %d digits", with_loss, nd);
    for (int i = 0; i < nd; i++)
        HY_ASSERT(tg[it->answer_pos + i] == it->answer[i], "target %d is answer digit %d",
                  it->answer_pos + i, i);
    HY_ASSERT(it->answer_pos == L - nd && in[it->answer_pos] == ' ', "prompt ends with 'is '");
    free(text);
}

HY_TEST(data_passkey, "cpu") {
    enum { L = 300 };
    hy_passkey_config c = hy_passkey_defaults(L);
    int32_t in[L], tg[L];
    hy_passkey_item it;
    hy_rng r;
    hy_rng_seed(&r, 3);

    c.depth = 0;
    hy_passkey_sample(&c, &r, in, tg, &it);
    check_passkey(&c, in, tg, &it);
    HY_ASSERT(it.needle_pos == 0 && in[0] == 'T' && in[4] == 'p', "depth 0: key at the start");

    c.depth = 1;
    hy_passkey_sample(&c, &r, in, tg, &it);
    check_passkey(&c, in, tg, &it);
    int nn = (int)strlen("The pass key is 12345. Remember it. 12345 is the pass key. ");
    int nq = (int)strlen("\nWhat is the pass key? The pass key is 12345");
    HY_ASSERT(it.needle_pos == L + 1 - nq - nn, "depth 1: key just before the question (%d)",
              it.needle_pos);

    c.depth = -1;  // random depth per sequence
    int lo = L, hi = 0;
    for (int i = 0; i < 20; i++) {
        hy_passkey_sample(&c, &r, in, tg, &it);
        check_passkey(&c, in, tg, &it);
        if (it.needle_pos < lo) lo = it.needle_pos;
        if (it.needle_pos > hi) hi = it.needle_pos;
    }
    HY_ASSERT(hi - lo > 50, "random depths vary (%d..%d)", lo, hi);

    c.n_digits = 3, c.depth = 0.5f;
    int32_t batch_in[4 * L], batch_tg[4 * L];
    hy_passkey_batch(&c, &r, 4, batch_in, batch_tg);
    for (int b = 0; b < 4; b++) {
        int with_loss = 0;
        for (int t = 0; t < L; t++) with_loss += batch_tg[b * L + t] != HY_IGNORE_INDEX;
        HY_ASSERT(with_loss == 3, "batch row %d: loss on the 3 digits only", b);
    }

    // The shortest length fits with no filler at all.
    c.seq_len = hy_passkey_min_seq_len(5), c.n_digits = 5, c.depth = 0.5f;
    hy_passkey_sample(&c, &r, in, tg, &it);
    check_passkey(&c, in, tg, &it);
    c.seq_len--;
    HY_EXPECT_ERROR(hy_passkey_check(&c), HY_EXIT_USAGE, "too short");
    c.seq_len = L, c.n_digits = 0;
    HY_EXPECT_ERROR(hy_passkey_check(&c), HY_EXIT_USAGE, "n_digits 0");
}

// ---------------------------------------------------------------- hydra-data

HY_TEST(data_cli, "cpu") {
    const char *dir = tmp_dir();
    char text[1000];
    for (int i = 0; i < 1000; i++) text[i] = (char)('a' + i % 26);
    char txt[512], out[512];
    snprintf(txt, sizeof txt, "%s/input.txt", dir);
    snprintf(out, sizeof out, "%s/out/nested", dir);
    write_bytes(txt, text, sizeof text);

    HY_ASSERT(run_cli("encode", txt, "--out", out, "--val-frac", "0.25", NULL) == 0, "encode");
    hy_shard tr, va;
    hy_shard_open(&tr, in_dir(out, "train.bin"), 256);
    hy_shard_open(&va, in_dir(out, "val.bin"), 256);
    HY_ASSERT(tr.n == 750 && va.n == 250 && tr.width == 1, "750 + 250 tokens, width 1");
    HY_ASSERT(hy_shard_get(&tr, 0) == 'a' && hy_shard_get(&va, 0) == (uint32_t)text[750],
              "val is the end of the text");
    hy_shard_close(&tr);
    hy_shard_close(&va);
    HY_ASSERT(run_cli("info", in_dir(out, "train.bin"), NULL) == 0, "info");

    // Bad usage: usage text and status 2, nothing written.
    HY_ASSERT(run_cli(NULL) == 2, "no command");
    HY_ASSERT(run_cli("frobnicate", NULL) == 2, "unknown command");
    HY_ASSERT(run_cli("encode", txt, NULL) == 2, "encode without --out");
    HY_ASSERT(run_cli("encode", "--out", out, NULL) == 2, "encode without input");
    HY_ASSERT(run_cli("encode", txt, "--out", out, "--val-frac", "1.5", NULL) == 2, "val-frac");
    HY_ASSERT(run_cli("encode", txt, "--out", out, "--bogus", NULL) == 2, "unknown option");
    HY_ASSERT(run_cli("info", NULL) == 2, "info without a shard");
    HY_ASSERT(run_cli("--help", NULL) == 0, "--help");

    // A missing input changes nothing: no new directory, old shards intact.
    char fresh[640];
    snprintf(fresh, sizeof fresh, "%s/%s", dir, "fresh");
    HY_EXPECT_ERROR(run_cli("encode", in_dir(dir, "missing.txt"), "--out", fresh, NULL),
                    HY_EXIT_USAGE, "missing.txt: cannot open");
    HY_ASSERT(!file_exists(fresh), "no output directory for a missing input");
    static long before_n, after_n;
    static char *before, *after;
    before = slurp(in_dir(out, "train.bin"), &before_n);
    HY_EXPECT_ERROR(run_cli("encode", in_dir(dir, "missing.txt"), "--out", out, NULL),
                    HY_EXIT_USAGE, "missing.txt");
    after = slurp(in_dir(out, "train.bin"), &after_n);
    HY_ASSERT(before_n == after_n && !memcmp(before, after, (size_t)before_n),
              "existing train.bin untouched");
    HY_ASSERT(count_entries(out) == 2, "only train.bin and val.bin in the output");
    free(before);
    free(after);
    HY_EXPECT_ERROR(run_cli("encode", txt, "--out", txt, NULL), HY_EXIT_USAGE,
                    "is not a directory");
    HY_EXPECT_ERROR(run_cli("info", txt, NULL), HY_EXIT_USAGE, "input.txt: bad magic");
    rm_tree(dir);
}

HY_TEST(data_encode_shakespeare, "cpu") {
    const char *src = HY_SHARED_DIR "/data/tinyshakespeare.txt";
    struct stat st;
    if (stat(src, &st) != 0) hy_test_skip("no ../shared/data/tinyshakespeare.txt");
    const char *dir = tmp_dir();
    HY_ASSERT(run_cli("encode", src, "--out", dir, NULL) == 0, "encode tinyshakespeare");
    hy_shard tr, va;
    hy_shard_open(&tr, in_dir(dir, "train.bin"), 256);
    hy_shard_open(&va, in_dir(dir, "val.bin"), 256);
    HY_ASSERT(tr.n + va.n == (int64_t)st.st_size, "%lld + %lld tokens != %lld bytes",
              (long long)tr.n, (long long)va.n, (long long)st.st_size);
    HY_ASSERT(va.n == (int64_t)(st.st_size / 10 + (st.st_size % 10 >= 5)), "val is 10%%");
    hy_shard_close(&tr);
    hy_shard_close(&va);

    hy_loader l;
    hy_loader_open(&l, dir, "train", 256, 1, 0, 1);
    int32_t in[4 * 64], tg[4 * 64];
    hy_loader_batch(&l, 0, 4, 64, in, tg);
    unsigned char bytes[64];
    hy_tok_decode(in, 64, bytes);  // byte ids decode
    hy_loader_close(&l);
    rm_tree(dir);
}
