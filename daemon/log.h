/* SPDX-License-Identifier: MIT */
/*
 * Logging to stderr, one line per message. When stderr is the journal ($JOURNAL_STREAM names it)
 * lines carry sd-daemon "<N>" priority prefixes, so journald keeps priorities; elsewhere (a
 * terminal, a file) they are plain text. Lines about one GPU carry its PCI bus id.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <syslog.h>

void gw_log_init(int max_priority);
int gw_log_max_priority(void);

__attribute__((format(printf, 2, 3))) void gw_log(int priority, const char *fmt, ...);

/* Route libevent's internal warnings through gw_log. */
void gw_log_hook_libevent(void);

#define gw_err(...) gw_log(LOG_ERR, __VA_ARGS__)
#define gw_warn(...) gw_log(LOG_WARNING, __VA_ARGS__)
#define gw_notice(...) gw_log(LOG_NOTICE, __VA_ARGS__)
#define gw_info(...) gw_log(LOG_INFO, __VA_ARGS__)
#define gw_debug(...) gw_log(LOG_DEBUG, __VA_ARGS__)

/* "gpu 0000:3b:00.0: " prefix */
#define gw_gpu_log(gpu, priority, fmt, ...)                                                       \
	gw_log(priority, "gpu %s: " fmt, (gpu)->pci_bus_id, ##__VA_ARGS__)

#endif
