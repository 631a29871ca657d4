/* SPDX-License-Identifier: MIT */
/* warmctl: validation of everything on the command line, before anything is sent. */
#include "warmctl.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw-cuda.h"

int wc_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *ret)
{
	unsigned long long v;
	char *end;

	if (!text || !isdigit((unsigned char)text[0]) || strlen(text) > 20)
		return -EINVAL;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int wc_parse_pid(const char *text, long *ret_pid)
{
	uint64_t v;

	if (wc_parse_u64(text, 1, WC_PID_MAX, &v) < 0)
		return -EINVAL;
	*ret_pid = (long)v;
	return 0;
}

int wc_parse_seconds(const char *text, int *ret_ms)
{
	double s;
	char *end;

	if (!text || !(isdigit((unsigned char)text[0]) || text[0] == '.'))
		return -EINVAL;
	errno = 0;
	s = strtod(text, &end);
	if (errno || *end || !isfinite(s) || s <= 0 || s > WC_TIMEOUT_MAX_S)
		return -EINVAL;
	*ret_ms = s * 1000 < 1 ? 1 : (int)lround(s * 1000);
	return 0;
}

static int parse_hex(const char *s, size_t len, unsigned long max, unsigned long *ret)
{
	unsigned long v = 0;

	if (len == 0 || len > 8)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (!isxdigit((unsigned char)s[i]))
			return -EINVAL;
		int c = tolower((unsigned char)s[i]);

		v = v * 16 + (unsigned long)(isdigit(c) ? c - '0' : c - 'a' + 10);
	}
	if (v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* [domain:]bus:device.function, as nvidia-smi and lspci print it. */
static int parse_pci(const char *text, char ret[WC_GPU_SELECTOR_MAX])
{
	const char *colon2 = strrchr(text, ':'), *colon1, *dot = strrchr(text, '.');
	unsigned long domain = 0, bus, dev, fn;

	if (!colon2 || !dot || dot < colon2)
		return -EINVAL;
	colon1 = colon2 == text ? NULL : memrchr(text, ':', (size_t)(colon2 - text));
	if (colon1) {
		if (parse_hex(text, (size_t)(colon1 - text), 0xffffffffUL, &domain) < 0)
			return -EINVAL;
	} else {
		colon1 = text - 1;
	}
	if (parse_hex(colon1 + 1, (size_t)(colon2 - colon1 - 1), 0xff, &bus) < 0 ||
	    parse_hex(colon2 + 1, (size_t)(dot - colon2 - 1), 0x1f, &dev) < 0 ||
	    parse_hex(dot + 1, strlen(dot + 1), 0x7, &fn) < 0)
		return -EINVAL;
	snprintf(ret, WC_GPU_SELECTOR_MAX, "%04lx:%02lx:%02lx.%lx", domain, bus, dev, fn);
	return 0;
}

static int parse_uuid(const char *text, char ret[WC_GPU_SELECTOR_MAX])
{
	CUuuid uuid;

	if (gw_cuda_uuid_parse(text, &uuid) < 0)
		return -EINVAL;
	gw_cuda_uuid_format(&uuid, ret, WC_GPU_SELECTOR_MAX);
	return 0;
}

int wc_parse_gpu(const char *text, char ret_selector[WC_GPU_SELECTOR_MAX])
{
	char buf[WC_GPU_SELECTOR_MAX];
	uint64_t index;

	if (!text || !*text || strlen(text) >= WC_GPU_SELECTOR_MAX)
		return -EINVAL;
	if (wc_parse_u64(text, 0, 65535, &index) == 0)
		snprintf(buf, sizeof(buf), "%u", (unsigned)index);
	else if (strchr(text, ':') ? parse_pci(text, buf) < 0 : parse_uuid(text, buf) < 0)
		return -EINVAL;
	memcpy(ret_selector, buf, sizeof(buf));
	return 0;
}

int wc_parse_gpu_map(const char *text, struct wc_gpu_pair *pairs, size_t max, size_t *n,
		     char *why, size_t whylen)
{
	size_t count = *n, len = text ? strlen(text) : 0;
	const char *p = text, *end = text + len;

	if (!len) {
		snprintf(why, whylen, "empty --gpu-map");
		return -EINVAL;
	}
	while (p <= end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *item_end = comma ? comma : end;
		char item[2 * WC_GPU_SELECTOR_MAX + 2], *eq;
		struct wc_gpu_pair pair;

		if ((size_t)(item_end - p) >= sizeof(item) || item_end == p) {
			snprintf(why, whylen, "invalid pair '%.*s' in --gpu-map: expected OLD=NEW",
				 (int)(item_end - p > 100 ? 100 : item_end - p), p);
			return -EINVAL;
		}
		memcpy(item, p, (size_t)(item_end - p));
		item[item_end - p] = '\0';
		eq = strchr(item, '=');
		if (!eq) {
			snprintf(why, whylen, "invalid pair '%s' in --gpu-map: expected OLD=NEW",
				 item);
			return -EINVAL;
		}
		*eq = '\0';
		if (parse_uuid(item, pair.old_uuid) < 0 || parse_uuid(eq + 1, pair.new_uuid) < 0) {
			snprintf(why, whylen,
				 "invalid pair '%s=%s' in --gpu-map: both sides must be GPU UUIDs "
				 "(GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", item, eq + 1);
			return -EINVAL;
		}
		for (size_t i = 0; i < count; i++) {
			if (strcmp(pairs[i].old_uuid, pair.old_uuid) == 0) {
				snprintf(why, whylen, "--gpu-map maps %s twice", pair.old_uuid);
				return -EINVAL;
			}
		}
		if (count >= max) {
			snprintf(why, whylen, "--gpu-map has more than %zu pairs", max);
			return -EINVAL;
		}
		pairs[count++] = pair;
		if (!comma)
			break;
		p = comma + 1;
		if (p == end) {
			snprintf(why, whylen, "--gpu-map ends with ','");
			return -EINVAL;
		}
	}
	*n = count;
	return 0;
}

int wc_usage_error(const struct wc_ctx *ctx, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ctx->cmd) {
		fprintf(stderr, "warmctl: %s: %s\n", ctx->cmd->name, msg);
		fprintf(stderr, "Try 'warmctl %s --help'.\n", ctx->cmd->name);
	} else {
		fprintf(stderr, "warmctl: %s\nTry 'warmctl --help'.\n", msg);
	}
	if (ctx->json)
		wc_print_json_error(ctx, "warmctl.Error.Usage", msg, 0, NULL);
	return WC_EXIT_USAGE;
}

#define GPU_FORMS                                                                                 \
	"expected an index (0), a UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) or a PCI bus " \
	"id (0000:3b:00.0)"
#define PID_FORM "expected an integer 1..%d"

enum {
	OPT_JSON = 256,
	OPT_HUMAN,
	OPT_SOCKET,
	OPT_TIMEOUT,
	OPT_NO_WAIT,
	OPT_GPU,
	OPT_GPU_MAP,
	OPT_MIN_FREE,
	OPT_HOLD,
	OPT_IMAGE,
	OPT_DENSE,
	OPT_CHUNK_KIB,
	OPT_VERIFY,
	OPT_WIDE,
	OPT_SEGMENTS,
	OPT_OUTPUT,
	OPT_SHIM,
	OPT_SOCKET_DIR,
	OPT_ALL,
};

/* Where an option may stand: before COMMAND, after it, or both. */
enum { AT_GLOBAL = 1 << 0, AT_COMMAND = 1 << 1, AT_BOTH = AT_GLOBAL | AT_COMMAND };

/* Every option of warmctl, once: the getopt tables of both places are made from it. */
static const struct wc_option {
	const char *name;
	int id;
	bool value;     /* takes a value */
	unsigned at;    /* AT_* */
	unsigned flag;  /* the WC_OPT_* a command needs to take it; 0: every command does */
} all_options[] = {
	{ .name = "help", .id = 'h', .at = AT_BOTH },
	{ .name = "version", .id = 'V', .at = AT_GLOBAL },
	{ .name = "json", .id = OPT_JSON, .at = AT_BOTH },
	{ .name = "human", .id = OPT_HUMAN, .at = AT_BOTH },
	{ .name = "socket", .id = OPT_SOCKET, .value = true, .at = AT_BOTH },
	{ .name = "timeout", .id = OPT_TIMEOUT, .value = true, .at = AT_BOTH },
	{ .name = "no-wait", .id = OPT_NO_WAIT, .at = AT_COMMAND, .flag = WC_OPT_NO_WAIT },
	{ .name = "gpu", .id = OPT_GPU, .value = true, .at = AT_COMMAND, .flag = WC_OPT_GPU },
	{ .name = "gpu-map", .id = OPT_GPU_MAP, .value = true, .at = AT_COMMAND,
	  .flag = WC_OPT_GPU_MAP },
	{ .name = "min-free-mib", .id = OPT_MIN_FREE, .value = true, .at = AT_COMMAND,
	  .flag = WC_OPT_MIN_FREE },
	{ .name = "hold", .id = OPT_HOLD, .at = AT_COMMAND, .flag = WC_OPT_HOLD },
	{ .name = "image", .id = OPT_IMAGE, .value = true, .at = AT_COMMAND,
	  .flag = WC_OPT_IMAGE },
	{ .name = "dense", .id = OPT_DENSE, .at = AT_COMMAND, .flag = WC_OPT_DENSE },
	{ .name = "chunk-kib", .id = OPT_CHUNK_KIB, .value = true, .at = AT_COMMAND,
	  .flag = WC_OPT_DENSE },
	{ .name = "segments", .id = OPT_SEGMENTS, .value = true, .at = AT_COMMAND,
	  .flag = WC_OPT_DENSE },
	{ .name = "verify", .id = OPT_VERIFY, .at = AT_COMMAND, .flag = WC_OPT_VERIFY },
	{ .name = "wide", .id = OPT_WIDE, .at = AT_COMMAND, .flag = WC_OPT_WIDE },
	{ .name = "output", .id = OPT_OUTPUT, .value = true, .at = AT_COMMAND, .flag = WC_OPT_CDI },
	{ .name = "shim", .id = OPT_SHIM, .value = true, .at = AT_COMMAND, .flag = WC_OPT_CDI },
	{ .name = "socket-dir", .id = OPT_SOCKET_DIR, .value = true, .at = AT_COMMAND,
	  .flag = WC_OPT_CDI },
	{ .name = "all", .id = OPT_ALL, .at = AT_COMMAND, .flag = WC_OPT_ALL },
};

#define NOPTIONS (sizeof(all_options) / sizeof(all_options[0]))

/* getopt_long's table of the options that may stand at `at`, NULL-terminated. */
static void getopt_table(unsigned at, struct option ret[NOPTIONS + 1])
{
	size_t n = 0;

	for (size_t i = 0; i < NOPTIONS; i++) {
		if (!(all_options[i].at & at))
			continue;
		ret[n].name = all_options[i].name;
		ret[n].has_arg = all_options[i].value ? required_argument : no_argument;
		ret[n].flag = NULL;
		ret[n].val = all_options[i].id;
		n++;
	}
	memset(&ret[n], 0, sizeof(ret[n]));
}

/* The option's name as typed, "--NAME" (argv[optind - 1] is its value when it took one). */
static const char *option_name(int id)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (all_options[i].id == id)
			return all_options[i].name;
	return "?";
}

