#!/usr/bin/python3
"""docs/adapters.md as a reader follows it: the adapter's source printed there is the file
the repository has, and its shell blocks, run in order exactly as printed against a real
spbe-broker with the library installed into a temporary prefix, build and run the adapter
and print what the guide says they print.

Usage: test_adapter_guide.py SOURCE_DIR BUILD_DIR SANITIZED(0|1)
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SRC, BUILD, SANITIZED = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
failed = 0


def check(name, cond, detail=""):
    global failed
    print(("ok     " if cond else "FAILED ") + name + ("" if cond else "\n" + detail), flush=True)
    failed += 0 if cond else 1


def blocks(text):
    """(marker, argument, body) for every fenced block preceded by a guide marker."""
    pattern = re.compile(r"<!-- guide:(\w+)(?: ([^ ]+))? -->\n```[a-z]*\n(.*?)```\n", re.S)
    return [(m.group(1), m.group(2), m.group(3)) for m in pattern.finditer(text)]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


guide = open(os.path.join(SRC, "docs/adapters.md")).read()
found = blocks(guide)
sources = [b for b in found if b[0] == "source"]
runs = [b[2] for b in found if b[0] == "run"]
outputs = [b[2] for b in found if b[0] == "output"]
check("the guide has its source, its commands and their output",
      len(sources) == 1 and len(runs) >= 2 and len(outputs) == 1)
for _, path, body in sources:
    check("the printed %s is the repository's file" % path,
          open(os.path.join(SRC, path)).read() == body)

tmp = tempfile.mkdtemp(prefix="spbe-guide-")
broker = None
try:
    prefix = os.path.join(tmp, "prefix")
    r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix],
                       capture_output=True, text=True)
    check("cmake --install into a prefix", r.returncode == 0, r.stderr)
    work = os.path.join(tmp, "work")
    os.makedirs(os.path.join(work, "adapters"))
    shutil.copytree(os.path.join(SRC, "adapters/examples"),
                    os.path.join(work, "adapters/examples"))
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir)
    if SANITIZED:  # the installed library is instrumented: so must the program be
        with open(os.path.join(bindir, "cc"), "w") as f:
            f.write("#!/bin/sh\nexec /usr/bin/cc -fsanitize=address,undefined \"$@\"\n")
        os.chmod(os.path.join(bindir, "cc"), 0o755)
    port = free_port()
    log = open(os.path.join(tmp, "broker.log"), "w")
    broker = subprocess.Popen([os.path.join(prefix, "bin/spbe-broker"), "--data",
                               os.path.join(work, "spbe-data"), "--listen",
                               "tcp://127.0.0.1:%d" % port, "--http", "off"],
                              stderr=log)
    for _ in range(400):
        if "event=started" in open(os.path.join(tmp, "broker.log")).read():
            break
        time.sleep(0.05)
    env = dict(os.environ)
    env["PATH"] = bindir + ":" + os.path.join(prefix, "bin") + ":" + env["PATH"]
    env["PKG_CONFIG_PATH"] = os.path.join(prefix, "lib/pkgconfig")
    env["LD_LIBRARY_PATH"] = os.path.join(prefix, "lib")
    env["SPBE_BROKER"] = "tcp://127.0.0.1:%d" % port
    env.pop("SPBE_KEY", None)
    script = "set -e\n" + "\n".join(runs)
    r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                       text=True, timeout=300)
    check("the guide's commands run as printed", r.returncode == 0,
          "stdout:\n" + r.stdout + "\nstderr:\n" + r.stderr)
    check("and print what the guide says", outputs[0].strip() in r.stdout,
          "expected:\n" + outputs[0] + "\ngot:\n" + r.stdout)
    key = os.path.join(work, "papan.key")
    check("the adapter's key is the member's alone (0600)",
          os.path.exists(key) and (os.stat(key).st_mode & 0o777) == 0o600)
finally:
    if broker:
        broker.terminate()
        broker.wait(timeout=30)
    shutil.rmtree(tmp, ignore_errors=True)
print("%s" % ("FAILED" if failed else "all passed"))
sys.exit(1 if failed else 0)
