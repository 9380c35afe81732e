#include "run_config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"

typedef enum { K_INT, K_I64, K_FLOAT, K_DOUBLE, K_BOOL, K_STR, K_CHOICE } key_type;

typedef struct {
    const char *section, *key;
    key_type type;
    size_t offset, size;  // size: string capacity
    double lo, hi;        // inclusive range for numbers
    const char *choices;  // K_CHOICE: "a|b|c"
    const char *doc;
} key_spec;

#define F(field) offsetof(hy_run_config, field), sizeof(((hy_run_config *)0)->field)
#define BIG 1e18

// The one table of every key: type, range and meaning. Defaults come from
// hy_run_config_defaults().
static const key_spec KEYS[] = {
    {"model", "arch", K_CHOICE, F(arch), 0, 0, "hydra|dense",
     "hydra: the hybrid model; dense: the matched full-attention Transformer"},
    {"model", "vocab_size", K_INT, F(model.vocab_size), 2, 1 << 24, 0, "vocabulary size (256 for bytes)"},
    {"model", "pad_token_id", K_INT, F(model.pad_token_id), -1, 1 << 24, 0,
     "embedding row that gets no gradient from the lookup (-1: none)"},
    {"model", "d_model", K_INT, F(model.d_model), 1, 65536, 0, "residual width"},
    {"model", "n_layers", K_INT, F(model.n_layers), 1, HY_MAX_LAYERS, 0, "number of blocks"},
    {"model", "n_heads", K_INT, F(model.n_heads), 1, 4096, 0, "heads of every mixer"},
    {"model", "head_dim", K_INT, F(model.head_dim), 0, 4096, 0, "0: d_model / n_heads"},
    {"model", "mlp_mult", K_DOUBLE, F(model.mlp_mult), 1e-3, 64, 0, "SwiGLU hidden = mult * d_model, rounded up"},
    {"model", "mlp_multiple_of", K_INT, F(model.mlp_multiple_of), 1, 65536, 0, "SwiGLU hidden rounding"},
    {"model", "dn_short_conv_kernel", K_INT, F(model.dn_short_conv_kernel), 1, 64, 0,
     "taps of the causal depthwise conv before the DeltaNet"},
    {"model", "dn_use_gate", K_BOOL, F(model.dn_use_gate), 0, 1, 0, "SiLU output gate on the DeltaNet"},
    {"model", "dn_chunk_size", K_INT, F(model.dn_chunk_size), 1, 4096, 0, "chunk of the WY form"},
    {"model", "dn_norm_qk", K_BOOL, F(model.dn_norm_qk), 0, 1, 0, "L2-normalise q and k per head"},
    {"model", "swa_window", K_INT, F(model.swa_window), 1, 1 << 30, 0, "sliding-window size W"},
    {"model", "swa_rope_base", K_DOUBLE, F(model.swa_rope_base), 1.0001, 1e12, 0, "RoPE base"},
    {"model", "swa_every", K_INT, F(model.swa_every), 0, HY_MAX_LAYERS, 0,
     "layer i is SWA when (i+1) % swa_every == 0 (0: none)"},
    {"model", "layers", K_STR, F(model.layers), 0, 0, 0,
     "explicit schedule overriding swa_every, e.g. gdn,gdn,swa"},
    {"model", "rms_eps", K_DOUBLE, F(model.rms_eps), 1e-12, 1, 0, "RMSNorm epsilon"},
    {"model", "tie_embeddings", K_BOOL, F(model.tie_embeddings), 1, 1, 0,
     "the LM head is the embedding (only true is supported)"},
    {"model", "initializer_range", K_DOUBLE, F(model.initializer_range), 1e-6, 10, 0,
     "std of the normal initialisation"},

    {"train", "steps", K_INT, F(train.steps), 1, 1e9, 0, "optimizer steps"},
    {"train", "batch_size", K_INT, F(train.batch_size), 1, 1 << 20, 0, "sequences per micro-batch"},
    {"train", "seq_len", K_INT, F(train.seq_len), 1, 1 << 24, 0, "tokens per sequence"},
    {"train", "grad_accum", K_INT, F(train.grad_accum), 1, 1 << 16, 0, "micro-batches per step"},
    {"train", "seed", K_I64, F(train.seed), 0, 9e18, 0, "seed of initialisation, data and sampling"},
    {"train", "device", K_CHOICE, F(train.device), 0, 0, "auto|cpu|cuda",
     "auto: the GPU when there is one"},
    {"train", "checkpoint_every", K_INT, F(train.checkpoint_every), 0, 1e9, 0,
     "steps between checkpoints (0: at the end only); also on SIGINT/SIGTERM"},
    {"train", "keep_checkpoints", K_INT, F(train.keep_checkpoints), 1, 1e6, 0, "newest checkpoints kept"},
    {"train", "eval_every", K_INT, F(train.eval_every), 0, 1e9, 0, "steps between validation (0: never)"},
    {"train", "eval_batches", K_INT, F(train.eval_batches), 1, 1e6, 0, "micro-batches per validation"},
    {"train", "log_every", K_INT, F(train.log_every), 1, 1e9, 0, "steps between step lines"},
    {"train", "sample_every", K_INT, F(train.sample_every), 0, 1e9, 0,
     "steps between text samples, byte-level text runs (0: never)"},
    {"train", "sample_tokens", K_INT, F(train.sample_tokens), 1, 1 << 20, 0, "length of a sample"},
    {"train", "grad_clip", K_FLOAT, F(train.grad_clip), 0, BIG, 0, "global gradient-norm clip (0: off)"},
    {"train", "recompute", K_BOOL, F(train.recompute), 0, 1, 0,
     "keep only each block's input and replay the block in backward (less memory, one more forward)"},
    {"train", "cuda_graph", K_BOOL, F(train.cuda_graph), 0, 1, 0,
     "one GPU: record a micro-batch's forward and backward once as a CUDA graph and replay it"},
    {"train", "overlap_reduce", K_BOOL, F(train.overlap_reduce), 0, 1, 0,
     "several GPUs: reduce each block's gradients during the backward pass (off: after it)"},

    {"optim", "kind", K_CHOICE, F(optim.kind), 0, 0, "adamw|muon_hybrid",
     "adamw for all, or Muon for 2-D hidden matrices and AdamW for the rest"},
    {"optim", "lr", K_FLOAT, F(optim.lr), 0, 10, 0, "peak lr of AdamW parameters"},
    {"optim", "muon_lr", K_FLOAT, F(optim.muon_lr), 0, 10, 0, "peak lr of Muon parameters"},
    {"optim", "beta1", K_FLOAT, F(optim.beta1), 0, 0.999999, 0, "AdamW beta1"},
    {"optim", "beta2", K_FLOAT, F(optim.beta2), 0, 0.999999, 0, "AdamW beta2"},
    {"optim", "eps", K_FLOAT, F(optim.eps), 0, 1, 0, "AdamW epsilon"},
    {"optim", "weight_decay", K_FLOAT, F(optim.weight_decay), 0, 10, 0,
     "AdamW decoupled weight decay (matrices only)"},
    {"optim", "muon_momentum", K_FLOAT, F(optim.muon_momentum), 0, 0.999999, 0, "Muon momentum"},
    {"optim", "muon_nesterov", K_BOOL, F(optim.muon_nesterov), 0, 1, 0, "Nesterov look-ahead"},
    {"optim", "ns_steps", K_INT, F(optim.ns_steps), 1, 100, 0, "Newton-Schulz iterations"},
    {"optim", "muon_weight_decay", K_FLOAT, F(optim.muon_weight_decay), 0, 10, 0,
     "Muon decoupled weight decay"},
    {"optim", "schedule", K_STR, F(schedule_name), 0, 0, 0, "constant | cosine | wsd"},
    {"optim", "warmup_steps", K_INT, F(warmup_steps), 0, 1e9, 0, "linear warmup steps"},
    {"optim", "decay_steps", K_INT, F(decay_steps), 0, 1e9, 0, "wsd: steps of the final linear decay"},
    {"optim", "min_lr_ratio", K_FLOAT, F(min_lr_ratio), 0, 1, 0, "final lr as a fraction of the peak"},

    {"data", "source", K_STR, F(data.source), 0, 0, 0,
     "text (token shards from hydra-data) | mqar | passkey (synthetic, no files)"},
    {"data", "path", K_STR, F(data.path), 0, 0, 0,
     "text: a hydra-data directory (train.bin, val.bin), a shard, or a glob"},
    {"data", "mqar_pairs", K_INT, F(data.mqar_pairs), 1, 1 << 20, 0,
     "MQAR key-value pairs per sequence (4 * pairs <= seq_len)"},
    {"data", "mqar_min_pairs", K_INT, F(data.mqar_min_pairs), 0, 1 << 20, 0,
     "MQAR training mixture: 0 = every sequence holds mqar_pairs; else each training sequence "
     "holds a log-uniform count in [mqar_min_pairs, mqar_pairs] (validation: mqar_pairs)"},
    {"data", "passkey_fraction", K_FLOAT, F(data.passkey_fraction), 0, 1, 0,
     "passkey: share of passkey sequences per batch"},

    {"eval", "mqar_sequences", K_INT, F(eval.mqar_sequences), 1, 1 << 24, 0,
     "held-out MQAR sequences for accuracy"},
};
#define N_KEYS ((int)(sizeof KEYS / sizeof *KEYS))

