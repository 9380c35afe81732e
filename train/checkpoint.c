// checkpoint.c: HDF5 checkpoints, the `latest` pointer and pruning.
//
// Saving writes a temporary next to the target and renames it into place,
// so the previous checkpoint survives any failure. Loading checks every
// name, shape and dtype before it touches anything, then reads into a
// staging buffer and copies only when the whole file has read back, so a
// bad checkpoint leaves the model and optimizer exactly as they were.
#include "checkpoint.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../autograd/build_info.h"
#include "../autograd/check.h"


#define PATH_CAP 4096
#define OBJ_CAP (HY_NAME_LEN + 64)  // "/optim/<name>/<slot>"

static const char *optim_kind_name(hy_optim_kind k) {
    return k == HY_OPTIM_MUON_HYBRID ? "muon_hybrid" : "adamw";
}

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < ndim && len < n; d++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (len < n) snprintf(buf + len, n - len, "%s)", ndim == 1 ? "," : "");
    return buf;
}

static size_t numel_of(int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    return n;
}

// ---------------------------------------------------------------- HDF5 errors
// HDF5 prints its whole error stack on every failure unless told not to; we
// report one line ourselves, with the innermost cause it recorded. Every
// HDF5 call clears the stack on entry, so the cause is kept (h5_keep)
// right after the failing call, before any clean-up call.
static char g_h5_why[200];

static void h5_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g_h5_why[0] = 0;
}

static herr_t take_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0) snprintf((char *)data, sizeof g_h5_why, "%s", e->desc ? e->desc : "");
    return 0;
}

// Keep the most specific message on HDF5's error stack, if there is one.
static void h5_keep(void) {
    if (H5Eget_num(H5E_DEFAULT) <= 0) return;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, g_h5_why);
    H5Eclear2(H5E_DEFAULT);
}

// The cause of the last HDF5 failure.
static const char *h5_reason(void) {
    h5_keep();
    return g_h5_why[0] ? g_h5_why : "no detail";
}

// Closing the file closes every object still open in it, so an error path
// needs to close only the file.
static hid_t strong_close_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    HY_CHECK(fapl >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0,
             "HDF5: cannot create a file access property list (%s)", h5_reason());
    return fapl;
}

// ================================================================ save
typedef struct {
    const char *path;  // the final name, for messages
    char tmp[PATH_CAP];
    int failed;
    int line;          // where the first failure was seen
    char why[512];
} saver;

#define SAVE_FAIL(s, ...) save_fail_at((s), __LINE__, __VA_ARGS__)

static void save_fail_at(saver *s, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void save_fail_at(saver *s, int line, const char *fmt, ...) {
    if (s->failed) return;
    s->failed = 1;
    s->line = line;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    h5_keep();
    if (g_h5_why[0])
        snprintf(s->why, sizeof s->why, "%s (HDF5: %s)", what, g_h5_why);
    else
        snprintf(s->why, sizeof s->why, "%s", what);
}

static hid_t save_group(saver *s, hid_t loc, const char *name) {
    if (s->failed) return -1;
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) SAVE_FAIL(s, "cannot create group '%s'", name);
    return g;
}

static void save_close_group(saver *s, hid_t g) {
    if (g >= 0 && H5Gclose(g) < 0) SAVE_FAIL(s, "cannot close a group");
}

// Creation properties of an array: chunked (one chunk, or pieces of at most
// 1 GiB: HDF5 caps a chunk at 4 GiB) with a Fletcher-32 checksum per chunk,
// so a corrupted byte anywhere in the data fails the read instead of
// loading quietly.
static hid_t checksummed(int ndim, const hsize_t *dims) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[HY_MAX_DIMS], n = 1;
    for (int d = 0; d < ndim; d++) chunk[d] = dims[d], n *= dims[d];
    if (dcpl < 0 || ndim == 0 || n == 0) return dcpl;  // scalars and empty arrays: contiguous
    for (int d = 0; d < ndim && n * sizeof(float) > ((hsize_t)1 << 30); d++)
        while (chunk[d] > 1 && n * sizeof(float) > ((hsize_t)1 << 30)) {
            n = n / chunk[d] * ((chunk[d] + 1) / 2);
            chunk[d] = (chunk[d] + 1) / 2;
        }
    if (H5Pset_chunk(dcpl, ndim, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0) {
        H5Pclose(dcpl);
        return -1;
    }
    return dcpl;
}

// fp32 array `name` in `loc`, written from raw host floats (no conversion:
// the file type is little-endian IEEE fp32, as is the host's).
static void save_f32(saver *s, hid_t loc, const char *name, int ndim, const int64_t *shape,
                     const float *data) {
    if (s->failed) return;
    hsize_t dims[HY_MAX_DIMS];
    for (int d = 0; d < ndim; d++) dims[d] = (hsize_t)shape[d];
    hid_t sp = ndim > 0 ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = checksummed(ndim, dims);
    hid_t ds = sp < 0 || dcpl < 0
                   ? -1
                   : H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t w = ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (w < 0) SAVE_FAIL(s, "cannot write dataset '%s'", name);
    if (ds >= 0 && H5Dclose(ds) < 0) SAVE_FAIL(s, "cannot close dataset '%s'", name);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
}

