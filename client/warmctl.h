/* SPDX-License-Identifier: MIT */
/*
 * warmctl internals: the context a command runs in, its parsed arguments, the command table,
 * and the helpers shared by the command files (arguments, connection, output).
 */
#ifndef WARMCTL_H
#define WARMCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "gw-client.h"

#ifndef GW_VERSION
#define GW_VERSION "0.0.0"
#endif

enum wc_exit {
	WC_EXIT_OK = 0,
	WC_EXIT_FAILED = 1,      /* the daemon refused or the operation failed */
	WC_EXIT_USAGE = 2,
	WC_EXIT_UNREACHABLE = 3, /* no socket, refused, closed, timeout, garbage */
	WC_EXIT_PERMISSION = 4,  /* socket EACCES or gpuwarm.Error.PermissionDenied */
	WC_EXIT_VERSION = 5,     /* protocol version mismatch */
};

#define WC_PID_MAX GW_PID_MAX
#define WC_MAX_GPUS 64          /* GPU selectors on one command line */
#define WC_MAX_GPU_PAIRS 64
#define WC_GPU_SELECTOR_MAX 48  /* a canonical UUID is 40 chars */
#define WC_TIMEOUT_MAX_S 86400  /* one day */
#define WC_DEFAULT_TIMEOUT_MS 30000
#define WC_SLOW_TIMEOUT_MS 300000
#define WC_TIMEOUT_MARGIN_MS 30000
#define WC_CONNECT_TIMEOUT_MS 30000

/* Options a command accepts, besides --help, --json, --human and --socket. */
enum {
	WC_OPT_TIMEOUT = 1 << 0,   /* --timeout S is the reply timeout */
	WC_OPT_OP_TIMEOUT = 1 << 1, /* --timeout S is the operation's own timeout */
	WC_OPT_NO_WAIT = 1 << 2,
	WC_OPT_GPU = 1 << 3,
	WC_OPT_GPU_MAP = 1 << 4,
	WC_OPT_MIN_FREE = 1 << 5,
	WC_OPT_HOLD = 1 << 6,
	WC_OPT_IMAGE = 1 << 7,  /* --image FILE */
	WC_OPT_DENSE = 1 << 8,  /* --dense, --chunk-kib N */
	WC_OPT_VERIFY = 1 << 9, /* --verify */
	WC_OPT_WIDE = 1 << 10,  /* --wide */
	WC_OPT_CDI = 1 << 11,   /* --output FILE, --shim PATH, --socket-dir DIR */
	WC_OPT_ALL = 1 << 12,   /* --all */
};

/* Segment files of an image written by `suspend --image` (docs/image-format.md). */
#define WC_DEFAULT_SEGMENTS 8

/* Positional arguments a command takes. */
enum wc_positional {
	WC_POS_NONE,
	WC_POS_PID,  /* exactly one */
	WC_POS_GPUS, /* zero or more GPU selectors */
	WC_POS_PATH, /* exactly one file or directory */
	WC_POS_WORDS, /* up to WC_MAX_WORDS words, the command reads them (images) */
};

#define WC_MAX_WORDS 2

struct wc_ctx;
struct wc_args;

struct wc_command {
	const char *name;
	const char *synopsis; /* "suspend PID [--timeout S]" */
	const char *summary;  /* one line for `warmctl --help` */
	const char *help;     /* the rest of `warmctl COMMAND --help` */
	unsigned options;     /* WC_OPT_* */
	enum wc_positional positional;
	int default_timeout_ms; /* how long to wait for the reply */
	int (*run)(struct wc_ctx *ctx, const struct wc_args *args);
};

struct wc_gpu_pair {
	char old_uuid[WC_GPU_SELECTOR_MAX];
	char new_uuid[WC_GPU_SELECTOR_MAX];
};

struct wc_args {
	long pid;
	char gpus[WC_MAX_GPUS][WC_GPU_SELECTOR_MAX];
	size_t ngpus;
	int op_timeout_ms;  /* 0: not given */
	bool no_wait;
	char gpu[WC_GPU_SELECTOR_MAX]; /* "" when not given */
	struct wc_gpu_pair pairs[WC_MAX_GPU_PAIRS];
	size_t npairs;
	uint64_t min_free_mib;
	bool has_min_free;
	bool hold;
	const char *image; /* --image FILE, NULL when not given */
	bool dense;
	uint64_t chunk_kib; /* 0: the daemon's */
	uint64_t segments;  /* --segments N; 0: not given (WC_DEFAULT_SEGMENTS) */
	bool verify;
	bool wide;
	const char *path; /* WC_POS_PATH */
	const char *cdi_output, *cdi_shim, *cdi_socket_dir; /* NULL when not given */
	bool all;         /* --all */
	const char *words[WC_MAX_WORDS]; /* WC_POS_WORDS */
	size_t nwords;
};

struct wc_ctx {
	const char *socket_path;  /* resolved: --socket, $GPUWARM_SOCKET, default */
	bool json;
	int reply_timeout_ms;     /* 0: the command's default */
	int used_timeout_ms;      /* the reply timeout of the last call, for messages */
	const struct wc_command *cmd;
	struct gw_client *client;
	/* Progress messages of the next call: shown on a terminal, asked for only then. */
	gw_client_progress_fn progress_fn;
	void *progress_data;
};

