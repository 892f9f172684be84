//! The phase sequence, phase timing, the report.
//!
//! A job is a straight line of phases; each phase is timed and named in
//! progress output and in errors. [`plan`] runs a PLAN job, [`deploy`] a
//! DEPLOY job.

pub mod deploy;
pub mod plan;