static unsigned option_flag(int id)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (all_options[i].id == id)
			return all_options[i].flag;
	return 0;
}

/* The options taken in both places but --timeout: -1 when opt is one (and is applied), 0 when it
 * is not, else the exit code. */
static int common_option(struct wc_ctx *ctx, int opt, char **argv)
{
	switch (opt) {
	case OPT_JSON:
		ctx->json = true;
		return -1;
	case OPT_HUMAN:
		ctx->json = false;
		return -1;
	case OPT_SOCKET:
		if (!*optarg)
			return wc_usage_error(ctx, "empty --socket");
		ctx->socket_path = optarg;
		return -1;
	case ':':
		return wc_usage_error(ctx, "option '%s' needs a value", argv[optind - 1]);
	}
	return 0;
}

static int timeout_option(struct wc_ctx *ctx, int *ret_ms)
{
	if (wc_parse_seconds(optarg, ret_ms) < 0)
		return wc_usage_error(ctx, "invalid --timeout '%s': " WC_SECONDS_FORM, optarg,
				      WC_TIMEOUT_MAX_S);
	return -1;
}

int wc_parse_global_args(struct wc_ctx *ctx, int argc, char **argv)
{
	struct option table[NOPTIONS + 1];
	int opt, r;

	getopt_table(AT_GLOBAL, table);
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+:hV", table, NULL)) != -1) {
		switch (opt) {
		case 'h':
			wc_print_main_help();
			return WC_EXIT_OK;
		case 'V':
			/* warmctl's own version, no daemon needed (`warmctl version` asks it
			 * too) */
			printf("warmctl %s\n", GW_VERSION);
			return fflush(stdout) == 0 ? WC_EXIT_OK : WC_EXIT_FAILED;
		case OPT_TIMEOUT:
			r = timeout_option(ctx, &ctx->reply_timeout_ms);
			break;
		default:
			r = common_option(ctx, opt, argv);
			if (r == 0)
				r = wc_usage_error(ctx, "unknown option '%s'", argv[optind - 1]);
		}
		if (r >= 0)
			return r;
	}
	return -1;
}

