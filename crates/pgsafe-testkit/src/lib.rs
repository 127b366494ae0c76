//! Test support: real PostgreSQL clusters of every supported major version.
