//! The report's JSON Schema: `docs/report.schema.json` is what the report
//! types generate (run with `TENDRIL_UPDATE_SCHEMA=1` to rewrite it after
//! changing them), and it accepts the reports of every job type and refuses
//! a report of another shape. The job tests validate each report they get
//! against the same file (`tendril_testkit::report_schema`).

use serde_json::json;
use tendril::job::{JobError, JobType};
use tendril::pipeline::report::{self, JobReport};
use tendril::pipeline::{JobEvent, JobRun, Phase, RunMode};
use tendril_testkit::report_schema::{SCHEMA_PATH, assert_valid_report};
use tokio_util::sync::CancellationToken;

#[test]
fn the_schema_file_is_what_the_report_types_generate() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMA_PATH);
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&report::schema()).unwrap()
    );
    if std::env::var_os("TENDRIL_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{SCHEMA_PATH} is not what the report types generate; run `TENDRIL_UPDATE_SCHEMA=1 cargo test --test report_schema` and review the diff"
    );
}

#[test]
fn reports_of_each_job_type_and_outcome_are_valid() {
    let unreadable = JobReport::unreadable_job(
        &JobError::Invalid {
            field: "job.id".into(),
            problem: "is empty".into(),
            fix: "give the provision job's id".into(),
        },
        JobType::Destroy,
        RunMode::Apply,
    );
    assert_valid_report(&serde_json::to_value(&unreadable).unwrap());
    for job_type in [JobType::Plan, JobType::Deploy, JobType::Destroy] {
        let sink = |_: JobEvent| {};
        let cancel = CancellationToken::new();
        let mut run = JobRun::start("j-1", job_type, RunMode::NoCluster, &sink, &cancel);
        run.skip(Phase::Credentials);
        run.warn("a warning");
        let report = run.finish(Ok(()), None);
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["status"], "SUCCESS");
        assert_valid_report(&v);
    }
}

#[test]
#[should_panic(expected = "does not match")]
fn a_report_in_another_vocabulary_is_refused() {
    // the old PLAN report said SUCCEEDED and had a timings_ms map
    assert_valid_report(&json!({
        "job_id": "j", "job_type": "PLAN", "status": "SUCCEEDED", "mode": "apply",
        "change_summary": null, "cluster": null, "argocd": null, "outputs": {},
        "timings": [], "warnings": [], "execution_metadata": {}
    }));
}