// A fixed-length string type of `len` bytes (at least 1: HDF5 has no empty
// strings), null-padded as h5py writes them.
static hid_t string_type(size_t len) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, len ? len : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static void save_string_dataset(saver *s, hid_t loc, const char *name, const char *text) {
    if (s->failed) return;
    size_t len = strlen(text);
    hid_t ty = string_type(len);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t ds = ty < 0 || sp < 0
                   ? -1
                   : H5Dcreate2(loc, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = ds < 0 ? -1 : H5Dwrite(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, text);
    if (w < 0) SAVE_FAIL(s, "cannot write dataset '%s'", name);
    if (ds >= 0 && H5Dclose(ds) < 0) SAVE_FAIL(s, "cannot close dataset '%s'", name);
    if (sp >= 0) H5Sclose(sp);
    if (ty >= 0) H5Tclose(ty);
}

// Attribute `name` of `n` elements (0: a scalar).
static void save_attr(saver *s, hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                      int n, const void *value) {
    if (s->failed) return;
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = n > 0 ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = a < 0 ? -1 : H5Awrite(a, mem_type, value);
    if (w < 0) SAVE_FAIL(s, "cannot write attribute '%s'", name);
    if (a >= 0 && H5Aclose(a) < 0) SAVE_FAIL(s, "cannot close attribute '%s'", name);
    if (sp >= 0) H5Sclose(sp);
}

static void save_attr_string(saver *s, hid_t loc, const char *name, const char *value) {
    if (s->failed) return;
    hid_t ty = string_type(strlen(value));
    if (ty < 0) {
        SAVE_FAIL(s, "cannot make a string type for '%s'", name);
        return;
    }
    save_attr(s, loc, name, ty, ty, 0, value);
    H5Tclose(ty);
}

static void save_root_attrs(saver *s, hid_t f) {
    int version = HY_CKPT_FORMAT_VERSION;
    save_attr(s, f, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, 0, &version);
    char created[32];
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &utc);
    save_attr_string(s, f, "created", created);
    save_attr_string(s, f, "commit", hy_build_commit());
}

static void save_params(saver *s, hid_t f, const hy_param_table *t) {
    hid_t g = save_group(s, f, "params");
    for (int i = 0; i < t->n && !s->failed; i++) {
        const hy_param *p = &t->p[i];
        save_f32(s, g, p->name, p->ndim, p->shape, t->values + p->offset);
    }
    save_close_group(s, g);
}

static void save_optim(saver *s, hid_t f, const hy_optimizer *o) {
    hid_t g = save_group(s, f, "optim");
    int64_t step = o->step;
    save_attr(s, g, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &step);
    save_attr_string(s, g, "kind", optim_kind_name(o->cfg.kind));
    for (int i = 0; i < o->table->n && !s->failed; i++) {
        const hy_param *p = &o->table->p[i];
        const char *names[HY_OPTIM_MAX_SLOTS];
        float *data[HY_OPTIM_MAX_SLOTS];
        int n = hy_optim_slots(o, i, names, data);
        hid_t pg = save_group(s, g, p->name);
        for (int k = 0; k < n; k++) save_f32(s, pg, names[k], p->ndim, p->shape, data[k]);
        save_close_group(s, pg);
    }
    save_close_group(s, g);
}

static void save_train(saver *s, hid_t f, const hy_train_state *st) {
    hid_t g = save_group(s, f, "train");
    save_attr(s, g, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &st->step);
    save_attr(s, g, "tokens", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &st->tokens);
    save_attr(s, g, "rng", H5T_STD_U64LE, H5T_NATIVE_UINT64, 4, st->rng.s);
    save_attr(s, g, "loss", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 0, &st->loss);
    save_attr(s, g, "val_loss", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 0, &st->val_loss);
    save_close_group(s, g);
}

// The directory part of `path` ("." when there is none).
static void dir_of(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, n, ".");
    else if (slash == path)
        snprintf(out, n, "/");
    else
        snprintf(out, n, "%.*s", (int)(slash - path), path);
}

static int fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

// Create the temporary with open(2) before any work: a missing or
// read-only directory fails at once, and errno names the problem.
static int create_tmp(saver *s) {
    int n = snprintf(s->tmp, sizeof s->tmp, "%s.tmp.%ld", s->path, (long)getpid());
    HY_REQUIRE(n > 0 && (size_t)n < sizeof s->tmp, "%s: checkpoint path too long", s->path);
    int fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        char dir[PATH_CAP];
        dir_of(s->path, dir, sizeof dir);
        hy_die(HY_EXIT_USAGE, "%s: cannot save checkpoint: cannot create %s: %s (is directory %s "
               "there and writable?)", s->path, s->tmp, strerror(e), dir);
    }
    return fd;
}

