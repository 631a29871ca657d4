/* SPDX-License-Identifier: MIT */
/* warmctl: the command table and every help text. docs/warmctl.md says the same at length. */
#include "warmctl.h"

#include <stdio.h>
#include <string.h>

#define HELP_GPU_MAP                                                                              \
	"  --gpu GPU        restore onto GPU (index, UUID or PCI bus id)\n"                      \
	"  --gpu-map OLD=NEW[,OLD=NEW...]\n"                                                      \
	"                   restore onto other GPUs: each GPU the process used (OLD UUID) onto\n"  \
	"                   the GPU named by NEW (UUID); may be repeated, at most 64 pairs\n"

#define HELP_REPLY_TIMEOUT(def)                                                                   \
	"  --timeout S      how long to wait for the daemon's reply, in seconds (default " def ")\n"

#define HELP_PERM_PID                                                                             \
	"Needs root or the uid that owns PID (its real, effective and saved uid).\n"

#define SYNOPSIS_status "status [--wide]"
#define SUMMARY_status "show the daemon, GPUs, shimmed processes, image pool and leases"
static const char help_status[] =
	"Show the daemon (version, protocol, pid, uptime, socket, clients, staging\n"
	"size), the CUDA driver (library, version, checkpoint and VMM API), the image\n"
	"pool, one row per GPU (index, name, UUID, PCI bus id, memory used/total, state,\n"
	"context, pinned staging memory and the time pinning it took, leases,\n"
	"operations in flight), the processes under the shim (pid, owner uid, GPUs,\n"
	"VRAM, ranges, state, image) and the active leases, then the operation\n"
	"counters. Tables fit the terminal's width ($COLUMNS, else the terminal's own):\n"
	"columns that do not fit are left out, and a line says which.\n"
	"Anyone who can connect to the socket may ask.\n"
	"\nOptions:\n"
	"  --wide           every column, however wide the table gets\n"
	HELP_REPLY_TIMEOUT("30");

#define SYNOPSIS_drain "drain [GPU...] [--timeout S] [--no-wait]"
#define SUMMARY_drain "stop using GPUs and release their context and pinned memory"
static const char help_drain[] =
	"Drain the named GPUs, all of them when none is named: the daemon refuses\n"
	"new leases and operations on them, waits for the operations in flight, then\n"
	"releases the warm context and the pinned staging memory (before a driver\n"
	"update, a reset or a MIG change). Prints each GPU's new state. Idempotent.\n"
	"Needs root.\n"
	"\nOptions:\n"
	"  --timeout S      how long the daemon waits for the GPUs to drain, in seconds\n"
	"                   (default 30); when they do not drain in time warmctl exits 1\n"
	"                   with gpuwarm.Error.Timeout and the GPUs stay draining\n"
	"  --no-wait        do not wait: the reply comes as soon as draining has started\n";

#define SYNOPSIS_undrain "undrain [GPU...]"
#define SUMMARY_undrain "make drained GPUs usable again"
static const char help_undrain[] =
	"Undrain the named GPUs, all of them when none is named: the daemon creates\n"
	"the context again and pins the staging memory, and replies when that is done.\n"
	"Prints each GPU's new state. Idempotent. Needs root.\n"
	"\nOptions:\n" HELP_REPLY_TIMEOUT("300");

#define SYNOPSIS_suspend \
	"suspend PID [--timeout S] [--image FILE [--segments N]] [--dense] [--chunk-kib N]"
#define SUMMARY_suspend "lock and checkpoint a CUDA process (frees its GPU memory)"
static const char help_suspend[] =
	"Lock the CUDA process PID (its running GPU work completes, new work blocks)\n"
	"and checkpoint its GPU state, through the daemon. Prints the total time and\n"
	"the time of each step.\n"
	"A process started under the shim (LD_PRELOAD=libgpuwarm-shim.so) takes the\n"
	"fast path: the daemon copies its VRAM out at PCIe speed, leaving all-zero\n"
	"chunks out, into its pinned memory or, with --image, into a file. Without the\n"
	"shim the driver keeps the VRAM in the process's host memory.\n" HELP_PERM_PID
	"\nOptions:\n"
	"  --timeout S      how long the lock may wait for the process's GPU work, in\n"
	"                   seconds (default: the daemon's, 10)\n"
	"  --image FILE     write the VRAM image to FILE and its data to FILE.seg-0 ..\n"
	"                   FILE.seg-<N-1>, none of which may exist (written as\n"
	"                   .partial files, renamed when complete); fast path only\n"
	"  --segments N     split the image's data over N segment files, written and\n"
	"                   read in parallel (1..16, default 8; 1: one file, FILE only)\n"
	"  --dense          copy every chunk, zero or not (for comparisons)\n"
	"  --chunk-kib N    image chunk size (a power of two; default: the daemon's)\n";

