// step_graph.c: a micro-batch's forward and backward recorded once and replayed (see
// step_graph.h).
#include "step_graph.h"

#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "batch.h"

void hy_step_graph_init(hy_step_graph *g, int on) {
    memset(g, 0, sizeof *g);
    g->on = on;
}

void hy_step_graph_free(hy_step_graph *g) {
    if (g->exec) hy_cuda_graph_destroy(g->exec);
    memset(g, 0, sizeof *g);
}

// Forward and backward as the ops come (run, or recorded while capturing).
static hy_tensor *fwd_bwd(hy_model *m, hy_tape *t, hy_tensor *ids, hy_tensor *targets) {
    hy_tensor *loss;
    hy_model_forward(m, t, ids, targets, HY_IGNORE_INDEX, &loss);
    hy_tape_backward(t, loss);
    return loss;
}

static float read_loss(const float *dev) {
    float x;
    hy_cuda_memcpy_d2h(&x, dev, sizeof x);  // waits for the step
    return x;
}

float hy_step_graph_run(hy_step_graph *g, hy_model *m, hy_tape *t, hy_tensor *ids,
                        hy_tensor *targets) {
    g->calls++;
    if (!g->on || g->calls == 1) {  // directly (the first call: see step_graph.h)
        hy_tensor *loss = fwd_bwd(m, t, ids, targets);
        float x;
        hy_tensor_to_host_f32(loss, &x);
        return x;
    }
    HY_REQUIRE(hy_model_device(m) == HY_CUDA && ids->device == HY_CUDA &&
                   targets->device == HY_CUDA,
               "train.cuda_graph: the model and the batch must be on the GPU");
    if (!g->exec) {
        hy_cuda_capture_begin();
        hy_tensor *loss = fwd_bwd(m, t, ids, targets);
        g->exec = hy_cuda_capture_end();
        g->ids = ids->data, g->targets = targets->data, g->n = hy_numel(ids);
        g->loss = hy_f32(loss);
    }
    HY_REQUIRE(ids->data == g->ids && targets->data == g->targets && hy_numel(ids) == g->n &&
                   hy_numel(targets) == g->n,
               "train.cuda_graph: the batch ('%s' %s, '%s' %s) is not where or what the recorded "
               "step read (%lld tokens); the recording replays one batch shape at fixed addresses",
               ids->name, hy_shape_str(ids), targets->name, hy_shape_str(targets),
               (long long)g->n);
    hy_cuda_graph_launch(g->exec);
    return read_loss(g->loss);
}
