// tokenizer.h: the built-in byte-level tokenizer (vocab 256).
//
// Token id = byte value, so any file is encodable, decoding is exact and no
// vocabulary file has to travel with a checkpoint.
#ifndef HY_DATA_TOKENIZER_H
#define HY_DATA_TOKENIZER_H

#include <stdint.h>

#define HY_TOK_VOCAB 256

// ids[i] = text[i]; returns n (the token count always equals the byte count).
int64_t hy_tok_encode(const unsigned char *text, int64_t n, int32_t *ids);

// text[i] = ids[i]; returns n. An id outside [0, 256) is a usage error naming
// the id and its position (e.g. a model with a larger vocab sampled it).
int64_t hy_tok_decode(const int32_t *ids, int64_t n, unsigned char *text);

#endif
