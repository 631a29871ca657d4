/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int log_max_priority = LOG_INFO;
static bool log_prefix; /* "<N>" priority prefixes: only when stderr is the journal */

/*
 * systemd connects a service's stderr to the journal and says so in $JOURNAL_STREAM: the
 * stream's "st_dev:st_ino" (sd-daemon(3), systemd.exec(5)). Only then does a "<N>" prefix mean
 * a priority; on a terminal, in a file or under another supervisor it would be noise.
 */
static bool stderr_is_journal(void)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int n = 0;

	if (!env || sscanf(env, "%llu:%llu%n", &dev, &ino, &n) != 2 || env[n] != '\0')
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void gw_log_init(int max_priority)
{
	log_max_priority = max_priority;
	log_prefix = stderr_is_journal();
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
	if (log_prefix)
		fprintf(stderr, "<%d>%s\n", priority, line);
	else
		fprintf(stderr, "%s\n", line);
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
