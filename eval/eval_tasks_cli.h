// eval_tasks_cli.h: `hydra-eval --checkpoint CKPT --task TASK`, evaluating a
// model trained by hydra-train (see eval_cli.h for the options).
#ifndef HY_EVAL_TASKS_CLI_H
#define HY_EVAL_TASKS_CLI_H

#include <stdint.h>

typedef struct {
    const char *checkpoint, *task, *data;
    const char *device;                    // auto | cpu | cuda
    int seq_len, pairs, sequences, chunk;  // 0: the task's default
    long tokens;                           // 0: the task's default
    uint64_t seed;
} hy_task_args;

// Prints the task's measurements on stdout; returns 0. Bad usage (unknown
// task, a task the model cannot do) exits with status 2.
int hy_eval_task_main(const hy_task_args *a);

#endif
