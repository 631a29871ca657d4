/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "daemon.h"
#include "gw-vimg.h"
#include "log.h"

#define GW_DEFAULT_STAGING_MIB 256
#define GW_DEFAULT_WORKERS 4

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: gpu-warmd [OPTION]...\n"
		"Keep warm CUDA contexts and pinned staging memory on every GPU, and do CUDA\n"
		"checkpoint/restore work for clients on a Unix socket. Runs in the foreground;\n"
		"under systemd it uses the socket systemd passes (gpu-warmd.socket).\n"
		"\n"
		"  -s, --socket PATH         listen on PATH when not socket-activated\n"
		"                            (default %s; env %s)\n"
		"      --socket-mode MODE    octal mode of that socket (default 0660)\n"
		"      --socket-group GROUP  group of that socket (default: unchanged)\n"
		"  -c, --cuda-library PATH   CUDA driver library (default libcuda.so.1;\n"
		"                            env %s)\n"
		"  -m, --staging-mib N       pinned staging memory per GPU in MiB, in 64 MiB\n"
		"                            buffers (default %d; 0 pins none)\n"
		"      --image-pool-mib N    pinned host memory for VRAM images of shimmed\n"
		"                            processes (fast path), pinned at start (default 0)\n"
		"      --image-cache-mib N   of that pool, at most N MiB for a cache of image\n"
		"                            files' data, for restores on this host from RAM\n"
		"                            (default 0: off; suspended images always win)\n"
		"      --vram-store DIR      CRIU's plugin puts the data of the VRAM images it\n"
		"                            dumps in DIR and links them from CRIU's images:\n"
		"                            checkpoints (and podman's --export archives)\n"
		"                            stay small, restorable on this host (made 0700\n"
		"                            if missing; default: none, images stay whole)\n"
		"      --chunk-kib N         VRAM image chunk in KiB: all-zero chunks are not\n"
		"                            copied, each chunk is checksummed (a power of two,\n"
		"                            64 to 1048576; default 2048)\n"
		"      --workers N           threads for driver calls besides one per GPU\n"
		"                            (default %d)\n"
		"      --max-clients N       connections at once (default 128)\n"
		"      --max-clients-per-uid N  connections of one non-root user (default 32)\n"
		"      --root-reserve N      of --max-clients, kept for root (CRIU's plugin)\n"
		"                            (default 8)\n"
		"      --max-ops-per-uid N   operations one non-root user may have queued or\n"
		"                            running (default 2)\n"
		"      --idle-timeout S      close connections idle this long, except lease\n"
		"                            holders and agents holding VRAM (default 600)\n"
		"      --handshake-timeout S  Hello must complete this long after connecting\n"
		"                            (default 10)\n"
		"      --frame-timeout S     a frame must complete this long after its first\n"
		"                            byte (default 10)\n"
		"      --foreground          accepted for compatibility: always in the foreground\n"
		"  -v, --verbose             log debug messages too\n"
		"  -h, --help                show this help\n"
		"  -V, --version             show the version\n"
		"\n"
		"Without an NVIDIA driver it says so and serves with zero GPUs.\n"
		"Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 on a start-up error,\n"
		"2 on a usage error.\n",
		GW_DEFAULT_SOCKET, GW_SOCKET_ENV, GW_CUDA_LIBRARY_ENV, GW_DEFAULT_STAGING_MIB,
		GW_DEFAULT_WORKERS);
}

