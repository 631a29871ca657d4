#!/usr/bin/env python3
"""GPU smoke test of libgpuwarm-shim (manual, not CI): a stand-in for gpu-warmd's side of the agent
channel. Runs an app under LD_PRELOAD=$GW_SHIM, then CYCLES times (default 1): Export -> copy
each range into new memory made here -> Release -> Map; then lets the app verify its data.

  GW_SHIM=.../libgpuwarm-shim.so python3 pydaemon.py NAME KIND [VAR=value ...] -- COMMAND...

KIND: vramapp (gw-vram-app: SIGUSR1 verifies), torch (torch_app.py / direct_app protocol:
"check" prints the sums again), nodaemon (no socket: nothing may be converted). The app's stderr
(the shim's debug log) goes to $OUT/NAME.err."""
import array, ctypes, json, os, select, signal, socket, struct, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", "/tmp")
MAGIC = 0x4D525747
cu = ctypes.CDLL(os.environ.get("GPUWARM_CUDA_LIBRARY") or "libcuda.so.1")


class Prop(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("htypes", ctypes.c_int), ("loc_type", ctypes.c_int),
                ("loc_id", ctypes.c_int), ("win32", ctypes.c_void_p), ("comp", ctypes.c_ubyte),
                ("rdma", ctypes.c_ubyte), ("usage", ctypes.c_ushort), ("res", ctypes.c_ubyte * 4)]


class Access(ctypes.Structure):
    _fields_ = [("loc_type", ctypes.c_int), ("loc_id", ctypes.c_int), ("flags", ctypes.c_int)]


def ck(r, what):
    if r != 0:
        raise RuntimeError("%s: CUDA error %d" % (what, r))


U64 = ctypes.c_uint64


def cuda_init():
    ck(cu.cuInit(0), "cuInit")
    ctx = ctypes.c_void_p()
    ck(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0), "retain")
    ck(cu.cuCtxSetCurrent(ctx), "set current")


def reserve_map(h, size, dev):
    va = U64()
    ck(cu.cuMemAddressReserve(ctypes.byref(va), ctypes.c_size_t(size), ctypes.c_size_t(0), U64(0),
                              ctypes.c_ulonglong(0)), "reserve")
    ck(cu.cuMemMap(va, ctypes.c_size_t(size), ctypes.c_size_t(0), U64(h), ctypes.c_ulonglong(0)), "map")
    acc = Access(1, dev, 3)
    ck(cu.cuMemSetAccess(va, ctypes.c_size_t(size), ctypes.byref(acc), ctypes.c_size_t(1)), "access")
    return va.value


def unmap_free(va, size, h):
    ck(cu.cuMemUnmap(U64(va), ctypes.c_size_t(size)), "unmap")
    ck(cu.cuMemAddressFree(U64(va), ctypes.c_size_t(size)), "addrfree")
    ck(cu.cuMemRelease(U64(h)), "release")


def copy_to_new(fd, size, dev):
    """Import the app's memory, copy it into new exportable memory, return the new memory's fd."""
    h = U64()
    ck(cu.cuMemImportFromShareableHandle(ctypes.byref(h), ctypes.c_void_p(fd), 1), "import")
    va_imp = reserve_map(h.value, size, dev)
    prop = Prop(1, 1, 1, dev, None, 0, 0, 0)
    hn = U64()
    ck(cu.cuMemCreate(ctypes.byref(hn), ctypes.c_size_t(size), ctypes.byref(prop), ctypes.c_ulonglong(0)), "create")
    va_new = reserve_map(hn.value, size, dev)
    if hasattr(cu, "cuMemcpyDtoD_v2"):
        ck(cu.cuMemcpyDtoD_v2(U64(va_new), U64(va_imp), ctypes.c_size_t(size)), "dtod")
    else:  # the fake driver
        tmp = ctypes.create_string_buffer(size)
        ck(cu.cuMemcpyDtoH_v2(tmp, U64(va_imp), ctypes.c_size_t(size)), "dtoh")
        ck(cu.cuMemcpyHtoD_v2(U64(va_new), tmp, ctypes.c_size_t(size)), "htod")
    ck(cu.cuCtxSynchronize(), "sync")
    unmap_free(va_imp, size, h.value)
    nfd = ctypes.c_int(-1)
    ck(cu.cuMemExportToShareableHandle(ctypes.byref(nfd), U64(hn.value), 1, ctypes.c_ulonglong(0)), "export")
    unmap_free(va_new, size, hn.value)
    return nfd.value


class Conn:
    def __init__(self, sock):
        self.s, self.buf, self.fds, self.next_id, self.updates = sock, b"", [], 1, 0

    def send(self, obj, fds=()):
        payload = json.dumps(obj).encode()
        data = struct.pack("<II", MAGIC, len(payload)) + payload
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.s.sendmsg([data], anc)

    def read(self, timeout=60):
        while True:
            if len(self.buf) >= 8:
                magic, n = struct.unpack("<II", self.buf[:8])
                assert magic == MAGIC
                if len(self.buf) >= 8 + n:
                    msg = json.loads(self.buf[8:8 + n])
                    self.buf = self.buf[8 + n:]
                    k = msg.get("fds", 0)
                    fds, self.fds = self.fds[:k], self.fds[k:]
                    return msg, fds
            r, _, _ = select.select([self.s], [], [], timeout)
            if not r:
                raise TimeoutError("agent silent")
            data, fds, _, _ = socket.recv_fds(self.s, 1 << 20, 256)
            if not data:
                raise EOFError("agent gone")
            self.buf += data
            self.fds += list(fds)

    def call(self, method, params=None, fds=()):
        i = self.next_id
        self.next_id += 1
        req = {"id": i, "method": method, "params": params or {}}
        if fds:
            req["fds"] = len(fds)
        self.send(req, fds)
        while True:
            msg, got = self.read()
            if "method" in msg:
                assert msg["method"] == "gpuwarm.AgentUpdate", msg
                self.updates += 1
                self.send({"id": msg["id"], "result": {}})
                continue
            assert msg["id"] == i, msg
            if "error" in msg:
                raise RuntimeError("%s: %s" % (method, msg["error"]))
            return msg["result"], got


