"""CTest: perf/gpu_check.sh's logic without a GPU and without an nvcc build (issue 14).

Runs the one-call GPU check in its cheap rehearsal (PF_GPU_CHECK_REHEARSAL=1,
PF_GPU_CHECK_SKIP_BUILD=1) against the build this test belongs to, then checks the result
JSON: every step is present, in order, with a status and timing; no step failed except, where
the interpreter has no torch, the python step with its loud "no Python interpreter imports
torch" failure (and then the script must exit non-zero); the steps that need a GPU are
"skipped: rehearsal ..."; the result went where it was told (never perf/results/gpu-*).

    gpu_check_rehearsal_test.py <source dir> <build dir> <python with or without torch>
"""
import json
import os
import subprocess
import sys
import tempfile

STEPS = ["machine", "dependencies", "configure", "build", "no_libcuda", "gpu_probe",
         "stream0_race", "cuda_tests", "fanout_demo", "bench_kernels", "python"]
GPU_STEPS = ["gpu_probe", "stream0_race", "cuda_tests", "fanout_demo", "bench_kernels"]


def fail(msg):
    print("gpu_check_rehearsal_test: FAILED: " + msg)
    sys.exit(1)


def main():
    source, build, python = sys.argv[1:4]
    with tempfile.TemporaryDirectory(prefix="pf-gpu-check-") as tmp:
        result = os.path.join(tmp, "rehearsal.json")
        env = dict(os.environ, PF_GPU_CHECK_REHEARSAL="1", PF_GPU_CHECK_SKIP_BUILD="1",
                   BUILD_DIR=build, PF_GPU_CHECK_JSON=result, PF_PYTHON=python,
                   PF_GPU_TEST_JOBS="2")
        env.pop("OUT", None)
        # One quick pytest file where the build has the Python extension: the script's logic
        # is under test here, not the adapters (gpu_python_check.sh runs all four on a GPU).
        env.setdefault("PF_GPU_PYTEST", "tests/python/test_kv_layout.py")
        proc = subprocess.run([os.path.join(source, "perf", "gpu_check.sh")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=600)
        print(proc.stdout)
        if not os.path.exists(result):
            fail("no result JSON at " + result)
        with open(result) as f:
            doc = json.load(f)
    if doc.get("mode") != "rehearsal" or doc.get("skip_build") is not True:
        fail("mode/skip_build: %r/%r" % (doc.get("mode"), doc.get("skip_build")))
    for key in ("device", "commit", "started", "finished", "seconds", "status", "failed_steps"):
        if key not in doc:
            fail("result lacks " + key)
    names = [s["name"] for s in doc["steps"]]
    if names != STEPS:
        fail("steps %r, expected %r" % (names, STEPS))
    steps = {s["name"]: s for s in doc["steps"]}
    for s in doc["steps"]:
        if not isinstance(s["seconds"], int) or not isinstance(s["timeout_s"], int):
            fail("step %s without seconds/timeout_s: %r" % (s["name"], s))
        if not s["status"].startswith(("passed", "failed", "skipped")):
            fail("step %s has status %r" % (s["name"], s["status"]))
    allowed_failures = []
    py = steps["python"]["status"]
    if py.startswith("failed"):
        if "no Python interpreter imports torch" not in py:
            fail("python step failed: " + py)
        allowed_failures = ["python"]
    failed = [n for n in STEPS if steps[n]["status"].startswith("failed")]
    if failed != allowed_failures:
        fail("failed steps %r: %r" % (failed, [steps[n]["status"] for n in failed]))
    if doc["failed_steps"] != failed:
        fail("failed_steps %r, steps say %r" % (doc["failed_steps"], failed))
    if (proc.returncode == 0) != (not failed):
        fail("exit status %d with failed steps %r" % (proc.returncode, failed))
    for n in GPU_STEPS:
        if not steps[n]["status"].startswith("skipped: rehearsal"):
            fail("GPU step %s: %r" % (n, steps[n]["status"]))
    for n in ("configure", "build"):
        if not steps[n]["status"].startswith("skipped: PF_GPU_CHECK_SKIP_BUILD=1"):
            fail("%s: %r" % (n, steps[n]["status"]))
    tests = steps["cuda_tests"]["detail"]
    if tests is not None:  # a CUDA build: the CUDA cases really ran, one by one
        if tests["cases"] == 0 or tests["ran"] != tests["cases"] or tests["failed"] != 0:
            fail("cuda_tests detail: %r" % {k: v for k, v in tests.items() if k != "tests"})
        if len(tests["tests"]) != tests["cases"]:
            fail("cuda_tests lists %d of %d cases" % (len(tests["tests"]), tests["cases"]))
    print("gpu_check_rehearsal_test: ok (%d steps, failed %r)" % (len(STEPS), failed))


if __name__ == "__main__":
    main()
