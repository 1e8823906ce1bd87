/* Linked into every program of a sanitizer build only (meson.build, -Db_sanitize): two hooks
 * into the runtimes, exported by the executable (--export-dynamic-symbol) so that every
 * library's lookup finds them first. Neither is hcl's behaviour; both make reports usable.
 *
 * dlclose keeps the library loaded. Open MPI and PMIx unload their plugins in MPI_Finalize,
 * before LeakSanitizer reports at exit; the plugins' frames then read "<unknown module>" (or a
 * wrong module) and no suppression by library name can match them. Open MPI 4.1 has no
 * mca_base_component_disable_dlclose (ompi_info lists no such parameter).
 *
 * __ubsan_on_report writes each UBSan finding where UBSAN_OPTIONS' log_path says. GCC's
 * libubsan, next to libasan, ignores log_path and prints to stderr only, which a test may
 * redirect and drop; tests/sanitize/run-test looks for the files. */
#include <dlfcn.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>

int dlclose(void *handle) {
    (void)handle;
    return 0;
}

/* libubsan's monitor interface (compiler-rt ubsan_monitor.h), not in GCC's headers */
void __ubsan_get_current_report_data(const char **kind, const char **message,
                                     const char **file, unsigned *line, unsigned *col,
                                     char **addr);
void __ubsan_on_report(void);

void __ubsan_on_report(void) {
    const char *opts = getenv("UBSAN_OPTIONS"), *at = opts ? strstr(opts, "log_path=") : NULL;
    if (!at) return;
    char base[512], path[600], exe[256] = "?";
    size_t n = strcspn(at + 9, ":");
    if (n == 0 || n >= sizeof base) return;
    memcpy(base, at + 9, n);
    base[n] = 0;
    ssize_t e = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (e > 0) exe[e] = 0;
    snprintf(path, sizeof path, "%s.%s.%d", base, strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe,
             (int)getpid());
    FILE *f = fopen(path, "a");
    if (!f) return;
    const char *kind, *message, *file;
    unsigned line, col;
    char *addr;
    __ubsan_get_current_report_data(&kind, &message, &file, &line, &col, &addr);
    fprintf(f, "UndefinedBehaviorSanitizer: %s at %s:%u:%u: %s\n", kind, file, line, col, message);
    void *pcs[64];
    int depth = backtrace(pcs, 64);
    for (int i = 0; i < depth; i++) {
        char frame[512];
        __sanitizer_symbolize_pc(pcs[i], "%p %F %L", frame, sizeof frame);
        fprintf(f, "    #%d %s\n", i, frame);
    }
    fclose(f);
}
