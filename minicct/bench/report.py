"""The benchmark's report: the tables and target lines printed from the JSON results of orchestrate.run and
measure.snp_paper_scale."""
from __future__ import annotations


from .measure import NO_REG, PARTS

def format_paper(r) -> str:
    """The report of `snp_paper_scale`."""
    if "error" in r:
        return "paper scale: " + r["error"]
    p = r["projected"]
    h = lambda s: f"{s:.0f} s ({s / 60:.1f} min)" if s < 7200 else f"{s / 3600:.1f} h"      # noqa: E731
    b = r["blas"]
    return "\n".join([
        f"SNP analysis at the paper's scale: {r['variant']}, CIFAR-100 sizes (50,000 train + 10,000 test images), "
        f"flat read-out [100, 256 x 256] per site; random weights and images; {r['workers']} worker(s), OpenBLAS "
        f"kernel {b.get('corename')}",
        f"  measured: capture of the 7 encoder outputs for {r['n_capture']} images {r['capture_s']:.1f} s "
        f"({1000 * r['capture_s_per_image']:.1f} ms/image); read-out epoch on {r['n_readout']} memory-mapped "
        f"images {r['readout_epoch_s']:.1f} s, test pass on {r['n_test']} {r['readout_test_pass_s']:.1f} s "
        f"(analysis.costs.measure_snp_rates)",
        f"  peak resident memory {r['peak_rss_mb']:.0f} MB ({r['peak_step_mem_mb']:.0f} MB above the start)",
        f"  projected (linear in images): one capture pass over 60,000 images {h(p['capture_pass_all_sites_s'])}; "
        f"one read-out epoch of one site {h(p['readout_epoch_per_site_s'])}",
        f"  one site, 10 read-out epochs: {h(p['site_10_epochs_s'])}; 200 epochs (the authors'): "
        f"{h(p['site_200_epochs_s'])}",
        f"  all 7 sites: 10 epochs {h(p['all_sites_10_epochs_s'])}; 200 epochs {h(p['all_sites_200_epochs_s'])}",
        f"  disk: {r['disk_gb_per_site']:.1f} GB per site (float32), {r['disk_gb_all_sites']:.0f} GB for all 7 "
        f"in one pass (else one pass per group of sites that fits)",
        f"  targets: [{'met' if r['peak_rss_mb'] < 12000 else 'MISSED'}] peak memory < 12 GB (measured on the "
        f"subset; resident memory is one chunk / one mini-batch, independent of the number of images); "
        f"[{'met' if p['site_10_epochs_readout_s'] < 600 else 'MISSED'}] one site at 10 read-out epochs "
        f"< 10 min: {h(p['site_10_epochs_readout_s'])} (read-out training, test passes and fields; plus the "
        f"capture pass above, shared by all sites)"])


# ------------------------------------------------------------------------------------------------ report

def _one_line(entry) -> str:
    """Progress summary of a finished configuration (printed as soon as it is measured)."""
    parts = []
    for side in ("numpy", "torch", "baseline"):
        r = entry.get(side)
        if r is None:
            continue
        parts.append(f"{side}: " + (r["error"].splitlines()[0] if "error" in r else
                                    f"{r['step_s']:.3f} s/step (rounds {_fmt_rounds(r)}), {r['step_mem_mb']:.0f} MB"))
    return f"  {entry['label']} [{entry['reg']}], {entry['threads']} thread(s): " + "; ".join(parts)


def _fmt_rounds(r):
    return " ".join(f"{t:.3f}" for t in r.get("round_step_s", [r["step_s"]]))


def _reg_pairs(res):
    """{(name, batch, K, threads): {"reg": entry, "none": entry}} for configurations measured both ways."""
    pairs = {}
    for c in res["cases"]:
        key = (c["case"]["name"], c["case"]["batch"], c["label"], c["threads"])
        pairs.setdefault(key, {})["none" if c["reg"] == "none" else "reg"] = c
    return {k: v for k, v in pairs.items() if len(v) == 2}


