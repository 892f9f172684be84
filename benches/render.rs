//! Load + render of the embedded Argo CD chart with default values, in process.
//!
//! `cargo bench --bench render`. Whole-process timing (what a user waits for)
//! is measured by `scripts/bench-render.sh`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tendril::Secret;
use tendril::chart::{Chart, RenderOptions, manifests_to_yaml};

const CHART: &str = "argocd";

fn opts() -> RenderOptions {
    RenderOptions::new("argocd", "argocd")
        .with_input("redis_password", Secret::new("bench-password".to_string()))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("chart");
    group.bench_function("load_embedded", |b| {
        b.iter(|| black_box(Chart::embedded(CHART).expect("embedded chart")))
    });
    group.bench_function("load_render_embedded_defaults", |b| {
        b.iter(|| {
            let chart = Chart::embedded(CHART).expect("embedded chart");
            black_box(chart.render(&opts()).expect("render"))
        })
    });
    group.bench_function("load_render_print_embedded_defaults", |b| {
        b.iter(|| {
            let chart = Chart::embedded(CHART).expect("embedded chart");
            let manifests = chart.render(&opts()).expect("render");
            black_box(manifests_to_yaml(&manifests))
        })
    });
    let chart = Chart::embedded(CHART).expect("embedded chart");
    chart.render(&opts()).expect("render");
    group.bench_function("render_again_compiled", |b| {
        b.iter(|| black_box(chart.render(&opts()).expect("render")))
    });
    group.bench_function("templates_only_compiled", |b| {
        b.iter(|| black_box(chart.render_raw(&opts()).expect("render")))
    });
    group.bench_function("compile_and_templates", |b| {
        b.iter_batched(
            || Chart::embedded(CHART).expect("embedded chart"),
            |fresh| black_box(fresh.render_raw(&opts()).expect("render")),
            criterion::BatchSize::SmallInput,
        )
    });
    let manifests = chart.render(&opts()).expect("render");
    group.bench_function("print_yaml", |b| {
        b.iter(|| black_box(manifests_to_yaml(&manifests)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
