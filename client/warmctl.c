/* SPDX-License-Identifier: MIT */
/* warmctl: the global options, then hand over to the command. */
#include "warmctl.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* `warmctl help [COMMAND]` */
static int help(struct wc_ctx *ctx, int argc, char **argv)
{
	const struct wc_command *cmd;

	if (argc < 2) {
		wc_print_main_help();
		return WC_EXIT_OK;
	}
	cmd = wc_command_find(argv[1]);
	if (!cmd || argc > 2)
		return wc_usage_error(ctx, "help: unknown command '%s'", argv[1]);
	wc_print_command_help(cmd);
	return WC_EXIT_OK;
}

int main(int argc, char **argv)
{
	struct wc_ctx ctx = { .json = !isatty(STDOUT_FILENO) };
	struct wc_args args;
	int r;

	r = wc_parse_global_args(&ctx, argc, argv);
	if (r >= 0)
		return r;
	if (optind >= argc)
		return wc_usage_error(&ctx, "missing COMMAND");
	if (strcmp(argv[optind], "help") == 0)
		return help(&ctx, argc - optind, argv + optind);
	ctx.cmd = wc_command_find(argv[optind]);
	if (!ctx.cmd)
		return wc_usage_error(&ctx, "unknown command '%s'", argv[optind]);

	r = wc_parse_command_args(&ctx, argc - optind, argv + optind, &args);
	if (r >= 0)
		return r;
	if (!ctx.socket_path || !*ctx.socket_path)
		ctx.socket_path = getenv(GW_SOCKET_ENV);
	if (!ctx.socket_path || !*ctx.socket_path)
		ctx.socket_path = GW_DEFAULT_SOCKET;

	r = ctx.cmd->run(&ctx, &args);
	wc_disconnect(&ctx);
	return r;
}
