/* SPDX-License-Identifier: MIT */
/* warmctl: the global options, then hand over to the command. */
#include "warmctl.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
	OPT_JSON = 256,
	OPT_HUMAN,
	OPT_SOCKET,
	OPT_TIMEOUT,
};

static const struct option global_options[] = {
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "human", no_argument, NULL, OPT_HUMAN },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ NULL, 0, NULL, 0 },
};

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
	int opt, r;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+:hV", global_options, NULL)) != -1) {
		switch (opt) {
		case 'h':
			wc_print_main_help();
			return WC_EXIT_OK;
		case 'V':
			/* warmctl's own version, no daemon needed (`warmctl version` asks it too) */
			printf("warmctl %s\n", GW_VERSION);
			return fflush(stdout) == 0 ? WC_EXIT_OK : WC_EXIT_FAILED;
		case OPT_JSON:
			ctx.json = true;
			break;
		case OPT_HUMAN:
			ctx.json = false;
			break;
		case OPT_SOCKET:
			if (!*optarg)
				return wc_usage_error(&ctx, "empty --socket");
			ctx.socket_path = optarg;
			break;
		case OPT_TIMEOUT:
			if (wc_parse_seconds(optarg, &ctx.reply_timeout_ms) < 0)
				return wc_usage_error(&ctx,
						      "invalid --timeout '%s': " WC_SECONDS_FORM,
						      optarg, WC_TIMEOUT_MAX_S);
			break;
		case ':':
			return wc_usage_error(&ctx, "option '%s' needs a value", argv[optind - 1]);
		default:
			return wc_usage_error(&ctx, "unknown option '%s'", argv[optind - 1]);
		}
	}
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