def targets(res) -> list:
    """(target, measured, met) for the issue-15 targets this run measured (named configurations only)."""
    out = []
    full = max(res["threads"])
    for c in res["cases"]:
        n, name = c["numpy"], c["case"]["name"]
        tag = f"{c['label']} [{c['reg']}], {c['threads']} thr"
        extra = set(c["case"]["overrides"]) - set(NO_REG)
        if "error" in n or extra:
            continue
        if "time_ratio" in c and name in ("cct_2_3x2_32", "cct_7_3x1_32") and c["threads"] == full:
            out.append((f"{tag}: step time <= 0.6x PyTorch", f"{c['time_ratio']:.2f}x", c["time_ratio"] <= 0.6))
        if name == "cct_7_3x1_32" and c["threads"] == full:
            out.append((f"{tag}: >= 40% of the matmul rate", f"{100 * n['matmul_fraction']:.0f}%",
                        n["matmul_fraction"] >= 0.4))
        if "mem_ratio" in c:
            out.append((f"{tag}: step memory <= PyTorch's", f"{c['mem_ratio']:.2f}x", c["mem_ratio"] <= 1.0))
    for (name, batch, label, nt), pair in _reg_pairs(res).items():
        a, b = pair["reg"]["numpy"], pair["none"]["numpy"]
        if "error" in a or "error" in b or set(pair["reg"]["case"]["overrides"]) - set(NO_REG):
            continue
        extra = a["step_s"] / b["step_s"] - 1
        out.append((f"{label}, {nt} thr: attention dropout + drop-path add <= 15% to a step",
                    f"{100 * extra:+.0f}%", extra <= 0.15))
    for snp in res.get("snp", []):
        if "error" not in snp:
            out.append((f"SNP analysis of the classroom checkpoint < 60 s, {snp['threads']} thr",
                        f"{snp['seconds']['total']:.1f} s", snp["seconds"]["total"] < 60))
    return out


def _blas_line(side, r):
    b = r.get("blas") or {}
    return (f"  {side}: {b.get('library')} {b.get('config') or ''} kernel {b.get('corename')}, "
            f"{b.get('threads')} BLAS thread(s)" + (f" x {r['workers']} worker(s)" if "workers" in r else ""))


