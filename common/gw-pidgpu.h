/* SPDX-License-Identifier: MIT */
/*
 * Which NVIDIA GPUs a process has open, from /proc: its fds that point at /dev/nvidia<minor>,
 * and the driver's /proc/driver/nvidia/gpus/<pci>/information "Device Minor" lines. Used to know
 * the GPU a suspended process came from, so it can be restored onto another one.
 */
#ifndef GW_PIDGPU_H
#define GW_PIDGPU_H

#include <stddef.h>
#include <sys/types.h>

#define GW_PIDGPU_MAX 64

/*
 * Fill pci_ids (capacity max, each GW_PIDGPU_PCI_LEN bytes, lower case "0000:3b:00.0") with the
 * GPUs pid has open. proc_root is "/proc" except in tests. Returns the count (0 when the driver's
 * /proc files are absent) or a negative errno (-ESRCH: no such process).
 */
#define GW_PIDGPU_PCI_LEN 32
int gw_pid_gpus(const char *proc_root, pid_t pid, char (*pci_ids)[GW_PIDGPU_PCI_LEN],
		unsigned max);

#endif
