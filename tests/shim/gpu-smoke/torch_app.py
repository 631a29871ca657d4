# A PyTorch app for pydaemon.py (KIND torch): tensors from the caching allocator, sums on "check".
import sys, torch
ts = []
for i in range(4):
    t = (torch.arange(64 * 2**20 // 4, dtype=torch.int64, device="cuda") * (i + 3) % 1000003).to(torch.int32)
    ts.append(t)
g = torch.Generator(device="cuda").manual_seed(7)
big = torch.randn(4096, 4096, device="cuda", generator=g)
torch.cuda.synchronize()
def sums():
    return [int(t.sum().item()) for t in ts] + [float(big.double().sum().item())]
print("ready", sums(), torch.cuda.memory_reserved() >> 20, flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "check":
        torch.cuda.synchronize()
        x = torch.ones(1 << 22, device="cuda")
        print("sums", sums(), "new", float(x.sum().item()), flush=True)
    elif cmd == "quit":
        break
