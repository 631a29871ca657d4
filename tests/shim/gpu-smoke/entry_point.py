# cudaGetDriverEntryPoint(ByVersion) under the shim: where the returned entry points live.
import ctypes, glob, os
import torch
torch.cuda.init()
torch.zeros(1, device="cuda")
libs = glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "**", "libcudart.so*"), recursive=True)
rt = ctypes.CDLL(libs[0])


class DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]


libc = ctypes.CDLL(None)


def where(fn):
    i = DlInfo()
    libc.dladdr(ctypes.c_void_p(fn), ctypes.byref(i))
    return "%s %s" % (os.path.basename(i.fname.decode()), i.sname.decode() if i.sname else "?")


print("runtime", os.path.basename(libs[0]))
for name in (b"cuMemAlloc", b"cuMemFree", b"cuMemCreate", b"cuMemMap", b"cuGetProcAddress", b"cuMemcpyHtoD"):
    fn, st = ctypes.c_void_p(), ctypes.c_int()
    r = rt.cudaGetDriverEntryPoint(name, ctypes.byref(fn), ctypes.c_ulonglong(0), ctypes.byref(st))
    fn2, st2 = ctypes.c_void_p(), ctypes.c_int()
    r2 = rt.cudaGetDriverEntryPointByVersion(name, ctypes.byref(fn2), 12000, ctypes.c_ulonglong(0), ctypes.byref(st2))
    print("%-18s cudaGetDriverEntryPoint: %d/%d %-40s ByVersion(12000): %d/%d %s"
          % (name.decode(), r, st.value, where(fn.value) if fn.value else "-", r2, st2.value,
             where(fn2.value) if fn2.value else "-"))
