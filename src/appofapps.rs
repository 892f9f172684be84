//! App of Apps rendering from facts.