def format_report(res) -> str:
    """The human-readable report of `run`'s result."""
    m = res["machine"]
    env = m.get("openblas_env", {})
    lines = [f"minicct.bench: {m['cpu']} ({m['cpus']} CPUs), Python {m['python']}, NumPy {m['numpy']} "
             f"({m['blas']}); load average {m['load_start']:.1f} at start, {m['load_end']:.1f} at end",
             f"float32 training step = model.forward + cross-entropy + model.backward + AdamW.step; "
             f"median of {res['steps']} steps after {res['warmup']} warm-up steps, in each of "
             f"{res.get('rounds', 1)} alternating rounds (fresh processes); each side's fastest round counts",
             f"OpenBLAS overrides in this shell: {env or 'none'}; measuring processes "
             + ("KEEP them (--keep-openblas-env)" if res.get("keep_openblas_env") else "run WITHOUT them"),
             *(["allocator: every measuring process (NumPy, PyTorch, before) keeps freed memory, as minicct's "
                f"train_step does for itself: {res['malloc_env']}" if res["malloc_env"] else
                "allocator: glibc defaults in every measuring process (MINICCT_RETAIN_MEMORY=0)"]
               if "malloc_env" in res else []),
             "NumPy with N threads = N batch-parallel workers (minicct.parallel) of one BLAS thread each; "
             "PyTorch: torch.set_num_threads(N)", ""]
    head = (f"{'configuration':<24} {'regularisation':<27} {'thr':>3} {'step s':>7} {'img/s':>6} {'GFLOP':>6} "
            f"{'GFLOP/s':>7} {'matmul':>6} {'%mm':>4} {'mem MB':>6}")
    if res["torch_python"]:
        head += f" | {'torch s':>7} {'mem MB':>6} {'time x':>6} {'mem x':>5} {'logit diff':>10}"
    if res.get("baseline"):
        head += f" | {'before s':>8} {'mem MB':>6} {'speedup':>7}"
    lines += [head, "-" * len(head)]
    for c in res["cases"]:
        n = c["numpy"]
        if "error" in n:
            lines.append(f"{c['label']:<24} {c['reg']:<27} {c['threads']:3d} {n['error']}")
            continue
        row = (f"{c['label']:<24} {c['reg']:<27} {c['threads']:3d} {n['step_s']:7.3f} {n['images_per_s']:6.0f} "
               f"{n['flops']['step'] / 1e9:6.1f} {n['gflops']:7.1f} {n['matmul_gflops']:6.1f} "
               f"{100 * n['matmul_fraction']:3.0f}% {n['step_mem_mb']:6.0f}")
        t = c.get("torch")
        if t and "error" not in t:
            row += (f" | {t['step_s']:7.3f} {t['step_mem_mb']:6.0f} {c['time_ratio']:6.2f} {c['mem_ratio']:5.2f} "
                    f"{t['max_abs_logit_diff']:10.1e}")
        elif t:
            row += " | " + t["error"].splitlines()[0]
        b = c.get("baseline")
        if b and "error" not in b:
            row += f" | {b['step_s']:8.3f} {b['step_mem_mb']:6.0f} {c['speedup']:7.2f}"
        elif b:
            row += " | before: " + b["error"].splitlines()[0]
        lines.append(row)
    lines += ["", f"GFLOP: convolution and matmul FLOPs of one step (minicct.bench.step_flops). matmul: GFLOP/s of a "
              f"float32 [{res['matmul_n']}]^2 product in NumPy, same process, BLAS at N threads; %mm = GFLOP/s / matmul.",
              "mem: peak RSS of all steps minus RSS before the first step (VmHWM - VmRSS, same process). "
              "time x, mem x: NumPy / PyTorch. logit diff: max |difference| of the two models' logits."
              + (f" before: the minicct of {res['baseline']}; speedup = before / now." if res.get("baseline") else ""),
              "step s of every round: " + "; ".join(
                  f"{c['label']} [{c['reg']}] {c['threads']} thr: numpy {_fmt_rounds(c['numpy'])}"
                  + (f", torch {_fmt_rounds(c['torch'])}" if c.get("torch") and "error" not in c["torch"] else "")
                  for c in res["cases"] if "error" not in c["numpy"]),
              "", "what each side ran (BLAS library, kernel, threads):"]
    seen = set()
    for c in res["cases"]:
        for side in ("numpy", "torch"):
            r = c.get(side)
            if r and "error" not in r:
                line = _blas_line(f"{side}, {c['threads']} thr", r)
                if line not in seen:
                    seen.add(line)
                    lines.append(line)
    if res["breakdown_steps"]:
        lines += ["", f"where the time goes (one worker, BLAS at N threads): seconds per step (mean of "
                  f"{res['breakdown_steps']} steps with timers) and % of that step"]
        head = f"{'configuration':<24} {'regularisation':<27} {'thr':>3} " + " ".join(f"{p:>13}" for p in PARTS)
        lines += [head, "-" * len(head)]
    for c in res["cases"]:
        n = c["numpy"]
        if "error" in n or not n.get("breakdown_step_s"):
            continue
        tot = n["breakdown_step_s"]
        lines.append(f"{c['label']:<24} {c['reg']:<27} {c['threads']:3d} " + " ".join(
            f"{n['parts_s'][p]:7.3f} {100 * n['parts_s'][p] / tot:4.0f}%" for p in PARTS))
        missing = [p for p, k in n["part_calls"].items() if k == 0]
        if missing:
            lines.append(f"{'':<28} parts never called (the timer hooks missed them): {missing}")
        if n["non_float32"]:
            lines.append(f"{'':<28} arrays in the step that are not float32: {n['non_float32'][:5]}")
    for snp in res.get("snp", []):
        lines.append("")
        if "error" in snp:
            lines.append(f"SNP analysis ({snp['threads']} thread(s)): {snp['error']}")
            continue
        s = snp["seconds"]
        lines.append(f"SNP analysis of {snp['checkpoint']}, {snp['threads']} thread(s): {s['total']:.1f} s for "
                     f"{snp['n_sites']} sites ({snp['n_train']} training / {snp['n_test']} test images, "
                     f"{snp['epochs']} flat read-out epochs): load {s['load']:.1f} s, capturing activations "
                     f"{s['capture']:.1f} s, read-outs + fields + clusters + single-node predictions "
                     f"{s['analysis']:.1f} s")
        b = snp.get("baseline")
        if b:
            lines.append(f"  before ({res['baseline']}): " + (b["error"].splitlines()[0] if "error" in b else
                         f"{b['seconds']['total']:.1f} s (capturing {b['seconds']['capture']:.1f} s, analysis "
                         f"{b['seconds']['analysis']:.1f} s); speedup {b['seconds']['total'] / s['total']:.2f}"))
    tg = targets(res)
    if tg:
        lines += ["", "targets:"]
        lines += [f"  [{'met' if ok else 'MISSED'}] {name}: {value}" for name, value, ok in tg]
    return "\n".join(lines)
