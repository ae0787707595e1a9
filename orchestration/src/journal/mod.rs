//! The journal: every [`Command`](crate::pe::Command) of every migration, fsynced before
//! it is carried out, in an embedded `redb` database.
//!
//! A migration's journal is the ordered list of its commands (key: migration id and
//! seq). Rebuilding is folding: [`Journal::load_registry`] restores every machine, then
//! the agent calls [`Registry::resume`](crate::pe::Registry::resume) (finish interrupted
//! phases) and reconciles kernel and BGP with
//! [`Registry::desired_state`](crate::pe::Registry::desired_state).
//!
//! The orchestrator's whole-migration commands ([`crate::migration::Command`]) live in a
//! second table of the same format: [`Journal::append_migration`],
//! [`Journal::load_migrations`], [`Journal::forget_migration`].
//!
//! Records are JSON, readable with any redb tool when things go wrong; an unknown or
//! damaged record is a [`JournalError::Corrupt`] naming its key, never a panic.

mod error;
mod orchestrator;
mod store;

pub use error::JournalError;
pub use store::Journal;

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod orchestrator_tests;
#[cfg(test)]
mod tests;
