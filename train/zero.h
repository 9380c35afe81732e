// zero.h: which rank owns which parameter when the optimizer state is
// sharded across data-parallel ranks (ZeRO-1).
//
// A parameter is owned whole by one rank: that rank receives its averaged
// gradient, keeps its optimizer state (AdamW's m and v, or Muon's momentum)
// and updates it; the others receive the updated values. Owning whole
// tensors (as PyTorch's ZeroRedundancyOptimizer does) keeps every Muon
// matrix on one rank, which Newton-Schulz needs, and keeps the checkpoint
// layout independent of the number of ranks.
#ifndef HY_TRAIN_ZERO_H
#define HY_TRAIN_ZERO_H

#include "../autograd/params.h"

// owner[i] (room for t->n) for each parameter of the table: first the Muon
// matrices (muon[i] != 0), largest first, each to the rank with the fewest
// Muon elements so far (lowest rank on a tie), which balances the
// Newton-Schulz work; then the AdamW parameters, largest first, each to the
// rank with the least optimizer state so far (a Muon element holds one
// float of state, an AdamW element two), which balances the memory.
// Deterministic: every rank computes the same table. The greedy rule keeps
// the most loaded rank within one parameter of the least: Muon elements
// within the largest matrix, state within the larger of the largest matrix
// and twice the largest AdamW parameter.
void hy_zero_owners(const hy_param_table *t, const int *muon, int world, int *owner);

#endif
