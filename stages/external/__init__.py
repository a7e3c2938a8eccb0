"""External labelled image sets (benchmarks): reading their layouts, and scoring them with the shipped detector and
CoDE's heads (the benchmark stage)."""
