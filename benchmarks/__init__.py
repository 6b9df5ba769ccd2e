"""`make bench`: benchmark modules `benchmarks/bench_*.py`, each writing JSON to results/."""