static const char *SECTIONS[] = {"model", "train", "optim", "data", "eval"};
#define N_SECTIONS 5
#define N_REQUIRED 4  // model, train, optim, data must appear in a file; eval may not

void hy_run_config_defaults(hy_run_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = HY_ARCH_HYDRA;
    c->model = hy_config_default();
    c->train.steps = 1000;
    c->train.batch_size = 8;
    c->train.seq_len = 256;
    c->train.grad_accum = 1;
    c->train.seed = 1337;
    snprintf(c->train.device, sizeof c->train.device, "auto");
    c->train.checkpoint_every = 0;
    c->train.keep_checkpoints = 3;
    c->train.eval_every = 100;
    c->train.eval_batches = 8;
    c->train.log_every = 1;
    c->train.sample_every = 0;
    c->train.sample_tokens = 200;
    c->train.grad_clip = 1.0f;
    c->train.overlap_reduce = 0;
    c->train.recompute = 0;
    c->train.cuda_graph = 1;
    c->optim = hy_optim_defaults();
    snprintf(c->schedule_name, sizeof c->schedule_name, "cosine");
    c->warmup_steps = 100;
    c->decay_steps = 0;
    c->min_lr_ratio = 0.1f;
    snprintf(c->data.source, sizeof c->data.source, "text");
    c->data.mqar_pairs = 8;
    c->data.passkey_fraction = 1.0f;
    c->eval.mqar_sequences = 1000;
}

