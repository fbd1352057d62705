# Thin entry points over scripts/ and CMake/CTest. See README.md.
.PHONY: demo test bench build setup gpu-check format clean

demo:            ## set everything up and run the main job
	scripts/demo.sh

test:            ## set everything up and run every test
	scripts/test.sh

bench: setup     ## build and run the benchmark harness (perf/run_benchmarks.sh; ARGS=--full)
	perf/run_benchmarks.sh $(ARGS)

build: setup
	scripts/build.sh

setup:
	scripts/setup.sh

gpu-check:       ## on a GPU machine: the one-call GPU check (docs/cuda.md), one JSON
	perf/gpu_check.sh

format:
	find vmm kernels runtime ipc shims tests perf -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' | xargs clang-format -i

clean:
	rm -rf build build-*
