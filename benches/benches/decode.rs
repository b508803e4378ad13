//! Decoding throughput: generated records (every timestamp form, a share of malformed
//! ones) through `decode_event`, in records per second.

use clickflow_events::{DEFAULT_MAX_EVENT_BYTES, decode_event};
use clickflow_ingest::generator::{Generator, GeneratorConfig, Record};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn records(count: u64) -> Vec<Vec<u8>> {
    let config = GeneratorConfig {
        events: count,
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::new(config).expect("default generator config is valid");
    let mut record = Record::new();
    let mut records = Vec::new();
    while generator.next_record(&mut record).is_some() {
        records.push(record.value().to_vec());
    }
    records
}

fn decode(c: &mut Criterion) {
    let records = records(10_000);
    let mut group = c.benchmark_group("decode_event");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("generated_records", |b| {
        b.iter(|| {
            records
                .iter()
                .filter(|r| decode_event(r, DEFAULT_MAX_EVENT_BYTES).is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
