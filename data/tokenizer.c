#include "tokenizer.h"

#include "../autograd/check.h"

int64_t hy_tok_encode(const unsigned char *text, int64_t n, int32_t *ids) {
    HY_REQUIRE(n >= 0, "tokenizer: encode got a negative length %lld", (long long)n);
    for (int64_t i = 0; i < n; i++) ids[i] = text[i];
    return n;
}

int64_t hy_tok_decode(const int32_t *ids, int64_t n, unsigned char *text) {
    HY_REQUIRE(n >= 0, "tokenizer: decode got a negative length %lld", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        HY_REQUIRE(ids[i] >= 0 && ids[i] < HY_TOK_VOCAB,
                   "tokenizer: token id %d at position %lld is outside the byte vocabulary "
                   "[0, %d)",
                   (int)ids[i], (long long)i, HY_TOK_VOCAB);
        text[i] = (unsigned char)ids[i];
    }
    return n;
}
