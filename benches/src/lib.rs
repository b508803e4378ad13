//! clickflow's benchmarks. The criterion micro-benchmarks are under `benches/`; the
//! end-to-end harnesses are `scripts/bench-batch`, `scripts/bench-ingest` and
//! `scripts/bench-api`, whose binaries share [`harness`]; recorded figures are in
//! `RESULTS.md`.

pub mod harness;