// The whole checkpoint as an HDF5 file image in memory (malloc'd; its size
// in *size), or NULL with s->failed set.
//
// HDF5 builds the file in memory (the core driver) and we write the image
// with plain write(2) calls. Letting HDF5 write to disk itself is not
// safe: when a write fails part-way (disk full), HDF5 1.10 leaves the file
// half-closed and crashes at exit, so a full disk would turn into a
// segfault instead of one clear error. The price is a transient copy of
// the checkpoint in host memory.
static void *build_image(saver *s, const char *config_text, const hy_param_table *params,
                         const hy_optimizer *opt, const hy_train_state *st, size_t *size) {
    hid_t fapl = strong_close_fapl();
    // The earliest file format on purpose: HDF5 1.10's H5Fget_file_image()
    // returns unreadable images of the newer superblocks (checksummed
    // metadata). The data itself carries Fletcher-32 checksums.
    if (H5Pset_fapl_core(fapl, (size_t)64 << 20, 0) < 0)
        SAVE_FAIL(s, "cannot select the core driver");
    hid_t f = s->failed ? -1 : H5Fcreate(s->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0) SAVE_FAIL(s, "cannot create an in-memory file");
    H5Pclose(fapl);
    save_root_attrs(s, f);
    save_string_dataset(s, f, "config", config_text);
    save_params(s, f, params);
    if (opt) save_optim(s, f, opt);
    if (st) save_train(s, f, st);
    // H5Fget_file_image() alone can miss metadata still in the cache.
    if (!s->failed && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) SAVE_FAIL(s, "cannot flush the file");
    void *image = NULL;
    ssize_t n = s->failed ? -1 : H5Fget_file_image(f, NULL, 0);
    if (n > 0) image = malloc((size_t)n);
    if (!s->failed && n > 0 && !image)
        SAVE_FAIL(s, "out of host memory for a %.1f MiB file image", n / 1048576.0);
    if (image && H5Fget_file_image(f, image, (size_t)n) != n)
        SAVE_FAIL(s, "cannot take the file image");
    if (!s->failed && n <= 0) SAVE_FAIL(s, "cannot size the file image");
    if (f >= 0 && H5Fclose(f) < 0) SAVE_FAIL(s, "cannot close the in-memory file");
    if (s->failed) {
        free(image);
        return NULL;
    }
    *size = (size_t)n;
    return image;
}

// write(2) all of buf; 0, or -1 with errno set.
static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

void hy_ckpt_save(const char *path, const char *config_text, const hy_param_table *params,
                  const hy_optimizer *opt, const hy_train_state *st) {
    HY_REQUIRE(params->device == HY_CPU,
               "%s: saving a checkpoint of a CUDA parameter table is not supported yet", path);
    HY_CHECK(params->values != NULL, "%s: the parameter table is not allocated", path);
    HY_CHECK(config_text != NULL, "%s: no config text to store", path);
    HY_CHECK(!opt || (opt->table->n == params->n && opt->table->numel == params->numel),
             "%s: the optimizer belongs to another parameter table", path);
    h5_quiet();
    saver s;
    memset(&s, 0, sizeof s);
    s.path = path;
    int fd = create_tmp(&s);
    size_t size = 0;
    void *image = build_image(&s, config_text, params, opt, st, &size);
    // The data must be on disk before the rename makes it the checkpoint.
    if (image && write_all(fd, (const char *)image, size) != 0)
        SAVE_FAIL(&s, "cannot write %s: %s", s.tmp, strerror(errno));
    if (!s.failed && fsync(fd) != 0) SAVE_FAIL(&s, "cannot sync %s: %s", s.tmp, strerror(errno));
    if (close(fd) != 0 && !s.failed) SAVE_FAIL(&s, "cannot close %s: %s", s.tmp, strerror(errno));
    free(image);
    if (s.failed) {
        unlink(s.tmp);
        hy_die_at(__FILE__, s.line, HY_EXIT_FAIL,
                  "%s: cannot save checkpoint: %s; nothing was replaced", path, s.why);
    }
    if (rename(s.tmp, path) != 0) {
        int e = errno;
        unlink(s.tmp);
        hy_die(HY_EXIT_USAGE, "%s: cannot save checkpoint: cannot rename %s over it: %s", path,
               s.tmp, strerror(e));
    }
    // Make the rename itself durable. Some file systems refuse fsync on a
    // directory (EINVAL); the checkpoint is complete either way.
    char dir[PATH_CAP];
    dir_of(path, dir, sizeof dir);
    fsync_path(dir);
}

