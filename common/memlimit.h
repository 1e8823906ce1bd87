/* memlimit: the memory a process may still take, and the check before training.
 *
 * The limits: RLIMIT_AS (`ulimit -v`: every mapping counts, also what is reserved and never
 * touched: OpenBLAS's buffers, thread stacks, the data files hcl maps), RLIMIT_DATA
 * (`ulimit -d`: the heap and private writable mappings) and the memory limit of the process's
 * cgroup (v2 memory.max, v1 memory.limit_in_bytes: what is resident, of every process in the
 * cgroup, this one's ancestors' included). The use now: VmSize, VmData and VmRSS of
 * /proc/self/status, the cgroup's memory.current (v1 memory.usage_in_bytes).
 *
 * A need is a list of named parts still to come, each with the address space it maps and the
 * bytes of it that become resident. memlimit_check compares the use now + the need + a margin
 * with each limit and, when one does not fit, says in one line how much is needed, of what,
 * and which limit is too low. hcl_malloc and the libraries' allocations that fail after it end
 * the process with one line too (memlimit_out_of_memory), never an abort or a wait.
 *
 * Exports: hcl_memory_limit, memlimit_add, memlimit_add_mapped, memlimit_read, memlimit_cgroup, memlimit_check, memlimit_arenas,
 * memlimit_thread_stack, memlimit_out_of_memory. */
#ifndef HCL_MEMLIMIT_H
#define HCL_MEMLIMIT_H

#include <stddef.h>
#include <stdint.h>

#define MEMLIMIT_PARTS 16
#define MEMLIMIT_MB (1024.0 * 1024.0)

typedef struct {
    const char *what;   /* "parameters and gradients", "OpenBLAS buffers", ... */
    double bytes;       /* address space it maps */
    double data;        /* the bytes of it that count as data (private, writable) */
    double resident;    /* the bytes of it that will be touched */
} memlimit_part;

typedef struct {
    memlimit_part part[MEMLIMIT_PARTS];
    int n;
} memlimit_need;

typedef struct {
    double as, data;              /* RLIMIT_AS, RLIMIT_DATA soft limits in bytes; 0: none */
    double cgroup, cgroup_used;   /* the tightest cgroup limit and its use now; 0: none */
    char cgroup_file[512];        /* that limit's file */
    double vm_size, vm_data, vm_rss;   /* this process now (/proc/self/status) */
    double vm_peak, vm_hwm;            /* and its peaks: address space, resident */
} memlimit_state;

/* Add a part of private memory (parts of the same name are summed; past MEMLIMIT_PARTS into
 * the last); memlimit_add_mapped: a part of which only `data` bytes are private (the rest:
 * files, libraries). */
void memlimit_add(memlimit_need *n, const char *what, double bytes, double resident);
void memlimit_add_mapped(memlimit_need *n, const char *what, double bytes, double data, double resident);

/* The limits and the use now. */
void memlimit_read(memlimit_state *s);

/* The tightest memory limit of the cgroup that proc_cgroup (the text of /proc/PID/cgroup)
 * names, under root (normally /sys/fs/cgroup): cgroup v2 (memory.max, memory.current of the
 * cgroup and each ancestor) or v1 (the memory controller's memory.limit_in_bytes and
 * memory.usage_in_bytes). Returns 1 with *limit, *used and file (the limit's path) when there
 * is a limit, 0 when none. */
int memlimit_cgroup(const char *proc_cgroup, const char *root, double *limit, double *used, char *file,
                    size_t cap);

/* The need of `who` ("hcl-train", "worker 1") against s: 0 when it fits every limit, else -1
 * and one line in err (HCL_ERR_MAX bytes): "needs about N MB of address space (M mapped now;
 * to come: parts...); the limit RLIMIT_AS (ulimit -v) is L MB". */
int memlimit_check(const memlimit_need *n, const memlimit_state *s, const char *who, char *err);

/* The most memory this process can have, in bytes: the smallest of the machine's (RAM and
 * swap), its cgroup's limit and ulimit -v / -d (memlimit_read's). what (cap bytes, may be NULL)
 * gets which one it is, e.g. "this machine's memory (RAM and swap)". For refusing a size from
 * user input before it is allocated (model_check_memory). */
uint64_t hcl_memory_limit(char *what, size_t cap);

/* Under an address-space or data limit: one malloc arena (glibc reserves 64 MB of address space
 * for each thread's own, which would be taken from what the estimate counts on). */
void memlimit_arenas(void);

/* Address space of a new thread's stack (the pthread default: RLIMIT_STACK, or glibc's). */
double memlimit_thread_stack(void);

/* The end of the process when memory runs out after the check: one line naming what failed,
 * the size, the use and the limits; exit status 2 (no abort, no core, no wait). */
void memlimit_out_of_memory(const char *what, double bytes) __attribute__((noreturn));

#endif
