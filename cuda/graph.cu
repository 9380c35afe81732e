// graph.cu: CUDA graphs: recording this thread's launches, and instantiating a recording with
// its small memsets as kernels.
//
// A recorded cudaMemsetAsync becomes a memset node. On an H200 a graph spends ~4.6 us on a
// small memset node (1.4 us from the kernel before to it, 0.7 us its own, 2.5 us from it to
// the kernel after), where kernel nodes follow one another with no measurable gap (CUPTI
// kernel trace of a training step of configs/hydra-115m.ini recorded by train.cuda_graph).
// cuBLAS zeroes a 4-byte word before most of its GEMMs: 164 such nodes a training step. So
// before instantiation every memset node of at most kSmallMemset bytes whose edges are plain
// ones becomes a kernel node writing the same bytes, with the same dependencies.
// HYDRA_GRAPH_MEMSETS=1 in the environment keeps them as they were (for comparison).
#include <stdlib.h>
#include <string.h>

#include "check.cuh"
#include "graph.cuh"
#include "hy_cuda.h"

namespace {

constexpr size_t kSmallMemset = 64 << 10;
constexpr int kFillThreads = 256;

// cudaMemsetParams as a kernel: width elements of esize bytes (1, 2 or 4) in each of height
// rows pitch bytes apart, set to value (its low esize bytes).
__global__ void graph_memset_kernel(unsigned char *dst, size_t pitch, unsigned value,
                                    unsigned esize, size_t width, size_t height) {
    const size_t n = width * height;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / width, c = i - r * width;
        unsigned char *p = dst + r * pitch + c * esize;
        if (esize == 4)
            *(unsigned *)p = value;
        else if (esize == 2)
            *(unsigned short *)p = (unsigned short)value;
        else
            *p = (unsigned char)value;
    }
}

#if CUDART_VERSION >= 13000
// Whether every edge in ed (n of them; NULL: none carry data) is a plain dependency.
bool plain_edges(const cudaGraphEdgeData *ed, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ed[i].type != cudaGraphDependencyTypeDefault || ed[i].from_port || ed[i].to_port)
            return false;
    return true;
}

// Node `node`'s incoming (in = true) or outgoing edges: their other ends into *nodes (malloc'd,
// the caller frees) and their count; false when one of them carries data.
bool plain_neighbours(cudaGraphNode_t node, bool in, cudaGraphNode_t **nodes, size_t *n) {
    *n = 0;
    if (in)
        CUDA_CHECK(cudaGraphNodeGetDependencies(node, NULL, NULL, n));
    else
        CUDA_CHECK(cudaGraphNodeGetDependentNodes(node, NULL, NULL, n));
    *nodes = (cudaGraphNode_t *)malloc((*n ? *n : 1) * sizeof **nodes);
    cudaGraphEdgeData *ed = (cudaGraphEdgeData *)malloc((*n ? *n : 1) * sizeof *ed);
    HY_CHECK(*nodes && ed, "graph: out of host memory");
    if (*n == 0)  // the graph's first node or its last: no arrays to fill (they are refused)
        ;
    else if (in)
        CUDA_CHECK(cudaGraphNodeGetDependencies(node, *nodes, ed, n));
    else
        CUDA_CHECK(cudaGraphNodeGetDependentNodes(node, *nodes, ed, n));
    bool ok = plain_edges(ed, *n);
    free(ed);
    return ok;
}

// Memset node `node` as a kernel node with the same edges; false (nothing changed) when it
// is large or has an edge that carries data.
bool memset_as_kernel(cudaGraph_t g, cudaGraphNode_t node) {
    cudaMemsetParams mp;
    CUDA_CHECK(cudaGraphMemsetNodeGetParams(node, &mp));
    const size_t n = mp.width * mp.height;
    if (n * mp.elementSize > kSmallMemset || n == 0) return false;
    cudaGraphNode_t *deps = NULL, *outs = NULL;
    size_t nd = 0, no = 0;
    bool ok = plain_neighbours(node, true, &deps, &nd) && plain_neighbours(node, false, &outs, &no);
    if (ok) {
        void *dst = mp.dst;
        size_t pitch = mp.pitch, width = mp.width, height = mp.height;
        unsigned value = mp.value, esize = mp.elementSize;
        void *args[] = {&dst, &pitch, &value, &esize, &width, &height};
        cudaKernelNodeParams kp;
        memset(&kp, 0, sizeof kp);
        kp.func = (void *)graph_memset_kernel;
        const size_t blocks = (n + kFillThreads - 1) / kFillThreads;
        kp.gridDim = dim3((unsigned)(blocks < 256 ? blocks : 256));
        kp.blockDim = dim3(kFillThreads);
        kp.kernelParams = args;
        cudaGraphNode_t k;
        CUDA_CHECK(cudaGraphAddKernelNode(&k, g, deps, nd, &kp));
        for (size_t i = 0; i < no; i++)
            CUDA_CHECK(cudaGraphAddDependencies(g, &k, &outs[i], NULL, 1));
        CUDA_CHECK(cudaGraphDestroyNode(node));  // and its edges
    }
    free(deps);
    free(outs);
    return ok;
}

void small_memsets_as_kernels(cudaGraph_t g) {
    const char *keep = getenv("HYDRA_GRAPH_MEMSETS");
    if (keep && keep[0] == '1') return;
    size_t n = 0;
    CUDA_CHECK(cudaGraphGetNodes(g, NULL, &n));
    if (n == 0) return;
    cudaGraphNode_t *nodes = (cudaGraphNode_t *)malloc(n * sizeof *nodes);
    HY_CHECK(nodes, "graph: out of host memory");
    CUDA_CHECK(cudaGraphGetNodes(g, nodes, &n));
    for (size_t i = 0; i < n; i++) {
        cudaGraphNodeType type;
        CUDA_CHECK(cudaGraphNodeGetType(nodes[i], &type));
        if (type == cudaGraphNodeTypeMemset) memset_as_kernel(g, nodes[i]);
    }
    free(nodes);
}
#else
void small_memsets_as_kernels(cudaGraph_t) {}  // CUDA 12: the edge queries differ; kept as is
#endif

}  // namespace

cudaGraphExec_t hy_graph_instantiate(cudaGraph_t g) {
    small_memsets_as_kernels(g);
    cudaGraphExec_t exec = NULL;
    CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
    return exec;
}

// The library is compiled with --default-stream per-thread, so the NULL
// stream every entry point uses by default is this thread's default stream,
// which (unlike the legacy stream) can be captured.
extern "C" void hy_cuda_capture_begin(void) {
    CUDA_CHECK(cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeThreadLocal));
}

extern "C" void *hy_cuda_capture_end(void) {
    cudaGraph_t graph = NULL;
    CUDA_CHECK(cudaStreamEndCapture(cudaStreamPerThread, &graph));
    cudaGraphExec_t exec = hy_graph_instantiate(graph);
    CUDA_CHECK(cudaGraphDestroy(graph));
    return (void *)exec;
}

extern "C" void hy_cuda_graph_launch(void *exec) {
    CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)exec, cudaStreamPerThread));
}

extern "C" void hy_cuda_graph_destroy(void *exec) {
    if (exec) CUDA_CHECK(cudaGraphExecDestroy((cudaGraphExec_t)exec));
}
