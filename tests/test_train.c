// hydra-train end to end on tiny configs: the loss falls, an interrupted
// run resumes bit-exactly, a NaN stops the run with the last checkpoint
// intact, and bad input gets one clear error (exit 2) with nothing in the
// run directory changed.
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/shard.h"
#include "../train/batch.h"
#include "../train/checkpoint.h"
#include "../train/trainer.h"
#include "harness.h"

static char g_dir[256];

static void remove_tmpdir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

static const char *tmpdir(void) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/hydra-train-test-XXXXXX");
        HY_ASSERT(mkdtemp(g_dir) != NULL, "mkdtemp");
        atexit(remove_tmpdir);
    }
    return g_dir;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    HY_ASSERT(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

// A tiny byte-level corpus as hydra-data would write it: DIR/train.bin, DIR/val.bin.
static const char *make_corpus(void) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/corpus", tmpdir());
    mkdir(dir, 0755);
    const char *line = "To be, or not to be, that is the question: whether 'tis nobler in the mind. ";
    int n = 20000;
    uint32_t *tok = (uint32_t *)malloc(n * sizeof(uint32_t));
    for (int i = 0; i < n; i++) tok[i] = (unsigned char)line[i % strlen(line)];
    char path[600];
    snprintf(path, sizeof path, "%s/train.bin", dir);
    hy_shard_write(path, tok, n, 1);
    snprintf(path, sizeof path, "%s/val.bin", dir);
    hy_shard_write(path, tok, 4000, 1);
    free(tok);
    return dir;
}

static const char *tiny_config(const char *name, const char *extra) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s.ini", tmpdir(), name);
    char text[4096];
    snprintf(text, sizeof text,
             "[model]\nvocab_size = 256\nd_model = 16\nn_layers = 2\nn_heads = 2\nswa_every = 2\n"
             "swa_window = 8\ndn_chunk_size = 8\n\n[train]\nsteps = 20\nbatch_size = 2\nseq_len = 24\n"
             "seed = 7\ndevice = cpu\neval_every = 10\neval_batches = 2\ncheckpoint_every = 5\n"
             "keep_checkpoints = 10\nlog_every = 5\n\n[optim]\nkind = muon_hybrid\nlr = 3e-3\n"
             "muon_lr = 0.02\nwarmup_steps = 3\n\n[data]\nsource = text\npath = %s\n%s",
             make_corpus(), extra ? extra : "");
    write_text(path, text);
    return path;
}

static int run_train(const char *a0, const char *a1, const char *a2, const char *a3,
                     const char *a4, const char *a5, const char *a6) {
    char *argv[8] = {(char *)"hydra-train", (char *)a0, (char *)a1, (char *)a2, (char *)a3,
                     (char *)a4, (char *)a5, (char *)a6};
    int argc = 1;
    while (argc < 8 && argv[argc]) argc++;
    fflush(stdout);
    return hy_train_main(argc, argv);
}

// The training loss of every step, as written (text), from metrics.jsonl;
// the last line of a step wins (a resumed run appends).
static int read_losses(const char *dir, char losses[][32], int max) {
    char path[600], line[512];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        long step;
        char loss[32];
        if (sscanf(line, "{\"step\":%ld,\"loss\":%31[^,]", &step, loss) != 2) continue;
        if (step >= 1 && step <= max) {
            snprintf(losses[step - 1], 32, "%s", loss);
            if (step > n) n = (int)step;
        }
    }
    fclose(f);
    return n;
}

HY_TEST(train_loss_falls, "cpu") {
    const char *cfg = tiny_config("falls", NULL);
    char out[600];
    snprintf(out, sizeof out, "%s/falls", tmpdir());
    HY_ASSERT(run_train(cfg, "--out", out, "--set", "train.steps=40", NULL, NULL) == 0, "run");
    char losses[40][32];
    HY_ASSERT(read_losses(out, losses, 40) == 40, "40 steps logged");
    double first = atof(losses[0]), last = atof(losses[39]);
    printf("  loss %.4f -> %.4f\n", first, last);
    HY_ASSERT(last < first - 1.0, "loss fell only from %.4f to %.4f", first, last);
}