static const key_spec *find_key(const char *section, const char *key) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].section, section) && !strcmp(KEYS[i].key, key)) return &KEYS[i];
    return NULL;
}

static int known_section(const char *s) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(SECTIONS[i], s)) return 1;
    return 0;
}

static const char *type_word(const key_spec *k) {
    switch (k->type) {
    case K_INT:
    case K_I64: return "an integer";
    case K_FLOAT:
    case K_DOUBLE: return "a number";
    case K_BOOL: return "true or false";
    case K_STR: return "a string";
    case K_CHOICE: return k->choices;
    }
    return "?";
}

// Set one key from text. `where` is "file:line" or "--set".
static void assign(hy_run_config *c, const key_spec *k, const char *value, const char *where) {
    char *p = (char *)c + k->offset;
    char *end = NULL;
    errno = 0;
#define BADVAL()                                                                             \
    hy_die(HY_EXIT_USAGE, "%s: %s.%s: expected %s in [%g, %g], got '%s'", where, k->section, \
           k->key, type_word(k), k->lo, k->hi, value)
    switch (k->type) {
    case K_INT:
    case K_I64: {
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno || v < k->lo || v > k->hi) BADVAL();
        if (k->type == K_INT)
            *(int *)p = (int)v;
        else
            *(int64_t *)p = v;
        break;
    }
    case K_FLOAT:
    case K_DOUBLE: {
        double v = strtod(value, &end);
        if (!*value || *end || errno || !isfinite(v) || v < k->lo || v > k->hi) BADVAL();
        if (k->type == K_FLOAT)
            *(float *)p = (float)v;
        else
            *(double *)p = v;
        break;
    }
    case K_BOOL: {
        int v;
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "on") || !strcmp(value, "yes"))
            v = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "off") || !strcmp(value, "no"))
            v = 0;
        else
            hy_die(HY_EXIT_USAGE, "%s: %s.%s: expected true or false, got '%s'", where, k->section,
                   k->key, value);
        if (v < k->lo || v > k->hi)
            hy_die(HY_EXIT_USAGE, "%s: %s.%s: only %s is supported", where, k->section, k->key,
                   k->lo ? "true" : "false");
        *(int *)p = v;
        break;
    }
    case K_STR:
        if (strlen(value) >= k->size)
            hy_die(HY_EXIT_USAGE, "%s: %s.%s: value longer than %zu characters", where, k->section,
                   k->key, k->size - 1);
        snprintf(p, k->size, "%s", value);
        break;
    case K_CHOICE: {
        // Choices map to their index for enums (arch, optim.kind), or are
        // stored as text (train.device).
        char buf[128];
        snprintf(buf, sizeof buf, "%s", k->choices);
        int idx = 0, found = -1;
        for (char *s = NULL, *tok = strtok_r(buf, "|", &s); tok; tok = strtok_r(NULL, "|", &s), idx++)
            if (!strcmp(tok, value)) found = idx;
        if (found < 0)
            hy_die(HY_EXIT_USAGE, "%s: %s.%s: expected one of %s, got '%s'", where, k->section,
                   k->key, k->choices, value);
        if (k->size == sizeof(int))
            *(int *)p = found;
        else
            snprintf(p, k->size, "%s", value);
        break;
    }
    }
