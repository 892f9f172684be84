//! The DEPLOY job, phase by phase.