/* A command's own option opt (one the command takes): -1 applied, else the exit code. */
static int command_option(struct wc_ctx *ctx, int opt, struct wc_args *args)
{
	char why[512];

	switch (opt) {
	case OPT_GPU:
		if (args->gpu[0])
			return wc_usage_error(ctx, "--gpu given twice");
		if (wc_parse_gpu(optarg, args->gpu) < 0)
			return wc_usage_error(ctx, "invalid --gpu '%s': " GPU_FORMS, optarg);
		break;
	case OPT_GPU_MAP:
		if (wc_parse_gpu_map(optarg, args->pairs, WC_MAX_GPU_PAIRS, &args->npairs, why,
				     sizeof(why)) < 0)
			return wc_usage_error(ctx, "%s", why);
		break;
	case OPT_MIN_FREE:
		if (wc_parse_u64(optarg, 1, UINT64_C(1) << 30, &args->min_free_mib) < 0)
			return wc_usage_error(ctx, "invalid --min-free-mib '%s': expected an "
					      "integer 1..%llu", optarg, 1ULL << 30);
		args->has_min_free = true;
		break;
	case OPT_IMAGE:
		if (!*optarg)
			return wc_usage_error(ctx, "empty --image");
		args->image = optarg;
		break;
	case OPT_CHUNK_KIB:
		if (wc_parse_u64(optarg, 64, 1u << 20, &args->chunk_kib) < 0 ||
		    (args->chunk_kib & (args->chunk_kib - 1)))
			return wc_usage_error(ctx, "invalid --chunk-kib '%s': expected a power of "
					      "two from 64 to 1048576", optarg);
		break;
	case OPT_SEGMENTS:
		if (wc_parse_u64(optarg, 1, GW_IMAGE_MAX_SEGMENTS, &args->segments) < 0)
			return wc_usage_error(ctx, "invalid --segments '%s': expected an integer "
					      "1..%d", optarg, GW_IMAGE_MAX_SEGMENTS);
		break;
	case OPT_NO_WAIT:
		args->no_wait = true;
		break;
	case OPT_HOLD:
		args->hold = true;
		break;
	case OPT_DENSE:
		args->dense = true;
		break;
	case OPT_VERIFY:
		args->verify = true;
		break;
	case OPT_WIDE:
		args->wide = true;
		break;
	case OPT_ALL:
		args->all = true;
		break;
	case OPT_OUTPUT:
	case OPT_SHIM:
	case OPT_SOCKET_DIR:
		if (!*optarg)
			return wc_usage_error(ctx, "empty --%s", opt == OPT_OUTPUT ? "output" :
						     opt == OPT_SHIM ? "shim" : "socket-dir");
		*(opt == OPT_OUTPUT ? &args->cdi_output : opt == OPT_SHIM ? &args->cdi_shim :
					&args->cdi_socket_dir) = optarg;
		break;
	}
	return -1;
}