#undef BADVAL
}

// ---------------------------------------------------------------- INI parsing
typedef struct {
    hy_run_config *c;
    const char *name;
    const char *text, *pos;  // the text being read, line by line
    int line;
    int seen[N_SECTIONS];
} parse_state;

// inih reads through this, so the handler knows the current line number.
static char *reader(char *str, int num, void *stream) {
    parse_state *s = (parse_state *)stream;
    if (!*s->pos) return NULL;
    int n = 0;
    while (s->pos[n] && s->pos[n] != '\n' && n < num - 2) n++;
    if (s->pos[n] == '\n') n++;
    memcpy(str, s->pos, (size_t)n);
    str[n] = 0;
    s->pos += n;
    s->line++;
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    parse_state *s = (parse_state *)user;
    char where[1100];
    snprintf(where, sizeof where, "%s:%d", s->name, s->line);
    if (!known_section(section))
        hy_die(HY_EXIT_USAGE, "%s: unknown section [%s] (expected model, train, optim, data or eval)",
               where, section);
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(SECTIONS[i], section)) s->seen[i] = 1;
    if (!name) return 1;  // a section header alone
    const key_spec *k = find_key(section, name);
    if (!k)
        hy_die(HY_EXIT_USAGE, "%s: unknown key '%s' in section [%s] (see hydra-train --help-config)",
               where, name, section);
    assign(s->c, k, value, where);
    return 1;
}

void hy_run_config_parse_string(hy_run_config *c, const char *text, const char *name) {
    parse_state s;
    memset(&s, 0, sizeof s);
    s.c = c;
    s.name = name;
    s.text = s.pos = text;
    int rc = ini_parse_stream(reader, &s, handler, &s);
    if (rc > 0) hy_die(HY_EXIT_USAGE, "%s:%d: not a valid INI line", name, rc);
    if (rc < 0) hy_die(HY_EXIT_USAGE, "%s: cannot parse", name);
    for (int i = 0; i < N_REQUIRED; i++)
        if (!s.seen[i])
            hy_die(HY_EXIT_USAGE, "%s: missing section [%s] (required: model, train, optim, data)",
                   name, SECTIONS[i]);
}

void hy_run_config_load(hy_run_config *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) hy_die(HY_EXIT_USAGE, "%s: cannot open config: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = (char *)hy_xmalloc((size_t)n + 1);
    size_t got = fread(text, 1, (size_t)n, f);
    fclose(f);
    text[got] = 0;
    hy_run_config_parse_string(c, text, path);
    snprintf(c->file, sizeof c->file, "%s", path);
    free(text);
}

void hy_run_config_set(hy_run_config *c, const char *assignment) {
    const char *eq = strchr(assignment, '='), *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq)
        hy_die(HY_EXIT_USAGE, "--set %s: expected section.key=value", assignment);
    char section[64], key[64];
    snprintf(section, sizeof section, "%.*s", (int)(dot - assignment), assignment);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    const key_spec *k = find_key(section, key);
    if (!k)
        hy_die(HY_EXIT_USAGE, "--set %s: unknown key '%s.%s' (see hydra-train --help-config)",
               assignment, section, key);
    assign(c, k, eq + 1, "--set");
}

