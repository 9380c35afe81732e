// graph.cuh: turning a recorded CUDA graph into one that runs (cuda/graph.cu).
#ifndef HY_GRAPH_CUH
#define HY_GRAPH_CUH

#include <cuda_runtime.h>

// The runnable graph of recording g (g is left to the caller): its small memset nodes
// replaced by kernel nodes first (see graph.cu).
cudaGraphExec_t hy_graph_instantiate(cudaGraph_t g);

#endif
