#!/usr/bin/env python3
"""gw-golden-checkpoint and gw-podman-restore against a fake podman (a script that logs its
arguments and plays podman's part) and a fake model server (HTTP: /health 503 then 200, a
completion): the podman commands they run, the times and texts they report, their failures
(the command, its stderr, CRIU's log tail) and usage errors.
Usage: test-podman-tools.py TOOLS_DIR"""
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

tools = sys.argv[1]
failures = []

FAKE_PODMAN = r'''#!/usr/bin/env python3
import json, os, sys
st = os.environ["FAKE_STATE"]
with open(st + "/calls", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
a = sys.argv[1:]
fail = os.environ.get("FAKE_FAIL", "")
stats = {"podman_duration": 2000000, "container_statistics": [{"runtime_restore_duration":
         1500000, "criu_statistics": {"restore_time": 1000000, "pages_restored": 7}}]}
if a[:2] == ["container", "inspect"]:
    print(json.dumps([{"State": {"Running": True}, "StaticDir": st}]))
elif a[:2] == ["container", "checkpoint"]:
    if fail == "checkpoint":
        open(st + "/dump.log", "w").write("Error (criu/sockets.c:628): sockets: Can't get 1:16 opt\n")
        sys.exit("Error: checkpointing container failed")
    if "--export" in a:
        open(a[a.index("--export") + 1], "w").write("archive")
    print(json.dumps(stats))
elif a[:2] == ["container", "restore"]:
    if fail == "restore":
        open(st + "/restore.log", "w").write("Error (criu/cr-restore.c:1): restore failed here\n")
        sys.exit("Error: restoring container failed")
    print(json.dumps(stats))
'''


class Server(BaseHTTPRequestHandler):
    health_calls = 0

    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        Server.health_calls += 1
        self.reply(200 if Server.health_calls % 3 == 0 else 503, {"status": "?"})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reply(200, {"choices": [{"text": "abc" * req.get("max_tokens", 1),
                                      "token_ids": [1, 2, 3]}]})


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def tool(name, *args, env, code=0):
    p = subprocess.run([sys.executable, os.path.join(tools, name), *args], capture_output=True,
                       text=True, env=env, timeout=60)
    check(p.returncode == code, f"{name} {' '.join(args)}: exit {p.returncode}, want {code}"
          + (f"\n{p.stderr}" if p.returncode != code else ""))
    return p