/* An option getopt does not know: a negative PID is named as such. */
static int unknown_option(struct wc_ctx *ctx, char **argv)
{
	const char *arg = argv[optind - 1];

	if (ctx->cmd->positional == WC_POS_PID && arg[0] == '-' && isdigit((unsigned char)arg[1]))
		return wc_usage_error(ctx, "invalid PID '%s': " PID_FORM, arg, WC_PID_MAX);
	return wc_usage_error(ctx, "unknown option '%s'", arg);
}

static int parse_operands(struct wc_ctx *ctx, int n, char **operands, struct wc_args *args)
{
	const struct wc_command *cmd = ctx->cmd;

	switch (cmd->positional) {
	case WC_POS_NONE:
		if (n > 0)
			return wc_usage_error(ctx, "unexpected argument '%s'", operands[0]);
		return -1;
	case WC_POS_PID:
		if (n == 0)
			return wc_usage_error(ctx, "missing PID");
		if (n > 1)
			return wc_usage_error(ctx, "unexpected argument '%s' after the PID",
					      operands[1]);
		if (wc_parse_pid(operands[0], &args->pid) < 0)
			return wc_usage_error(ctx, "invalid PID '%s': " PID_FORM, operands[0],
					      WC_PID_MAX);
		return -1;
	case WC_POS_PATH:
		if (n == 0)
			return wc_usage_error(ctx, "missing FILE or DIR");
		if (n > 1)
			return wc_usage_error(ctx, "unexpected argument '%s'", operands[1]);
		args->path = operands[0];
		return -1;
	case WC_POS_WORDS:
		if (n > WC_MAX_WORDS)
			return wc_usage_error(ctx, "unexpected argument '%s'", operands[WC_MAX_WORDS]);
		for (int i = 0; i < n; i++)
			args->words[args->nwords++] = operands[i];
		return -1;
	case WC_POS_GPUS:
		if (n > WC_MAX_GPUS)
			return wc_usage_error(ctx, "more than %d GPUs", WC_MAX_GPUS);
		for (int i = 0; i < n; i++) {
			if (wc_parse_gpu(operands[i], args->gpus[args->ngpus]) < 0)
				return wc_usage_error(ctx, "invalid GPU '%s': " GPU_FORMS,
						      operands[i]);
			args->ngpus++;
		}
		return -1;
	}
	return -1;
}

