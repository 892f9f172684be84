//! Chart archives (.tgz), values merging, Tera rendering, manifest parsing.
