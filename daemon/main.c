/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
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

enum {
	OPT_SOCKET_MODE = 256,
	OPT_SOCKET_GROUP,
	OPT_WORKERS,
	OPT_MAX_CLIENTS,
	OPT_MAX_CLIENTS_PER_UID,
	OPT_IDLE_TIMEOUT,
	OPT_FOREGROUND,
	OPT_IMAGE_POOL_MIB,
	OPT_IMAGE_CACHE_MIB,
	OPT_CHUNK_KIB,
	OPT_ROOT_RESERVE,
	OPT_MAX_OPS_PER_UID,
	OPT_HANDSHAKE_TIMEOUT,
	OPT_FRAME_TIMEOUT,
};

static int parse_options(int argc, char **argv, struct gw_options *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
		{ "socket-group", required_argument, NULL, OPT_SOCKET_GROUP },
		{ "cuda-library", required_argument, NULL, 'c' },
		{ "staging-mib", required_argument, NULL, 'm' },
		{ "workers", required_argument, NULL, OPT_WORKERS },
		{ "image-pool-mib", required_argument, NULL, OPT_IMAGE_POOL_MIB },
		{ "image-cache-mib", required_argument, NULL, OPT_IMAGE_CACHE_MIB },
		{ "chunk-kib", required_argument, NULL, OPT_CHUNK_KIB },
		{ "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
		{ "max-clients-per-uid", required_argument, NULL, OPT_MAX_CLIENTS_PER_UID },
		{ "idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
		{ "root-reserve", required_argument, NULL, OPT_ROOT_RESERVE },
		{ "max-ops-per-uid", required_argument, NULL, OPT_MAX_OPS_PER_UID },
		{ "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
		{ "frame-timeout", required_argument, NULL, OPT_FRAME_TIMEOUT },
		{ "foreground", no_argument, NULL, OPT_FOREGROUND },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *env = getenv(GW_SOCKET_ENV);
	unsigned long v;
	char *end;
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
	while ((c = getopt_long(argc, argv, "s:c:m:vhV", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			o->socket_path = optarg;
			break;
		case 'c':
			o->cuda_library = optarg;
			break;
		case 'm':
			if (parse_uint(optarg, "--staging-mib", 1u << 20, &v) < 0)
				return -EINVAL;
			o->staging_mib = v;
			break;
		case OPT_SOCKET_MODE:
			errno = 0;
			v = strtoul(optarg, &end, 8);
			if (errno || *end || end == optarg || v > 0777) {
				fprintf(stderr, "gpu-warmd: --socket-mode wants an octal mode like "
						"0660, not \"%s\"\n", optarg);
				return -EINVAL;
			}
			o->socket_mode = (mode_t)v;
			break;
		case OPT_IMAGE_POOL_MIB:
			if (parse_uint(optarg, "--image-pool-mib", 1u << 24, &v) < 0)
				return -EINVAL;
			o->image_pool_mib = v;
			break;
		case OPT_IMAGE_CACHE_MIB:
			if (parse_uint(optarg, "--image-cache-mib", 1u << 24, &v) < 0)
				return -EINVAL;
			o->image_cache_mib = v;
			break;
		case OPT_CHUNK_KIB:
			if (parse_uint(optarg, "--chunk-kib", GW_VIMG_MAX_CHUNK_BYTES >> 10, &v) < 0)
				return -EINVAL;
			if (v < (GW_VIMG_MIN_CHUNK_BYTES >> 10) || (v & (v - 1))) {
				fprintf(stderr, "gpu-warmd: --chunk-kib must be a power of two from "
						"64 to %u, not %lu\n", GW_VIMG_MAX_CHUNK_BYTES >> 10, v);
				return -EINVAL;
			}
			o->chunk_kib = v;
			break;
		case OPT_SOCKET_GROUP:
			o->socket_group = optarg;
			break;
		case OPT_WORKERS:
			if (parse_uint(optarg, "--workers", 256, &v) < 0)
				return -EINVAL;
			o->workers = v ? (unsigned)v : 1;
			break;
		case OPT_MAX_CLIENTS:
			if (parse_uint(optarg, "--max-clients", 65536, &v) < 0)
				return -EINVAL;
			o->max_clients = (unsigned)v;
			break;
		case OPT_MAX_CLIENTS_PER_UID:
			if (parse_uint(optarg, "--max-clients-per-uid", 65536, &v) < 0)
				return -EINVAL;
			o->max_clients_per_uid = (unsigned)v;
			break;
		case OPT_IDLE_TIMEOUT:
			if (parse_uint(optarg, "--idle-timeout", 86400, &v) < 0 || v == 0) {
				fprintf(stderr, "gpu-warmd: --idle-timeout must be 1 to 86400 s\n");
				return -EINVAL;
			}
			o->idle_timeout_s = (unsigned)v;
			break;
		case OPT_ROOT_RESERVE:
			if (parse_uint(optarg, "--root-reserve", 65536, &v) < 0)
				return -EINVAL;
			o->root_reserve = (unsigned)v;
			break;
		case OPT_MAX_OPS_PER_UID:
			if (parse_uint(optarg, "--max-ops-per-uid", 1024, &v) < 0 || v == 0) {
				fprintf(stderr, "gpu-warmd: --max-ops-per-uid must be 1 to 1024\n");
				return -EINVAL;
			}
			o->max_ops_per_uid = (unsigned)v;
			break;
		case OPT_HANDSHAKE_TIMEOUT:
		case OPT_FRAME_TIMEOUT:
			if (parse_uint(optarg, c == OPT_FRAME_TIMEOUT ? "--frame-timeout" :
				       "--handshake-timeout", 3600, &v) < 0 || v == 0) {
				fprintf(stderr, "gpu-warmd: timeouts must be 1 to 3600 s\n");
				return -EINVAL;
			}
			if (c == OPT_FRAME_TIMEOUT)
				o->frame_timeout_s = (unsigned)v;
			else
				o->handshake_timeout_s = (unsigned)v;
			break;
		case OPT_FOREGROUND:
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("gpu-warmd %s (protocol %d)\n", GW_VERSION, GW_PROTO_VERSION);
			exit(0);
		default:
			fprintf(stderr, "Try 'gpu-warmd --help'.\n");
			return -EINVAL;
		}
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
	if (r >= 0)
		r = gw_daemon_run(&d);
	gw_daemon_finish(&d);
	if (r < 0) {
		gw_err("gpu-warmd stops: %s", strerror(-r));
		return 1;
	}
	gw_notice("stopped");
	return 0;
}
