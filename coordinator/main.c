/* hcl-train: entry point of every rank. Rank 0 is the coordinator (data, batches, metrics);
 * ranks 1..N-1 are the workers. With one rank (an MPI singleton, no mpirun) the process does
 * both jobs. */
#include <errno.h>
#include <malloc.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "kernels.h"
#include "log.h"
#include "memlimit.h"
#include "prepare.h"
#include "step.h"
#include "train.h"
#include "worker.h"

/* 1 when every rank runs on the calling rank's host (collective: every rank calls it). */
static int world_on_one_host(void) {
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int here, size;
    MPI_Comm_size(node, &here);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_free(&node);
    return here == size;
}

/* Every rank's host name at rank 0 (collective: every rank calls it), hosts[r] of rank r; NULL
 * on the other ranks. Workers are then named by rank and host in status and messages. */
static char (*gather_hosts(int rank, int size))[CONTROL_HOST_MAX] {
    char mine[CONTROL_HOST_MAX] = "";
    if (gethostname(mine, sizeof mine) != 0) snprintf(mine, sizeof mine, "?");
    mine[sizeof mine - 1] = 0;
    char (*hosts)[CONTROL_HOST_MAX] = rank == 0 ? hcl_calloc((size_t)size, sizeof *hosts) : NULL;
    MPI_Gather(mine, CONTROL_HOST_MAX, MPI_CHAR, hosts, CONTROL_HOST_MAX, MPI_CHAR, 0, MPI_COMM_WORLD);
    return hosts;
}

/* Open MPI's start (MPI_Init of a singleton: its components and their libraries), measured:
 * 200 MB of address space, 20 MB of it data, 12 MB resident. */
#define MPI_START_BYTES (200.0 * MEMLIMIT_MB)
#define MPI_START_DATA (20.0 * MEMLIMIT_MB)
#define MPI_START_RESIDENT (12.0 * MEMLIMIT_MB)

/* Under a memory limit, before MPI_Init: OpenBLAS's helper threads, started as the program
 * loaded, hold their buffers (one that could not map it waits for memory forever, and MPI_Init's
 * fork and exit would wait for it), and MPI has room to start. Else one line and _exit(2): not
 * exit, which would join that thread. */
static void check_start(void) {
    memlimit_state s;
    memlimit_read(&s);
    if (s.as <= 0 && s.data <= 0) return;
    char err[HCL_ERR_MAX];
    const int started = kernels_blas_started(2.0);
    memlimit_read(&s);
    if (!started) {
        fprintf(stderr, "hcl-train: the limit %s is %.0f MB: OpenBLAS found no room for its helper threads' "
                "buffers (128 MB each) as it loaded, %.0f MB mapped now\n", s.as > 0 ? "RLIMIT_AS (ulimit -v)" :
                "RLIMIT_DATA (ulimit -d)", (s.as > 0 ? s.as : s.data) / MEMLIMIT_MB, s.vm_size / MEMLIMIT_MB);
        _exit(2);
    }
    memlimit_need need = {0};
    memlimit_add_mapped(&need, "MPI", MPI_START_BYTES, MPI_START_DATA, MPI_START_RESIDENT);
    if (memlimit_check(&need, &s, "starting", err) != 0) {
        fprintf(stderr, "hcl-train: %s\n", err);
        _exit(2);
    }
}

int main(int argc, char **argv) {
    /* Open MPI's collectives malloc and free temporary buffers of the batch's embeddings every
     * step; with glibc's default thresholds each one is a fresh mmap whose pages fault in again
     * (a sixth of a worker's W1 step). Keep them on the heap and keep the heap. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    memlimit_arenas();
    hcl_config cfg;
    char err[HCL_ERR_MAX];
    config_defaults(&cfg);
    /* Every rank parses the same argv; only rank 0 speaks (the rank is not known before
     * MPI_Init, and --help must work without MPI). */
    int prc = config_parse_args(&cfg, argc, argv, stdout, err);
    if (prc == 1) return 0;
    check_start();
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    log_init(rank == 0 ? "coord" : "worker", rank, config_log_level(&cfg));
    if (rank == 0) run_install_signals();
    else worker_ignore_signals();
    /* The coordinator wakes often for short work (the next batch, a result, the control
     * socket). Where it shares a core with a worker, each wakeup at the worker's priority
     * preempts the worker's compute: a worker sharing its core ran 8% slower than one process
     * doing both jobs (bench/shared_core). At a lower priority it runs when the worker waits (in
     * a collective, for its batch) instead. Not the lowest: at nice 19 on busy cores the kernel
     * (EEVDF) runs it so seldom that 10,000 control requests a second wait 0.3-0.6 s at p99 (20-40
     * ms at 15, 8-12 ms at 10: bench/control_load), while a shared core costs the same from 10
     * to 19. Set before ZeroMQ starts its I/O threads, which inherit it; on Linux it applies to
     * the calling thread and its new threads only, not to Open MPI's threads that already exist
     * (they sleep in poll). A nice value already higher (the job started under nice) is kept. */
    if (rank == 0 && size > 1 && prc == 0) {
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, 0);
        if (errno == 0 && cur < cfg.coordinator_nice && setpriority(PRIO_PROCESS, 0, (int)cfg.coordinator_nice) != 0)
            LOG_WARN("--coordinator-nice %lld: setpriority failed (%s); the coordinator stays at nice %d",
                     (long long)cfg.coordinator_nice, strerror(errno), cur);
    }

    const int one_host = size > 1 && world_on_one_host();   /* --data-plane auto */
    char (*hosts)[CONTROL_HOST_MAX] = gather_hosts(rank, size);
    hcl_run run;
    hcl_setup su;
    memset(&su, 0, sizeof su);
    memset(&run, 0, sizeof run);
    if (rank == 0) {
        if (prc != 0 || run_prepare(&run, &cfg, one_host, err) != 0 ||
            (size > 1 && run.batch < size - 1 &&
             hcl_err(err, "--batch-size: %lld rows cannot be split among %d workers",
                     (long long)run.batch, size - 1)) ||
            run_check_memory(&run, size - 1, err) != 0 || run_resume(&run, err) != 0 || run_open_dir(&run, err) != 0 ||
            run_control_open(&run, size, hosts, err) != 0) {
            fprintf(stderr, "hcl-train: %s\n", err);
            su.status = 2;
        } else {
            run.world_size = size;
            run_setup(&run, &su);
            su.max_batch_bytes = batcher_message_bytes(&run.bt, size > 1 ? size - 1 : 1, run.direct);
        }
    }
    int code = 0;
    if (size == 1) {
        code = su.status ? su.status : run_train(&run, &su, 0);
    } else {
        /* The setup travels to every rank; workers wait for it without spinning while rank 0
         * validates the data. */
        MPI_Request req;
        MPI_Ibcast(&su, (int)sizeof su, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
        worker_wait_polite(&req, MPI_STATUS_IGNORE);
        MPI_Comm workers;
        MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? MPI_UNDEFINED : 1, rank, &workers);
        if (su.status) code = su.status;
        else if (rank == 0) code = run_train(&run, &su, size - 1);
        else code = worker_main(workers, &su);
        if (workers != MPI_COMM_NULL) MPI_Comm_free(&workers);
    }
    if (rank == 0) run_free(&run);
    free(hosts);
    MPI_Finalize();
    return code;
}
