"""Speed and memory benchmarks of simda against its peers (see docs/benchmarks.md)."""
