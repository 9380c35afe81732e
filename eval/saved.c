// saved.c: claim results kept between invocations (see saved.h).
#include "saved.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../autograd/build_info.h"
#include "../autograd/check.h"

#define SAVED_MAGIC "hydra-claim-result 1"

// The header: what must match for a result to be reused.
static void header(const hy_eval_opts *o, char *buf, size_t n) {
    snprintf(buf, n,
             SAVED_MAGIC "\ncommit %s\nbudget %s\nseed %llu\ndevice %s\ntext %s\nbytes %zu\n",
             hy_build_commit(), o->budget == HY_BUDGET_SMOKE ? "smoke" : "full",
             (unsigned long long)o->seed, o->device, o->text_path[0] ? o->text_path : "-",
             sizeof(hy_claim_result));
}

static void path_of(const hy_eval_opts *o, const char *id, char *buf, size_t n) {
    snprintf(buf, n, "%s/claims/%s.res", o->work_dir, id);
}

void hy_claim_save(const hy_eval_opts *o, const hy_claim_result *r) {
    char dir[1100], path[1200], tmp[1300], head[2048];
    snprintf(dir, sizeof dir, "%s/claims", o->work_dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        hy_die(HY_EXIT_FAIL, "%s: cannot create: %s", dir, strerror(errno));
    path_of(o, r->id, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    header(o, head, sizeof head);
    hy_claim_result copy = *r;
    copy.id = copy.title = NULL;  // pointers into this binary: restored from the registry
    FILE *f = fopen(tmp, "wb");
    HY_CHECK(f, "%s: cannot write: %s", tmp, strerror(errno));
    int ok = fputs(head, f) >= 0 && fputs("data\n", f) >= 0 && fwrite(&copy, sizeof copy, 1, f) == 1;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        hy_die(HY_EXIT_FAIL, "%s: cannot write: %s", path, strerror(errno));
    }
}

// The value of header line `key` in text, into out; 0 when missing.
static int field(const char *text, const char *key, char *out, size_t n) {
    size_t k = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, key, k) && p[k] == ' ') {
            size_t len = strcspn(p + k + 1, "\n");
            snprintf(out, n, "%.*s", (int)len, p + k + 1);
            return 1;
        }
    }
    return 0;
}

int hy_claim_load(const hy_eval_opts *o, const hy_claim *c, hy_claim_result *r, char *why,
                  size_t n) {
    char path[1200], want[2048], got[2048];
    path_of(o, c->id, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, n, "not measured yet");
        return 0;
    }
    // The header is the lines up to "data".
    size_t len = 0;
    char line[1100];
    got[0] = 0;
    int data = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strcmp(line, "data\n")) {
            data = 1;
            break;
        }
        size_t l = strlen(line);
        if (len + l >= sizeof got) break;
        memcpy(got + len, line, l + 1);
        len += l;
    }
    if (!data || strncmp(got, SAVED_MAGIC "\n", strlen(SAVED_MAGIC) + 1) != 0) {
        fclose(f);
        hy_die(HY_EXIT_USAGE, "%s: not a saved claim result (expected a '%s' header and data); "
               "remove it to measure %s again", path, SAVED_MAGIC, c->id);
    }
    header(o, want, sizeof want);
    const char *keys[] = {"commit", "budget", "seed", "device", "text", "bytes"};
    for (int i = 0; i < 6; i++) {
        char a[1100] = "", b[1100] = "";
        field(want, keys[i], a, sizeof a);
        field(got, keys[i], b, sizeof b);
        if (strcmp(a, b)) {
            snprintf(why, n, "saved with %s %s, this run has %s", keys[i], b[0] ? b : "(none)", a);
            fclose(f);
            return 0;
        }
    }
    if (strstr(hy_build_commit(), "+dirty") || !strcmp(hy_build_commit(), "unknown")) {
        snprintf(why, n, "this build (commit %s) is not exactly a commit: saved results are not "
                 "reused", hy_build_commit());
        fclose(f);
        return 0;
    }
    hy_claim_result tmp;
    int ok = fread(&tmp, sizeof tmp, 1, f) == 1;
    fclose(f);
    if (!ok)
        hy_die(HY_EXIT_USAGE, "%s: the saved result of %s is truncated; remove it to measure "
               "again", path, c->id);
    *r = tmp;
    r->id = c->id;
    r->title = c->title;
    r->reused = 1;
    return 1;
}
