//! Remora's benchmarks. The side-by-side load harness is `perf/run` (see `perf/README.md`);
//! `cargo bench -p remora-perf` runs the criterion micro-benches of the hot pieces.