def accept(lsock):
    r, _, _ = select.select([lsock], [], [], 30)
    if not r:
        raise TimeoutError("no agent connected")
    s, _ = lsock.accept()
    c = Conn(s)
    hello, _ = c.read()
    assert hello["method"] == "gpuwarm.Hello", hello
    c.send({"id": hello["id"], "result": {"version": 1, "server": "pydaemon", "pid": os.getpid()}})
    att, _ = c.read()
    assert att["method"] == "gpuwarm.AgentAttach", att
    c.send({"id": att["id"], "result": {}})
    return c, att["params"]


def cycle(c):
    t0 = time.time()
    ranges, fds, off = [], [], 0
    while True:
        res, got = c.call("gpuwarm.Agent.Export", {"offset": off})
        ranges += res["ranges"]
        fds += got
        off += len(got)
        if off >= res["total"]:
            break
    t1 = time.time()
    new = [copy_to_new(fd, r["size"], r["device"]) for r, fd in zip(ranges, fds)]
    for fd in fds:
        os.close(fd)
    t2 = time.time()
    rel, _ = c.call("gpuwarm.Agent.Release")
    t3 = time.time()
    mapped = 0
    for i in range(0, len(ranges), 200):
        batch = [{"va": r["va"], "size": r["size"], "device": r["device"]} for r in ranges[i:i + 200]]
        res, _ = c.call("gpuwarm.Agent.Map", {"ranges": batch}, new[i:i + 200])
        mapped += res["mapped"]
    t4 = time.time()
    for fd in new:
        os.close(fd)
    total = sum(r["size"] for r in ranges)
    print("  cycle: %d ranges %.1f MiB; export %.3fs copy %.3fs release %.3fs (released %d) map %.3fs (mapped %d)"
          % (len(ranges), total / 2**20, t1 - t0, t2 - t1, t3 - t2, rel["released"], t4 - t3, mapped))
    assert rel["released"] == len(ranges) and mapped == len(ranges)
    return len(ranges)


def line_of(p, timeout=120):
    r, _, _ = select.select([p.stdout], [], [], timeout)
    if not r:
        raise TimeoutError("app silent")
    return p.stdout.readline().strip()


def main():
    name, kind = sys.argv[1], sys.argv[2]
    sep = sys.argv.index("--")
    extra = dict(a.split("=", 1) for a in sys.argv[3:sep])
    cmd = sys.argv[sep + 1:]
    d = tempfile.mkdtemp()
    sock = os.path.join(d, "gw.sock")
    shim = os.environ.get("GW_SHIM") or os.path.join(HERE, "libgpuwarm-shim.so")
    env = dict(os.environ, LD_PRELOAD=shim, GPUWARM_SOCKET=sock, GPUWARM_SHIM_DEBUG="1", **extra)
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [os.path.dirname(shim),
                                                    os.environ.get("LD_LIBRARY_PATH")]))
    lsock = None
    if kind != "nodaemon":
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(sock)
        lsock.listen(4)
    err = open(os.path.join(OUT, name + ".err"), "w")
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                         text=True)
    print("[%s]" % name)
    if lsock:
        c, att = accept(lsock)
        print("  attach", att)
    ready = line_of(p)
    print("  app:", ready)
    if lsock:
        res, _ = c.call("gpuwarm.Agent.Ping")
        print("  ping", res)
        assert res["ranges"] > 0, "nothing converted"
        for _ in range(int(os.environ.get("CYCLES", "1"))):
            cycle(c)
            res, _ = c.call("gpuwarm.Agent.Ping")
            print("  ping after", res)
    if kind == "vramapp":
        p.send_signal(signal.SIGUSR1)
        v = line_of(p)
        print("  app:", v)
        assert v.startswith("verify ok"), v
        p.send_signal(signal.SIGTERM)
    else:
        p.stdin.write("check\n")
        p.stdin.flush()
        v = line_of(p)
        print("  app:", v)
        assert v.split(" new")[0].replace("sums", "ready").split(" ", 1)[1] == \
            ready.split(" ", 1)[1].rsplit(" ", 1)[0], "data differs after the cycle"
        p.stdin.write("quit\n")
        p.stdin.flush()
    rc = p.wait(60)
    err.close()
    conv = sum("]: converted " in l for l in open(os.path.join(OUT, name + ".err")))
    vmm = sum("app cuMemCreate" in l for l in open(os.path.join(OUT, name + ".err")))
    print("  exit %d; shim log: %d converted allocations, %d app cuMemCreate" % (rc, conv, vmm))
    assert rc == 0
    if kind == "nodaemon":
        assert conv == 0 and vmm == 0


if __name__ == "__main__":
    cuda_init()
    main()
