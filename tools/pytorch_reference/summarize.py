# The tables of BENCHMARKS.md's PyTorch reference, from the results.jsonl that run_all.sh writes beside this file.
import collections, json, os
R = [json.loads(l) for l in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results.jsonl'))]
CASES = ["supervised", "mpl_hard_uda", "mpl_hard_uda_student_u_only", "mpl_hard"]
alloc = {r['case']: r for r in R if r['mode'] == 'alloc'}
saved = {r['case']: r for r in R if r['mode'] == 'saved'}
rss = collections.defaultdict(list)
for r in R:
    if r['mode'] == 'rss':
        rss[(r['variant'], r['case'])].append(r)
print("| case | allocator peak MiB | saved-for-backward MiB (graph walk: teacher + student) | RSS peak MiB x3 (as specified) | RSS x3 (malloc_trim before baseline) | RSS x3 (trim + MALLOC_MMAP_THRESHOLD_=131072) |")
print("|---|---|---|---|---|---|")
for c in CASES:
    a = alloc[c]['peak_MiB']
    gw = saved[c]['graph_walk']
    sv = " + ".join(f"{v['activation_MiB']:.1f}" for k, v in sorted(gw.items(), key=lambda kv: kv[0] != 'teacher')) + (f" = {saved[c]['graph_walk_total_activation_MiB']:.1f}" if len(gw) > 1 else "")
    cols = []
    for v in ("plain", "trim", "mmapthr"):
        rs = sorted(rss[(v, c)], key=lambda r: r['rep'])
        cols.append(", ".join(f"{r['peak_MiB']:.0f}" for r in rs))
    print(f"| {c} | {a:.1f} | {sv} | {cols[0]} | {cols[1]} | {cols[2]} |")
print()
print("Ratios mpl_* / supervised:")
print("| case | allocator | saved-for-backward | RSS as specified (per rep) | RSS trim (per rep) | RSS trim+mmap thr (per rep) | RSS trim+mmap thr (mean/mean) |")
print("|---|---|---|---|---|---|---|")
for c in CASES[1:]:
    ra = alloc[c]['peak_MiB'] / alloc['supervised']['peak_MiB']
    rs_ = saved[c]['graph_walk_total_activation_MiB'] / saved['supervised']['graph_walk_total_activation_MiB']
    cols = []
    for v in ("plain", "trim", "mmapthr"):
        a = sorted(rss[(v, c)], key=lambda r: r['rep']); b = sorted(rss[(v, 'supervised')], key=lambda r: r['rep'])
        cols.append(", ".join(f"{x['peak_MiB']/y['peak_MiB']:.2f}" for x, y in zip(a, b)))
    a = [x['peak_MiB'] for x in rss[('mmapthr', c)]]; b = [x['peak_MiB'] for x in rss[('mmapthr', 'supervised')]]
    mm = (sum(a)/len(a))/(sum(b)/len(b)) if a and b else float('nan')
    print(f"| {c} | {ra:.3f} | {rs_:.3f} | {cols[0]} | {cols[1]} | {cols[2]} | {mm:.3f} |")
print()
print("RSS baselines (VmRSS before the measured step, MiB):")
for v in ("plain", "trim", "mmapthr"):
    print(" ", v, {c: [r['rss_before_MiB'] for r in sorted(rss[(v, c)], key=lambda r: r['rep'])] for c in CASES})
