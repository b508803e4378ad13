//! clickflow's benchmarks. The criterion micro-benchmarks are under `benches/`; the
//! end-to-end harness is `scripts/bench-batch`; recorded figures are in `RESULTS.md`.
