"""Run a command and print its peak resident memory in bytes on the last line of stdout (one child per call, so
that configurations measured in one benchmark run do not share a high-water mark)."""

import resource
import subprocess
import sys

if __name__ == "__main__":
    code = subprocess.run(sys.argv[1:]).returncode
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)  # ru_maxrss is in KiB
    sys.exit(code)
