#include "synthetic.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"

// ---------------------------------------------------------------- MQAR

hy_mqar_config hy_mqar_defaults(int seq_len, int n_pairs) {
    hy_mqar_config c = {HY_MQAR_DEFAULT_VOCAB, seq_len, n_pairs, HY_MQAR_DEFAULT_POWER_A, 0};
    return c;
}

void hy_mqar_check(const hy_mqar_config *c) {
    HY_REQUIRE(c->n_pairs >= 1, "mqar: n_pairs %d (expected >= 1)", c->n_pairs);
    HY_REQUIRE(c->seq_len >= 1 && 4 * (int64_t)c->n_pairs <= c->seq_len,
               "mqar: 4 * n_pairs = %lld exceeds seq_len %d (the %d key-value pairs take "
               "2 * n_pairs positions and their queries need 2 * n_pairs more); use "
               "n_pairs <= %d or seq_len >= %lld",
               4 * (long long)c->n_pairs, c->seq_len, c->n_pairs, c->seq_len / 4,
               4 * (long long)c->n_pairs);
    // Keys come from [1, V/2) and values from [V/2, V), all distinct.
    HY_REQUIRE(c->vocab_size / 2 - 1 >= c->n_pairs,
               "mqar: vocab_size %d is too small for %d distinct keys in [1, vocab_size/2) "
               "(expected vocab_size >= %lld)",
               c->vocab_size, c->n_pairs, 2 * (long long)c->n_pairs + 2);
    HY_REQUIRE(c->min_pairs >= 0 && c->min_pairs <= c->n_pairs,
               "mqar: min_pairs %d (expected 0 for a fixed count, or 1 to n_pairs = %d)", c->min_pairs,
               c->n_pairs);
    HY_REQUIRE(c->power_a > 0 && isfinite(c->power_a),
               "mqar: power_a %g (expected > 0; 0.01 in Zoology, 1 = uniform)", (double)c->power_a);
}

// Scratch for one batch, reused across its sequences.
typedef struct {
    unsigned char *used;  // [V]: token is a key or value of the current sequence
    double *weight;       // [slots]: power-law weight of each free query slot
    int32_t *keys, *values, *slots;
} mqar_scratch;

// n distinct tokens from [lo, hi) by rejection: cheap while n << hi - lo, and
// hy_mqar_check keeps n <= hi - lo.
static void draw_distinct(hy_rng *r, unsigned char *used, int lo, int hi, int n, int32_t *out) {
    for (int i = 0; i < n; i++) {
        int t;
        do t = lo + (int)hy_rng_below(r, (uint64_t)(hi - lo));
        while (used[t]);
        used[t] = 1;
        out[i] = t;
    }
}

// n distinct slots from [0, n_slots) with p(g) ~ a (g+1)^(a-1), drawn one at a
// time and renormalised over the slots still free (numpy's choice without
// replacement, which Zoology uses, does the same).
static void draw_slots(hy_rng *r, double *w, int n_slots, double a, int n, int32_t *out) {
    double total = 0;
    for (int g = 0; g < n_slots; g++) total += w[g] = a * pow(g + 1.0, a - 1.0);
    for (int i = 0; i < n; i++) {
        double u = hy_rng_uniform_f64(r) * total;
        int pick = -1;
        for (int g = 0; g < n_slots; g++) {
            if (w[g] == 0) continue;
            pick = g;  // the last free slot absorbs rounding at the top end
            if ((u -= w[g]) < 0) break;
        }
        total -= w[pick];
        w[pick] = 0;
        out[i] = pick;
    }
}

// The pair count of one sequence: n_pairs, or log-uniform in [min_pairs, n_pairs].
static int pair_count(const hy_mqar_config *c, hy_rng *r) {
    if (!c->min_pairs || c->min_pairs == c->n_pairs) return c->n_pairs;
    double lo = log((double)c->min_pairs), hi = log(c->n_pairs + 1.0);
    int P = (int)floor(exp(lo + hy_rng_uniform_f64(r) * (hi - lo)));
    return P < c->min_pairs ? c->min_pairs : P > c->n_pairs ? c->n_pairs : P;
}

static void mqar_sequence(const hy_mqar_config *c, hy_rng *r, mqar_scratch *s, int32_t *in,
                          int32_t *tg) {
    int V = c->vocab_size, L = c->seq_len, P = pair_count(c, r), half = V / 2;
    draw_distinct(r, s->used, 1, half, P, s->keys);
    draw_distinct(r, s->used, half, V, P, s->values);
    for (int t = 0; t < L; t++) tg[t] = HY_IGNORE_INDEX;
    for (int i = 0; i < P; i++) {
        in[2 * i] = s->keys[i];
        in[2 * i + 1] = s->values[i];
    }
    // Fill the query part with non-keys first, then drop the queries in.
    for (int t = 2 * P; t < L; t++) {
        int x;
        do x = (int)hy_rng_below(r, (uint64_t)V);
        while (x < half && s->used[x]);
        in[t] = x;
    }
    draw_slots(r, s->weight, (L - 2 * P) / 2, c->power_a, P, s->slots);
    for (int i = 0; i < P; i++) {
        int pos = 2 * P + 2 * s->slots[i];
        in[pos] = s->keys[i];
        tg[pos] = s->values[i];
    }
    for (int i = 0; i < P; i++) s->used[s->keys[i]] = s->used[s->values[i]] = 0;
}

