//! A QMP (QEMU Machine Protocol) client: [`protocol`] is the sans-IO machine (greeting,
//! capabilities, commands matched to responses by id, asynchronous events), [`client`]
//! the tokio transport over a unix socket or TCP.

pub mod client;
pub mod protocol;

pub use client::{Endpoint, QmpClient, QmpError};
pub use protocol::{CommandError, Event, Greeting, Output, Protocol, ProtocolError, QemuVersion};
