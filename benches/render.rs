//! Load + render of the embedded Argo CD chart, in process.
//!
//! `cargo bench --bench render`. `render_many/*` is the library API's case:
//! the chart loaded and compiled once, one render of a value set (to
//! manifests, and to YAML text) per iteration, cycling through the reference
//! and combined value sets in `fixtures/argocd-values/`; `unseen` renders a
//! set never rendered before each time, `first_render` a freshly loaded chart. Whole-process timing
//! (what a user waits for) is measured by `scripts/bench-render.sh`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tendril::Secret;
use tendril::chart::{Chart, RenderOptions, Values, manifests_to_yaml};

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
    render_many(c);
}

/// The value sets of `fixtures/argocd-values/`, as render options.
fn value_sets() -> Vec<RenderOptions> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/argocd-values");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/argocd-values")
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let mut values = Values::new();
            values.merge_file(file).expect("value set");
            opts().with_values(values)
        })
        .collect()
}

fn render_many(c: &mut Criterion) {
    let sets = value_sets();
    let chart = Chart::embedded(CHART).expect("embedded chart");
    chart.compile().expect("compile");
    let mut group = c.benchmark_group("render_many");
    let mut next = sets.iter().cycle();
    group.bench_function("manifests", |b| {
        b.iter(|| {
            let opts = next.next().expect("a value set");
            black_box(chart.render(opts).expect("render"))
        })
    });
    // Each render a value set never rendered before (the sets above, each
    // with another server.replicas), as a suite of snapshot cases is: the
    // documents that changed are parsed, the others come from earlier renders.
    let mut next = sets.iter().cycle().zip(1u32..);
    group.bench_function("unseen", |b| {
        b.iter_batched(
            || {
                let (base, n) = next.next().expect("a value set");
                let mut values = base.values.clone();
                values
                    .set(&format!("server.replicas={n}"), false)
                    .expect("--set");
                base.clone().with_values(values)
            },
            |opts| {
                let manifests = chart.render(&opts).expect("render");
                black_box((opts, manifests))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut next = sets.iter().cycle();
    // Tera alone on the same sets: what a render costs before any parsing.
    group.bench_function("templates_only", |b| {
        b.iter(|| {
            let opts = next.next().expect("a value set");
            black_box(chart.render_raw(opts).expect("render"))
        })
    });
    // The first render of a loaded, compiled chart: every document parsed.
    let mut next = sets.iter().cycle();
    group.bench_function("first_render", |b| {
        b.iter_batched(
            || {
                let fresh = Chart::embedded(CHART).expect("embedded chart");
                fresh.compile().expect("compile");
                (fresh, next.next().expect("a value set"))
            },
            |(fresh, opts)| {
                let manifests = fresh.render(opts).expect("render");
                black_box((fresh, manifests))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut next = sets.iter().cycle();
    group.bench_function("yaml", |b| {
        b.iter(|| {
            let opts = next.next().expect("a value set");
            black_box(manifests_to_yaml(&chart.render(opts).expect("render")))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
