#!/bin/bash
# The PyTorch reference for BENCHMARKS.md "Memory of a step": every measurement, one fresh process at a time,
# niced; writes results.jsonl here, then `python3 summarize.py` prints the tables. Needs a Python with torch
# (not in requirements.txt): python3 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch==2.13.0 numpy
# then PY=/tmp/torchref/bin/python tools/pytorch_reference/run_all.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
: > results.jsonl
CASES="supervised mpl_hard_uda mpl_hard_uda_student_u_only mpl_hard"
for c in $CASES; do
  nice -n 5 $PY measure.py alloc $c 2>/dev/null | grep '^RESULT' | sed 's/^RESULT //' >> results.jsonl
  nice -n 5 $PY measure.py saved $c 2>/dev/null | grep '^RESULT' | sed 's/^RESULT //' >> results.jsonl
done
for variant in plain trim mmapthr; do
  for rep in 1 2 3; do
    for c in $CASES; do
      case $variant in
        plain)   nice -n 5 $PY measure.py rss $c ;;
        trim)    env TRIM=1 nice -n 5 $PY measure.py rss $c ;;
        mmapthr) env TRIM=1 MALLOC_MMAP_THRESHOLD_=131072 nice -n 5 $PY measure.py rss $c ;;
      esac 2>/dev/null | grep '^RESULT' | sed "s/^RESULT {/{\"rep\": $rep, \"variant\": \"$variant\", /" >> results.jsonl
    done
  done
done
echo done
