//! Fetching plan artifacts (Supabase Storage, S3, local file) and checking their digest.
