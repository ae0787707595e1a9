//! The orchestrator's table: whole-migration commands, same rules as the per-PE ones
//! (fsynced before acting, identical re-append accepted, damage is a typed error).

use super::error::JournalError;
use super::store::{Journal, MIGRATION_COMMANDS};
use crate::migration::{Command, Migration};
use crate::pe::MigrationId;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use std::collections::BTreeMap;

impl Journal {
    /// Appends a whole-migration command and returns once it is on disk. Appending the
    /// identical command again is accepted; another command under the same key is
    /// [`JournalError::SeqTaken`].
    pub fn append_migration(&self, cmd: &Command) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec(cmd).map_err(|e| JournalError::Corrupt {
            path: self.path.clone(),
            migration: cmd.migration.to_string(),
            seq: cmd.seq,
            reason: format!("cannot encode: {e}"),
        })?;
        let err = self.storage("append orchestrator command");
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = tx
                .open_table(MIGRATION_COMMANDS)
                .map_err(|e| err(e.into()))?;
            let key = (cmd.migration.as_str(), cmd.seq);
            let same = table
                .get(key)
                .map_err(|e| err(e.into()))?
                .map(|old| old.value() == bytes.as_slice());
            match same {
                Some(true) => return Ok(()),
                Some(false) => {
                    return Err(JournalError::SeqTaken {
                        path: self.path.clone(),
                        migration: cmd.migration.to_string(),
                        seq: cmd.seq,
                    })
                }
                None => {
                    table
                        .insert(key, bytes.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
            }
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    /// Every whole-migration command, grouped by migration, each group in seq order.
    pub fn load_migrations(&self) -> Result<BTreeMap<MigrationId, Vec<Command>>, JournalError> {
        let err = self.storage("load orchestrator commands");
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx
            .open_table(MIGRATION_COMMANDS)
            .map_err(|e| err(e.into()))?;
        let mut out: BTreeMap<MigrationId, Vec<Command>> = BTreeMap::new();
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
            out.entry(cmd.migration.clone()).or_default().push(cmd);
        }
        Ok(out)
    }

    /// Rebuilds every journaled whole migration (call
    /// [`Migration::resume`] on the unfinished ones next).
    pub fn load_migration_machines(&self) -> Result<Vec<Migration>, JournalError> {
        self.load_migrations()?
            .into_values()
            .map(|cmds| {
                Migration::restore(&cmds).map_err(|source| JournalError::MigrationReplay {
                    path: self.path.clone(),
                    source,
                })
            })
            .collect()
    }

    /// Drops a finished whole migration's records. Returns how many went.
    pub fn forget_migration(&self, id: &MigrationId) -> Result<u64, JournalError> {
        let err = self.storage("forget orchestrator migration");
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        let removed;
        {
            let mut table = tx
                .open_table(MIGRATION_COMMANDS)
                .map_err(|e| err(e.into()))?;
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
