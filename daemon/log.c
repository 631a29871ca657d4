/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>

static int log_max_priority = LOG_INFO;

void gw_log_init(int max_priority)
{
	log_max_priority = max_priority;
}

int gw_log_max_priority(void)
{
	return log_max_priority;
}

void gw_log(int priority, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (priority > log_max_priority)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line so lines from worker threads never interleave. */
	fprintf(stderr, "<%d>%s\n", priority, line);
}

static void libevent_log(int severity, const char *msg)
{
	int priority = severity >= EVENT_LOG_ERR ? LOG_ERR :
		       severity == EVENT_LOG_WARN ? LOG_WARNING :
		       severity == EVENT_LOG_MSG  ? LOG_INFO :
						    LOG_DEBUG;
	gw_log(priority, "libevent: %s", msg);
}

void gw_log_hook_libevent(void)
{
	event_set_log_callback(libevent_log);
}