// ================================================================ load
#define CK_DIE(f, ...) ck_die_at(__LINE__, (f), __VA_ARGS__)

// Close the file (and, through H5F_CLOSE_STRONG, everything open in it),
// then report: a checkpoint the user gave us that does not fit is exit 2.
static void ck_die_at(int line, hid_t f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
static void ck_die_at(int line, hid_t f, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (f >= 0) H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    hy_die_at(__FILE__, line, HY_EXIT_USAGE, "%s", msg);
}

// 1 when an attribute or link `name` exists in `loc`; a failed lookup
// counts as absent (the caller then says what is missing).
static int has_link(hid_t loc, const char *name) { return H5Lexists(loc, name, H5P_DEFAULT) > 0; }

static int read_int_attr(hid_t loc, const char *name, int *out) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t rc = H5Aread(a, H5T_NATIVE_INT, out);
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

// Open `path` read-only and check that it is a checkpoint of this format.
static hid_t open_checkpoint(const char *path) {
    h5_quiet();
    struct stat sb;
    if (stat(path, &sb) != 0)
        hy_die(HY_EXIT_USAGE, "%s: cannot open checkpoint: %s", path, strerror(errno));
    HY_REQUIRE(S_ISREG(sb.st_mode), "%s: cannot open checkpoint: not a regular file", path);
    HY_REQUIRE(access(path, R_OK) == 0, "%s: cannot open checkpoint: %s", path, strerror(errno));
    htri_t is_h5 = H5Fis_hdf5(path);
    if (is_h5 < 0) h5_keep();
    if (is_h5 == 0) {
        H5Eclear2(H5E_DEFAULT);
        hy_die(HY_EXIT_USAGE, "%s: not a checkpoint (not an HDF5 file)", path);
    }
    hid_t fapl = strong_close_fapl();
    hid_t f = is_h5 > 0 ? H5Fopen(path, H5F_ACC_RDONLY, fapl) : -1;
    if (f < 0) h5_keep();
    H5Pclose(fapl);
    if (f < 0)
        hy_die(HY_EXIT_USAGE,
               "%s: cannot open checkpoint: the file is truncated or corrupt (HDF5: %s)", path,
               h5_reason());
    int version = 0;
    if (read_int_attr(f, "format_version", &version) != 0)
        CK_DIE(f, "%s: not a HydraLM checkpoint (no format_version attribute)", path);
    if (version != HY_CKPT_FORMAT_VERSION)
        CK_DIE(f, "%s: checkpoint format version %d; this build reads version %d", path, version,
               HY_CKPT_FORMAT_VERSION);
    return f;
}

// The string in scalar dataset `name` (malloc'd), or NULL.
static char *read_string_dataset(hid_t f, const char *name) {
    if (!has_link(f, name)) return NULL;
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return NULL;
    char *out = NULL;
    hid_t ft = H5Dget_type(ds);
    hid_t sp = H5Dget_space(ds);
    int scalar = sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1;
    if (ft >= 0 && scalar && H5Tget_class(ft) == H5T_STRING) {
        if (H5Tis_variable_str(ft) > 0) {  // as some tools write strings
            hid_t mt = H5Tcopy(H5T_C_S1);
            char *v = NULL;
            if (mt >= 0 && H5Tset_size(mt, H5T_VARIABLE) >= 0 &&
                H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) >= 0 && v) {
                size_t n = strlen(v);
                out = (char *)hy_xmalloc(n + 1);
                memcpy(out, v, n + 1);
                H5free_memory(v);
            }
            if (mt >= 0) H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(ft);
            out = (char *)hy_xcalloc(n + 1, 1);
            if (H5Dread(ds, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
                free(out);
                out = NULL;
            }
        }
    }
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    H5Dclose(ds);
    return out;
}

char *hy_ckpt_read_config(const char *path) {
    hid_t f = open_checkpoint(path);
    char *text = read_string_dataset(f, "config");
    if (!text)
        CK_DIE(f, "%s: not a HydraLM checkpoint, or corrupt: no readable /config text (HDF5: %s)",
               path, h5_reason());
    H5Fclose(f);
    return text;
}

// ---------------------------------------------------------------- checks
// Every difference found is counted; the first is reported, with the count
// of the others, so one run of the loader says everything that is wrong.
typedef struct {
    const char *path;
    hid_t f;
    int problems;
    char first[768];
} checker;

static void problem(checker *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(checker *c, const char *fmt, ...) {
    if (c->problems++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->first, sizeof c->first, fmt, ap);
        va_end(ap);
    }
}

static const char *dtype_str(hid_t t, char *buf, size_t n) {
    size_t size = H5Tget_size(t);
    switch (H5Tget_class(t)) {
    case H5T_FLOAT: snprintf(buf, n, "float%zu", size * 8); break;
    case H5T_INTEGER:
        snprintf(buf, n, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", size * 8);
        break;
    case H5T_STRING: snprintf(buf, n, "a string"); break;
    default: snprintf(buf, n, "a non-numeric HDF5 type"); break;
    }
    return buf;
}

// Check that `loc`/`name` is an fp32 array of `shape`; `what` names it in
// messages ("parameter 'x'", "optimizer slot 'exp_avg' of 'x'").
static void check_f32(checker *c, hid_t loc, const char *name, int ndim, const int64_t *shape,
                      const char *what) {
    if (!has_link(loc, name)) {
        problem(c, "%s: %s is missing from the checkpoint", c->path, what);
        return;
    }
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) {
        problem(c, "%s: %s is not a readable dataset in the checkpoint (HDF5: %s)", c->path, what,
                h5_reason());
        return;
    }
    hid_t ty = H5Dget_type(ds), sp = H5Dget_space(ds);
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[HY_MAX_DIMS + 4];
    int64_t have[HY_MAX_DIMS + 4];
    char a[128], b[128];
    if (ty < 0 || rank < 0 || rank > HY_MAX_DIMS + 4) {
        problem(c, "%s: %s is unreadable in the checkpoint (HDF5: %s)", c->path, what, h5_reason());
    } else if (H5Tget_class(ty) != H5T_FLOAT || H5Tget_size(ty) != 4) {
        problem(c, "%s: %s is %s in the checkpoint, expected float32", c->path, what,
                dtype_str(ty, a, sizeof a));
    } else {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        int same = rank == ndim;
        for (int d = 0; d < rank; d++) {
            have[d] = (int64_t)dims[d];
            if (same && have[d] != shape[d]) same = 0;
        }
        if (!same)
            problem(c, "%s: %s has shape %s here but %s in the checkpoint", c->path, what,
                    shape_str(ndim, shape, a, sizeof a), shape_str(rank, have, b, sizeof b));
    }
    if (sp >= 0) H5Sclose(sp);
    if (ty >= 0) H5Tclose(ty);
    H5Dclose(ds);
}

// Names in a group that the caller does not expect.
typedef struct {
    checker *c;
    const char *where;  // "parameter", "optimizer state for parameter", ...
    int (*known)(const char *name, const void *ctx);
    const void *ctx;
} extras_walk;

static herr_t visit_extra(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g, (void)info;
    extras_walk *w = (extras_walk *)data;
    if (!w->known(name, w->ctx))
        problem(w->c, "%s: the checkpoint has %s '%s', which this model does not have", w->c->path,
                w->where, name);
    return 0;
}

static void check_extras(checker *c, hid_t g, const char *where,
                         int (*known)(const char *, const void *), const void *ctx) {
    extras_walk w = {c, where, known, ctx};
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, visit_extra, &w) < 0)
        problem(c, "%s: cannot list a group of the checkpoint (HDF5: %s)", c->path, h5_reason());
}