def calls(state):
    with open(state + "/calls") as f:
        out = [json.loads(l) for l in f]
    os.unlink(state + "/calls")
    return out


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    with tempfile.TemporaryDirectory() as state:
        podman = os.path.join(state, "podman")
        with open(podman, "w") as f:
            f.write(FAKE_PODMAN)
        os.chmod(podman, 0o755)
        env = dict(os.environ, FAKE_STATE=state)
        common = ["--podman", podman, "--health-url", base + "/health", "--json"]
        archive = os.path.join(state, "golden.tar")

        p = tool("gw-golden-checkpoint", "--image", "localhost/srv", "--name", "srv",
                 "--run-args", "--network host --device gpu-warmd.dev/gpuwarm=shim",
                 "--warmup-url", base + "/v1/completions", "--warmup-body",
                 '{"prompt": "x", "max_tokens": 2}', "--warmup-body", '{"prompt": "x", "max_tokens": 3}',
                 "--export", archive, "--compress", "none",
                 "--tcp-established", "--keep", *common, "--", "python3", "server.py", env=env)
        r = json.loads(p.stdout)
        check(r["ok"] and r["started"] and r["container"] == "srv", "golden: started, ok")
        check(r["time_to_health_s"] > 0 and r["time_to_first_token_s"] >= r["time_to_health_s"],
              "golden: times to health and first token")
        check([(w["text"], w["request"]) for w in r["warmup"]] == [("abcabc", 0), ("abc" * 3, 1)],
              "golden: the warm-up bodies in order, their replies")
        check(r["checkpoint"]["export_bytes"] == 7, "golden: the archive's size")
        check(r["checkpoint"]["stats"]["criu_restore_time"] == 1.0, "golden: --print-stats in s")
        c = calls(state)
        check(["run", "-d", "--name", "srv", "--network", "host", "--device",
               "gpu-warmd.dev/gpuwarm=shim", "localhost/srv", "python3", "server.py"] in c,
              "golden: podman run with the run args and command")
        check(["container", "checkpoint", "--print-stats", "--tcp-established", "--keep",
               "--export", archive, "--compress", "none", "srv"] in c,
              "golden: podman container checkpoint with the flags passed through")
        check("healthy after" in p.stderr, "golden: progress on stderr")

        p = tool("gw-podman-restore", "--name", "srv", "--import", archive, "--repeat", "2",
                 "--first-token-url", base + "/v1/completions", "--body", '{"prompt": "x", "max_tokens": 1}',
                 "--check-body", '{"prompt": "x", "max_tokens": 16}', "--ignore-static-ip",
                 "--ignore-static-mac", "--tcp-established", *common, env=env)
        r = json.loads(p.stdout)
        check(r["ok"] and r["mode"] == "import" and len(r["rounds"]) == 2, "import: two rounds")
        rd = r["rounds"][1]
        check(rd["time_to_first_token_s"] >= rd["time_to_health_s"] > 0, "import: the times")
        check(rd["first_token_text"] == "abc" and rd["token_ids"] == [1, 2, 3],
              "import: the first completion's text and ids")
        check(rd["check_text"] == "abc" * 16 and rd["check_token_ids"] == [1, 2, 3],
              "import: the check completion's text and ids")
        check(r["summary"]["same_output_every_round"], "import: the same output every round")
        c = calls(state)
        want = ["container", "restore", "--print-stats", "--tcp-established", "--ignore-static-ip",
                "--ignore-static-mac", "--import", archive, "--name", "srv"]
        check(c.count(want) == 2, "import: podman container restore --import twice")
        check(c.count(["rm", "-f", "-t", "0", "srv"]) == 2, "import: the old container removed")

        p = tool("gw-podman-restore", "--name", "srv", "--repeat", "2", *common, env=env)
        c = calls(state)
        check(c.count(["container", "restore", "--print-stats", "--keep", "srv"]) == 2 and
              ["stop", "-t", "0", "srv"] in c, "in place: --keep added, stopped between rounds")

        env_fail = dict(env, FAKE_FAIL="restore")
        p = tool("gw-podman-restore", "--name", "srv", *common, env=env_fail, code=1)
        r = json.loads(p.stdout)
        check("$ " + podman + " container restore --print-stats srv" in r["error"] and
              "restoring container failed" in r["error"] and "restore failed here" in r["error"],
              "restore failure: the command, its stderr and restore.log's tail")
        check("criu-root" not in r["error"], "restore failure: no word of a criu-root not there")
        os.mkdir(os.path.join(state, "criu-root"))  # what a crashed crun leaves
        p = tool("gw-podman-restore", "--name", "srv", *common, env=env_fail, code=1)
        r = json.loads(p.stdout)
        check("criu-root is left over" in r["error"] and "rmdir" in r["error"],
              "restore failure: a leftover criu-root named, with how to remove it")
        os.rmdir(os.path.join(state, "criu-root"))
        env_fail = dict(env, FAKE_FAIL="checkpoint")
        p = tool("gw-golden-checkpoint", "--container", "srv", *common, env=env_fail, code=1)
        check("Can't get 1:16 opt" in json.loads(p.stdout)["error"],
              "checkpoint failure: dump.log's tail")

        tool("gw-golden-checkpoint", "--container", "srv", "--export", archive, *common,
             env=env, code=2)
        tool("gw-golden-checkpoint", "--container", "srv", "--warmup-body", "{", *common,
             env=env, code=2)
        tool("gw-golden-checkpoint", "--container", "srv", *common, "--", "cmd", env=env, code=2)
        tool("gw-podman-restore", "--name", "srv", "--import", state + "/none", *common,
             env=env, code=2)
        tool("gw-podman-restore", "--name", "srv", "--repeat", "0", *common, env=env, code=2)
        for name in ("gw-golden-checkpoint", "gw-podman-restore"):
            check("--health-url" in tool(name, "--help", env=env).stdout, f"{name} --help")
    srv.shutdown()
    print("ok" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
