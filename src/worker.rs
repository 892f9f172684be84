//! The claim loop, heartbeat, log shipping, graceful shutdown.
