"""`python -m mmkd.teacher_cache ARGS` = `mmkd cache-teacher ARGS` (also under the deepspeed launcher)."""

import sys

from mmkd.cli import main

raise SystemExit(main(["cache-teacher", *sys.argv[1:]]))