static int is_param(const char *name, const void *ctx) {
    return hy_params_find((const hy_param_table *)ctx, name) >= 0;
}

typedef struct {
    const char **names;
    int n;
} slot_list;

static int is_slot(const char *name, const void *ctx) {
    const slot_list *l = (const slot_list *)ctx;
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->names[i], name)) return 1;
    return 0;
}

// An attribute of `n` elements (0: scalar) of class `cls`, or a problem.
static void check_attr(checker *c, hid_t loc, const char *group, const char *name, H5T_class_t cls,
                       int n) {
    if (H5Aexists(loc, name) <= 0) {
        problem(c, "%s: attribute '%s' of /%s is missing from the checkpoint", c->path, name,
                group);
        return;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t ty = a >= 0 ? H5Aget_type(a) : -1, sp = a >= 0 ? H5Aget_space(a) : -1;
    hssize_t pts = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (ty < 0 || H5Tget_class(ty) != cls || pts != (n ? n : 1))
        problem(c, "%s: attribute '%s' of /%s has the wrong type or size in the checkpoint",
                c->path, name, group);
    if (sp >= 0) H5Sclose(sp);
    if (ty >= 0) H5Tclose(ty);
    if (a >= 0) H5Aclose(a);
}

static void check_params(checker *c, const hy_param_table *t) {
    if (!has_link(c->f, "params")) {
        problem(c, "%s: not a HydraLM checkpoint, or corrupt: no /params group", c->path);
        return;
    }
    hid_t g = H5Gopen2(c->f, "params", H5P_DEFAULT);
    if (g < 0) {
        problem(c, "%s: /params is unreadable (HDF5: %s)", c->path, h5_reason());
        return;
    }
    char what[HY_NAME_LEN + 32];
    for (int i = 0; i < t->n; i++) {
        snprintf(what, sizeof what, "parameter '%s'", t->p[i].name);
        check_f32(c, g, t->p[i].name, t->p[i].ndim, t->p[i].shape, what);
    }
    check_extras(c, g, "parameter", is_param, t);
    H5Gclose(g);
}

static char *read_string_attr(hid_t loc, const char *name);

static void check_optim(checker *c, const hy_optimizer *o) {
    if (!has_link(c->f, "optim")) {
        problem(c, "%s: the checkpoint has no optimizer state (/optim)", c->path);
        return;
    }
    hid_t g = H5Gopen2(c->f, "optim", H5P_DEFAULT);
    if (g < 0) {
        problem(c, "%s: /optim is unreadable (HDF5: %s)", c->path, h5_reason());
        return;
    }
    check_attr(c, g, "optim", "step", H5T_INTEGER, 0);
    char *kind = read_string_attr(g, "kind");
    const char *want = optim_kind_name(o->cfg.kind);
    if (!kind)
        problem(c, "%s: attribute 'kind' of /optim is missing from the checkpoint", c->path);
    else if (strcmp(kind, want))
        problem(c, "%s: the checkpoint's optimizer is '%s' but this run's is '%s' (optim.kind)",
                c->path, kind, want);
    free(kind);
    const hy_param_table *t = o->table;
    char what[HY_NAME_LEN + 64];
    for (int i = 0; i < t->n; i++) {
        const hy_param *p = &t->p[i];
        const char *names[HY_OPTIM_MAX_SLOTS];
        float *data[HY_OPTIM_MAX_SLOTS];
        int n = hy_optim_slots(o, i, names, data);
        if (!has_link(g, p->name)) {
            problem(c, "%s: optimizer state of parameter '%s' is missing from the checkpoint",
                    c->path, p->name);
            continue;
        }
        hid_t pg = H5Gopen2(g, p->name, H5P_DEFAULT);
        if (pg < 0) {
            problem(c, "%s: /optim/%s is unreadable (HDF5: %s)", c->path, p->name, h5_reason());
            continue;
        }
        for (int k = 0; k < n; k++) {
            snprintf(what, sizeof what, "optimizer slot '%s' of parameter '%s'", names[k], p->name);
            check_f32(c, pg, names[k], p->ndim, p->shape, what);
        }
        slot_list l = {names, n};
        snprintf(what, sizeof what, "optimizer slot for parameter '%s' named", p->name);
        check_extras(c, pg, what, is_slot, &l);
        H5Gclose(pg);
    }
    check_extras(c, g, "optimizer state for parameter", is_param, t);
    H5Gclose(g);
}

static void check_train(checker *c) {
    if (!has_link(c->f, "train")) {
        problem(c, "%s: the checkpoint has no training state (/train)", c->path);
        return;
    }
    hid_t g = H5Gopen2(c->f, "train", H5P_DEFAULT);
    if (g < 0) {
        problem(c, "%s: /train is unreadable (HDF5: %s)", c->path, h5_reason());
        return;
    }
    check_attr(c, g, "train", "step", H5T_INTEGER, 0);
    check_attr(c, g, "train", "tokens", H5T_INTEGER, 0);
    check_attr(c, g, "train", "rng", H5T_INTEGER, 4);
    check_attr(c, g, "train", "loss", H5T_FLOAT, 0);
    check_attr(c, g, "train", "val_loss", H5T_FLOAT, 0);
    H5Gclose(g);
}

// ---------------------------------------------------------------- reads
static char *read_string_attr(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t ty = H5Aget_type(a);
    char *out = NULL;
    if (ty >= 0 && H5Tget_class(ty) == H5T_STRING && H5Tis_variable_str(ty) == 0) {
        size_t n = H5Tget_size(ty);
        out = (char *)hy_xcalloc(n + 1, 1);
        if (H5Aread(a, ty, out) < 0) {
            free(out);
            out = NULL;
        }
    }
    if (ty >= 0) H5Tclose(ty);
    H5Aclose(a);
    return out;
}

static int read_attr(hid_t loc, const char *name, hid_t mem_type, void *out) {
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t rc = H5Aread(a, mem_type, out);
    if (rc < 0) h5_keep();
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

// One array to restore: read from `obj` into the staging buffer at `at`,
// copied to `dst` once everything has been read.
typedef struct {
    char obj[OBJ_CAP];
    float *dst;
    size_t n, at;
} ck_item;

static int read_f32(hid_t f, const char *obj, float *out) {
    hid_t ds = H5Dopen2(f, obj, H5P_DEFAULT);
    if (ds < 0) return -1;
    herr_t rc = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    if (rc < 0) h5_keep();
    H5Dclose(ds);
    return rc < 0 ? -1 : 0;
}

// The arrays to restore, in file order of the checks; returns the count.
static int plan_items(const hy_param_table *t, const hy_optimizer *o, ck_item **items,
                      size_t *total) {
    int cap = t->n * (1 + (o ? HY_OPTIM_MAX_SLOTS : 0)), n = 0;
    ck_item *it = (ck_item *)hy_xcalloc((size_t)(cap ? cap : 1), sizeof *it);
    size_t at = 0;
    for (int i = 0; i < t->n; i++) {
        const hy_param *p = &t->p[i];
        size_t numel = numel_of(p->ndim, p->shape);
        snprintf(it[n].obj, OBJ_CAP, "/params/%s", p->name);
        it[n].dst = t->values + p->offset, it[n].n = numel, it[n].at = at;
        at += numel, n++;
        if (!o) continue;
        const char *names[HY_OPTIM_MAX_SLOTS];
        float *data[HY_OPTIM_MAX_SLOTS];
        int k = hy_optim_slots(o, i, names, data);
        for (int j = 0; j < k; j++) {
            snprintf(it[n].obj, OBJ_CAP, "/optim/%s/%s", p->name, names[j]);
            it[n].dst = data[j], it[n].n = numel, it[n].at = at;
            at += numel, n++;
        }
    }
    *items = it;
    *total = at;
    return n;
}

void hy_ckpt_load(const char *path, hy_param_table *params, hy_optimizer *opt, hy_train_state *st) {
    HY_REQUIRE(params->device == HY_CPU,
               "%s: loading a checkpoint into a CUDA parameter table is not supported yet", path);
    HY_CHECK(params->values != NULL, "%s: allocate the parameter table before loading", path);
    HY_CHECK(!opt || opt->table == params, "%s: the optimizer belongs to another parameter table",
             path);
    hid_t f = open_checkpoint(path);

    // 1. Check everything; change nothing.
    checker c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.f = f;
    check_params(&c, params);
    if (opt) check_optim(&c, opt);
    if (st) check_train(&c);
    if (c.problems > 1)
        CK_DIE(f, "%s (and %d more difference%s)", c.first, c.problems - 1,
               c.problems > 2 ? "s" : "");
    if (c.problems) CK_DIE(f, "%s", c.first);

    // 2. Read everything into staging: a file that fails part-way (corrupt
    // data) must not leave a half-restored model.
    ck_item *items;
    size_t total;
    int n = plan_items(params, opt, &items, &total);
    float *stage = (float *)hy_xmalloc(total * sizeof(float));
    int64_t ostep = 0;
    hy_train_state ts;
    memset(&ts, 0, sizeof ts);
    const char *bad = NULL;
    for (int i = 0; i < n && !bad; i++)
        if (read_f32(f, items[i].obj, stage + items[i].at) != 0) bad = items[i].obj;
    if (!bad && opt) {
        hid_t g = H5Gopen2(f, "optim", H5P_DEFAULT);
        if (g < 0 || read_attr(g, "step", H5T_NATIVE_INT64, &ostep) != 0) bad = "/optim step";
        if (g >= 0) H5Gclose(g);
    }
    if (!bad && st) {
        hid_t g = H5Gopen2(f, "train", H5P_DEFAULT);
        if (g < 0 || read_attr(g, "step", H5T_NATIVE_INT64, &ts.step) != 0 ||
            read_attr(g, "tokens", H5T_NATIVE_INT64, &ts.tokens) != 0 ||
            read_attr(g, "rng", H5T_NATIVE_UINT64, ts.rng.s) != 0 ||
            read_attr(g, "loss", H5T_NATIVE_FLOAT, &ts.loss) != 0 ||
            read_attr(g, "val_loss", H5T_NATIVE_FLOAT, &ts.val_loss) != 0)
            bad = "/train";
        if (g >= 0) H5Gclose(g);
    }
    if (bad) {
        char what[OBJ_CAP];
        snprintf(what, sizeof what, "%s", bad);  // it may point into items
        free(stage);
        free(items);
        CK_DIE(f, "%s: cannot read %s: the checkpoint is corrupt (HDF5: %s)", path, what,
               h5_reason());
    }

    // 3. Everything read: commit.
    for (int i = 0; i < n; i++)
        memcpy(items[i].dst, stage + items[i].at, items[i].n * sizeof(float));
    if (opt) opt->step = ostep;
    if (st) *st = ts;
    free(stage);
    free(items);
    H5Fclose(f);
}

// ================================================================ run directory
int64_t hy_ckpt_step_of(const char *name) {
    if (strncmp(name, "ckpt-", 5) != 0 || !isdigit((unsigned char)name[5])) return -1;
    const char *p = name + 5;
    int64_t step = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (step > (INT64_MAX - 9) / 10) return -1;
        step = step * 10 + (*p - '0');
    }
    return strcmp(p, ".h5") == 0 ? step : -1;
}

typedef struct {
    int64_t step;
    char name[256];
} ckpt_entry;

static int newest_first(const void *a, const void *b) {
    int64_t x = ((const ckpt_entry *)a)->step, y = ((const ckpt_entry *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

// The ckpt-<step>.h5 files of `dir`, newest first (malloc'd); -1 when the
// directory cannot be opened (errno set).
static int list_checkpoints(const char *dir, ckpt_entry **out) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0, cap = 16;
    ckpt_entry *e = (ckpt_entry *)hy_xmalloc((size_t)cap * sizeof *e);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t step = hy_ckpt_step_of(de->d_name);
        if (step < 0 || strlen(de->d_name) >= sizeof e->name) continue;
        if (n == cap) {
            cap *= 2;
            ckpt_entry *grown = (ckpt_entry *)realloc(e, (size_t)cap * sizeof *e);
            HY_CHECK(grown != NULL, "out of host memory listing %s", dir);
            e = grown;
        }
        e[n].step = step;
        snprintf(e[n].name, sizeof e[n].name, "%s", de->d_name);
        n++;
    }
    closedir(d);
    qsort(e, (size_t)n, sizeof *e, newest_first);
    *out = e;
    return n;
}

// The file name DIR/latest holds into name (n bytes): 1, or 0 when there
// is no such file.
static int read_latest_name(const char *dir, char *name, size_t n) {
    char lp[PATH_CAP];
    snprintf(lp, sizeof lp, "%s/latest", dir);
    FILE *f = fopen(lp, "r");
    if (!f) {
        if (errno == ENOENT || errno == ENOTDIR) return 0;
        hy_die(HY_EXIT_USAGE, "%s: cannot read: %s", lp, strerror(errno));
    }
    char line[512] = "";
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t len = strlen(line);
    while (len && isspace((unsigned char)line[len - 1])) line[--len] = 0;
    HY_REQUIRE(ok && len > 0 && !strchr(line, '/') && len < n,
               "%s: does not hold a checkpoint file name (expected e.g. ckpt-100.h5)", lp);
    memcpy(name, line, len + 1);
    return 1;
}

void hy_ckpt_prune(const char *dir, int keep) {
    HY_REQUIRE(keep >= 1, "checkpoint pruning: keep must be at least 1 (got %d)", keep);
    ckpt_entry *e;
    int n = list_checkpoints(dir, &e);
    if (n < 0) hy_die(HY_EXIT_USAGE, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    // Never remove the file `latest` points to, even if a run resumed from
    // an older checkpoint left newer step numbers behind.
    char latest[256] = "";
    read_latest_name(dir, latest, sizeof latest);
    for (int i = keep; i < n; i++) {
        if (!strcmp(e[i].name, latest)) continue;
        char p[PATH_CAP];
        snprintf(p, sizeof p, "%s/%s", dir, e[i].name);
        // A file that cannot be removed costs disk space, not correctness.
        if (unlink(p) != 0 && errno != ENOENT)
            fprintf(stderr, "hydra: warning: cannot remove old checkpoint %s: %s\n", p,
                    strerror(errno));
    }
    free(e);
}

void hy_ckpt_write_latest(const char *dir, const char *file_name) {
    HY_REQUIRE(file_name[0] && !strchr(file_name, '/') && !strchr(file_name, '\n'),
               "latest pointer: '%s' is not a file name inside %s", file_name, dir);
    char lp[PATH_CAP], tmp[PATH_CAP];
    snprintf(lp, sizeof lp, "%s/latest", dir);
    snprintf(tmp, sizeof tmp, "%s/latest.tmp.%ld", dir, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) hy_die(HY_EXIT_USAGE, "%s: cannot write: %s", tmp, strerror(errno));
    int ok = fprintf(f, "%s\n", file_name) > 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(tmp, lp) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        hy_die(HY_EXIT_USAGE, "%s: cannot write: %s (the previous pointer is unchanged)", lp,
               strerror(e));
    }
    fsync_path(dir);  // best effort, as in hy_ckpt_save
}

int hy_ckpt_latest(const char *dir, char *path, size_t n) {
    char name[256];
    int have = read_latest_name(dir, name, sizeof name);
    if (have) {
        int len = snprintf(path, n, "%s/%s", dir, name);
        HY_REQUIRE(len > 0 && (size_t)len < n, "%s/latest: path too long", dir);
        HY_REQUIRE(access(path, R_OK) == 0, "%s/latest names %s, which cannot be read: %s", dir,
                   name, strerror(errno));
        return 1;
    }
    ckpt_entry *e;
    int k = list_checkpoints(dir, &e);
    if (k < 0) {
        if (errno == ENOENT || errno == ENOTDIR) return 0;
        hy_die(HY_EXIT_USAGE, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    }
    if (k > 0) {
        int len = snprintf(path, n, "%s/%s", dir, e[0].name);
        HY_REQUIRE(len > 0 && (size_t)len < n, "%s/%s: path too long", dir, e[0].name);
    }
    free(e);
    return k > 0;
}