HY_TEST(train_resume_bit_exact, "cpu") {
    const char *cfg = tiny_config("resume", NULL);
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/straight", tmpdir());
    snprintf(b, sizeof b, "%s/interrupted", tmpdir());
    HY_ASSERT(run_train(cfg, "--out", a, NULL, NULL, NULL, NULL) == 0, "20 straight steps");
    // Stopped after step 10 as by SIGTERM (saves, exits 130), then resumed.
    HY_ASSERT(run_train(cfg, "--out", b, "--stop-at-step", "10", NULL, NULL) == 130, "stop at 10");
    char la[20][32], lb[20][32];
    HY_ASSERT(read_losses(b, lb, 20) == 10, "10 steps before the stop");
    HY_ASSERT(run_train(cfg, "--out", b, "--resume", "latest", NULL, NULL) == 0, "resume");
    HY_ASSERT(read_losses(a, la, 20) == 20 && read_losses(b, lb, 20) == 20, "20 steps logged");
    for (int i = 0; i < 20; i++) {
        HY_ASSERT(strcmp(la[i], lb[i]) == 0, "step %d: loss %s straight, %s resumed", i + 1, la[i],
                  lb[i]);
        if (i >= 10) printf("  step %2d: %s | %s\n", i + 1, la[i], lb[i]);
    }
}