#define SYNOPSIS_resume "resume PID [--gpu GPU] [--gpu-map OLD=NEW[,OLD=NEW...]] [--image FILE]"
#define SUMMARY_resume "restore and unlock a suspended CUDA process"
static const char help_resume[] =
	"Restore the GPU state of the suspended process PID and unlock it, through the\n"
	"daemon, so it runs again. Prints the total time and the time of each step.\n"
	"The daemon checks every chunk of a fast-path image against its checksum on\n"
	"the GPU before it touches the process.\n"
	HELP_PERM_PID
	"\nOptions:\n" HELP_GPU_MAP
	"  --image FILE     restore the VRAM from this image file (written by\n"
	"                   `suspend --image`) and the segment files its header names\n"
	"                   (FILE.seg-0 ...); fast path only\n"
	HELP_REPLY_TIMEOUT("300");

#define SYNOPSIS_inspect "inspect FILE|DIR|ARCHIVE [--verify]"
#define SUMMARY_inspect "show what a VRAM image, checkpoint directory or exported archive holds"
static const char help_inspect[] =
	"Show what a VRAM image file holds, or every image in a directory (a CRIU or\n"
	"podman checkpoint directory): its ranges and GPUs, how much is data and how\n"
	"much all-zero chunks, the CRIU image's own size next to it, and the restore\n"
	"time predicted from the link speeds the daemon measured last, and its segment\n"
	"files (FILE.seg-N) with their sizes. Reads files only; needs no daemon.\n"
	"An exported checkpoint (`podman container checkpoint --export`, tar or\n"
	"tar.gz) is read once from front to back: CRIU's processes and page images,\n"
	"the plugin's records, the VRAM images and podman's files, with their sizes.\n"
	"\nOptions:\n"
	"  --verify         read every data chunk (from the segment files too) and\n"
	"                   check it against its checksum (not for archives)\n";

#define SYNOPSIS_images "images [list] | images drop ID|--all | images load FILE"
#define SUMMARY_images "list, drop or preload the daemon's RAM cache of image files"
#define help_images wc_help_images /* warmctl-images.c */

#define SYNOPSIS_cdi "cdi [--output FILE] [--shim PATH] [--socket-dir DIR]"
#define SUMMARY_cdi "print the CDI spec that gives a container the shim (podman --device)"
static const char help_cdi[] =
	"Print a CDI (Container Device Interface) spec that gives a container the shim\n"
	"with one flag, `podman run --device gpu-warmd.dev/gpuwarm=shim`: the shim\n"
	"library and the libcjson it needs bind-mounted read-only at the host's paths,\n"
	"the daemon's socket directory bind-mounted, LD_PRELOAD and GPUWARM_SOCKET set.\n"
	"The spec goes to stdout, whatever --json says, or into FILE. podman reads\n"
	"specs from /etc/cdi and /var/run/cdi; the package installs one into /etc/cdi.\n"
	"\nOptions:\n"
	"  --output FILE    write the spec to FILE (replaced atomically), e.g.\n"
	"                   /var/run/cdi/gpu-warmd.json\n"
	"  --shim PATH      the shim library (default: where it is installed)\n"
	"  --socket-dir DIR the daemon's socket directory (default /run/gpu-warmd)\n";

#define SYNOPSIS_state "state PID"
#define SUMMARY_state "show a process's checkpoint state and restore thread"
static const char help_state[] =
	"Print the CUDA checkpoint state of PID (running, locked, checkpointed or\n"
	"failed) and the id of its CUDA restore thread.\n" HELP_PERM_PID
	"\nOptions:\n" HELP_REPLY_TIMEOUT("30");

#define SYNOPSIS_lock "lock PID [--timeout S]"
#define SUMMARY_lock "step 1 of suspend: lock a process's CUDA work"
static const char help_lock[] =
	"Lock the CUDA process PID: its running GPU work completes and new work\n"
	"blocks until unlock. The first step of suspend.\n" HELP_PERM_PID
	"\nOptions:\n"
	"  --timeout S      how long the lock may wait for the process's GPU work, in\n"
	"                   seconds (default: the daemon's, 10)\n";

#define SYNOPSIS_checkpoint "checkpoint PID"
#define SUMMARY_checkpoint "step 2 of suspend: checkpoint a locked process"
static const char help_checkpoint[] =
	"Checkpoint the GPU state of the locked process PID into host memory and free\n"
	"its GPU memory. The second step of suspend.\n" HELP_PERM_PID
	"\nOptions:\n" HELP_REPLY_TIMEOUT("300");