void hy_mqar_batch(const hy_mqar_config *c, hy_rng *r, int B, int32_t *inputs, int32_t *targets) {
    hy_mqar_check(c);
    HY_REQUIRE(B > 0, "mqar: batch size %d (expected > 0)", B);
    mqar_scratch s;
    s.used = hy_xcalloc((size_t)c->vocab_size, 1);
    s.weight = hy_xmalloc(sizeof(double) * (size_t)(c->seq_len / 2 + 1));
    s.keys = hy_xmalloc(sizeof(int32_t) * 3 * (size_t)c->n_pairs);
    s.values = s.keys + c->n_pairs;
    s.slots = s.values + c->n_pairs;
    for (int b = 0; b < B; b++) {
        size_t off = (size_t)b * (size_t)c->seq_len;
        mqar_sequence(c, r, &s, inputs + off, targets + off);
    }
    free(s.used);
    free(s.weight);
    free(s.keys);
}

// ---------------------------------------------------------------- passkey

// Plain, repetitive filler: nothing in it resembles the needle.
static const char k_filler[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
    "again. ";

hy_passkey_config hy_passkey_defaults(int seq_len) {
    hy_passkey_config c = {seq_len, 5, -1.0f};
    return c;
}

static int needle_text(char *out, size_t cap, const char *key) {
    return snprintf(out, cap, "The pass key is %s. Remember it. %s is the pass key. ", key, key);
}

static int question_text(char *out, size_t cap, const char *key) {
    return snprintf(out, cap, "\nWhat is the pass key? The pass key is %s", key);
}

int hy_passkey_min_seq_len(int n_digits) {
    char key[16] = "000000000000000", a[128], q[128];
    key[n_digits < 1 ? 1 : n_digits > 15 ? 15 : n_digits] = '\0';
    // seq_len + 1 bytes hold needle + question (inputs and targets overlap).
    return needle_text(a, sizeof a, key) + question_text(q, sizeof q, key) - 1;
}

void hy_passkey_check(const hy_passkey_config *c) {
    HY_REQUIRE(c->n_digits >= 1 && c->n_digits <= 15, "passkey: n_digits %d (expected 1..15)",
               c->n_digits);
    HY_REQUIRE(c->depth <= 1 && !isnan(c->depth),
               "passkey: depth %g (expected 0..1, or < 0 for a random depth)", (double)c->depth);
    int need = hy_passkey_min_seq_len(c->n_digits);
    HY_REQUIRE(c->seq_len >= need,
               "passkey: seq_len %d is too short for the needle and question with %d digits "
               "(expected >= %d)",
               c->seq_len, c->n_digits, need);
}

// Copy `n` bytes of text into seq, filler continuing cyclically from `phase`.
static void put_filler(unsigned char *seq, int n, int phase) {
    int len = (int)sizeof k_filler - 1;
    for (int i = 0; i < n; i++) seq[i] = (unsigned char)k_filler[(phase + i) % len];
}

void hy_passkey_sample(const hy_passkey_config *c, hy_rng *r, int32_t *inputs, int32_t *targets,
                       hy_passkey_item *item) {
    hy_passkey_check(c);
    int L = c->seq_len, nd = c->n_digits;
    char key[16], needle[128], question[128];
    key[0] = (char)('1' + hy_rng_below(r, 9));  // a genuine n-digit number
    for (int i = 1; i < nd; i++) key[i] = (char)('0' + hy_rng_below(r, 10));
    key[nd] = '\0';
    int nn = needle_text(needle, sizeof needle, key),
        nq = question_text(question, sizeof question, key);
    int filler = L + 1 - nn - nq;
    double depth = c->depth < 0 ? hy_rng_uniform_f64(r) : c->depth;
    int at = (int)lround(depth * filler);

    unsigned char *seq = hy_xmalloc((size_t)L + 1);
    put_filler(seq, at, 0);
    memcpy(seq + at, needle, (size_t)nn);
    put_filler(seq + at + nn, filler - at, at);
    memcpy(seq + L + 1 - nq, question, (size_t)nq);

    int answer_pos = L - nd;  // targets[answer_pos] = seq[L + 1 - nd], the first digit
    for (int t = 0; t < L; t++) {
        inputs[t] = seq[t];
        targets[t] = t >= answer_pos ? (int32_t)seq[t + 1] : HY_IGNORE_INDEX;
    }
    free(seq);
    if (item) {
        memcpy(item->answer, key, sizeof key);
        item->n_digits = nd;
        item->answer_pos = answer_pos;
        item->needle_pos = at;
    }
}

void hy_passkey_batch(const hy_passkey_config *c, hy_rng *r, int B, int32_t *inputs,
                      int32_t *targets) {
    HY_REQUIRE(B > 0, "passkey: batch size %d (expected > 0)", B);
    for (int b = 0; b < B; b++) {
        size_t off = (size_t)b * (size_t)c->seq_len;
        hy_passkey_sample(c, r, inputs + off, targets + off, NULL);
    }
}
