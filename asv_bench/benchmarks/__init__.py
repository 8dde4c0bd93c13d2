"""asv benchmarks of ntkframe: every backend x size (see docs/benchmarks.md)."""
