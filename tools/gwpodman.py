# SPDX-License-Identifier: MIT
"""What gw-golden-checkpoint and gw-podman-restore share (Python 3 standard library only):
running podman with its failures explained (the command, its stderr's tail and CRIU's log's
tail), waiting for a health URL, asking for a first completion, and podman's --print-stats."""
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request

DEFAULT_BODY = '{"prompt": "Hello, my name is", "max_tokens": 16}'


def progress(msg):
    """A progress line on stderr (stdout carries the result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A step failed; str() says which command, with the tails of its stderr and CRIU's log."""


def tail(text, n=20):
    lines = (text or "").rstrip().splitlines()
    return "\n".join(lines[-n:])


def file_tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return tail(f.read(), n)
    except OSError as e:
        return f"({path}: {e.strerror})"


class Podman:
    """podman (a path or a name found in PATH) with extra global options (--root ...)."""

    def __init__(self, binary="podman", global_args=(), env=None):
        self.bin, self.global_args, self.env = binary, list(global_args), env

    def cmd(self, *args):
        return [self.bin, *self.global_args, *args]

    def run(self, *args, timeout=600, check=True):
        cmd = self.cmd(*args)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
        except subprocess.TimeoutExpired as e:
            raise Failed(f"$ {shlex.join(cmd)}\ntimed out after {timeout} s\n"
                         f"{tail(e.stderr if isinstance(e.stderr, str) else '')}") from e
        except OSError as e:
            raise Failed(f"$ {shlex.join(cmd)}\n{e}") from e
        if check and p.returncode != 0:
            raise Failed(f"$ {shlex.join(cmd)}\nexit {p.returncode}; stderr:\n{tail(p.stderr)}")
        return p

    def timed(self, *args, timeout=600):
        t = time.monotonic()
        p = self.run(*args, timeout=timeout, check=False)
        return time.monotonic() - t, p

    def inspect(self, name):
        p = self.run("container", "inspect", name, check=False, timeout=60)
        if p.returncode:
            return {}
        try:
            return json.loads(p.stdout)[0]
        except (ValueError, IndexError):
            return {}

    def criu_log(self, name, log):
        """The path of CRIU's dump.log or restore.log of the container, or None."""
        d = self.inspect(name).get("StaticDir")
        path = os.path.join(d, log) if d else None
        return path if path and os.path.exists(path) else None

    def fail(self, what, cmd_args, p, name, log):
        """Raise Failed for a podman command that failed, with CRIU's log tail."""
        msg = (f"{what} failed\n$ {shlex.join(self.cmd(*cmd_args))}\nexit {p.returncode}; "
               f"stderr:\n{tail(p.stderr)}")
        path = self.criu_log(name, log) if name else None
        if path:
            msg += f"\n--- {path} (tail):\n{file_tail(path)}"
        left = self.criu_root_left(name) if name else None
        if left:
            msg += (f"\n{left} is left over from an earlier restore that crashed the runtime "
                    "(crun 1.21 crashes on a mount without a type, such as a CDI spec's from "
                    "before `warmctl cdi` wrote \"type\": \"bind\"); every restore fails until "
                    f"it is gone: umount {shlex.quote(left)}; rmdir {shlex.quote(left)}")
        raise Failed(msg)

    def criu_root_left(self, name):
        """crun's criu-root directory in the container's directory, when a restore left it."""
        d = self.inspect(name).get("StaticDir")
        path = os.path.join(d, "criu-root") if d else None
        return path if path and os.path.isdir(path) else None


# Health and completion URLs are the server's own: never through a proxy of the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url, body=None, timeout=10.0):
    """GET (body None) or POST JSON: (status, bytes). Connection errors: (0, reason)."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(getattr(e, "reason", e)).encode()


def wait_healthy(url, timeout, t0=None, interval=0.02, alive=None):
    """Poll url until it answers 200: seconds since t0 (default now). alive(): False when the
    server is gone (then fail at once)."""
    t0 = time.monotonic() if t0 is None else t0
    last = None
    while True:
        status, data = http(url, timeout=max(1.0, interval * 10))
        if status == 200:
            return time.monotonic() - t0
        last = (status, data[:200])
        if time.monotonic() - t0 > timeout:
            raise Failed(f"{url} not healthy after {timeout:.0f} s (last: {last[0]} {last[1]!r})")
        if alive and not alive():
            raise Failed(f"{url}: the container stopped before it was healthy (last: {last})")
        time.sleep(interval)


def first_token(url, body, timeout=300.0):
    """POST body to url: (seconds, text, token_ids or None, the reply as JSON or None)."""
    t = time.monotonic()
    status, data = http(url, body, timeout=timeout)
    s = time.monotonic() - t
    if status != 200:
        raise Failed(f"POST {url}: HTTP {status}: {data[:300]!r}")
    try:
        obj = json.loads(data)
        choice = obj["choices"][0]
        return s, choice.get("text", ""), choice.get("token_ids"), obj
    except (ValueError, KeyError, IndexError, TypeError):
        return s, data[:500].decode(errors="replace"), None, None


def print_stats(text):
    """podman's --print-stats JSON (microseconds) -> seconds, by name; {} when there is none."""
    try:
        obj = json.loads(text[text.index("{"):])
    except ValueError:
        return {}
    out = {}
    for k, v in obj.items():
        if k.endswith("_duration") and isinstance(v, (int, float)):
            out[k] = v / 1e6
    for c in obj.get("container_statistics") or []:
        for k, v in c.items():
            if k.endswith("_duration") and isinstance(v, (int, float)):
                out[k] = v / 1e6
        for k, v in (c.get("criu_statistics") or {}).items():
            out["criu_" + k] = v / 1e6 if k.endswith("_time") else v
    return out


def body_error(body):
    """Why body is not a JSON request body, or None."""
    try:
        json.loads(body)
    except ValueError as e:
        return f"the request body is not JSON: {e}"
    return None


def emit(result, as_json):
    """The result on stdout: JSON, or key: value lines."""
    if as_json:
        json.dump(result, sys.stdout, indent=1)
        print()
        return
    for k, v in result.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v)
        print(f"{k}: {v}")
