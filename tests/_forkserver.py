"""A fork server for tests that must kill real `mmsearch` processes: it imports torch, mmsearch and the
CLI once, then forks one child per command. Each child runs the real CLI entry point
(``mmsearch_cli.app.app``) with the given arguments, so a SIGKILL lands in a real process at a real
point of a real run, without paying ~8 s of imports per kill.

Protocol (one JSON object per line on stdin/stdout):
  {"op": "spawn", "args": [...], "stdout": PATH, "stderr": PATH}  ->  {"pid": PID}
  {"op": "wait", "pid": PID}                                      ->  {"code": N | null, "signal": N | null}
"""
from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    import mmsearch.encoders.clip as clip_module
    import mmsearch_cli.app as cli

    # Load each model once here, so children start at the indexing work (the load is no write step).
    real_load, cache = clip_module.load_clip, {}

    def cached_load(spec, **kwargs):
        if spec not in cache:
            cache[spec] = real_load(spec, **kwargs)
        return cache[spec]

    clip_module.load_clip = cached_load
    for spec in sys.argv[1:]:
        cached_load(spec)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                _child(cli, request)
            print(json.dumps({"pid": pid}), flush=True)
        elif request["op"] == "wait":
            _, status = os.waitpid(request["pid"], 0)
            print(json.dumps({"code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                              "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}), flush=True)


def _child(cli, request) -> None:
    code = 1
    try:
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin = open(os.devnull)
        try:
            cli.app(args=request["args"], prog_name="mmsearch")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    main()
