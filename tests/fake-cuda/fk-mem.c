/* SPDX-License-Identifier: MIT */
/*
 * Fake CUDA driver: device memory. Device addresses are fake (FK_VA_BASE...) and looked up in
 * tables; the bytes behind them live in host memory (anonymous mmap for cuMemAlloc, a memfd for
 * shareable cuMemCreate memory). Every function here runs with fk.lock held.
 */
#include "fk-internal.h"
#include "gw-chunksum.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GRAN ((size_t)FAKECUDA_GRANULARITY)

static unsigned char *map_anon(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void unmap(void *p, size_t size)
{
	if (p)
		munmap(p, size);
}

/* ---- fake address space ---- */

static int va_overlaps(CUdeviceptr va, size_t size)
{
	for (struct fk_alloc *a = fk.allocs; a; a = a->next)
		if (va < a->va + a->size && a->va < va + size)
			return 1;
	for (struct fk_resv *r = fk.resvs; r; r = r->next)
		if (va < r->va + r->size && r->va < va + size)
			return 1;
	return 0;
}

/* A fresh range; addresses are never reused, so stale pointers stay invalid. */
static CUresult va_take(size_t size, size_t align, CUdeviceptr hint, CUdeviceptr *ret_va)
{
	CUdeviceptr va;

	if (size > FK_VA_LIMIT - FK_VA_BASE)
		return CUDA_ERROR_OUT_OF_MEMORY;
	if (hint && hint % align == 0 && hint >= FK_VA_BASE && hint <= FK_VA_LIMIT - size &&
	    !va_overlaps(hint, size)) {
		va = hint;
	} else {
		va = (fk.va_next + align - 1) & ~(CUdeviceptr)(align - 1);
		if (va < fk.va_next || va > FK_VA_LIMIT - size)
			return CUDA_ERROR_OUT_OF_MEMORY;
	}
	if (va + size >= fk.va_next)
		fk.va_next = va + size + FK_ALLOC_ALIGN; /* a guard gap after every range */
	*ret_va = va;
	return CUDA_SUCCESS;
}

/* ---- accounting ---- */

static int phys_counts(const struct fk_phys *p)
{
	return p->origin == fk.pid && !p->saved;
}

size_t fk_used_bytes(int dev)
{
	size_t used = 0;

	for (struct fk_alloc *a = fk.allocs; a; a = a->next)
		if (a->dev == dev && a->host)
			used += a->size;
	for (struct fk_phys *p = fk.phys; p; p = p->next)
		if (p->dev == dev && phys_counts(p))
			used += p->size;
	return used;
}

static int fits(int dev, size_t size)
{
	size_t used = fk_used_bytes(dev);

	return used <= fk.cfg.mem_bytes && size <= fk.cfg.mem_bytes - used;
}

/* ---- cuMemAlloc ---- */

CUresult fk_mem_alloc(CUdeviceptr *dptr, size_t size)
{
	struct fk_alloc *a;
	size_t span;
	int dev;
	CUresult r;

	if (!dptr || size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (fk_current_dev(&dev) != CUDA_SUCCESS)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (!fits(dev, size))
		return CUDA_ERROR_OUT_OF_MEMORY;
	span = (size + FK_ALLOC_ALIGN - 1) & ~(size_t)(FK_ALLOC_ALIGN - 1);
	a = calloc(1, sizeof(*a));
	if (!a)
		return CUDA_ERROR_OUT_OF_MEMORY;
	r = va_take(span, FK_ALLOC_ALIGN, 0, &a->va);
	if (r != CUDA_SUCCESS)
		goto fail;
	a->host = map_anon(size);
	if (!a->host) {
		r = CUDA_ERROR_OUT_OF_MEMORY;
		goto fail;
	}
	a->size = size;
	a->dev = dev;
	a->next = fk.allocs;
	fk.allocs = a;
	*dptr = a->va;
	return CUDA_SUCCESS;
fail:
	free(a);
	return r;
}

static void alloc_destroy(struct fk_alloc *a)
{
	unmap(a->host, a->size);
	unmap(a->saved, a->size);
	free(a);
}

CUresult fk_mem_free(CUdeviceptr dptr)
{
	int dev;

	if (fk_current_dev(&dev) != CUDA_SUCCESS)
		return CUDA_ERROR_INVALID_CONTEXT;
	for (struct fk_alloc **p = &fk.allocs; *p; p = &(*p)->next) {
		struct fk_alloc *a = *p;

		if (a->va == dptr) {
			*p = a->next;
			alloc_destroy(a);
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_INVALID_VALUE;
}

void fk_mem_free_dev(int dev)
{
	struct fk_alloc **p = &fk.allocs;

	while (*p) {
		struct fk_alloc *a = *p;

		if (a->dev == dev) {
			*p = a->next;
			alloc_destroy(a);
		} else {
			p = &a->next;
		}
	}
}

/* ---- copies and memsets ---- */

/* The host bytes behind the first contiguous piece of [p, p + n) and that piece's length. */
static CUresult resolve(CUdeviceptr p, size_t n, int write, unsigned char **ret_host,
			size_t *ret_len)
{
	for (struct fk_alloc *a = fk.allocs; a; a = a->next) {
		if (p < a->va || p >= a->va + a->size)
			continue;
		if (n > a->va + a->size - p || !a->host)
			return CUDA_ERROR_INVALID_VALUE;
		*ret_host = a->host + (p - a->va);
		*ret_len = n;
		return CUDA_SUCCESS;
	}
	for (struct fk_resv *r = fk.resvs; r; r = r->next) {
		if (p < r->va || p >= r->va + r->size)
			continue;
		for (struct fk_map *m = r->maps; m; m = m->next) {
			unsigned need = write ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
					      : CU_MEM_ACCESS_FLAGS_PROT_READ;
			size_t off;

			if (p < m->va || p >= m->va + m->size)
				continue;
			if ((m->access & need) != need)
				return CUDA_ERROR_INVALID_VALUE;
			off = (size_t)(p - m->va);
			*ret_host = m->phys->host + m->offset + off;
			*ret_len = n < m->size - off ? n : m->size - off;
			return CUDA_SUCCESS;
		}
		return CUDA_ERROR_INVALID_VALUE; /* reserved but not mapped */
	}
	return CUDA_ERROR_INVALID_VALUE;
}

struct seg_op {
	int kind; /* 0: to device, 1: from device, 2: memset */
	const unsigned char *src;
	unsigned char *dst;
	uint32_t value;
	size_t elem;
};

static void seg_apply(const struct seg_op *op, unsigned char *dev, size_t done, size_t len)
{
	switch (op->kind) {
	case 0:
		memcpy(dev, op->src + done, len);
		break;
	case 1:
		memcpy(op->dst + done, dev, len);
		break;
	default:
		if (op->elem == 1) {
			memset(dev, (int)(op->value & 0xff), len);
		} else {
			for (size_t i = 0; i + 4 <= len; i += 4)
				memcpy(dev + i, &op->value, 4);
		}
		break;
	}
}

/* Validates the whole range first, so a failing call changes nothing. */
static CUresult for_each_seg(CUdeviceptr p, size_t n, int write, const struct seg_op *op)
{
	int dev;

	if (fk_current_dev(&dev) != CUDA_SUCCESS)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (p + n < p)
		return CUDA_ERROR_INVALID_VALUE;
	for (int pass = 0; pass < 2; pass++) {
		size_t done = 0;

		while (done < n) {
			unsigned char *h;
			size_t len;
			CUresult r = resolve(p + done, n - done, write, &h, &len);

			if (r != CUDA_SUCCESS)
				return r;
			if (pass)
				seg_apply(op, h, done, len);
			done += len;
		}
	}
	return CUDA_SUCCESS;
}

CUresult fk_copy_htod(CUdeviceptr dst, const void *src, size_t n)
{
	struct seg_op op = { .kind = 0, .src = src };

	if (!src && n)
		return CUDA_ERROR_INVALID_VALUE;
	return for_each_seg(dst, n, 1, &op);
}

CUresult fk_copy_dtoh(void *dst, CUdeviceptr src, size_t n)
{
	struct seg_op op = { .kind = 1, .dst = dst };

	if (!dst && n)
		return CUDA_ERROR_INVALID_VALUE;
	return for_each_seg(src, n, 0, &op);
}

CUresult fk_memset(CUdeviceptr dst, uint32_t value, size_t elem, size_t n)
{
	struct seg_op op = { .kind = 2, .value = value, .elem = elem };

	if (n > SIZE_MAX / elem || dst % elem)
		return CUDA_ERROR_INVALID_VALUE;
	return for_each_seg(dst, n * elem, 1, &op);
}

/* ---- page-locked host memory ---- */

CUresult fk_host_alloc(void **pp, size_t size, unsigned flags)
{
	struct fk_host *h;
	uint64_t delay_us;
	size_t span;
	int dev;

	if (!pp || size == 0 || (flags & ~0x7u) || size > ((size_t)1 << 44))
		return CUDA_ERROR_INVALID_VALUE;
	if (fk_current_dev(&dev) != CUDA_SUCCESS)
		return CUDA_ERROR_INVALID_CONTEXT;
	h = calloc(1, sizeof(*h));
	if (!h)
		return CUDA_ERROR_OUT_OF_MEMORY;
	span = (size + 4095) & ~(size_t)4095;
	h->p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h->p == MAP_FAILED) {
		free(h);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	h->size = span;
	h->next = fk.hosts;
	fk.hosts = h;
	/* pinning cost, paid "inside the driver" without holding the lock */
	delay_us = (uint64_t)fk.cfg.pin_us_per_mib * ((size + (1u << 20) - 1) >> 20);
	if (delay_us) {
		pthread_mutex_unlock(&fk.lock);
		fk_sleep_us(delay_us);
		pthread_mutex_lock(&fk.lock);
	}
	*pp = h->p;
	return CUDA_SUCCESS;
}

CUresult fk_host_free(void *p)
{
	for (struct fk_host **hp = &fk.hosts; *hp; hp = &(*hp)->next) {
		struct fk_host *h = *hp;

		if (h->p == p) {
			*hp = h->next;
			munmap(h->p, h->size);
			free(h);
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_INVALID_VALUE;
}

/* ---- virtual memory management ---- */

static CUresult prop_check(const CUmemAllocationProp *prop)
{
	if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
	    prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
		return CUDA_ERROR_INVALID_VALUE;
	if (!fk_dev_valid(prop->location.id))
		return CUDA_ERROR_INVALID_DEVICE;
	if (prop->requestedHandleTypes != CU_MEM_HANDLE_TYPE_NONE &&
	    prop->requestedHandleTypes != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		return CUDA_ERROR_NOT_SUPPORTED;
	return CUDA_SUCCESS;
}

CUresult fk_granularity(size_t *gran, const CUmemAllocationProp *prop, int option)
{
	CUresult r;

	if (!gran || (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
		      option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
		return CUDA_ERROR_INVALID_VALUE;
	r = prop_check(prop);
	if (r == CUDA_SUCCESS)
		*gran = GRAN;
	return r;
}

CUresult fk_va_reserve(CUdeviceptr *ptr, size_t size, size_t align, CUdeviceptr addr,
		       unsigned long long flags)
{
	struct fk_resv *r;
	CUresult res;

	if (!ptr || size == 0 || size % GRAN || flags || (align & (align - 1)))
		return CUDA_ERROR_INVALID_VALUE;
	if (align < GRAN)
		align = GRAN;
	r = calloc(1, sizeof(*r));
	if (!r)
		return CUDA_ERROR_OUT_OF_MEMORY;
	res = va_take(size, align, addr, &r->va);
	if (res != CUDA_SUCCESS) {
		free(r);
		return res;
	}
	r->size = size;
	r->next = fk.resvs;
	fk.resvs = r;
	*ptr = r->va;
	return CUDA_SUCCESS;
}

CUresult fk_va_free(CUdeviceptr ptr, size_t size)
{
	for (struct fk_resv **p = &fk.resvs; *p; p = &(*p)->next) {
		struct fk_resv *r = *p;

		if (r->va != ptr)
			continue;
		/* stricter than needed, to catch leaks: the range must be unmapped first */
		if (r->size != size || r->maps)
			return CUDA_ERROR_INVALID_VALUE;
		*p = r->next;
		free(r);
		return CUDA_SUCCESS;
	}
	return CUDA_ERROR_INVALID_VALUE;
}

static struct fk_phys *phys_find(CUmemGenericAllocationHandle id)
{
	for (struct fk_phys *p = fk.phys; p; p = p->next)
		if (p->id == id && !p->released)
			return p;
	return NULL;
}

static void phys_destroy(struct fk_phys *phys)
{
	for (struct fk_phys **p = &fk.phys; *p; p = &(*p)->next) {
		if (*p == phys) {
			*p = phys->next;
			break;
		}
	}
	unmap(phys->host, phys->size);
	unmap(phys->saved, phys->size);
	if (phys->fd >= 0)
		close(phys->fd);
	free(phys);
}

static void phys_add(struct fk_phys *p)
{
	p->id = fk.next_handle++;
	p->next = fk.phys;
	fk.phys = p;
}

CUresult fk_phys_create(CUmemGenericAllocationHandle *handle, size_t size,
			const CUmemAllocationProp *prop, unsigned long long flags)
{
	struct fk_phys *p;
	struct stat st;
	CUresult r;

	if (!handle || size == 0 || size % GRAN || flags)
		return CUDA_ERROR_INVALID_VALUE;
	r = prop_check(prop);
	if (r != CUDA_SUCCESS)
		return r;
	if (!fits(prop->location.id, size))
		return CUDA_ERROR_OUT_OF_MEMORY;
	p = calloc(1, sizeof(*p));
	if (!p)
		return CUDA_ERROR_OUT_OF_MEMORY;
	p->fd = -1;
	p->size = size;
	p->dev = prop->location.id;
	p->origin = fk.pid;
	if (prop->requestedHandleTypes == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) {
		char name[64];

		/* the name tells an importer who created it and where */
		snprintf(name, sizeof(name), "fakecuda:pid=%d:gpu=%d", (int)fk.pid, p->dev);
		p->fd = memfd_create(name, MFD_CLOEXEC);
		if (p->fd < 0 || ftruncate(p->fd, (off_t)size) < 0 || fstat(p->fd, &st) < 0)
			goto fail;
		p->ino = st.st_ino;
		p->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
	} else {
		p->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
			       0);
	}
	if (p->host == MAP_FAILED) {
		p->host = NULL;
		goto fail;
	}
	phys_add(p);
	*handle = p->id;
	return CUDA_SUCCESS;
fail:
	if (p->fd >= 0)
		close(p->fd);
	free(p);
	return CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult fk_phys_release(CUmemGenericAllocationHandle handle)
{
	struct fk_phys *p = phys_find(handle);

	if (!p)
		return CUDA_ERROR_INVALID_VALUE;
	p->released = 1;
	if (p->maps == 0)
		phys_destroy(p);
	return CUDA_SUCCESS;
}

CUresult fk_phys_export(void *shareable, CUmemGenericAllocationHandle handle,
			CUmemAllocationHandleType type, unsigned long long flags)
{
	struct fk_phys *p = phys_find(handle);
	int fd;

	if (!shareable || flags || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR || !p ||
	    p->fd < 0)
		return CUDA_ERROR_INVALID_VALUE;
	/* As driver 580 does (seen on the H100): a handle imported from another process cannot be
	 * exported again; its importer must keep the fd it was given if it wants to pass it on. */
	if (p->imported)
		return CUDA_ERROR_INVALID_VALUE;
	fd = fcntl(p->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return CUDA_ERROR_OPERATING_SYSTEM;
	*(int *)shareable = fd;
	return CUDA_SUCCESS;
}

CUresult fk_phys_import(CUmemGenericAllocationHandle *handle, void *os_handle,
			CUmemAllocationHandleType type)
{
	int fd = (int)(intptr_t)os_handle, origin, dev;
	char path[64], target[256];
	const char *tag;
	struct fk_phys *p;
	struct stat st;
	ssize_t n;

	if (!handle || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR || fd < 0 ||
	    fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (size_t)st.st_size % GRAN)
		return CUDA_ERROR_INVALID_VALUE;
	/* only memory exported by a fake driver: "/memfd:fakecuda:pid=N:gpu=M (deleted)" */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	target[n] = '\0';
	tag = strstr(target, "memfd:fakecuda:");
	if (!tag || sscanf(tag, "memfd:fakecuda:pid=%d:gpu=%d", &origin, &dev) != 2 || dev < 0 ||
	    dev >= FAKECUDA_MAX_GPUS)
		return CUDA_ERROR_INVALID_VALUE;
	p = calloc(1, sizeof(*p));
	if (!p)
		return CUDA_ERROR_OUT_OF_MEMORY;
	p->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (p->fd < 0) {
		free(p);
		return CUDA_ERROR_OPERATING_SYSTEM;
	}
	p->size = (size_t)st.st_size;
	p->host = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
	if (p->host == MAP_FAILED) {
		close(p->fd);
		free(p);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	p->ino = st.st_ino;
	p->dev = dev;
	p->imported = 1;
	/* importing one's own export gives memory that still belongs to oneself; count it once */
	p->origin = origin == fk.pid ? -1 : origin;
	phys_add(p);
	*handle = p->id;
	return CUDA_SUCCESS;
}

static struct fk_resv *resv_find(CUdeviceptr ptr, size_t size)
{
	for (struct fk_resv *r = fk.resvs; r; r = r->next)
		if (ptr >= r->va && ptr - r->va <= r->size && size <= r->size - (ptr - r->va))
			return r;
	return NULL;
}

CUresult fk_map(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
		unsigned long long flags)
{
	struct fk_phys *p = phys_find(handle);
	struct fk_resv *r;
	struct fk_map *m;

	if (flags || size == 0 || ptr % GRAN || size % GRAN || offset % GRAN || !p ||
	    offset > p->size || size > p->size - offset)
		return CUDA_ERROR_INVALID_VALUE;
	r = resv_find(ptr, size);
	if (!r)
		return CUDA_ERROR_INVALID_VALUE;
	for (m = r->maps; m; m = m->next)
		if (ptr < m->va + m->size && m->va < ptr + size)
			return CUDA_ERROR_ALREADY_MAPPED;
	m = calloc(1, sizeof(*m));
	if (!m)
		return CUDA_ERROR_OUT_OF_MEMORY;
	m->va = ptr;
	m->size = size;
	m->phys = p;
	m->offset = offset;
	m->access = CU_MEM_ACCESS_FLAGS_PROT_NONE;
	m->next = r->maps;
	r->maps = m;
	p->maps++;
	return CUDA_SUCCESS;
}

static void map_drop(struct fk_map *m)
{
	struct fk_phys *p = m->phys;

	free(m);
	if (--p->maps == 0 && p->released)
		phys_destroy(p);
}

CUresult fk_unmap(CUdeviceptr ptr, size_t size)
{
	struct fk_resv *r;
	struct fk_map **mp;
	int found = 0;

	if (size == 0 || ptr % GRAN || size % GRAN)
		return CUDA_ERROR_INVALID_VALUE;
	r = resv_find(ptr, size);
	if (!r)
		return CUDA_ERROR_INVALID_VALUE;
	/* only whole mappings can be unmapped */
	for (struct fk_map *m = r->maps; m; m = m->next) {
		if (!(ptr < m->va + m->size && m->va < ptr + size))
			continue;
		if (m->va < ptr || m->va + m->size > ptr + size)
			return CUDA_ERROR_INVALID_VALUE;
		found = 1;
	}
	if (!found)
		return CUDA_ERROR_INVALID_VALUE;
	mp = &r->maps;
	while (*mp) {
		struct fk_map *m = *mp;

		if (m->va >= ptr && m->va + m->size <= ptr + size) {
			*mp = m->next;
			map_drop(m);
		} else {
			mp = &m->next;
		}
	}
	return CUDA_SUCCESS;
}

CUresult fk_set_access(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
	unsigned access = CU_MEM_ACCESS_FLAGS_PROT_NONE;
	struct fk_resv *r;
	CUdeviceptr cur;

	if (!desc || count == 0 || count > 1024 || size == 0 || ptr % GRAN || size % GRAN)
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < count; i++) {
		if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE)
			return CUDA_ERROR_INVALID_VALUE;
		if (!fk_dev_valid(desc[i].location.id))
			return CUDA_ERROR_INVALID_DEVICE;
		if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
		    desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
		    desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
			return CUDA_ERROR_INVALID_VALUE;
		access |= (unsigned)desc[i].flags;
	}
	r = resv_find(ptr, size);
	if (!r)
		return CUDA_ERROR_INVALID_VALUE;
	/* the range must be covered, without holes, by whole mappings */
	for (cur = ptr; cur < ptr + size;) {
		struct fk_map *m;

		for (m = r->maps; m; m = m->next)
			if (cur >= m->va && cur < m->va + m->size)
				break;
		if (!m || m->va < ptr || m->va + m->size > ptr + size)
			return CUDA_ERROR_INVALID_VALUE;
		cur = m->va + m->size;
	}
	for (struct fk_map *m = r->maps; m; m = m->next)
		if (m->va >= ptr && m->va + m->size <= ptr + size)
			m->access = access;
	return CUDA_SUCCESS;
}

/* ---- checkpoint and restore of this process's memory ---- */

/* The phys objects whose bytes a checkpoint saves: created here, one per memfd. */
static int phys_saved_here(const struct fk_phys *p)
{
	if (p->origin != fk.pid)
		return 0;
	for (const struct fk_phys *q = fk.phys; q != p; q = q->next)
		if (p->ino && q->ino == p->ino && q->origin == fk.pid)
			return 0;
	return 1;
}

static void saved_drop_all(void)
{
	for (struct fk_alloc *a = fk.allocs; a; a = a->next) {
		unmap(a->saved, a->size);
		a->saved = NULL;
	}
	for (struct fk_phys *p = fk.phys; p; p = p->next) {
		unmap(p->saved, p->size);
		p->saved = NULL;
	}
}

int fk_mem_checkpoint(void)
{
	for (struct fk_alloc *a = fk.allocs; a; a = a->next)
		if (!(a->saved = map_anon(a->size)))
			goto nomem;
	for (struct fk_phys *p = fk.phys; p; p = p->next)
		if (phys_saved_here(p) && !(p->saved = map_anon(p->size)))
			goto nomem;

	for (struct fk_alloc *a = fk.allocs; a; a = a->next) {
		memcpy(a->saved, a->host, a->size);
		memset(a->host, FK_POISON, a->size);
		unmap(a->host, a->size);
		a->host = NULL;
	}
	for (struct fk_phys *p = fk.phys; p; p = p->next) {
		if (!p->saved)
			continue;
		memcpy(p->saved, p->host, p->size);
		memset(p->host, FK_POISON, p->size);
	}
	/* memory created by another process and mapped here cannot be restored */
	fk.trap = 0;
	for (struct fk_resv *r = fk.resvs; r; r = r->next)
		for (struct fk_map *m = r->maps; m; m = m->next)
			if (m->phys->origin != fk.pid && m->phys->origin != -1)
				fk.trap = 1;
	return CUDA_SUCCESS;
nomem:
	saved_drop_all();
	return CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult fk_mem_restore(const int *map)
{
	for (struct fk_alloc *a = fk.allocs; a; a = a->next) {
		if (!(a->host = map_anon(a->size))) {
			for (struct fk_alloc *b = fk.allocs; b != a; b = b->next) {
				unmap(b->host, b->size);
				b->host = NULL;
			}
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
	}
	for (struct fk_alloc *a = fk.allocs; a; a = a->next) {
		memcpy(a->host, a->saved, a->size);
		unmap(a->saved, a->size);
		a->saved = NULL;
		a->dev = map[a->dev];
	}
	for (struct fk_phys *p = fk.phys; p; p = p->next) {
		if (p->saved) {
			memcpy(p->host, p->saved, p->size);
			unmap(p->saved, p->size);
			p->saved = NULL;
		}
		if (p->origin == fk.pid || p->origin == -1)
			p->dev = map[p->dev];
	}
	return CUDA_SUCCESS;
}

void fk_mem_teardown(void)
{
	while (fk.allocs) {
		struct fk_alloc *a = fk.allocs;

		fk.allocs = a->next;
		alloc_destroy(a);
	}
	while (fk.resvs) {
		struct fk_resv *r = fk.resvs;

		while (r->maps) {
			struct fk_map *m = r->maps;

			r->maps = m->next;
			free(m);
		}
		fk.resvs = r->next;
		free(r);
	}
	while (fk.phys)
		phys_destroy(fk.phys);
}

/* ---- kernels: the daemon's chunk scan, run on the host ---- */

struct CUmod_st {
	int has_scan;
};

/* The one function a fake module can hold; its address is its handle. */
static struct CUfunc_st {
	int unused;
} fk_scan_function;

CUresult fk_module_load(CUmodule *module, const void *image)
{
	struct CUmod_st *m;

	if (!module || !image)
		return CUDA_ERROR_INVALID_VALUE;
	if (!strstr(image, ".entry") || !strstr(image, ".version"))
		return CUDA_ERROR_INVALID_PTX;
	m = calloc(1, sizeof(*m));
	if (!m)
		return CUDA_ERROR_OUT_OF_MEMORY;
	m->has_scan = strstr(image, ".entry gw_scan_chunks(") != NULL;
	*module = m;
	return CUDA_SUCCESS;
}

CUresult fk_module_unload(CUmodule module)
{
	if (!module)
		return CUDA_ERROR_INVALID_HANDLE;
	free(module);
	return CUDA_SUCCESS;
}

CUresult fk_module_get_function(CUfunction *func, CUmodule module, const char *name)
{
	if (!func || !module || !name)
		return CUDA_ERROR_INVALID_VALUE;
	if (!module->has_scan || strcmp(name, "gw_scan_chunks") != 0)
		return CUDA_ERROR_NOT_FOUND;
	*func = &fk_scan_function;
	return CUDA_SUCCESS;
}

/* gw_scan_chunks(words, nwords, chunk_words, out): one block per chunk (common/gw-chunksum.h). */
CUresult fk_launch(CUfunction f, unsigned grid_x, unsigned grid_y, unsigned grid_z,
		   unsigned block_x, void **params)
{
	CUdeviceptr words, out;
	uint64_t nwords, chunk_words, blocks = (uint64_t)grid_x * grid_y * grid_z;
	unsigned char *buf;
	CUresult r = CUDA_SUCCESS;

	if (f != &fk_scan_function || !params || block_x == 0 || block_x > 1024)
		return CUDA_ERROR_INVALID_VALUE;
	memcpy(&words, params[0], sizeof(words));
	memcpy(&nwords, params[1], sizeof(nwords));
	memcpy(&chunk_words, params[2], sizeof(chunk_words));
	memcpy(&out, params[3], sizeof(out));
	if (chunk_words == 0 || chunk_words > ((uint64_t)1 << 27))
		return CUDA_ERROR_INVALID_VALUE;
	buf = malloc(chunk_words * 8);
	if (!buf)
		return CUDA_ERROR_OUT_OF_MEMORY;
	for (uint64_t c = 0; c < blocks && r == CUDA_SUCCESS; c++) {
		uint64_t first = c * chunk_words, n;
		struct gw_chunk_scan res;

		if (first >= nwords)
			continue;
		n = nwords - first < chunk_words ? nwords - first : chunk_words;
		r = fk_copy_dtoh(buf, words + first * 8, n * 8);
		if (r != CUDA_SUCCESS)
			break;
		gw_chunksum_words((const uint64_t *)buf, n, first, &res);
		r = fk_copy_htod(out + c * sizeof(res), &res, sizeof(res));
	}
	free(buf);
	return r == CUDA_SUCCESS ? r : CUDA_ERROR_ILLEGAL_ADDRESS;
}
