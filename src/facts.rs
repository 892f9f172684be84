//! Typed infrastructure facts from Terraform outputs.
