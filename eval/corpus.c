// corpus.c: the language-model claims' text (see corpus.h).
#include "corpus.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../autograd/check.h"
#include "../autograd/rng.h"
#include "../data/data_cli.h"
#include "../data/shard.h"
#include "train_run.h"

#define SYNTH_BYTES (600 * 1024)
#define N_WORDS 64
#define N_NEXT 4

static const char *WORDS[N_WORDS] = {
    "the", "a", "king", "queen", "lord", "lady", "man", "maid", "sword", "crown", "house", "field",
    "river", "night", "day", "heart", "hand", "eye", "word", "blood", "fire", "rain", "bread",
    "wine", "gold", "stone", "horse", "bird", "tree", "door", "road", "ship", "is", "was", "hath",
    "shall", "will", "doth", "sees", "holds", "takes", "gives", "loves", "fears", "keeps", "finds",
    "and", "but", "of", "to", "in", "with", "my", "thy", "his", "her", "our", "good", "old",
    "young", "dark", "fair", "sweet", "cold"};

// A seeded word-level Markov chain: each word has N_NEXT likely successors.
static void synth_text(const char *path) {
    hy_rng r;
    hy_rng_seed(&r, 20240601);
    int next[N_WORDS][N_NEXT];
    for (int w = 0; w < N_WORDS; w++)
        for (int j = 0; j < N_NEXT; j++) next[w][j] = (int)hy_rng_below(&r, N_WORDS);
    FILE *f = fopen(path, "w");
    HY_CHECK(f, "%s: cannot write: %s", path, strerror(errno));
    long bytes = 0;
    int w = 0, in_sentence = 0;
    while (bytes < SYNTH_BYTES) {
        const char *word = WORDS[w];
        // A sentence starts with a capital letter.
        bytes += fprintf(f, "%c%s", in_sentence ? word[0] : toupper((unsigned char)word[0]), word + 1);
        in_sentence++;
        if (in_sentence >= 6 && hy_rng_below(&r, 4) == 0) {
            bytes += fprintf(f, hy_rng_below(&r, 3) == 0 ? ".\n" : ". ");
            in_sentence = 0;
        } else {
            bytes += fprintf(f, " ");
        }
        w = hy_rng_below(&r, 8) == 0 ? (int)hy_rng_below(&r, N_WORDS)
                                     : next[w][hy_rng_below(&r, N_NEXT)];
    }
    HY_CHECK(fclose(f) == 0, "%s: cannot write: %s", path, strerror(errno));
}

const char *hy_eval_corpus_name(const hy_eval_opts *o) {
    static char buf[1400];
    if (o->text_path[0])
        snprintf(buf, sizeof buf, "the text %s (%s), byte-level", o->text_path, o->text_origin);
    else
        snprintf(buf, sizeof buf, "a synthetic corpus (%d KiB of sentences from a seeded word-level "
                 "Markov chain; no --text, $HYDRA_TEXT or data/tinyshakespeare.txt), byte-level",
                 SYNTH_BYTES / 1024);
    return buf;
}

// WORK/corpus/source names what the shards were encoded from, so a kept
// work directory (--work) is re-encoded when the text changes.
static int corpus_is(const char *dir, const char *source) {
    char path[1300], line[1100] = "";
    snprintf(path, sizeof path, "%s/source", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(line, sizeof line, f) && !strcmp(line, source);
    fclose(f);
    return ok;
}

static void corpus_mark(const char *dir, const char *source) {
    char path[1300];
    snprintf(path, sizeof path, "%s/source", dir);
    FILE *f = fopen(path, "w");
    HY_CHECK(f, "%s: cannot write: %s", path, strerror(errno));
    fputs(source, f);
    HY_CHECK(fclose(f) == 0, "%s: cannot write: %s", path, strerror(errno));
}

void hy_eval_corpus(const hy_eval_opts *o, char *dir, size_t n) {
    snprintf(dir, n, "%s/corpus", o->work_dir);
    const char *source = o->text_path[0] ? o->text_path : "synthetic";
    if (corpus_is(dir, source)) return;  // encoded by an earlier claim (or run) from the same text
    char src[1300], log[1300];
    if (o->text_path[0]) {
        snprintf(src, sizeof src, "%s", o->text_path);
    } else {
        snprintf(src, sizeof src, "%s/synthetic.txt", o->work_dir);
        synth_text(src);
    }
    snprintf(log, sizeof log, "%s/corpus.log", o->work_dir);
    const char *argv[] = {"hydra-data", "encode", src, "--out", dir, "--val-frac", "0.1"};
    hy_eval_stdout_to(log);
    int rc = hy_data_main(7, (char **)argv);
    hy_eval_stdout_restore();
    HY_REQUIRE(rc == 0, "cannot encode the corpus %s (status %d, log %s)", src, rc, log);
    corpus_mark(dir, source);
}

int32_t *hy_eval_corpus_val(const hy_eval_opts *o, int64_t *n) {
    char dir[1200], path[1300];
    hy_eval_corpus(o, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/val.bin", dir);
    hy_shard s;
    hy_shard_open(&s, path, 256);
    int32_t *t = (int32_t *)hy_xmalloc((size_t)(s.n ? s.n : 1) * sizeof(int32_t));
    hy_shard_read(&s, 0, s.n, t);
    *n = s.n;
    hy_shard_close(&s);
    return t;
}
