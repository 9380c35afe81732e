#include "shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../autograd/check.h"

// Usage error that first closes `fd`: tests catch errors with longjmp, so
// every error path must release what it holds.
#define SHARD_REQUIRE(cond, fd, ...)            \
    do {                                        \
        if (!(cond)) {                          \
            close(fd);                          \
            hy_die(HY_EXIT_USAGE, __VA_ARGS__); \
        }                                       \
    } while (0)

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

// ---------------------------------------------------------------- open

// Fill width/n/format/version/header_bytes from the first bytes of the file.
static void parse_hydt(hy_shard *s, const unsigned char *h, size_t size, int fd) {
    const char *p = s->path;
    SHARD_REQUIRE(size >= HY_SHARD_HEADER_BYTES, fd,
                  "%s: truncated header: %zu bytes, a HydraLM shard header is %d", p, size,
                  HY_SHARD_HEADER_BYTES);
    uint32_t version = le32(h + 4), width = le32(h + 8);
    SHARD_REQUIRE(version == HY_SHARD_VERSION, fd, "%s: unsupported shard version %u (expected %d)",
                  p, version, HY_SHARD_VERSION);
    SHARD_REQUIRE(width == 1 || width == 2 || width == 4, fd,
                  "%s: token width %u bytes in the header (expected 1, 2 or 4)", p, width);
    SHARD_REQUIRE(le32(h + 12) == 0 && le64(h + 24) == 0, fd,
                  "%s: reserved header fields are not zero (corrupt header?)", p);
    uint64_t n = le64(h + 16);
    SHARD_REQUIRE(n <= (uint64_t)INT64_MAX / 4, fd, "%s: token count %llu in the header is absurd",
                  p, (unsigned long long)n);
    s->format = HY_SHARD_HYDT;
    s->version = (int)version;
    s->width = (int)width;
    s->n = (int64_t)n;
    s->header_bytes = HY_SHARD_HEADER_BYTES;
}

static void parse_llmc(hy_shard *s, const unsigned char *h, size_t size, int fd) {
    const char *p = s->path;
    SHARD_REQUIRE(size >= HY_LLMC_HEADER_BYTES, fd,
                  "%s: truncated header: %zu bytes, an llm.c shard header is %d", p, size,
                  HY_LLMC_HEADER_BYTES);
    int32_t version = (int32_t)le32(h + 4), n = (int32_t)le32(h + 8);
    SHARD_REQUIRE(version == HY_LLMC_VERSION, fd,
                  "%s: unsupported llm.c shard version %d (expected %d, uint16 tokens)", p, version,
                  HY_LLMC_VERSION);
    SHARD_REQUIRE(n >= 0, fd, "%s: negative token count %d in the llm.c header", p, n);
    s->format = HY_SHARD_LLMC;
    s->version = version;
    s->width = 2;
    s->n = n;
    s->header_bytes = HY_LLMC_HEADER_BYTES;
}

static void parse_header(hy_shard *s, int fd, size_t size) {
    unsigned char h[HY_LLMC_HEADER_BYTES];
    size_t want = size < sizeof h ? size : sizeof h;
    ssize_t got = pread(fd, h, want, 0);
    SHARD_REQUIRE(got == (ssize_t)want, fd, "%s: cannot read the header: %s", s->path,
                  got < 0 ? strerror(errno) : "short read");
    SHARD_REQUIRE(size >= 4, fd, "%s: %zu bytes is too small to be a token shard", s->path, size);
    uint32_t magic = le32(h);
    if (magic == HY_SHARD_MAGIC)
        parse_hydt(s, h, size, fd);
    else if (magic == HY_LLMC_MAGIC)
        parse_llmc(s, h, size, fd);
    else
        SHARD_REQUIRE(0, fd,
                      "%s: bad magic 0x%08x: not a token shard (expected 0x%08x \"HYDT\" for a "
                      "HydraLM shard or %d for an llm.c shard)",
                      s->path, magic, HY_SHARD_MAGIC, HY_LLMC_MAGIC);
}

static void check_size(const hy_shard *s, size_t size, int fd) {
    // Compare without overflow: a corrupt count can be near 2^62.
    uint64_t body = (uint64_t)(size - s->header_bytes);
    uint64_t need = (uint64_t)s->n * (uint64_t)s->width;
    SHARD_REQUIRE(body >= need, fd,
                  "%s: truncated: the header says %lld tokens (%llu bytes) but the file has "
                  "only %llu bytes after the header",
                  s->path, (long long)s->n, (unsigned long long)need, (unsigned long long)body);
    SHARD_REQUIRE(body == need, fd,
                  "%s: %llu bytes after the header, more than the %llu that its %lld tokens "
                  "need (corrupt header or appended data)",
                  s->path, (unsigned long long)body, (unsigned long long)need, (long long)s->n);
}

// Every id must index the embedding; a bad id would read out of bounds on the
// GPU much later, so catch it here with its position.
static void check_vocab(hy_shard *s, int vocab_size) {
    if (vocab_size <= 0) return;
    if (s->width < 4 && (int64_t)vocab_size >= ((int64_t)1 << (8 * s->width))) return;
    for (int64_t i = 0; i < s->n; i++) {
        uint32_t t = hy_shard_get(s, i);
        if (t >= (uint32_t)vocab_size) {
            char path[sizeof s->path];
            memcpy(path, s->path, sizeof path);
            hy_shard_close(s);
            hy_die(HY_EXIT_USAGE, "%s: token %u at position %lld is >= vocab_size %d", path, t,
                   (long long)i, vocab_size);
        }
    }
}

