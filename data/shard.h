// shard.h: token shards on disk.
//
// HydraLM shard: a 32-byte little-endian header
//   uint32 magic = 0x54445948 ("HYDT"), uint32 version = 1,
//   uint32 token width in bytes (1, 2 or 4), uint32 reserved = 0,
//   uint64 token count, uint64 reserved = 0
// then the tokens, little-endian, `width` bytes each. Width 1 suits the byte
// tokenizer, 2 a vocabulary up to 65536, 4 anything larger.
//
// llm.c shards (GPT-2 tokens) are read too: a 256 x int32 header with
// header[0] = 20240520, header[1] = 1, header[2] = token count, then uint16
// tokens.
//
// Shards are mmap'd read-only, so opening a multi-GB shard costs no copy and
// several ranks on one host share the page cache.
#ifndef HY_DATA_SHARD_H
#define HY_DATA_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define HY_SHARD_MAGIC 0x54445948u  // "HYDT" read as a little-endian uint32
#define HY_SHARD_VERSION 1
#define HY_SHARD_HEADER_BYTES 32
#define HY_LLMC_MAGIC 20240520
#define HY_LLMC_VERSION 1
#define HY_LLMC_HEADER_BYTES 1024  // 256 x int32

enum { HY_SHARD_HYDT = 1, HY_SHARD_LLMC = 2 };

typedef struct {
    char path[1024];
    int width;                    // bytes per token: 1, 2 or 4
    int64_t n;                    // token count
    const unsigned char *tokens;  // mmap'd, little-endian, n * width bytes
    size_t map_bytes;             // the whole file (header included)
    void *map;                    // start of the mapping (the header)
    int format;                   // HY_SHARD_HYDT or HY_SHARD_LLMC
    int version;                  // the header's version field
    size_t header_bytes;
} hy_shard;

// Open and validate `path`: magic, version, width, file size == header +
// n * width, and (when vocab_size > 0) every token id < vocab_size. Each
// failure, a missing file included, is one usage error (exit 2) naming the
// file and what is wrong. vocab_size <= 0 skips the id check (hydra-data info).
void hy_shard_open(hy_shard *s, const char *path, int vocab_size);
void hy_shard_close(hy_shard *s);

// Token i (0 <= i < n; not checked: this is the data loader's inner loop).
static inline uint32_t hy_shard_get(const hy_shard *s, int64_t i) {
    const unsigned char *p = s->tokens + (size_t)i * (size_t)s->width;
    switch (s->width) {
        case 1: return p[0];
        case 2: return (uint32_t)p[0] | (uint32_t)p[1] << 8;
        default:
            return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                   (uint32_t)p[3] << 24;
    }
}

// Copy tokens [start, start + count) into out (checked against n).
void hy_shard_read(const hy_shard *s, int64_t start, int64_t count, int32_t *out);

// Write a HydraLM shard atomically: `path`.tmp.<pid> is written, fsync'd and
// renamed over `path`, so `path` is either untouched or complete, never half
// written. Every token must fit in `width` bytes; one that does not is a
// usage error, and the temporary file is removed.
void hy_shard_write(const char *path, const uint32_t *tokens, int64_t n, int width);

#endif
