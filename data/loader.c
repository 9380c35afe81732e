#include "loader.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../autograd/check.h"
#include "../autograd/rng.h"

// ---------------------------------------------------------------- finding shards

// "{split}" in the pattern becomes the split, so one config line serves both.
static void substitute_split(char *out, size_t cap, const char *pattern, const char *split) {
    const char *at = strstr(pattern, "{split}");
    if (!at)
        snprintf(out, cap, "%s", pattern);
    else
        snprintf(out, cap, "%.*s%s%s", (int)(at - pattern), pattern, split, at + 7);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static void open_paths(hy_loader *l, char **paths, int n) {
    l->shards = hy_xcalloc((size_t)n, sizeof *l->shards);
    for (int i = 0; i < n; i++) {
        hy_shard_open(&l->shards[i], paths[i], l->vocab_size);
        l->n_shards = i + 1;
    }
}

// Open every match of `pattern`; returns 0 (opening nothing) when none match.
static int open_glob(hy_loader *l, const char *pattern) {
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc != 0) {
        if (rc != GLOB_NOMATCH) globfree(&g);
        return 0;
    }
    HY_REQUIRE(g.gl_pathc < 1000000, "%s: %zu shards match; that is too many", pattern, g.gl_pathc);
    // A bad shard exits (or longjmps in tests) before globfree: a small leak
    // on a path that ends the run anyway.
    open_paths(l, g.gl_pathv, (int)g.gl_pathc);
    globfree(&g);
    return 1;
}

static void open_dir(hy_loader *l, const char *dir) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s.bin", dir, l->split);
    if (is_file(path)) {
        char *one[1] = {path};
        open_paths(l, one, 1);
        return;
    }
    snprintf(path, sizeof path, "%s/*%s*.bin", dir, l->split);
    HY_REQUIRE(open_glob(l, path),
               "%s: no %s data in this directory (expected %s/%s.bin from `hydra-data encode`, "
               "or shards named *%s*.bin)",
               dir, l->split, dir, l->split, l->split);
}

void hy_loader_open(hy_loader *l, const char *pattern_or_dir, const char *split, int vocab_size,
                    uint64_t seed, int rank, int world) {
    memset(l, 0, sizeof *l);
    HY_REQUIRE(!strcmp(split, "train") || !strcmp(split, "val"),
               "data split '%s' (expected \"train\" or \"val\")", split);
    HY_REQUIRE(world >= 1 && rank >= 0 && rank < world,
               "data loader: rank %d of world %d (expected 0 <= rank < world)", rank, world);
    HY_REQUIRE(vocab_size > 0, "data loader: vocab_size %d (expected > 0)", vocab_size);
    snprintf(l->split, sizeof l->split, "%s", split);
    l->seed = seed;
    l->rank = rank;
    l->world = world;
    l->vocab_size = vocab_size;
    char path[1024];
    substitute_split(path, sizeof path, pattern_or_dir, split);
    if (is_dir(path))
        open_dir(l, path);
    else if (is_file(path)) {
        char *one[1] = {path};
        open_paths(l, one, 1);
    } else
        HY_REQUIRE(open_glob(l, path),
                   "%s: no token shard found (not a file, a directory or a glob pattern that "
                   "matches any file)",
                   path);
}

void hy_loader_close(hy_loader *l) {
    for (int i = 0; i < l->n_shards; i++) hy_shard_close(&l->shards[i]);
    free(l->shards);
    l->shards = NULL;
    l->n_shards = 0;
}

int64_t hy_loader_tokens(const hy_loader *l) {
    int64_t n = 0;
    for (int i = 0; i < l->n_shards; i++) n += l->shards[i].n;
    return n;
}

// ---------------------------------------------------------------- training batches

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Each input is folded in through a full avalanche, so (seed, step, rank, row)
// tuples that differ anywhere give unrelated generator seeds.
static uint64_t row_seed(uint64_t seed, int64_t step, int rank, int row) {
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ ((uint64_t)step + 0x632be59bd9b4e019ULL));
    h = mix64(h ^ ((uint64_t)(uint32_t)rank + 0x8cb92ba72f3d8dd7ULL));
    return mix64(h ^ ((uint64_t)(uint32_t)row + 0x52dce729da3ed9b1ULL));
}

