//! Server-side apply of a manifest bundle in stages; readiness rules; waiting.
