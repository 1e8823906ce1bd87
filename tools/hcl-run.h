/* hcl-run: the supervisor's parts (tools/hcl-run.c the command and its loop; tools/hcl-run_hosts.c
 * the hostfile, the mpirun command and the hosts' health over the remote shell). */
#ifndef HCL_RUN_TOOL_H
#define HCL_RUN_TOOL_H

#include <stddef.h>

#define HCL_RUN_MAX_HOSTS 1024

typedef struct {
    const char *hostfile, *iface, *run_dir;
    int max_restarts, min_workers, grace_s, dry_run;
    char **prog;   /* hcl-train ARGS..., nprog of them (argv after "--") */
    int nprog;
} hcl_run_opts;

typedef struct {
    char *name[HCL_RUN_MAX_HOSTS];
    int slots[HCL_RUN_MAX_HOSTS];
    int n, total;   /* hosts, and their slots (ranks) summed */
} hcl_run_hosts;

/* Read an Open MPI hostfile (`HOST [slots=N]` a line, # comments). 0, or -1 with err
 * (HCL_ERR_MAX) naming the file, line and value. */
int hcl_run_read_hostfile(const char *path, hcl_run_hosts *h, char *err);
void hcl_run_free_hosts(hcl_run_hosts *h);
/* "a:2,b:1" */
void hcl_run_hosts_text(const hcl_run_hosts *h, char *out, size_t cap);
/* The mpirun command, NULL-terminated (free with hcl_run_free_argv); resume adds --resume auto
 * unless the program's arguments have a --resume. */
char **hcl_run_mpirun_argv(const hcl_run_opts *o, const hcl_run_hosts *h, int resume);
void hcl_run_free_argv(char **argv);
/* Ask every host over the remote shell (this host's own name: no need); drop those that do not
 * answer; rank 0 then runs on the first host left. Returns how many were dropped; why gets
 * their names. */
int hcl_run_drop_dead(hcl_run_hosts *h, char *why, size_t cap);

#endif
