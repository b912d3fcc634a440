"""Usage: python measure.py {alloc|saved|rss} CASE
alloc : 2 warm-up steps, then one step under torch.profiler(profile_memory=True);
        walk the CPU [memory] events in time order, peak of running sum (relative to
        live bytes just before the step), per-phase breakdown, location of the peak.
saved : 2 warm-up steps, then one step under saved_tensors_hooks; unique storages' nbytes
        of everything saved for backward, per network / phase.
rss   : 1 warm-up step, VmRSS, reset VmHWM via /proc/self/clear_refs=5, 1 step, VmHWM-VmRSS.
Prints one JSON line starting with RESULT.
"""
import gc
import os
import json
import sys
import time

import torch
from torch.profiler import profile, ProfilerActivity

import common

MiB = 1024.0 * 1024.0


def proc_status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def do_alloc(case):
    st = common.setup(case)
    for _ in range(2):
        common.run_step(case, st)
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof:
        common.run_step(case, st)
    evs = prof.profiler.kineto_results.events()
    mem = [e for e in evs if e.name() == "[memory]" and str(e.device_type()) == "DeviceType.CPU"]
    mem.sort(key=lambda e: e.start_ns())
    phases = sorted([(e.start_ns(), e.end_ns(), e.name()[len("PHASE::"):]) for e in evs
                     if e.name().startswith("PHASE::")])
    ops = [(e.start_ns(), e.end_ns(), e.name()) for e in evs
           if e.name() != "[memory]" and not e.name().startswith("PHASE::")]
    run = 0
    peak, peak_t, peak_i = 0, None, -1
    total_alloc = 0
    series = []
    for i, e in enumerate(mem):
        run += e.nbytes()
        if e.nbytes() > 0:
            total_alloc += e.nbytes()
        series.append((e.start_ns(), run))
        if run > peak:
            peak, peak_t, peak_i = run, e.start_ns(), i
    # per phase: live at phase start/end (relative to step start) and max within
    per_phase = []
    for (s, t, name) in phases:
        before = 0
        mx = None
        end_live = 0
        for (ts, r) in series:
            if ts < s:
                before = r
            elif ts <= t:
                mx = r if mx is None else max(mx, r)
        for (ts, r) in series:
            if ts <= t:
                end_live = r
        per_phase.append(dict(phase=name, live_start_MiB=round(before / MiB, 2),
                              max_in_phase_MiB=round((mx if mx is not None else before) / MiB, 2),
                              live_end_MiB=round(end_live / MiB, 2)))
    peak_phase = [n for (s, t, n) in phases if s <= peak_t <= t]
    # innermost ops containing the peak time (shortest duration first)
    containing = sorted([(t - s, n) for (s, t, n) in ops if s <= peak_t <= t])
    peak_ops = [n for (_, n) in containing[:4]]
    res = dict(mode="alloc", case=case, torch=torch.__version__,
               peak_MiB=round(peak / MiB, 2), net_after_step_MiB=round(run / MiB, 2),
               n_mem_events=len(mem), total_allocated_MiB=round(total_alloc / MiB, 1),
               peak_event_size_MiB=round(mem[peak_i].nbytes() / MiB, 3) if peak_i >= 0 else None,
               peak_phase=peak_phase, peak_innermost_ops=peak_ops, per_phase=per_phase)
    print("RESULT " + json.dumps(res))


