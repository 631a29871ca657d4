"""The host's transparent huge page setting, read, set for a measurement and put back (root).
Shared by the benchmarks that measure with THP as a host knob."""
import re

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
THP_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"


def thp_get():
    """The host's transparent huge page mode ("always", "madvise", "never"), or None."""
    try:
        with open(THP_ENABLED) as f:
            m = re.search(r"\[(\w+)\]", f.read())
        return m.group(1) if m else None
    except OSError:
        return None


def thp_set(mode):
    """mode: "always", "madvise", "never"; "always+defrag" also sets defrag to "always" (direct
    compaction at fault time when no free 2 MiB page is at hand). Returns what to pass back."""
    old = thp_get()
    enabled, _, defrag = mode.partition("+")
    with open(THP_ENABLED, "w") as f:
        f.write(enabled)
    if defrag:
        with open(THP_DEFRAG) as f:
            m = re.search(r"\[([\w+]+)\]", f.read())
        with open(THP_DEFRAG, "w") as f:
            f.write("always")
        return f"{old}+{m.group(1)}" if m else old
    return old


def thp_restore(saved):
    enabled, _, defrag = saved.partition("+")
    with open(THP_ENABLED, "w") as f:
        f.write(enabled)
    if defrag:
        with open(THP_DEFRAG, "w") as f:
            f.write(defrag)
