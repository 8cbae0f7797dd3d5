"""Speed and memory of a float32 training step, and of the SNP analysis: `python -m minicct.bench`.

For every configuration (a named variant, a batch size, a number of classes), in a fresh subprocess:
    step      median wall time of one real training step (model.forward, cross-entropy with label smoothing
              0.1, model.backward, AdamW.step) over --steps steps after --warmup steps; images per second.
    parts     the same step again, timed stage by stage by the names of the functions the model calls (PartTimer,
              a profile function: nothing is replaced; see PARTS): where the time goes.
    GFLOP/s   FLOPs of the step's convolutions and matrix products (`step_flops`) / median step time, next to
              the float32 matrix-multiply rate NumPy reaches in the same process (`matmul_rate`).
    memory    peak resident memory of the steps: VmHWM of /proc/self/status after the steps (reset just before
              the first step) minus VmRSS before the first step. Parameters, batch and imports are in the
              baseline; the optimizer state and the libraries' work buffers, made by the first step, count as
              step memory. Where /proc is missing: ru_maxrss, same subtraction.
Then the full SNP analysis of the classroom checkpoint (analysis.report.run_snp on every site of every encoder)
is timed (`snp_analysis`), also in its own subprocess.

PyTorch is never a dependency. When it is importable, or `--torch-python PATH` names an interpreter that has
it (e.g. a venv: `--torch-python /tmp/torchenv/bin/python`), every configuration is also timed in PyTorch, in
its own subprocess, with the same architecture (minicct/tools/torch_cct.py: the reference CCT, norm1 on the residual stream),
the same initial parameters, the same batch, label smoothing, AdamW settings and thread count; the time and
memory ratios are printed. All numbers of one invocation come from one run on one machine: compare ratios,
not absolute times (a shared machine can be several times slower from one minute to the next; the load
average at start and end is printed).

    python -m minicct.bench                                     # the default configurations, table output
    python -m minicct.bench --config cct_7_3x1_32@32:100 --steps 10 --json bench.json
    python -m minicct.bench --torch-python /tmp/torchenv/bin/python --no-snp
    python -m minicct.bench --threads 2,1 --baseline ../minicct-old     # before/after against another checkout
Threads: --threads N[,N...] (default: the CPUs this process may use): N batch-parallel workers of one BLAS thread
each for NumPy (minicct.parallel; OPENBLAS_NUM_THREADS=N for the rest, e.g. the matmul rate), torch.set_num_threads(N)
for PyTorch; several counts are measured one after the other.
Fairness: the measuring processes run without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (machine overrides that force
other OpenBLAS kernels; --keep-openblas-env keeps them); each prints its BLAS library, kernel and threads; NumPy and
PyTorch run in --rounds alternating rounds (fresh processes) and each side's fastest round counts. Every
configuration with dropout / drop-path is measured as configured and without them (--reg). minicct's training
step keeps freed memory in its process (minicct/memory.py, through parallel.batch_parallel); every measuring process -- PyTorch and --baseline too --
gets the same glibc settings (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, `malloc_env`), so no side wins by
its allocator alone; MINICCT_RETAIN_MEMORY=0 gives every side glibc's defaults.

Files: measure.py (what is measured, in the process it runs in), orchestrate.py (fresh subprocesses, rounds,
the same environment for every side), report.py (the tables), cli.py (the command line).
"""
from .measure import (CLASSROOM_CHECKPOINT, DEFAULT_CASES, LR, NO_REG, PAPER, PARTS, REPO, SMOOTHING, WEIGHT_DECAY,
                      Case, PartTimer, bench_numpy, bench_torch, make_batch, matmul_rate, non_float32_arrays,
                      parse_overrides, peak_rss_mb, reset_peak_rss, rss_now_mb, snp_analysis, snp_paper_scale,
                      step_flops, timed_steps, torch_available, one_step)
from .orchestrate import (OPENBLAS_OVERRIDES, _child_env, _run_worker, _worker, malloc_env, run, usable_cpus,
                          with_and_without_regularisation)
from .report import format_paper, format_report, targets
from .cli import main
