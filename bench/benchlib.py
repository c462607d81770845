"""Helpers shared by the bench scripts' Python halves."""
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
