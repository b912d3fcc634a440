"""tools/benchmark_accelerator.py runs end to end on a CPU with --quick: every precision of the step benchmark,
the CIFAR-shaped gin/cifar10_4k.gin run, the JSON and the markdown table (slow: several minutes)."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_accelerator_benchmark_runs_end_to_end_on_a_cpu_with_quick(tmp_path):
  proc = subprocess.run([sys.executable, "tools/benchmark_accelerator.py", f"--out_dir={tmp_path}", "--quick"],
                        cwd=ROOT, capture_output=True, text=True, timeout=3000, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "accelerator.json").read_text())
  assert set(report["steps"]) == {"float32", "mixed_bfloat16", "mixed_float16"}
  for precision, result in report["steps"].items():
    assert "error" not in result, (precision, result)
    mpl = result["cases"]["mpl/hard+uda"]
    assert mpl["images_per_s"] > 0 and mpl["mpl_over_supervised"] > 1.0 and mpl["peak_mib"] > 0
  assert "error" not in report["run"] and report["run"]["steps"] == 20 and report["run"]["images_per_s"] > 0
  table = (tmp_path / "accelerator.md").read_text()
  assert "CPU only (no accelerator figure)" in table and "| mixed_float16 | mpl/hard+uda+recompute |" in table
