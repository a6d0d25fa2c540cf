"""Entry point of one grading worker process: `python -m megatron_wmss.eval.worker READ_FD WRITE_FD JSON`.

Started by `grading.Grader`; reads (index, GradeTask) messages, answers (index, Grade dict)."""

import json
import os
import sys
from multiprocessing.connection import Connection

from megatron_wmss.eval.grading import GradingOptions, worker_loop


def main() -> None:
    read_fd, write_fd, args = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    worker_loop(Connection(read_fd, writable=False), Connection(write_fd, readable=False),
                GradingOptions(**args["options"]), bool(args["soft_timeout"]))


if __name__ == "__main__":
    main()