static void check_batch_args(const hy_loader *l, int B, int T) {
    HY_REQUIRE(l->n_shards > 0, "data loader: not opened");
    HY_REQUIRE(B > 0 && T > 0, "data loader: batch %d x %d (expected both > 0)", B, T);
    for (int i = 0; i < l->n_shards; i++)
        HY_REQUIRE(l->shards[i].n >= (int64_t)T + 1,
                   "%s: %lld tokens, too short for one window of seq_len + 1 = %d tokens",
                   l->shards[i].path, (long long)l->shards[i].n, T + 1);
}

// Copy window [pos, pos + T] of shard s into one row of inputs and targets.
static void copy_window(const hy_shard *s, int64_t pos, int T, int32_t *in, int32_t *tg) {
    uint32_t prev = hy_shard_get(s, pos);
    for (int t = 0; t < T; t++) {
        uint32_t next = hy_shard_get(s, pos + t + 1);
        in[t] = (int32_t)prev;
        tg[t] = (int32_t)next;
        prev = next;
    }
}

void hy_loader_batch(const hy_loader *l, int64_t step, int B, int T, int32_t *inputs,
                     int32_t *targets) {
    check_batch_args(l, B, T);
    // Start positions are uniform over the union: a shard is picked with
    // probability proportional to its n - T possible starts.
    int64_t starts = 0;
    for (int i = 0; i < l->n_shards; i++) starts += l->shards[i].n - T;
    for (int b = 0; b < B; b++) {
        hy_rng r;
        hy_rng_seed(&r, row_seed(l->seed, step, l->rank, b));
        int64_t u = (int64_t)hy_rng_below(&r, (uint64_t)starts);
        int i = 0;
        while (u >= l->shards[i].n - T) u -= l->shards[i++].n - T;
        copy_window(&l->shards[i], u, T, inputs + (size_t)b * T, targets + (size_t)b * T);
    }
}

// ---------------------------------------------------------------- validation batches

int64_t hy_loader_eval_windows(const hy_loader *l, int T) {
    HY_REQUIRE(T > 0, "data loader: seq_len %d (expected > 0)", T);
    int64_t w = 0;
    for (int i = 0; i < l->n_shards; i++)
        if (l->shards[i].n > 0) w += (l->shards[i].n - 1) / T;
    return w;
}

int64_t hy_loader_eval_batches(const hy_loader *l, int B, int T) {
    HY_REQUIRE(B > 0, "data loader: batch size %d (expected > 0)", B);
    int64_t per = (int64_t)B * l->world, w = hy_loader_eval_windows(l, T);
    return (w + per - 1) / per;
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

// A stride near W / golden ratio and coprime with W: visiting j * stride mod W
// is a permutation of the windows whose every prefix is spread over the whole
// split, so a short evaluation is not just the first pages of the text.
static int64_t visit_stride(int64_t w) {
    int64_t s = (int64_t)((double)w * 0.6180339887498949 + 0.5);
    if (s < 1) s = 1;
    while (gcd64(s, w) != 1) s++;
    return s;
}

void hy_loader_eval_batch(const hy_loader *l, int64_t index, int B, int T, int32_t *inputs,
                          int32_t *targets) {
    check_batch_args(l, B, T);
    HY_REQUIRE(index >= 0, "data loader: eval batch index %lld (expected >= 0)", (long long)index);
    int64_t w = hy_loader_eval_windows(l, T), stride = visit_stride(w);
    for (int b = 0; b < B; b++) {
        int64_t j = ((index * l->world + l->rank) * B + b) % w;
        // (j * stride) mod w without overflow for any realistic w.
        int64_t k = (int64_t)(((unsigned __int128)j * (uint64_t)stride) % (uint64_t)w);
        int i = 0;
        while (k >= (l->shards[i].n - 1) / T) k -= (l->shards[i++].n - 1) / T;
        copy_window(&l->shards[i], k * T, T, inputs + (size_t)b * T, targets + (size_t)b * T);
    }
}