def do_saved(case):
    st = common.setup(case)
    for _ in range(2):
        common.run_step(case, st)
    gc.collect()
    param_ptrs = set()
    for k in ("teacher", "student"):
        if k in st:
            for p in st[k].parameters():
                param_ptrs.add(p.untyped_storage().data_ptr())
            for b in st[k].buffers():
                param_ptrs.add(b.untyped_storage().data_ptr())
    data_ptrs = set(v.untyped_storage().data_ptr() for v in st["data"].values())
    seen = {}  # storage ptr -> (phase, nbytes, kind)

    def pack(t):
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in seen:
            kind = "param" if ptr in param_ptrs else ("input_data" if ptr in data_ptrs else "activation")
            seen[ptr] = (common.Phase.current, s.nbytes(), kind, tuple(t.shape))
        return t

    def unpack(t):
        return t

    # (a) graph walk: the tensors actually reachable from each loss just before its backward
    walk = {}

    def before_bwd(name, loss):
        stor = {}
        seen_nodes = set()
        stack = [loss.grad_fn]
        while stack:
            n = stack.pop()
            if n is None or n in seen_nodes:
                continue
            seen_nodes.add(n)
            for a in dir(n):
                if a.startswith("_saved_") and not a.startswith("_raw_saved_"):
                    try:
                        v = getattr(n, a)
                    except Exception:
                        continue
                    vs = v if isinstance(v, (tuple, list)) else (v,)
                    for t in vs:
                        if isinstance(t, torch.Tensor):
                            u = t.untyped_storage()
                            stor[u.data_ptr()] = u.nbytes()
            for nxt, _ in n.next_functions:
                stack.append(nxt)
        act = sum(nb for p_, nb in stor.items() if p_ not in param_ptrs and p_ not in data_ptrs)
        inp = sum(nb for p_, nb in stor.items() if p_ in data_ptrs)
        walk[name] = dict(activation_MiB=round(act / MiB, 2), preexisting_input_MiB=round(inp / MiB, 2),
                          n_nodes=len(seen_nodes), n_storages=len(stor))

    common.BEFORE_BWD = before_bwd
    common.run_step(case, st)
    common.BEFORE_BWD = None
    gc.collect()
    # (b) saved_tensors_hooks: every storage handed to pack() during the step
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        common.run_step(case, st)
    net_of = {"sup_fwd": "supervised_net", "teacher_fwd": "teacher", "student_fwd": "student",
              "student_nograd_fwd": "teacher(mpl loss tail)"}
    agg = {}
    for ptr, (ph, nb, kind, shp) in seen.items():
        key = (net_of.get(ph, ph), kind)
        a = agg.setdefault(key, [0, 0])
        a[0] += nb
        a[1] += 1
    out = {f"{k[0]}|{k[1]}": dict(MiB=round(v[0] / MiB, 2), n_storages=v[1]) for k, v in sorted(agg.items())}
    act_total = sum(nb for (ph, nb, kind, shp) in seen.values() if kind == "activation")
    act_plus_in = sum(nb for (ph, nb, kind, shp) in seen.values() if kind != "param")
    res = dict(mode="saved", case=case, graph_walk=walk,
               graph_walk_total_activation_MiB=round(sum(v["activation_MiB"] for v in walk.values()), 2),
               hooks_activation_saved_MiB=round(act_total / MiB, 2),
               activation_plus_input_saved_MiB=round(act_plus_in / MiB, 2), breakdown=out)
    print("RESULT " + json.dumps(res))


def do_rss(case):
    st = common.setup(case)
    common.run_step(case, st)  # warm-up: optimizer state exists
    gc.collect()
    trimmed = False
    if os.environ.get("TRIM") == "1":
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give retained free heap back to the OS
        trimmed = True
    rss0 = proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    hwm_reset = proc_status("VmHWM")
    t0 = time.time()
    common.run_step(case, st)
    dt = time.time() - t0
    hwm = proc_status("VmHWM")
    rss1 = proc_status("VmRSS")
    res = dict(mode="rss", case=case, trim=trimmed, mmap_threshold_env=os.environ.get("MALLOC_MMAP_THRESHOLD_"), rss_before_MiB=round(rss0 / MiB, 1), hwm_after_reset_MiB=round(hwm_reset / MiB, 1),
               hwm_MiB=round(hwm / MiB, 1), rss_after_MiB=round(rss1 / MiB, 1),
               peak_MiB=round((hwm - rss0) / MiB, 1), step_s=round(dt, 1))
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    mode, case = sys.argv[1], sys.argv[2]
    assert case in common.CASES, case
    {"alloc": do_alloc, "saved": do_saved, "rss": do_rss}[mode](case)
