//! [`Journal`] on redb.

use super::error::JournalError;
use crate::pe::{Command, MigrationId, Registry};
use crate::Time;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};

/// Commands by (migration id, seq); values are JSON-encoded [`Command`]s.
pub(crate) const COMMANDS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("pe_commands");
/// Whole-migration commands (orchestrator) by (migration id, seq); JSON-encoded
/// [`crate::migration::Command`]s. A separate table, so an agent's and an orchestrator's
/// records never mix even when both run in one process with one file.
pub(crate) const MIGRATION_COMMANDS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("orchestrator_commands");
/// `format` → record format version.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Record format this build writes.
pub(crate) const FORMAT: u64 = 1;

/// The append-only, fsynced command journal of one agent.
pub struct Journal {
    pub(super) db: Database,
    pub(super) path: PathBuf,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`. The file is checked on open so
    /// that damage is an error rather than a panic later.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, JournalError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|source| JournalError::Open {
                path: path.clone(),
                source: Box::new(source),
            })?;
        let journal = Journal { db, path };
        journal.init()?;
        Ok(journal)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn storage(&self, op: &'static str) -> impl Fn(redb::Error) -> JournalError + '_ {
        move |source| JournalError::Storage {
            path: self.path.clone(),
            op,
            source: Box::new(source),
        }
    }

    fn init(&self) -> Result<(), JournalError> {
        let err = self.storage("initialize");
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
            let found = meta
                .get("format")
                .map_err(|e| err(e.into()))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format", FORMAT).map_err(|e| err(e.into()))?;
                }
                Some(FORMAT) => {}
                Some(found) => {
                    return Err(JournalError::UnsupportedFormat {
                        path: self.path.clone(),
                        found,
                        supported: FORMAT,
                    })
                }
            }
            tx.open_table(COMMANDS).map_err(|e| err(e.into()))?;
            // Added after format 1 shipped: older files simply gain the empty table.
            tx.open_table(MIGRATION_COMMANDS)
                .map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    /// Appends `cmd` and returns once it is on disk (redb's default durability fsyncs on
    /// commit). Appending the identical command again is accepted, so an executor that
    /// retries after an unclear failure does not stop.
    pub fn append(&self, cmd: &Command) -> Result<(), JournalError> {
        self.append_batch(std::slice::from_ref(cmd))
    }

    /// Appends every command of `cmds` in one write transaction, so one fsync covers
    /// the whole batch: a switchover's phase record and override cost one disk flush,
    /// not two. All or nothing: if any command is refused (same key, different
    /// command: [`JournalError::SeqTaken`]) none is written. Identical commands already
    /// present are accepted, as with [`Journal::append`]. An empty batch writes nothing.
    pub fn append_batch(&self, cmds: &[Command]) -> Result<(), JournalError> {
        if cmds.is_empty() {
            return Ok(());
        }
        let encoded = self.encode_all(cmds)?;
        let err = self.storage("append");
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = tx.open_table(COMMANDS).map_err(|e| err(e.into()))?;
            for (cmd, bytes) in cmds.iter().zip(&encoded) {
                self.put(&mut table, cmd, bytes)?;
            }
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    /// After the action at (`id`, `failed_seq`) failed: drops that migration's records
    /// after `failed_seq` (journaled with their batch but never carried out, and
    /// forgotten by the machine when it rewinds) and appends `answer`, the machine's
    /// reply to the failure, in one transaction. Without the drop the answer's seqs,
    /// which follow `failed_seq`, would collide with the abandoned tail. Other
    /// migrations' records are untouched.
    pub fn rewind(
        &self,
        id: &MigrationId,
        failed_seq: u64,
        answer: &[Command],
    ) -> Result<(), JournalError> {
        let encoded = self.encode_all(answer)?;
        let err = self.storage("rewind");
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = tx.open_table(COMMANDS).map_err(|e| err(e.into()))?;
            if let Some(first) = failed_seq.checked_add(1) {
                let range = (id.as_str(), first)..=(id.as_str(), u64::MAX);
                table
                    .retain_in(range, |_, _| false)
                    .map_err(|e| err(e.into()))?;
            }
            for (cmd, bytes) in answer.iter().zip(&encoded) {
                self.put(&mut table, cmd, bytes)?;
            }
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    fn encode_all(&self, cmds: &[Command]) -> Result<Vec<Vec<u8>>, JournalError> {
        cmds.iter()
            .map(|cmd| {
                serde_json::to_vec(cmd).map_err(|e| JournalError::Corrupt {
                    path: self.path.clone(),
                    migration: cmd.migration.to_string(),
                    seq: cmd.seq,
                    reason: format!("cannot encode: {e}"),
                })
            })
            .collect()
    }

    /// Inserts one encoded command unless its key holds it already; a different
    /// command at the key is [`JournalError::SeqTaken`].
    fn put(
        &self,
        table: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
        cmd: &Command,
        bytes: &[u8],
    ) -> Result<(), JournalError> {
        let err = self.storage("append");
        let key = (cmd.migration.as_str(), cmd.seq);
        let same = table
            .get(key)
            .map_err(|e| err(e.into()))?
            .map(|old| old.value() == bytes);
        match same {
            Some(true) => Ok(()),
            Some(false) => Err(JournalError::SeqTaken {
                path: self.path.clone(),
                migration: cmd.migration.to_string(),
                seq: cmd.seq,
            }),
            None => {
                table.insert(key, bytes).map_err(|e| err(e.into()))?;
                Ok(())
            }
        }
    }

    /// Every journaled command, ordered by migration id then seq.
    pub fn load(&self) -> Result<Vec<Command>, JournalError> {
        let err = self.storage("load");
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(COMMANDS).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| err(e.into()))? {
            let (key, value) = entry.map_err(|e| err(e.into()))?;
            let (migration, seq) = key.value();
            let corrupt = |reason: String| JournalError::Corrupt {
                path: self.path.clone(),
                migration: migration.to_owned(),
                seq,
                reason,
            };
            let cmd: Command = serde_json::from_slice(value.value())
                .map_err(|e| corrupt(format!("does not decode: {e}")))?;
            if cmd.migration.as_str() != migration || cmd.seq != seq {
                return Err(corrupt(format!(
                    "holds ({}, {}) instead",
                    cmd.migration, cmd.seq
                )));
            }
            out.push(cmd);
        }
        Ok(out)
    }

    /// Rebuilds every migration's machine (observations restart at `now`).
    pub fn load_registry(&self, now: Time) -> Result<Registry, JournalError> {
        let commands = self.load()?;
        Registry::restore(commands, now).map_err(|source| JournalError::Replay {
            path: self.path.clone(),
            source,
        })
    }

    /// Drops a finished migration's records (the caller checks it is torn down or
    /// aborted and its desired state is empty). Returns how many records went.
    pub fn forget(&self, id: &MigrationId) -> Result<u64, JournalError> {
        let err = self.storage("forget");
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        let removed;
        {
            let mut table = tx.open_table(COMMANDS).map_err(|e| err(e.into()))?;
            let before = table.len().map_err(|e| err(e.into()))?;
            table
                .retain(|(m, _), _| m != id.as_str())
                .map_err(|e| err(e.into()))?;
            removed = before - table.len().map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(removed)
    }
}
