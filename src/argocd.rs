//! Argo CD install: values, admin password, URL.
