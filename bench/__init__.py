"""Benchmarks, profilers and fault drills: run by make targets (`python -m bench.NAME`),
not shipped in the rayscale package. Measurement code here may read Ray's internals; the
product may not."""