// ---------------------------------------------------------------- checks
void hy_run_config_finalize(hy_run_config *c) {
    const char *w = c->file[0] ? c->file : "config";
    hy_config_finalize(&c->model, w);
    hy_optim_validate(&c->optim, w);
    if (strcmp(c->schedule_name, "constant") && strcmp(c->schedule_name, "cosine") &&
        strcmp(c->schedule_name, "wsd"))
        hy_die(HY_EXIT_USAGE, "%s: optim.schedule: expected constant, cosine or wsd, got '%s'", w,
               c->schedule_name);
    if (!strcmp(c->schedule_name, "wsd") && c->decay_steps + c->warmup_steps > c->train.steps)
        hy_die(HY_EXIT_USAGE, "%s: optim.warmup_steps + optim.decay_steps (%d) exceed train.steps (%d)",
               w, c->warmup_steps + c->decay_steps, c->train.steps);
    const char *src = c->data.source;
    if (strcmp(src, "text") && strcmp(src, "mqar") && strcmp(src, "passkey"))
        hy_die(HY_EXIT_USAGE, "%s: data.source: expected text, mqar or passkey, got '%s'", w, src);
    if (!strcmp(src, "text") && !c->data.path[0])
        hy_die(HY_EXIT_USAGE, "%s: data.path is required when data.source = text "
                              "(a directory written by hydra-data encode)", w);
    if (!strcmp(src, "mqar") && 4 * c->data.mqar_pairs > c->train.seq_len)
        hy_die(HY_EXIT_USAGE, "%s: data.mqar_pairs (%d): 4 * pairs must be <= train.seq_len (%d)", w,
               c->data.mqar_pairs, c->train.seq_len);
    if (!strcmp(src, "mqar") && c->data.mqar_min_pairs > c->data.mqar_pairs)
        hy_die(HY_EXIT_USAGE, "%s: data.mqar_min_pairs (%d) must be <= data.mqar_pairs (%d)", w,
               c->data.mqar_min_pairs, c->data.mqar_pairs);
    if (!strcmp(src, "passkey") && c->model.vocab_size < 256)
        hy_die(HY_EXIT_USAGE, "%s: data.source = passkey is byte-level: model.vocab_size must be >= 256", w);
}

hy_schedule hy_run_config_schedule(const hy_run_config *c) {
    hy_schedule s;
    memset(&s, 0, sizeof s);
    s.kind = !strcmp(c->schedule_name, "constant") ? HY_SCHED_CONSTANT
             : !strcmp(c->schedule_name, "wsd")    ? HY_SCHED_WSD
                                                   : HY_SCHED_COSINE;
    s.warmup = c->warmup_steps;
    s.total = c->train.steps;
    s.decay = c->decay_steps;
    s.min_ratio = c->min_lr_ratio;
    return s;
}

// ---------------------------------------------------------------- output
static void format_value(const hy_run_config *c, const key_spec *k, char *out, size_t n) {
    const char *p = (const char *)c + k->offset;
    switch (k->type) {
    case K_INT: snprintf(out, n, "%d", *(const int *)p); break;
    case K_I64: snprintf(out, n, "%lld", (long long)*(const int64_t *)p); break;
    case K_FLOAT: snprintf(out, n, "%.9g", *(const float *)p); break;
    case K_DOUBLE: snprintf(out, n, "%.17g", *(const double *)p); break;
    case K_BOOL: snprintf(out, n, "%s", *(const int *)p ? "true" : "false"); break;
    case K_STR: snprintf(out, n, "%s", p); break;
    case K_CHOICE:
        if (k->size == sizeof(int)) {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", k->choices);
            int idx = 0, want = *(const int *)p;
            out[0] = 0;
            for (char *s = NULL, *tok = strtok_r(buf, "|", &s); tok; tok = strtok_r(NULL, "|", &s), idx++)
                if (idx == want) snprintf(out, n, "%s", tok);
        } else {
            snprintf(out, n, "%s", p);
        }
        break;
    }
}

char *hy_run_config_format(const hy_run_config *c) {
    size_t cap = 16384, len = 0;
    char *out = (char *)hy_xmalloc(cap);
    out[0] = 0;
    for (int s = 0; s < N_SECTIONS; s++) {
        len += snprintf(out + len, cap - len, "%s[%s]\n", s ? "\n" : "", SECTIONS[s]);
        for (int i = 0; i < N_KEYS; i++) {
            if (strcmp(KEYS[i].section, SECTIONS[s])) continue;
            char v[1100];
            format_value(c, &KEYS[i], v, sizeof v);
            len += snprintf(out + len, cap - len, "%s = %s\n", KEYS[i].key, v);
            HY_CHECK(len < cap - 1200, "config text too long");
        }
    }
    return out;
}

void hy_run_config_print_help(FILE *f) {
    hy_run_config d;
    hy_run_config_defaults(&d);
    fprintf(f, "| key | type | default | meaning |\n|---|---|---|---|\n");
    for (int i = 0; i < N_KEYS; i++) {
        char v[1100], type[128];
        format_value(&d, &KEYS[i], v, sizeof v);
        // A '|' inside a Markdown table cell must be escaped.
        const char *t = type_word(&KEYS[i]);
        int n = 0;
        for (; *t && n < 120; t++) {
            if (*t == '|') type[n++] = '\\';
            type[n++] = *t;
        }
        type[n] = 0;
        fprintf(f, "| `%s.%s` | %s | `%s` | %s |\n", KEYS[i].section, KEYS[i].key, type,
                v[0] ? v : "\"\"", KEYS[i].doc);
    }
}