void hy_shard_open(hy_shard *s, const char *path, int vocab_size) {
    memset(s, 0, sizeof *s);
    HY_REQUIRE(strlen(path) < sizeof s->path, "token shard path is too long (%zu chars): %.60s...",
               strlen(path), path);
    strcpy(s->path, path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    HY_REQUIRE(fd >= 0, "%s: cannot open token shard: %s", path, strerror(errno));
    struct stat st;
    SHARD_REQUIRE(fstat(fd, &st) == 0, fd, "%s: cannot stat: %s", path, strerror(errno));
    SHARD_REQUIRE(S_ISREG(st.st_mode), fd, "%s: not a regular file (expected a token shard)", path);
    size_t size = (size_t)st.st_size;
    parse_header(s, fd, size);
    check_size(s, size, fd);
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    SHARD_REQUIRE(map != MAP_FAILED, fd, "%s: cannot mmap %zu bytes: %s", path, size,
                  strerror(errno));
    close(fd);  // the mapping keeps the file alive
    s->map = map;
    s->map_bytes = size;
    s->tokens = (const unsigned char *)map + s->header_bytes;
    check_vocab(s, vocab_size);
}

void hy_shard_close(hy_shard *s) {
    if (s->map) munmap(s->map, s->map_bytes);
    s->map = NULL;
    s->tokens = NULL;
    s->map_bytes = 0;
    s->n = 0;
}

void hy_shard_read(const hy_shard *s, int64_t start, int64_t count, int32_t *out) {
    HY_CHECK(start >= 0 && count >= 0 && start + count <= s->n,
             "%s: read of tokens [%lld, %lld) outside [0, %lld)", s->path, (long long)start,
             (long long)(start + count), (long long)s->n);
    for (int64_t i = 0; i < count; i++) out[i] = (int32_t)hy_shard_get(s, start + i);
}

// ---------------------------------------------------------------- write

// Give up on a write: close and remove the temporary file so that nothing
// half written is left behind, then report.
static void write_fail(int fd, const char *tmp, const char *path, const char *what, int err) {
    if (fd >= 0) close(fd);
    unlink(tmp);
    hy_die(HY_EXIT_USAGE, "%s: cannot write token shard: %s failed: %s; the file was not changed",
           path, what, strerror(err));
}

static void write_all(int fd, const void *buf, size_t n, const char *tmp, const char *path) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) write_fail(fd, tmp, path, "write", w < 0 ? errno : EIO);
        p += w;
        n -= (size_t)w;
    }
}

static void write_header(int fd, int64_t n, int width, const char *tmp, const char *path) {
    unsigned char h[HY_SHARD_HEADER_BYTES] = {0};
    put32(h, HY_SHARD_MAGIC);
    put32(h + 4, HY_SHARD_VERSION);
    put32(h + 8, (uint32_t)width);
    put64(h + 16, (uint64_t)n);
    write_all(fd, h, sizeof h, tmp, path);
}

// Tokens go out in chunks, each checked to fit `width` bytes as it is packed.
static void write_tokens(int fd, const uint32_t *tokens, int64_t n, int width, const char *tmp,
                         const char *path) {
    enum { CHUNK = 1 << 14 };
    unsigned char buf[CHUNK * 4];
    uint64_t limit = (uint64_t)1 << (8 * width);
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t m = n - start < CHUNK ? n - start : CHUNK;
        for (int64_t i = 0; i < m; i++) {
            uint32_t t = tokens[start + i];
            if ((uint64_t)t >= limit) {
                close(fd);
                unlink(tmp);
                hy_die(HY_EXIT_USAGE,
                       "%s: token %u at position %lld does not fit in %d byte(s); the file was "
                       "not changed",
                       path, t, (long long)(start + i), width);
            }
            for (int b = 0; b < width; b++) buf[i * width + b] = (unsigned char)(t >> (8 * b));
        }
        write_all(fd, buf, (size_t)(m * width), tmp, path);
    }
}

// fsync the directory so the rename itself survives a crash.
static void sync_parent_dir(const char *path) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);  // best effort: some filesystems refuse fsync on directories
        close(fd);
    }
}

void hy_shard_write(const char *path, const uint32_t *tokens, int64_t n, int width) {
    HY_REQUIRE(width == 1 || width == 2 || width == 4,
               "%s: token width %d bytes (expected 1, 2 or 4)", path, width);
    HY_REQUIRE(n >= 0, "%s: negative token count %lld", path, (long long)n);
    char tmp[1100];
    HY_REQUIRE(strlen(path) < 1024, "token shard path is too long (%zu chars)", strlen(path));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        char what[1200];
        snprintf(what, sizeof what, "creating %s", tmp);
        write_fail(-1, tmp, path, what, err);
    }
    write_header(fd, n, width, tmp, path);
    write_tokens(fd, tokens, n, width, tmp, path);
    if (fsync(fd) != 0) write_fail(fd, tmp, path, "fsync", errno);
    if (close(fd) != 0) write_fail(-1, tmp, path, "close", errno);
    if (rename(tmp, path) != 0) write_fail(-1, tmp, path, "rename", errno);
    sync_parent_dir(path);
}
