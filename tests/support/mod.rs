//! Shared test-support code. Each integration-test binary includes this with
//! `mod support;` and may use only part of it.
#![allow(dead_code)]

pub mod bench;
pub mod certs;
pub mod cluster;
pub mod memory_upstream;
pub mod observe;
pub mod postern;
pub mod redis;
pub mod relay;
pub mod spool;
pub mod token;
pub mod transcript;
pub mod upstream;
