#!/usr/bin/python3
"""chaos: the driver of tests/test_chaos.sh (issue 17: chaos equals clean).

One training job of 3 workers (mpirun -np 4) is run twice with the same flags: once without
interruption, and once under a seeded schedule of faults, relaunched with --resume auto after
each one that ends it until it reaches its last step. Then the chaos run's final
model.safetensors and optimizer.safetensors must be byte-identical to the clean run's, and its
metrics.jsonl and TensorBoard's view must hold every step exactly once, in order, with the clean
run's numbers.

The faults, each at a step of the run drawn from the seed (every kind once, the rest at random):
  kill9  kill -9 of a random rank: the job must end non-zero within 20 s; relaunched
  stop   SIGSTOP of a random rank for a while, then SIGCONT: with the short --worker-timeout
         the job either aborts (non-zero exit: relaunched) or goes on; which is reported
  pause  hclctl pause, a while (longer than --worker-timeout at times), hclctl resume: the job
         says paused and takes no step meanwhile
  ckpt   hclctl checkpoint: the reply names a checkpoint that exists
  usr1   SIGUSR1 to mpirun, which forwards it: a checkpoint, and the job goes on
  term0  SIGTERM to rank 0: a checkpoint at the next step boundary and exit 0; relaunched
  disk   the run directory's file system (a small tmpfs) filled with a file until a checkpoint
         fails with ENOSPC and a while more, then the file removed: the job goes on and writes
         its next checkpoint
A cut link needs the multi-host test bed of the cluster issue and is not among them. A job
that aborts with no fault (a wait past the short --worker-timeout on a busy machine) is
reported and relaunched too, up to UNPLANNED_MAX times; any other end of a job fails the test.

usage: chaos.py --build B --work DIR --disk MOUNT [--seed N] [--faults K] [--steps T]
  DIR holds the data, the clean run and the logs; MOUNT is the small file system the chaos
  run's directory (MOUNT/run) lives on. Exit 0: chaos equals clean; 1: it does not, or a fault
  was not handled as promised."""
import argparse
import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfevents_reader  # noqa: E402

KINDS = ["kill9", "stop", "pause", "ckpt", "usr1", "term0", "disk"]
WORKER_TIMEOUT = 3.0     # --worker-timeout: short, so a SIGSTOP of a few seconds may abort the job
UNPLANNED_MAX = 5        # aborts with no fault (a wait past it on a busy machine) tolerated
NP = 4
GAP = (30, 90)          # steps of progress before each fault


class Fail(Exception):
    pass


def say(msg):
    print(f"chaos: {msg}", flush=True)


def schedule(seed, n):
    """n faults: every kind once, the rest drawn; each after a drawn number of steps past the
    furthest step the run had reached when the fault before was over (so every fault comes
    after new progress, relaunches or not); ranks and durations drawn. A function of the seed."""
    rng = random.Random(seed)
    kinds = KINDS + [rng.choice(KINDS) for _ in range(max(0, n - len(KINDS)))]
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        f = {"kind": kind, "after": rng.randrange(GAP[0], GAP[1] + 1)}
        if kind in ("kill9", "stop"):
            f["rank"] = rng.randrange(NP)
        if kind == "stop":
            f["secs"] = round(rng.uniform(0.5, 3 * WORKER_TIMEOUT), 1)
        if kind == "pause":
            f["secs"] = round(rng.uniform(0.5, 2 * WORKER_TIMEOUT), 1)
        if kind == "disk":
            f["secs"] = round(rng.uniform(0.5, 2.0), 1)
        out.append(f)
    return out


def describe(f):
    extra = {"kill9": "rank {rank}", "stop": "rank {rank} for {secs} s", "pause": "for {secs} s",
             "disk": "full for {secs} s past a failed checkpoint"}.get(f["kind"], "")
    return f"{f['kind']} {extra.format(**f)}".strip()


# ---- processes -------------------------------------------------------------------------------