#define SYNOPSIS_restore "restore PID [--gpu GPU] [--gpu-map OLD=NEW[,OLD=NEW...]]"
#define SUMMARY_restore "step 1 of resume: restore a checkpointed process (stays locked)"
static const char help_restore[] =
	"Restore the GPU state of the checkpointed process PID; it stays locked until\n"
	"unlock. The first step of resume.\n" HELP_PERM_PID
	"\nOptions:\n" HELP_GPU_MAP HELP_REPLY_TIMEOUT("300");

#define SYNOPSIS_unlock "unlock PID"
#define SUMMARY_unlock "step 2 of resume: let a locked process run again"
static const char help_unlock[] =
	"Unlock the locked process PID so its CUDA calls proceed. The last step of\n"
	"resume.\n" HELP_PERM_PID
	"\nOptions:\n" HELP_REPLY_TIMEOUT("300");

#define SYNOPSIS_lease "lease [--gpu GPU | --min-free-mib N] [--hold]"
#define SUMMARY_lease "acquire a GPU lease and print it"
static const char help_lease[] =
	"Acquire a lease on a ready GPU (any; the one named by --gpu; or one with at\n"
	"least N MiB free) and print it. A lease lasts as long as its connection:\n"
	"without --hold warmctl exits and the lease ends with it.\n"
	"\nOptions:\n"
	"  --gpu GPU        lease this GPU (index, UUID or PCI bus id)\n"
	"  --min-free-mib N lease a GPU with at least N MiB of free memory\n"
	"  --hold           keep the connection, and so the lease, until SIGINT or\n"
	"                   SIGTERM or end of file on stdin, then release it and exit 0;\n"
	"                   if the daemon closes the connection first, exit 3\n"
	HELP_REPLY_TIMEOUT("30");

#define SYNOPSIS_version "version"
#define SUMMARY_version "show warmctl's version and the daemon's"
static const char help_version[] =
	"Print warmctl's version and, when the daemon is reachable, its version (the\n"
	"server string of its hello). The daemon's is null (JSON) or \"not reachable\"\n"
	"(text) when it cannot be reached; the exit status is 0 either way.\n"
	"\nOptions:\n" HELP_REPLY_TIMEOUT("30");

#define SYNOPSIS_check "check"
#define SUMMARY_check "check the CRIU set-up: criu, its plugins, which one handles CUDA"
static const char help_check[] =
	"Check the host's CRIU set-up: the criu found in PATH and its version, the\n"
	"directory criu loads plugins from ($CRIU_LIBS_DIR, else /usr/lib/criu), the\n"
	"plugins there in criu's load order, whether gpuwarm_plugin.so is the one that\n"
	"will handle CUDA processes (criu asks plugins in load order; CRIU's own\n"
	"cuda_plugin.so answers first unless it is absent, disabled or read later), and\n"
	"whether gpu-warmd answers. Exit status 0 whatever it finds.\n"
	"\nOptions:\n" HELP_REPLY_TIMEOUT("30");

#define SYNOPSIS_metrics "metrics"
#define SUMMARY_metrics "print the daemon's state as Prometheus metrics"
static const char help_metrics[] =
	"Print the daemon's state as Prometheus text exposition: build info, uptime,\n"
	"clients, leases, image pool, per GPU (labels gpu, UUID, pci_bus_id, modelName as\n"
	"DCGM's exporter) memory, pinned staging bytes, leases, operations in flight and\n"
	"drain state; operations by kind and result, their duration histograms and the\n"
	"VRAM bytes the fast path moved. Always text, whatever --json says.\n"
	"\nOptions:\n" HELP_REPLY_TIMEOUT("30");

/* One command: its name, what it takes, how long its reply may take; its words are
 * SYNOPSIS_NAME, SUMMARY_NAME (its line in `warmctl --help`) and help_NAME (the rest of
 * `warmctl NAME --help`), and what runs it is wc_cmd_NAME. */
#define COMMAND(id, pos, timeout_ms, opts)                                                        \
	{                                                                                         \
		.name = #id, .synopsis = SYNOPSIS_##id, .summary = SUMMARY_##id,                  \
		.help = help_##id, .options = opts, .positional = pos,                            \
		.default_timeout_ms = timeout_ms, .run = wc_cmd_##id,                             \
	}

