//! The PLAN job: tfvars from the config snapshot, init, plan, show, upload the artifact.
