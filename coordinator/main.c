/* hcl-train: entry point of every rank. Rank 0 is the coordinator; with one rank (an MPI
 * singleton, no mpirun) it also does the worker's job. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "train.h"

static int log_level_parse(const char *s) {
    if (strcmp(s, "debug") == 0) return HCL_LOG_DEBUG;
    if (strcmp(s, "warn") == 0) return HCL_LOG_WARN;
    if (strcmp(s, "error") == 0) return HCL_LOG_ERROR;
    return HCL_LOG_INFO;
}

int main(int argc, char **argv) {
    hcl_config cfg;
    char err[HCL_ERR_MAX];
    config_defaults(&cfg);
    int rc = config_parse_args(&cfg, argc, argv, stdout, err);
    if (rc == 1) return 0;
    if (rc != 0) {
        fprintf(stderr, "hcl-train: %s\n", err);
        return 2;
    }
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    log_init(rank == 0 ? "coord" : "worker", rank, log_level_parse(cfg.log_level));
    int code;
    if (size == 1) {
        hcl_run run;
        if (run_prepare(&run, &cfg, err) != 0) {
            fprintf(stderr, "hcl-train: %s\n", err);
            code = 2;
        } else {
            code = run_train_single(&run);
        }
        run_free(&run);
    } else {
        fprintf(stderr, "hcl-train: more than one rank needs the distributed mode\n");
        code = 2;
    }
    MPI_Finalize();
    return code;
}
