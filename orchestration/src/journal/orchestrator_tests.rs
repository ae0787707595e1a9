//! The orchestrator's table: round trips, crash and reopen, damage as typed errors, and
//! files written before the table existed.

use super::store::{COMMANDS, FORMAT, META, MIGRATION_COMMANDS};
use super::*;
use crate::migration::tests::plan;
use crate::migration::{Command, Event, Migration, Phase, QuiesceStyle, ReplayError};
use crate::Time;
use std::path::Path;

/// Runs a migration a few steps, appending every command as it is issued.
fn journaled_run(journal: &Journal) -> Migration {
    let (mut m, first) = Migration::new(plan(true, QuiesceStyle::Observe), Time::ZERO).unwrap();
    let append = |cmds: &[Command]| {
        for c in cmds {
            journal.append_migration(c).unwrap();
        }
    };
    append(&first);
    append(&m.handle(Event::Start, Time::from_millis(1)).unwrap());
    let seq = m.status().pending[0].0;
    append(&m.handle(Event::Done { seq }, Time::from_millis(2)).unwrap());
    append(&m.handle(Event::Abort, Time::from_millis(3)).unwrap());
    m
}

#[test]
fn whole_migrations_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let live = {
        let journal = Journal::open(&path).unwrap();
        journaled_run(&journal)
    };
    let journal = Journal::open(&path).unwrap();
    // The per-PE table is untouched by the orchestrator's records.
    assert!(journal.load().unwrap().is_empty());
    let machines = journal.load_migration_machines().unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].status(), live.status());
    assert_eq!(machines[0].phase(), Phase::RollingBack);
    // Identical re-append is fine; another command under a taken seq is not.
    let last = live.log().last().unwrap().clone();
    journal.append_migration(&last).unwrap();
    let mut other = last.clone();
    other.action = crate::migration::Action::StorageAbort;
    assert!(matches!(
        journal.append_migration(&other),
        Err(JournalError::SeqTaken { .. })
    ));
    assert_eq!(
        journal.forget_migration(live.id()).unwrap(),
        live.log().len() as u64
    );
    assert!(journal.load_migrations().unwrap().is_empty());
}

fn write_raw(path: &Path, migration: &str, seq: u64, value: &[u8]) {
    let db = redb::Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(MIGRATION_COMMANDS).unwrap();
        t.insert((migration, seq), value).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn damaged_records_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let log = {
        let journal = Journal::open(&path).unwrap();
        journaled_run(&journal).log().to_vec()
    };
    // Not JSON.
    write_raw(&path, "vm1-move", 2, b"{not json");
    let journal = Journal::open(&path).unwrap();
    match journal.load_migrations() {
        Err(JournalError::Corrupt { migration, seq, .. }) => {
            assert_eq!((migration.as_str(), seq), ("vm1-move", 2))
        }
        other => panic!("{other:?}"),
    }
    drop(journal);
    // Valid JSON under the wrong key.
    write_raw(&path, "vm1-move", 2, &serde_json::to_vec(&log[3]).unwrap());
    let journal = Journal::open(&path).unwrap();
    assert!(matches!(
        journal.load_migration_machines(),
        Err(JournalError::Corrupt { seq: 2, .. })
    ));
    drop(journal);
    // A record of an unknown kind.
    let mut v = serde_json::to_value(&log[2]).unwrap();
    v["action"] = serde_json::json!({"action": "launch-missiles"});
    write_raw(&path, "vm1-move", 2, &serde_json::to_vec(&v).unwrap());
    let journal = Journal::open(&path).unwrap();
    assert!(matches!(
        journal.load_migrations(),
        Err(JournalError::Corrupt { seq: 2, .. })
    ));
    drop(journal);
    // Decodes, but does not fold: a gap.
    let db = redb::Database::create(&path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(MIGRATION_COMMANDS)
        .unwrap()
        .remove(("vm1-move", 2))
        .unwrap();
    tx.commit().unwrap();
    drop(db);
    let journal = Journal::open(&path).unwrap();
    match journal.load_migration_machines() {
        Err(JournalError::MigrationReplay {
            source: ReplayError::Gap {
                expected, found, ..
            },
            ..
        }) => assert_eq!((expected, found), (2, 3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_from_before_the_orchestrator_table_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("format", FORMAT)
            .unwrap();
        tx.open_table(COMMANDS).unwrap();
        tx.commit().unwrap();
    }
    let journal = Journal::open(&path).unwrap();
    assert!(journal.load_migrations().unwrap().is_empty());
    assert!(journal.load().unwrap().is_empty());
}
