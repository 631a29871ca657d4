/* SPDX-License-Identifier: MIT */
#include "gwp-criu.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "gwp-plan.h"

#define LEAVE_RUNNING_ENV "GPUWARM_CRIU_LEAVE_RUNNING"
#define CMDLINE_MAX 65536

/* dlsym() hands back void *; POSIX guarantees it converts to a function pointer. */
#define LOOKUP(type, name) ((type)(uintptr_t)dlsym(RTLD_DEFAULT, name))

void gwp_criu_resolve(struct gwp_criu *c)
{
	memset(c, 0, sizeof(*c));
	c->print_on_level = LOOKUP(gwp_criu_print_on_level_fn, "print_on_level");
	c->get_image_dir = LOOKUP(gwp_criu_get_image_dir_fn, "criu_get_image_dir");
	c->add_inventory_plugin = LOOKUP(gwp_criu_add_inventory_plugin_fn, "add_inventory_plugin");
	c->check_and_remove_inventory_plugin = LOOKUP(gwp_criu_check_and_remove_inventory_plugin_fn,
						      "check_and_remove_inventory_plugin");
	c->interrupt_only = LOOKUP(gwp_criu_void_fn, "set_compel_interrupt_only_mode");
	if (!c->interrupt_only)
		c->interrupt_only = LOOKUP(gwp_criu_void_fn, "dont_use_freeze_cgroup");
	c->in_criu = c->print_on_level != NULL;
	/* 4.0 has dont_use_freeze_cgroup, 4.1+ set_compel_interrupt_only_mode and
	 * checkpoint_devices; 3.x none of them. */
	c->device_hooks = c->interrupt_only != NULL || dlsym(RTLD_DEFAULT, "checkpoint_devices");
	/* 4.2 brought POST_FORKING together with MADV_GUARD_INSTALL support, whose functions
	 * 4.1 lacks. */
	c->post_forking = c->device_hooks && (dlsym(RTLD_DEFAULT, "collect_madv_guards") ||
					      dlsym(RTLD_DEFAULT, "kerndat_warn_about_madv_guards"));
}

void gwp_criu_log(const struct gwp_criu *c, int level, const char *fmt, ...)
{
	const char *tag;
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	tag = level == GWP_CRIU_LOG_ERROR ? "Error: " : level == GWP_CRIU_LOG_WARN ? "Warn: " : "";
	if (c && c->print_on_level) {
		c->print_on_level((unsigned)level, "gpuwarm: %s%s\n", tag, line);
		return;
	}
	if (level < GWP_CRIU_LOG_DEBUG)
		fprintf(stderr, "gpuwarm: %s%s\n", tag, line);
}

int gwp_criu_image_dir(const struct gwp_criu *c, int *ret_is_cwd)
{
	int fd = c->get_image_dir ? c->get_image_dir() : -1;

	int is_cwd = !(fd >= 0 && fcntl(fd, F_GETFD) >= 0);

	if (ret_is_cwd)
		*ret_is_cwd = is_cwd;
	return is_cwd ? AT_FDCWD : fd;
}

unsigned long gwp_criu_alarm_left_ms(void)
{
	struct itimerval it;

	if (getitimer(ITIMER_REAL, &it) < 0)
		return 0;
	return (unsigned long)it.it_value.tv_sec * 1000 +
	       (unsigned long)(it.it_value.tv_usec + 999) / 1000;
}

int gwp_criu_leave_running(void)
{
	const char *env = getenv(LEAVE_RUNNING_ENV);
	size_t got = 0;
	char *buf;
	int fd, r;

	if (env && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0))
		return env[0] == '1';
	fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	buf = malloc(CMDLINE_MAX);
	if (!buf) {
		close(fd);
		return -1;
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, CMDLINE_MAX - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == CMDLINE_MAX)
			break;
	}
	close(fd);
	r = gwp_cmdline_leave_running(buf, got);
	free(buf);
	return r;
}
