//! Shared by the integration tests: message generators and the "same meaning"
//! projection used to compare with bgpkit-parser.

#![allow(dead_code)]

pub mod differential;
pub mod strategies;
