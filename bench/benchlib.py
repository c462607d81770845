"""Helpers shared by the bench scripts' Python halves."""
import json
import os
import socket
import sys
import time


def wait_for(what, check, timeout=120, poll=0.005):
    """Polls `check` until it is true; exits the benchmark after `timeout` seconds."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(poll)


def read_text(path):
    """The file's text, or "" while it does not exist yet."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


class Qmp:
    """A QEMU monitor (QMP) client on a unix socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        wait_for("QMP", lambda: os.path.exists(path))
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
        self.file.readline()
        self.call("qmp_capabilities")

    def call(self, cmd, **args):
        """Runs `cmd`; its return value (events on the way are skipped)."""
        self.file.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "error" in reply:
                sys.exit(f"QMP {cmd}: {reply['error']}")
            if "return" in reply:
                return reply["return"]
