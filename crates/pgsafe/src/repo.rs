//! The backup repository.

pub mod retention;