static int parse_uint(const char *arg, const char *what, unsigned long max, unsigned long *ret)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || end == arg || *end || arg[0] == '-' || v > max) {
		fprintf(stderr, "gpu-warmd: %s must be an integer from 0 to %lu, not \"%s\"\n", what,
			max, arg);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

/* The command line, one entry per option: getopt's tables are made from it. */
enum arg_kind {
	ARG_NONE,    /* accepted, ignored */
	ARG_STRING,  /* const char * */
	ARG_UINT,    /* unsigned, 0 to max */
	ARG_SIZE,    /* size_t, 0 to max */
	ARG_MODE,    /* mode_t, octal, up to max */
	ARG_FLAG,    /* int set to 1 */
	ARG_HELP,
	ARG_VERSION,
};

struct opt_spec {
	const char *name;
	char letter;            /* its short option, or 0 */
	enum arg_kind kind;
	size_t field;           /* offsetof(struct gw_options, ...) */
	unsigned long max;
	const char *zero_error; /* 0 is refused with this message (NULL: 0 is fine) */
	unsigned long if_zero;  /* stored when 0 is given and allowed (0: 0) */
	int (*check)(unsigned long v);
};

static int check_chunk(unsigned long v)
{
	if (v < (GW_VIMG_MIN_CHUNK_BYTES >> 10) || (v & (v - 1))) {
		fprintf(stderr, "gpu-warmd: --chunk-kib must be a power of two from "
				"64 to %u, not %lu\n", GW_VIMG_MAX_CHUNK_BYTES >> 10, v);
		return -EINVAL;
	}
	return 0;
}

#define F(member) offsetof(struct gw_options, member)
/* Options with a value: name, letter, kind, field, max. */
#define VALUE(n, l, k, member, m) .name = n, .letter = l, .kind = k, .field = F(member), .max = m
static const struct opt_spec opt_specs[] = {
	{ VALUE("socket", 's', ARG_STRING, socket_path, 0) },
	{ VALUE("socket-mode", 0, ARG_MODE, socket_mode, 0777) },
	{ VALUE("socket-group", 0, ARG_STRING, socket_group, 0) },
	{ VALUE("cuda-library", 'c', ARG_STRING, cuda_library, 0) },
	{ VALUE("staging-mib", 'm', ARG_SIZE, staging_mib, 1u << 20) },
	{ VALUE("workers", 0, ARG_UINT, workers, 256), .if_zero = 1 },
	{ VALUE("image-pool-mib", 0, ARG_SIZE, image_pool_mib, 1u << 24) },
	{ VALUE("image-cache-mib", 0, ARG_SIZE, image_cache_mib, 1u << 24) },
	{ VALUE("vram-store", 0, ARG_STRING, vram_store, 0) },
	{ VALUE("chunk-kib", 0, ARG_SIZE, chunk_kib, GW_VIMG_MAX_CHUNK_BYTES >> 10),
	  .check = check_chunk },
	{ VALUE("max-clients", 0, ARG_UINT, max_clients, 65536) },
	{ VALUE("max-clients-per-uid", 0, ARG_UINT, max_clients_per_uid, 65536) },
	{ VALUE("idle-timeout", 0, ARG_UINT, idle_timeout_s, 86400),
	  .zero_error = "--idle-timeout must be 1 to 86400 s" },
	{ VALUE("root-reserve", 0, ARG_UINT, root_reserve, 65536) },
	{ VALUE("max-ops-per-uid", 0, ARG_UINT, max_ops_per_uid, 1024),
	  .zero_error = "--max-ops-per-uid must be 1 to 1024" },
	{ VALUE("handshake-timeout", 0, ARG_UINT, handshake_timeout_s, 3600),
	  .zero_error = "timeouts must be 1 to 3600 s" },
	{ VALUE("frame-timeout", 0, ARG_UINT, frame_timeout_s, 3600),
	  .zero_error = "timeouts must be 1 to 3600 s" },
	{ .name = "foreground", .kind = ARG_NONE },
	{ VALUE("verbose", 'v', ARG_FLAG, verbose, 0) },
	{ .name = "help", .letter = 'h', .kind = ARG_HELP },
	{ .name = "version", .letter = 'V', .kind = ARG_VERSION },
};
#undef VALUE
#undef F
#define NSPECS (sizeof(opt_specs) / sizeof(opt_specs[0]))

/* getopt's key of spec i: its letter, else a value past every character. */
static int spec_key(size_t i)
{
	return opt_specs[i].letter ? opt_specs[i].letter : 256 + (int)i;
}

static void make_getopt_tables(struct option *longopts, char *shortopts)
{
	size_t i;

	for (i = 0; i < NSPECS; i++) {
		const struct opt_spec *s = &opt_specs[i];
		int has_arg = s->kind == ARG_STRING || s->kind == ARG_UINT ||
			      s->kind == ARG_SIZE || s->kind == ARG_MODE;

		longopts[i] = (struct option){ s->name, has_arg ? required_argument : no_argument,
					       NULL, spec_key(i) };
		if (s->letter) {
			*shortopts++ = s->letter;
			if (has_arg)
				*shortopts++ = ':';
		}
	}
	longopts[i] = (struct option){ 0 };
	*shortopts = '\0';
}

static int parse_mode(const char *arg, unsigned long max, unsigned long *ret)
{
	char *end;

	errno = 0;
	*ret = strtoul(arg, &end, 8);
	if (errno || *end || end == arg || *ret > max) {
		fprintf(stderr, "gpu-warmd: --socket-mode wants an octal mode like 0660, not "
				"\"%s\"\n", arg);
		return -EINVAL;
	}
	return 0;
}

/* Parse arg as spec s says and store it in o. */
static int apply_option(const struct opt_spec *s, const char *arg, struct gw_options *o)
{
	char *field = (char *)o + s->field, what[64];
	unsigned long v = 0;

	snprintf(what, sizeof(what), "--%s", s->name);
	switch (s->kind) {
	case ARG_STRING:
		*(const char **)field = arg;
		return 0;
	case ARG_FLAG:
		*(int *)field = 1;
		return 0;
	case ARG_MODE:
		if (parse_mode(arg, s->max, &v) < 0)
			return -EINVAL;
		*(mode_t *)field = (mode_t)v;
		return 0;
	case ARG_UINT:
	case ARG_SIZE:
		if (parse_uint(arg, what, s->max, &v) < 0 || (s->zero_error && v == 0)) {
			if (s->zero_error)
				fprintf(stderr, "gpu-warmd: %s\n", s->zero_error);
			return -EINVAL;
		}
		if (s->check && s->check(v) < 0)
			return -EINVAL;
		if (v == 0 && s->if_zero)
			v = s->if_zero;
		if (s->kind == ARG_SIZE)
			*(size_t *)field = v;
		else
			*(unsigned *)field = (unsigned)v;
		return 0;
	case ARG_HELP:
		usage(stdout);
		exit(0);
	case ARG_VERSION:
		printf("gpu-warmd %s (protocol %d)\n", GW_VERSION, GW_PROTO_VERSION);
		exit(0);
	case ARG_NONE:
		break;
	}
	return 0;
}

static int parse_options(int argc, char **argv, struct gw_options *o)
{
	struct option longopts[NSPECS + 1];
	char shortopts[2 * NSPECS + 1];
	const char *env = getenv(GW_SOCKET_ENV);
	int c;

	*o = (struct gw_options){
		.socket_path = env && *env ? env : GW_DEFAULT_SOCKET,
		.staging_mib = GW_DEFAULT_STAGING_MIB,
		.socket_mode = 0660,
		.workers = GW_DEFAULT_WORKERS,
		.max_clients = 128,
		.max_clients_per_uid = 32,
		.idle_timeout_s = 600,
		.root_reserve = 8,
		.max_ops_per_uid = 2,
		.handshake_timeout_s = 10,
		.frame_timeout_s = 10,
		.chunk_kib = GW_VIMG_DEFAULT_CHUNK_BYTES >> 10,
	};
	make_getopt_tables(longopts, shortopts);
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		size_t i = 0;

		while (i < NSPECS && spec_key(i) != c)
			i++;
		if (i == NSPECS) {
			fprintf(stderr, "Try 'gpu-warmd --help'.\n");
			return -EINVAL;
		}
		if (apply_option(&opt_specs[i], optarg, o) < 0)
			return -EINVAL;
	}
	if (optind < argc) {
		fprintf(stderr, "gpu-warmd: unexpected argument \"%s\"; try 'gpu-warmd --help'\n",
			argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* Every client may pass descriptors: take all the kernel allows us (the unit sets the hard
 * limit), so that a flood of them meets our own limits first. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			gw_warn("cannot raise the descriptor limit to %llu: %m, ignoring",
				(unsigned long long)rl.rlim_max);
	}
}

int main(int argc, char **argv)
{
	struct gw_options opts;
	struct gw_daemon d;
	int r;

	if (parse_options(argc, argv, &opts) < 0)
		return 2;
	gw_log_init(opts.verbose ? LOG_DEBUG : LOG_INFO);
	gw_log_hook_libevent();
	setvbuf(stderr, NULL, _IOLBF, 0);
	raise_fd_limit();

	r = gw_daemon_init(&d, &opts);
	if (r >= 0) {
		r = gw_daemon_run(&d);
		gw_daemon_finish(&d);
	}
	if (r < 0) {
		gw_err("gpu-warmd stops: %s", strerror(-r));
		return 1;
	}
	gw_notice("stopped");
	return 0;
}