def session_pids(sid):
    """The processes of session sid: mpirun (started as a session leader) and its ranks."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[3]) == sid:
            out.append(int(d))
    return out


class Job:
    """One launch of mpirun -np 4 hcl-train, its output in a log file."""

    def __init__(self, argv, log_path, run):
        self.log_path, self.run = log_path, run
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, secs):
        try:
            return self.proc.wait(secs)
        except subprocess.TimeoutExpired:
            return None

    def text(self):
        return open(self.log_path, errors="replace").read()

    def tail(self, n=25):
        return "\n".join(self.text().splitlines()[-n:])

    def rank_pid(self, rank):
        want = f"OMPI_COMM_WORLD_RANK={rank}".encode()
        for p in session_pids(self.proc.pid):
            try:
                env = open(f"/proc/{p}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if p != self.proc.pid and want in env:
                return p
        raise Fail(f"no process of rank {rank}\n{self.tail()}")

    def kill(self):
        for p in session_pids(self.proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait(10)


def last_step(run):
    """The step of metrics.jsonl's last whole line (-1: no file yet)."""
    try:
        with open(f"{run}/metrics.jsonl", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read()
    except OSError:
        return -1
    for line in reversed(tail.split(b"\n")[:-1]):
        m = re.match(rb'\{"step": (\d+)', line)
        if m:
            return int(m.group(1))
    return 0


def wait_for(cond, secs, what, job=None):
    """Poll cond() until true; Fail after secs, or at once if job ended meanwhile."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if cond():
            return
        if job is not None and job.proc.poll() is not None:
            raise Fail(f"the job ended (exit {job.proc.returncode}) while waiting for {what}\n{job.tail()}")
        time.sleep(0.05)
    raise Fail(f"{what}: not within {secs} s" + (f"\n{job.tail()}" if job else ""))


def hclctl(build, run, *args):
    out = subprocess.run([f"{build}/hclctl", "--run-dir", run, "--timeout", "20000", *args],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise Fail(f"hclctl {' '.join(args)}: exit {out.returncode}: {out.stdout}{out.stderr}")
    return out.stdout.strip()


def ended(job, secs, want_zero):
    """Wait for the job's end; its exit code must be 0 (want_zero) or not. Returns it."""
    t0 = time.monotonic()
    rc = job.wait(secs)
    if rc is None:
        raise Fail(f"the job did not end within {secs} s\n{job.tail()}")
    if (rc == 0) != want_zero:
        raise Fail(f"exit {rc}, wanted {'0' if want_zero else 'non-zero'}\n{job.tail()}")
    return rc, time.monotonic() - t0


# ---- the faults: each returns (what happened, whether the job ended) ------------------------

def fault_kill9(ctx, job, f):
    pid = job.rank_pid(f["rank"])
    os.kill(pid, signal.SIGKILL)
    rc, secs = ended(job, 20, want_zero=False)
    return f"the job ended in {secs:.1f} s with exit {rc}", True


def fault_stop(ctx, job, f):
    pid = job.rank_pid(f["rank"])
    os.kill(pid, signal.SIGSTOP)
    rc = job.wait(f["secs"])
    if pid in session_pids(job.proc.pid):
        os.kill(pid, signal.SIGCONT)
    if rc is None:
        # aborted a little later (the watchdogs act once a second), or steps again
        at = last_step(job.run)
        end = time.monotonic() + WORKER_TIMEOUT + 15
        while time.monotonic() < end and job.proc.poll() is None and last_step(job.run) < at + 5:
            time.sleep(0.05)
        rc = job.proc.poll()
        if rc is None and last_step(job.run) < at + 5:
            raise Fail(f"neither aborted nor stepping {WORKER_TIMEOUT + 15} s after SIGCONT\n{job.tail()}")
    if rc is None:
        return "survived: the job went on after SIGCONT", False
    if rc == 0:
        raise Fail(f"exit 0 after a SIGSTOP\n{job.tail()}")
    lines = [ln for ln in job.text().splitlines() if "--worker-timeout" in ln and "ERROR" in ln]
    why = re.sub(r"^.*ERROR\s+", "", lines[0]) if lines else "no timeout line"
    return f"aborted: exit {rc} ({why[:110]})", True


def fault_pause(ctx, job, f):
    reply = hclctl(ctx.build, job.run, "pause")
    if not reply.startswith("ok: pause at step"):
        raise Fail(f"pause: {reply}")
    time.sleep(0.3)
    st0 = json.loads(hclctl(ctx.build, job.run, "--json", "status"))
    time.sleep(f["secs"])
    st1 = json.loads(hclctl(ctx.build, job.run, "--json", "status"))
    if st0["state"] != "paused" or st1["state"] != "paused" or st1["step"] != st0["step"]:
        raise Fail(f"paused job: state {st0['state']} step {st0['step']}, then {st1['state']} step {st1['step']}")
    reply = hclctl(ctx.build, job.run, "resume")
    if not reply.startswith("ok: resume"):
        raise Fail(f"resume: {reply}")
    wait_for(lambda: last_step(job.run) > st1["step"] + 2, 20, "steps after resume", job)
    return f"paused at step {st1['step']} for {f['secs']} s (no step taken), resumed", False


def fault_ckpt(ctx, job, f):
    reply = hclctl(ctx.build, job.run, "checkpoint")
    m = re.match(r"ok: checkpoint at step (\d+): (\S+)$", reply)
    if not m or not os.path.isfile(f"{m.group(2)}/model.safetensors") \
            or not m.group(2).endswith(f"step-{int(m.group(1)):08d}"):
        raise Fail(f"hclctl checkpoint: {reply!r}")
    return f"checkpoint {os.path.basename(m.group(2))}", False


def count(job, pattern):
    return len(re.findall(pattern, job.text()))


def fault_usr1(ctx, job, f):
    asked, written = count(job, "checkpoint requested by signal"), count(job, r"INFO  checkpoint \S+/step-")
    os.kill(job.proc.pid, signal.SIGUSR1)
    wait_for(lambda: count(job, "checkpoint requested by signal") > asked, 20, "SIGUSR1's request", job)
    wait_for(lambda: count(job, r"INFO  checkpoint \S+/step-") > written, 20, "SIGUSR1's checkpoint", job)
    step = re.findall(r"INFO  checkpoint \S+/step-0*(\d+)", job.text())[-1]
    return f"checkpoint of step {step}, the job goes on", False


def fault_term0(ctx, job, f):
    os.kill(job.rank_pid(0), signal.SIGTERM)
    rc, secs = ended(job, 30, want_zero=True)
    m = re.search(r"stopped at step (\d+)", job.text())
    latest = open(f"{job.run}/checkpoints/latest").read().strip()
    if not m or latest != f"step-{int(m.group(1)):08d}":
        raise Fail(f"SIGTERM: stop line {m and m.group(0)}, latest {latest}\n{job.tail()}")
    return f"stopped at step {m.group(1)} with a checkpoint, exit 0 in {secs:.1f} s", True


def fill(path):
    """Write path until the file system is full; at the end, in 4 KB pieces."""
    with open(path, "wb", buffering=0) as out:
        for size in (1 << 20, 4096):
            block = b"\0" * size
            while True:
                try:
                    out.write(block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break


def fault_disk(ctx, job, f):
    failed = count(job, r"checkpoint of step \d+ failed")
    path = f"{ctx.disk}/fill"
    t0 = time.monotonic()
    fill(path)
    try:
        wait_for(lambda: count(job, r"checkpoint of step \d+ failed") > failed, 30, "a failed checkpoint", job)
        time.sleep(f["secs"])
    finally:
        os.unlink(path)
    full = time.monotonic() - t0
    text = job.text()
    m = re.findall(r"checkpoint of step (\d+) failed, training goes on: (.*)", text)[failed]
    if "No space left on device" not in m[1]:
        raise Fail(f"the failed checkpoint says: {m[1]}")
    done = count(job, r"INFO  checkpoint \S+/step-")
    wait_for(lambda: count(job, r"INFO  checkpoint \S+/step-") > done or job.proc.poll() == 0, 30,
             "a checkpoint after the disk was freed", job)
    return (f"full for {full:.1f} s: checkpoint of step {m[0]} failed (ENOSPC), the job went on and "
            "checkpointed again"), False


FAULTS = {"kill9": fault_kill9, "stop": fault_stop, "pause": fault_pause, "ckpt": fault_ckpt,
          "usr1": fault_usr1, "term0": fault_term0, "disk": fault_disk}


# ---- the runs ------------------------------------------------------------------------------

class Ctx:
    def __init__(self, args):
        self.build, self.work, self.disk, self.steps = args.build, args.work, args.disk, args.steps
        self.data = f"{args.work}/data"
        self.jobs = []

    def launch(self, run, log):
        argv = ["mpirun", "--oversubscribe", "-np", str(NP), f"{self.build}/hcl-train", "--data", self.data,
                "--run-dir", run, "--hidden", "256,128", "--dim", "64", "--batch-size", "1024",
                "--steps", str(self.steps), "--threads", "1", "--seed", "5", "--log-every", "1",
                "--checkpoint-every", "20", "--keep", "3", "--worker-timeout", str(WORKER_TIMEOUT),
                "--resume", "auto"]
        job = Job(argv, log, run)
        self.jobs.append(job)
        return job


def resumed(job):
    m = re.search(r"resuming from \S+/(step-\d+)", job.text())
    return f"resumed from {m.group(1)}" if m else "started at step 0"


def unplanned(ctx, job, rc):
    """The job ended with no fault to end it: done, or aborted by a watchdog on a busy machine
    (a wait past --worker-timeout: reported, relaunched). Anything else fails."""
    if rc == 0 and "INFO  done: " in job.text() and last_step(job.run) == ctx.steps:
        return "done"
    timeouts = [ln for ln in job.text().splitlines() if "--worker-timeout" in ln and "ERROR" in ln]
    if rc != 0 and timeouts:
        why = re.sub(r"^.*ERROR\s+", "", timeouts[0])[:100]
        return f"aborted with no fault (a wait past --worker-timeout: {why})"
    raise Fail(f"the job ended by itself with exit {rc}\n{job.tail()}")


def run_chaos(ctx, faults, budget):
    """Launch, inject the faults in turn, relaunch after each one that ends the job, until a
    launch is done. Returns the number of launches."""
    run = f"{ctx.disk}/run"
    deadline = time.monotonic() + budget
    nxt, launches, high, aborts = 0, 0, 0, 0
    while True:
        launches += 1
        if launches > len(faults) + aborts + 1:
            raise Fail(f"{launches} launches for {len(faults)} faults and {aborts} aborts without one")
        job = ctx.launch(run, f"{ctx.work}/launch{launches}.log")
        wait_for(lambda: re.search(r"resuming from|no checkpoint in", job.text()), 60, "the start of a launch", job)
        say(f"launch {launches}: {resumed(job)}")
        while True:
            if time.monotonic() > deadline:
                raise Fail(f"not done within {budget} s: at step {last_step(run)}, fault {nxt} of {len(faults)}")
            if nxt < len(faults) and job.proc.poll() is None and last_step(run) >= high + faults[nxt]["after"]:
                f, at = faults[nxt], last_step(run)
                nxt += 1
                try:
                    what, over = FAULTS[f["kind"]](ctx, job, f)
                except Fail as e:
                    raise Fail(f"fault {nxt} ({describe(f)}) at step {at}: {e}")
                high = max(at, last_step(run))
                say(f"fault {nxt}/{len(faults)} at step {at}: {describe(f)}: {what}")
                if over:
                    break
                continue
            rc = job.proc.poll()
            if rc is not None:
                high = max(high, last_step(run))
                how = unplanned(ctx, job, rc)
                aborts += how != "done"
                if aborts > UNPLANNED_MAX:
                    raise Fail(f"the job aborted {aborts} times with no fault: too busy a machine for "
                               f"--worker-timeout {WORKER_TIMEOUT:g}?")
                say(f"launch {launches}: {how}")
                if how == "done":
                    if nxt < len(faults):
                        say(f"{len(faults) - nxt} faults not reached before the end")
                    return launches
                break
            time.sleep(0.05)


def metrics_rows(path, problems):
    text = open(path, errors="replace").read()
    if text and not text.endswith("\n"):
        problems.append(f"{path} ends in a torn line: {text.splitlines()[-1][:80]!r}")
    rows = []
    for i, line in enumerate(text.splitlines()):
        try:
            rows.append(json.loads(line))
        except ValueError:
            problems.append(f"{path}:{i + 1}: not a JSON line: {line[:100]!r}")
    return rows


def check_files(clean, run, final, problems):
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = open(f"{clean}/checkpoints/{final}/{name}", "rb").read()
        b = open(f"{run}/checkpoints/{final}/{name}", "rb").read()
        if a != b:
            at = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
            problems.append(f"{final}/{name} differs from the clean run's ({len(a)} and {len(b)} bytes, "
                            f"first difference at byte {at})")


def check_metrics(clean, run, want, problems):
    ref, got = metrics_rows(f"{clean}/metrics.jsonl", problems), metrics_rows(f"{run}/metrics.jsonl", problems)
    steps = [r.get("step") for r in got]
    if steps != want:
        dup = sorted({s for s in steps if steps.count(s) > 1})
        gone = sorted(set(want) - set(steps))
        problems.append(f"metrics.jsonl: {len(steps)} lines for {len(want)} steps; twice: {dup[:10]}; "
                        f"missing: {gone[:10]}{'; out of order' if sorted(steps) == want else ''}")
        return
    keys = ("step", "epoch", "loss", "pair_loss", "lr", "logit_scale", "grad_norm", "skipped")
    for a, b in zip(ref, got):
        bad = [k for k in keys if a.get(k) != b.get(k)]
        if bad:
            problems.append(f"metrics.jsonl step {a['step']}: {bad[0]} {b.get(bad[0])} where the clean run "
                            f"has {a.get(bad[0])}")
            return


def check_tensorboard(clean, run, want, problems):
    try:
        ref, tb = tfevents_reader.scalars(f"{clean}/tensorboard"), tfevents_reader.scalars(f"{run}/tensorboard")
    except ValueError as e:
        problems.append(f"TensorBoard: {e}")
        return
    for tag in ("loss", "lr", "logit_scale", "grad_norm"):
        have = tb.get(tag, {})
        if sorted(have) != want:
            problems.append(f"TensorBoard {tag}: {len(have)} steps of {len(want)}; "
                            f"missing {sorted(set(want) - set(have))[:10]}")
        elif have != ref[tag]:
            s = next(s for s in want if have[s] != ref[tag][s])
            problems.append(f"TensorBoard {tag} at step {s}: {have[s]} where the clean run has {ref[tag][s]}")


def check_same(ctx, clean, run):
    """The chaos run's final checkpoint is the clean run's, byte for byte; its metrics.jsonl and
    TensorBoard's view hold every step once, in order, with the clean run's numbers. Fails
    naming every one that does not hold."""
    want, problems = list(range(1, ctx.steps + 1)), []
    check_files(clean, run, f"step-{ctx.steps:08d}", problems)
    check_metrics(clean, run, want, problems)
    check_tensorboard(clean, run, want, problems)
    if problems:
        raise Fail("chaos differs from clean:\n  " + "\n  ".join(problems))
    return len(want)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--disk", required=True)
    ap.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: $HCL_CHAOS_SEED, else drawn)")
    ap.add_argument("--faults", type=int, default=10)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=420, help="seconds the chaos run may take")
    args = ap.parse_args()
    seed = args.seed
    if seed is None:
        seed = int(os.environ.get("HCL_CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
    faults = schedule(seed, args.faults)
    say(f"seed {seed} (HCL_CHAOS_SEED={seed} replays this schedule): "
        + "; ".join(f"+{f['after']} steps {describe(f)}" for f in faults))
    ctx = Ctx(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        subprocess.run([f"{ctx.build}/hcl-data", "synth", ctx.data, "--rows", "4096", "--widths", "64,32,16",
                        "--classes", "8", "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
        t0 = time.monotonic()
        clean = ctx.launch(f"{ctx.work}/clean", f"{ctx.work}/clean.log")
        ended(clean, 300, want_zero=True)
        t1 = time.monotonic()
        say(f"clean run: {args.steps} steps in {t1 - t0:.0f} s")
        launches = run_chaos(ctx, faults, args.budget)
        t2 = time.monotonic()
        say(f"chaos run: {len(faults)} faults, {launches} launches, {t2 - t1:.0f} s")
        n = check_same(ctx, f"{ctx.work}/clean", f"{ctx.disk}/run")
        say(f"chaos equals clean: model.safetensors and optimizer.safetensors byte-identical; metrics.jsonl and "
            f"TensorBoard have each of the {n} steps once, with the clean run's numbers")
    except Fail as e:
        say(f"FAIL (seed {seed}): {e}")
        return 1
    finally:
        for job in ctx.jobs:
            job.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