// ---------------------------------------------------------------- bad input
// Every file of a directory with its size and bytes, to see that nothing changed.
static char *snapshot(const char *dir) {
    size_t cap = 1 << 20, len = 0;
    char *s = (char *)calloc(cap, 1);
    DIR *d = opendir(dir);
    if (!d) return s;
    struct dirent *e;
    char names[64][256];
    int n = 0;
    while ((e = readdir(d)) && n < 64)
        if (e->d_name[0] != '.') snprintf(names[n++], 256, "%s", e->d_name);
    closedir(d);
    qsort(names, n, 256, (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%.500s/%.255s", dir, names[i]);
        FILE *f = fopen(p, "rb");
        unsigned long h = 5381, size = 0;
        int c;
        while (f && (c = fgetc(f)) != EOF) h = h * 33 + (unsigned)c, size++;
        if (f) fclose(f);
        len += snprintf(s + len, cap - len, "%s %lu %lx\n", names[i], size, h);
    }
    return s;
}

static void expect_bad(const char *what, const char *out, const char *needle, const char *a0,
                       const char *a1, const char *a2, const char *a3, const char *a4,
                       const char *a5, const char *a6) {
    char *before = snapshot(out);
    printf("  %s:\n", what);
    HY_EXPECT_ERROR(run_train(a0, a1, a2, a3, a4, a5, a6), HY_EXIT_USAGE, needle);
    char *after = snapshot(out);
    HY_ASSERT(strcmp(before, after) == 0, "%s: the run directory changed", what);
    free(before);
    free(after);
}

static int row_pairs(const int32_t *tg, int L) {
    int n = 0;
    for (int t = 0; t < L; t++) n += tg[t] != HY_IGNORE_INDEX;
    return n;
}

// data.mqar_min_pairs mixes pair counts into training batches only: the
// held-out batches keep data.mqar_pairs, so accuracy is measured on the task
// as stated.
HY_TEST(train_mqar_mixture_held_out_fixed, "cpu") {
    hy_run_config c;
    hy_run_config_defaults(&c);
    hy_run_config_parse_string(&c,
                               "[model]\nvocab_size = 512\n[train]\nseq_len = 128\nbatch_size = 16\n[optim]\nlr = 1e-3\n"
                               "[data]\nsource = mqar\nmqar_pairs = 24\nmqar_min_pairs = 2\n",
                               "mix.ini");
    hy_run_config_finalize(&c);
    hy_batcher b;
    hy_batcher_open(&b, &c, 0, 1);
    int32_t in[16 * 128], tg[16 * 128];
    int train_fixed = 1;
    for (int step = 0; step < 4; step++) {
        hy_batcher_train(&b, step, 0, in, tg);
        for (int row = 0; row < 16; row++) train_fixed &= row_pairs(tg + row * 128, 128) == 24;
    }
    HY_ASSERT(!train_fixed, "training rows hold a mixture of pair counts");
    for (int i = 0; i < 3; i++) {
        hy_batcher_val(&b, i, in, tg);
        for (int row = 0; row < 16; row++)
            HY_ASSERT(row_pairs(tg + row * 128, 128) == 24, "held-out row %d of batch %d: 24 pairs", row, i);
    }
    hy_batcher_close(&b);
    hy_run_config_set(&c, "data.mqar_min_pairs=25");
    HY_EXPECT_ERROR(hy_run_config_finalize(&c), HY_EXIT_USAGE, "data.mqar_min_pairs (25) must be <= data.mqar_pairs (24)");
}

HY_TEST(train_bad_input, "cpu") {
    char out[600], cfg[600], p[700];
    snprintf(out, sizeof out, "%s/bad", tmpdir());
    snprintf(cfg, sizeof cfg, "%s", tiny_config("good", NULL));
    // A real run first, so there is something on disk to protect.
    HY_ASSERT(run_train(cfg, "--out", out, "--set", "train.steps=5", NULL, NULL) == 0, "setup");

    expect_bad("unknown key", out, "bad_key.ini:31: unknown key 'colour' in section [data]",
               tiny_config("bad_key", "colour = blue\n"), "--out", out, NULL, NULL, NULL, NULL);
    expect_bad("wrong type", out, "train.steps: expected an integer", cfg, "--out", out, "--set",
               "train.steps=many", NULL, NULL);
    snprintf(p, sizeof p, "data.path=%s/no-such-dir", tmpdir());
    expect_bad("missing data", out, "no-such-dir", cfg, "--out", out, "--set", p, NULL, NULL);
    char nosect[600];
    snprintf(nosect, sizeof nosect, "%s/nosect.ini", tmpdir());
    write_text(nosect, "[model]\nd_model = 16\n[train]\nsteps = 3\n[data]\nsource = mqar\n");
    expect_bad("missing section", out, "missing section [optim]", nosect, "--out", out, NULL, NULL,
               NULL, NULL);

    // A shard with a token id >= vocab_size.
    char bad_dir[600];
    snprintf(bad_dir, sizeof bad_dir, "%s/badtok", tmpdir());
    mkdir(bad_dir, 0755);
    uint32_t tok[300];
    for (int i = 0; i < 300; i++) tok[i] = i == 123 ? 300 : 65;
    snprintf(p, sizeof p, "%s/train.bin", bad_dir);
    hy_shard_write(p, tok, 300, 2);
    snprintf(p, sizeof p, "%s/val.bin", bad_dir);
    hy_shard_write(p, tok, 300, 2);
    snprintf(p, sizeof p, "data.path=%s", bad_dir);
    expect_bad("token id >= vocab_size", out, ">= vocab_size", cfg, "--out", out, "--set", p,
               NULL, NULL);

    // A truncated checkpoint.
    char ck[700], trunc[700];
    snprintf(ck, sizeof ck, "%s/ckpt-5.h5", out);
    snprintf(trunc, sizeof trunc, "%s/truncated.h5", tmpdir());
    FILE *src = fopen(ck, "rb"), *dst = fopen(trunc, "wb");
    HY_ASSERT(src && dst, "copy checkpoint");
    fseek(src, 0, SEEK_END);
    long size = ftell(src);
    fseek(src, 0, SEEK_SET);
    for (long i = 0; i < size / 2; i++) fputc(fgetc(src), dst);
    fclose(src);
    fclose(dst);
    expect_bad("truncated checkpoint", out, "truncated.h5", cfg, "--out", out, "--resume", trunc,
               NULL, NULL);
}

HY_TEST(train_other_config_checkpoint, "cpu") {
    char out[600], cfg[600], ck[700];
    snprintf(out, sizeof out, "%s/other", tmpdir());
    snprintf(cfg, sizeof cfg, "%s", tiny_config("other", NULL));
    HY_ASSERT(run_train(cfg, "--out", out, "--set", "train.steps=5", NULL, NULL) == 0, "setup");
    snprintf(ck, sizeof ck, "%s/ckpt-5.h5", out);
    expect_bad("checkpoint of another config", out, "shape", cfg, "--out", out, "--resume", ck,
               "--set", "model.d_model=32");
}

HY_TEST(train_nan_stops_with_checkpoint_intact, "cpu") {
    char out[600], cfg[600], ck[700];
    snprintf(out, sizeof out, "%s/nan", tmpdir());
    snprintf(cfg, sizeof cfg, "%s", tiny_config("nan", NULL));
    HY_EXPECT_ERROR(run_train(cfg, "--out", out, "--inject-nan-at-step", "8", NULL, NULL),
                    HY_EXIT_FAIL, "step 8: the loss is nan");
    snprintf(ck, sizeof ck, "%s/ckpt-5.h5", out);
    char *text = hy_ckpt_read_config(ck);  // still a whole, readable checkpoint
    HY_ASSERT(text && strstr(text, "[model]"), "checkpoint of step 5 is intact");
    free(text);
    HY_ASSERT(access(ck, R_OK) == 0, "ckpt-5.h5 exists");
    snprintf(ck, sizeof ck, "%s/ckpt-10.h5", out);
    HY_ASSERT(access(ck, F_OK) != 0, "no checkpoint after the NaN");
}