/* warmctl-commands.c */
extern const struct wc_command wc_commands[];
const struct wc_command *wc_command_find(const char *name);
void wc_print_main_help(void);
void wc_print_command_help(const struct wc_command *cmd);

/* warmctl-args.c: parsers return 0 or -EINVAL and leave ret_* untouched on failure. */
int wc_parse_pid(const char *text, long *ret_pid);
int wc_parse_seconds(const char *text, int *ret_ms);
int wc_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *ret);
/* An index, UUID or PCI bus id, written back in canonical form. */
int wc_parse_gpu(const char *text, char ret_selector[WC_GPU_SELECTOR_MAX]);
/* OLD=NEW[,OLD=NEW...] of UUIDs, appended to pairs[*n..max). */
int wc_parse_gpu_map(const char *text, struct wc_gpu_pair *pairs, size_t max, size_t *n,
		     char *why, size_t whylen);
/* Parse the options before COMMAND (getopt's optind then points at it). Returns -1 when
 * parsing succeeded, else the exit code to leave with (0 after --help or --version). */
int wc_parse_global_args(struct wc_ctx *ctx, int argc, char **argv);
/* Parse a command's options and operands (argv[0] is the command name). Returns -1 when
 * parsing succeeded, else the exit code to leave with (0 after --help). */
int wc_parse_command_args(struct wc_ctx *ctx, int argc, char **argv, struct wc_args *ret_args);
int wc_usage_error(const struct wc_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define WC_SECONDS_FORM "expected seconds > 0 (at most %d)"

/* warmctl-conn.c */
int wc_exit_code(int r, const struct gw_client_error *err);
/* Connect (if not yet) and make one call. what: "suspend pid 123". Returns an exit code; on
 * WC_EXIT_OK *ret_result is owned by the caller. */
int wc_call(struct wc_ctx *ctx, const char *method, const cJSON *params, const char *what,
	    cJSON **ret_result);
/* The same, sending fds with the request. */
int wc_call_fds(struct wc_ctx *ctx, const char *method, const cJSON *params, const int *fds,
		unsigned nfds, const char *what, cJSON **ret_result);
int wc_connect(struct wc_ctx *ctx, struct gw_client_error *err);
/* Print a failure to stderr (and, in JSON mode, stdout); returns its exit code. */
int wc_report(struct wc_ctx *ctx, const char *what, int r, const struct gw_client_error *err);
void wc_disconnect(struct wc_ctx *ctx);

/* warmctl-process.c */
/* Open the image file at path for reading, and the segment files its header names, into fds
 * (room for 1 + GW_IMAGE_MAX_SEGMENTS); *ret_n: how many. An exit code (WC_EXIT_OK). */
int wc_image_open_read(struct wc_ctx *ctx, const char *path, int *fds, unsigned *ret_n);

/* warmctl-output.c */
/* Print {"version":1,"command":...,"result":result}; does not take result. Returns an exit code. */
int wc_print_json_result(const struct wc_ctx *ctx, const cJSON *result);
/* A failure warmctl found itself (a file it cannot use): "warmctl: MESSAGE" on stderr and, in
 * JSON mode, an error document named "warmctl.Error.Image" on stdout. Returns WC_EXIT_FAILED. */
int wc_image_error(const struct wc_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void wc_print_json_error(const struct wc_ctx *ctx, const char *name, const char *message,
			 int cuda_error, const char *hint);
/* Members of untrusted objects as printable text: "-" when absent or of another type. */
const char *wc_str(const cJSON *obj, const char *key, char *buf, size_t len);
const char *wc_num(const cJSON *obj, const char *key, int decimals, char *buf, size_t len);
bool wc_get_double(const cJSON *obj, const char *key, double *ret);

struct wc_table;
struct wc_table *wc_table_new(unsigned ncols);
/* Add a row of ncols cells (copied). Returns 0 or -ENOMEM. */
int wc_table_add(struct wc_table *t, const char *const *cells);
void wc_table_print(const struct wc_table *t, const char *indent);
/* Print within max_width columns (0: no limit): columns with a min_width above 0 are shortened
 * to it first (their cells end in "~"), then columns are left out, highest priority number
 * first (0: never); their headers (row 0) go to left_out, comma-separated. */
void wc_table_print_fit(const struct wc_table *t, const char *indent, size_t max_width,
			const unsigned *priority, const size_t *min_width, char *left_out,
			size_t left_out_len);
/* "first" then text's words, wrapped before max_width (0: never) onto lines starting indent. */
void wc_print_wrapped(const char *first, const char *indent, const char *text, size_t max_width);
/* The terminal's width: $COLUMNS, else TIOCGWINSZ on stdout, else 80. */
size_t wc_terminal_width(void);
void wc_table_free(struct wc_table *t);

/* The command implementations. */
int wc_cmd_status(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_drain(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_undrain(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_lease(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_version(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_check(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_metrics(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_suspend(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_resume(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_state(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_lock(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_checkpoint(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_restore(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_unlock(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_inspect(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_cdi(struct wc_ctx *ctx, const struct wc_args *args);
int wc_cmd_images(struct wc_ctx *ctx, const struct wc_args *args); /* warmctl-images.c */
extern const char wc_help_images[];

#endif
