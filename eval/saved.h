// saved.h: a claim's result kept in the work directory, so that a report
// too long for one sitting is measured in several invocations
// (`--work DIR --only A,B`, then `--work DIR --resume`) and assembled from
// real measurements of one build.
//
// DIR/claims/<id>.res holds a text header (format, commit, budget, seed,
// device, text corpus, the result's size) and the result itself, written
// atomically. A saved result is reused only by a build of the same commit
// without uncommitted changes, with the same budget, seed, device and text;
// anything else is measured again.
#ifndef HY_EVAL_SAVED_H
#define HY_EVAL_SAVED_H

#include <stddef.h>

#include "claims.h"

// Writes r (a finished claim) under o->work_dir.
void hy_claim_save(const hy_eval_opts *o, const hy_claim_result *r);
// Loads claim c's saved result into r and returns 1; or returns 0 with the
// reason in `why` (not saved yet, another commit, ...). A file that is not a
// saved result (damaged, another format) is a usage error naming it.
int hy_claim_load(const hy_eval_opts *o, const hy_claim *c, hy_claim_result *r, char *why,
                  size_t n);

#endif
