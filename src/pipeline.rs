//! The phase sequence, phase timing, the report.