const struct wc_command wc_commands[] = {
	COMMAND(status, WC_POS_NONE, WC_DEFAULT_TIMEOUT_MS, WC_OPT_WIDE),
	COMMAND(drain, WC_POS_GPUS, WC_SLOW_TIMEOUT_MS, WC_OPT_OP_TIMEOUT | WC_OPT_NO_WAIT),
	COMMAND(undrain, WC_POS_GPUS, WC_SLOW_TIMEOUT_MS, 0),
	COMMAND(suspend, WC_POS_PID, WC_SLOW_TIMEOUT_MS,
		WC_OPT_OP_TIMEOUT | WC_OPT_IMAGE | WC_OPT_DENSE),
	COMMAND(resume, WC_POS_PID, WC_SLOW_TIMEOUT_MS, WC_OPT_GPU | WC_OPT_GPU_MAP | WC_OPT_IMAGE),
	COMMAND(inspect, WC_POS_PATH, 0, WC_OPT_VERIFY),
	COMMAND(images, WC_POS_WORDS, WC_SLOW_TIMEOUT_MS, WC_OPT_ALL),
	COMMAND(cdi, WC_POS_NONE, 0, WC_OPT_CDI),
	COMMAND(state, WC_POS_PID, WC_DEFAULT_TIMEOUT_MS, 0),
	COMMAND(lock, WC_POS_PID, WC_SLOW_TIMEOUT_MS, WC_OPT_OP_TIMEOUT),
	COMMAND(checkpoint, WC_POS_PID, WC_SLOW_TIMEOUT_MS, 0),
	COMMAND(restore, WC_POS_PID, WC_SLOW_TIMEOUT_MS, WC_OPT_GPU | WC_OPT_GPU_MAP),
	COMMAND(unlock, WC_POS_PID, WC_SLOW_TIMEOUT_MS, 0),
	COMMAND(lease, WC_POS_NONE, WC_DEFAULT_TIMEOUT_MS,
		WC_OPT_GPU | WC_OPT_MIN_FREE | WC_OPT_HOLD),
	COMMAND(metrics, WC_POS_NONE, WC_DEFAULT_TIMEOUT_MS, 0),
	COMMAND(check, WC_POS_NONE, WC_DEFAULT_TIMEOUT_MS, 0),
	COMMAND(version, WC_POS_NONE, WC_DEFAULT_TIMEOUT_MS, 0),
	{ .name = NULL },
};

const struct wc_command *wc_command_find(const char *name)
{
	for (const struct wc_command *c = wc_commands; c->name; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

void wc_print_main_help(void)
{
	printf("Usage: warmctl [--socket PATH] [--json|--human] [--timeout SEC] COMMAND [ARGS]\n"
	       "\n"
	       "Control gpu-warmd, the daemon that keeps CUDA contexts warm and checkpoints and\n"
	       "restores CUDA processes.\n"
	       "\n"
	       "Commands:\n");
	for (const struct wc_command *c = wc_commands; c->name; c++)
		printf("  %-12s %s\n", c->name, c->summary);
	printf("  %-12s %s\n", "help",
	       "this text; `warmctl help COMMAND` = `warmctl COMMAND --help`");
	printf("\n"
	       "Options (also accepted after COMMAND):\n"
	       "  --socket PATH    the daemon's socket (default: $" GW_SOCKET_ENV ", else\n"
	       "                   " GW_DEFAULT_SOCKET ")\n"
	       "  --json           print one JSON object on stdout (the default when stdout is\n"
	       "                   not a terminal)\n"
	       "  --human          print text (the default on a terminal)\n"
	       "  --timeout SEC    how long to wait for the daemon's reply (default 30 s;\n"
	       "                   300 s for drain, undrain, suspend, resume, lock, checkpoint,\n"
	       "                   restore and unlock, raised to the command's own --timeout\n"
	       "                   + 30 s when that is longer); after drain, suspend or lock,\n"
	       "                   --timeout is that command's own option\n"
	       "  -h, --help       this text; `warmctl COMMAND --help` describes one command\n"
	       "  -V, --version    print warmctl's version and exit (`warmctl version` adds the\n"
	       "                   daemon's)\n"
	       "\n"
	       "GPU: an index (0), a UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) or a PCI\n"
	       "bus id (0000:3b:00.0 or 3b:00.0), as nvidia-smi shows them. PID: 1..%d.\n"
	       "\n"
	       "Exit status:\n"
	       "  0  success\n"
	       "  1  the daemon refused the request or the operation failed\n"
	       "  2  usage error (nothing was sent)\n"
	       "  3  the daemon is unreachable: no socket, connection refused or closed,\n"
	       "     timeout, malformed reply\n"
	       "  4  permission denied: the socket refused us (group), or the daemon did\n"
	       "     (root, or the uid that owns the PID, is needed)\n"
	       "  5  protocol version mismatch between warmctl and gpu-warmd\n"
	       "\n"
	       "See warmctl(1) for the output formats.\n", WC_PID_MAX);
}

void wc_print_command_help(const struct wc_command *cmd)
{
	printf("Usage: warmctl %s\n\n%s", cmd->synopsis, cmd->help);
	printf("  --json, --human, --socket PATH, -h/--help: as in `warmctl --help`\n"
	       "\nExit status: 0 ok, 1 refused or failed, 2 usage, 3 daemon unreachable,\n"
	       "4 permission denied, 5 protocol version mismatch.\n");
}
