/* SPDX-License-Identifier: MIT */
/*
 * dlsym, interposed. A lookup on an explicit handle (dlopen of libcuda and dlsym on it: the CUDA
 * runtime, PyTorch, gw-cuda) goes through shim_dlsym_handle(), which hands out the shim's
 * wrappers for the driver entry points it covers. RTLD_DEFAULT and RTLD_NEXT lookups depend on
 * the caller's object, so on x86-64 and aarch64 they tail-jump to glibc's dlsym with the caller's
 * return address intact; the shim's own exports already answer RTLD_DEFAULT lookups of the
 * covered names. On other architectures those two resolve as if the shim had asked.
 */
#include "shim.h"

#include <dlfcn.h>

void *(*shim_real_dlsym)(void *handle, const char *name);

void shim_dlsym_init(void)
{
	void *(*fn)(void *, const char *);

	if (__atomic_load_n(&shim_real_dlsym, __ATOMIC_ACQUIRE))
		return;
	fn = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
	if (!fn)
		fn = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
	if (!fn)
		fn = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.17");
	__atomic_store_n(&shim_real_dlsym, fn, __ATOMIC_RELEASE);
}

void *shim_dlsym_handle(void *handle, const char *name) SHIM_HIDDEN __attribute__((used));
void *shim_dlsym_handle(void *handle, const char *name)
{
	void *fn;

	shim_init();
	if (!shim_real_dlsym)
		return NULL;
	fn = shim_real_dlsym(handle, name);
	if (!fn || !name || name[0] != 'c' || name[1] != 'u' || shim_cfg.disabled)
		return fn;
	return shim_entry_for_dlsym(name, fn);
}

#if defined(__x86_64__)
/* handle in rdi: 0 (RTLD_DEFAULT) or -1 (RTLD_NEXT) jump straight to glibc */
__asm__(".text\n"
	".globl dlsym\n"
	".type dlsym, @function\n"
	".p2align 4\n"
	"dlsym:\n"
	"	testq %rdi, %rdi\n"
	"	je 1f\n"
	"	cmpq $-1, %rdi\n"
	"	je 1f\n"
	"	jmp shim_dlsym_handle\n"
	"1:	movq shim_real_dlsym(%rip), %rax\n"
	"	testq %rax, %rax\n"
	"	je 2f\n"
	"	jmp *%rax\n"
	"2:	pushq %rdi\n"
	"	pushq %rsi\n"
	"	subq $8, %rsp\n"
	"	call shim_dlsym_init\n"
	"	addq $8, %rsp\n"
	"	popq %rsi\n"
	"	popq %rdi\n"
	"	movq shim_real_dlsym(%rip), %rax\n"
	"	testq %rax, %rax\n"
	"	je 3f\n"
	"	jmp *%rax\n"
	"3:	xorl %eax, %eax\n"
	"	ret\n"
	".size dlsym, .-dlsym\n");
#elif defined(__aarch64__)
__asm__(".text\n"
	".globl dlsym\n"
	".type dlsym, %function\n"
	".p2align 4\n"
	"dlsym:\n"
	"	cbz x0, 1f\n"
	"	cmn x0, #1\n"
	"	b.eq 1f\n"
	"	b shim_dlsym_handle\n"
	"1:	adrp x16, shim_real_dlsym\n"
	"	ldr x16, [x16, :lo12:shim_real_dlsym]\n"
	"	cbz x16, 2f\n"
	"	br x16\n"
	"2:	stp x29, x30, [sp, #-32]!\n"
	"	mov x29, sp\n"
	"	stp x0, x1, [sp, #16]\n"
	"	bl shim_dlsym_init\n"
	"	ldp x0, x1, [sp, #16]\n"
	"	ldp x29, x30, [sp], #32\n"
	"	adrp x16, shim_real_dlsym\n"
	"	ldr x16, [x16, :lo12:shim_real_dlsym]\n"
	"	cbz x16, 3f\n"
	"	br x16\n"
	"3:	mov x0, #0\n"
	"	ret\n"
	".size dlsym, .-dlsym\n");
#else
SHIM_EXPORT void *dlsym(void *handle, const char *name)
{
	if (handle == RTLD_DEFAULT || handle == RTLD_NEXT) {
		shim_dlsym_init();
		return shim_real_dlsym ? shim_real_dlsym(handle, name) : NULL;
	}
	return shim_dlsym_handle(handle, name);
}
#endif
