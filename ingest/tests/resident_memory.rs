//! The resident memory in the metrics follows the memory the process touches. It runs as
//! its own test binary: resident memory belongs to the whole process, and tests running
//! beside it in one process allocate and free memory of their own meanwhile.
#![allow(clippy::unwrap_used)]

use clickflow_ingest::status::IngestStatus;

fn resident_memory_bytes() -> u64 {
    let text = IngestStatus::default().prometheus_text();
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
        .unwrap_or_else(|| panic!("no resident memory in {text}"));
    value.parse().unwrap()
}

#[test]
fn resident_memory_grows_with_the_memory_the_process_touches() {
    let before = resident_memory_bytes();
    let touched = vec![1_u8; 256 << 20];
    let after = resident_memory_bytes();
    assert!(
        after >= before + (240 << 20),
        "{before} bytes before touching 256 MiB, {after} after"
    );
    std::hint::black_box(touched);
}