int wc_parse_command_args(struct wc_ctx *ctx, int argc, char **argv, struct wc_args *ret_args)
{
	const struct wc_command *cmd = ctx->cmd;
	struct option table[NOPTIONS + 1];
	struct wc_args args;
	int opt, r;

	/* --help wins over everything else on the line, valid or not */
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			wc_print_command_help(cmd);
			return WC_EXIT_OK;
		}
	}

	memset(&args, 0, sizeof(args));
	getopt_table(AT_COMMAND, table);
	opterr = 0;
	optind = 0; /* reinitialise getopt for a second pass over another argv */
	while ((opt = getopt_long(argc, argv, ":h", table, NULL)) != -1) {
		unsigned flag = option_flag(opt);

		if (flag && !(cmd->options & flag))
			return wc_usage_error(ctx, "option '--%s' does not apply here",
					      option_name(opt));
		if (opt == OPT_TIMEOUT)
			r = timeout_option(ctx, cmd->options & WC_OPT_OP_TIMEOUT ?
							&args.op_timeout_ms :
							&ctx->reply_timeout_ms);
		else if (flag)
			r = command_option(ctx, opt, &args);
		else if ((r = common_option(ctx, opt, argv)) == 0)
			r = unknown_option(ctx, argv);
		if (r >= 0)
			return r;
	}
	if (args.gpu[0] && args.has_min_free)
		return wc_usage_error(ctx, "--gpu and --min-free-mib exclude each other");

	r = parse_operands(ctx, argc - optind, argv + optind, &args);
	if (r >= 0)
		return r;
	*ret_args = args;
	return -1;
}
