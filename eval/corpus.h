// corpus.h: the text the language-model claims train on.
//
// The text chosen by hydra-eval (--text PATH, else $HYDRA_TEXT, else
// data/tinyshakespeare.txt when it exists; see eval_cli.c) is encoded with
// the byte tokenizer into WORK/corpus/train.bin and val.bin (the last 10%
// is validation). Without any text a synthetic corpus is generated: sentences
// from a fixed seeded word-level Markov chain, so there is structure to
// learn and runs need no files. The claims say which one they used.
#ifndef HY_EVAL_CORPUS_H
#define HY_EVAL_CORPUS_H

#include <stdint.h>

#include "claims.h"

// The hydra-data directory of the corpus (written on first use) into dir.
void hy_eval_corpus(const hy_eval_opts *o, char *dir, size_t n);
// One line saying which corpus it is ("TinyShakespeare-like text from PATH
// (--text)", "synthetic ...").
const char *hy_eval_corpus_name(const hy_eval_opts *o);
// The validation tokens (malloc'd), *n their count.
int32_t *hy_eval_corpus_val(const hy_eval_opts *o, int64_t *n);

#endif
