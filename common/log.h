/* log: leveled log lines carrying wall time, role/rank and level, written to stderr.
 *
 *   2026-11-27T22:50:01.123Z coord/0 INFO  step 100 loss 3.21
 *
 * The level is checked before anything is formatted. */
#ifndef HCL_LOG_H
#define HCL_LOG_H

enum hcl_log_level { HCL_LOG_DEBUG, HCL_LOG_INFO, HCL_LOG_WARN, HCL_LOG_ERROR };

void log_init(const char *role, int rank, int level);
extern int hcl_log_level;
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_DEBUG(...) do { if (hcl_log_level <= HCL_LOG_DEBUG) log_write(HCL_LOG_DEBUG, __VA_ARGS__); } while (0)
#define LOG_INFO(...)  do { if (hcl_log_level <= HCL_LOG_INFO)  log_write(HCL_LOG_INFO, __VA_ARGS__); } while (0)
#define LOG_WARN(...)  do { if (hcl_log_level <= HCL_LOG_WARN)  log_write(HCL_LOG_WARN, __VA_ARGS__); } while (0)
#define LOG_ERROR(...) log_write(HCL_LOG_ERROR, __VA_ARGS__)

#endif
