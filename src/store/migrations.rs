//! Forward-only schema migrations, tracked with `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry moves the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: rooms, secrets, revocations.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE rooms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        max_participants INTEGER NOT NULL,
        visibility TEXT NOT NULL,
        lobby INTEGER NOT NULL,
        mode TEXT NOT NULL,
        locked INTEGER NOT NULL,
        invites_enabled INTEGER NOT NULL,
        invite_generation INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        closed_at TEXT
     );
     CREATE INDEX rooms_open ON rooms (closed_at);
     CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        room_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL
     );",
    // 2: invite expiry, host link rotation, who created a room, bans, the moderation audit log.
    "ALTER TABLE rooms ADD COLUMN invite_expires_at INTEGER;
     ALTER TABLE rooms ADD COLUMN creator_addr TEXT;
     ALTER TABLE rooms ADD COLUMN host_generation INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE bans (
        room_id TEXT NOT NULL,
        device TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (room_id, device)
     );
     CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room_id TEXT NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        detail TEXT
     );
     CREATE INDEX events_room ON events (room_id, id);",
    // 3: recordings.
    "CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        room_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        format TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        duration_s REAL,
        error TEXT,
        files TEXT NOT NULL DEFAULT '[]'
     );
     CREATE INDEX recordings_room ON recordings (room_id, started_at);",
    // 4: webhook deliveries not made yet (one row per event and endpoint,
    // deleted once the endpoint answered 2xx or the event was given up).
    "CREATE TABLE webhook_deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
     );
     CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint, seq);",
];

/// Applies every migration the database has not seen, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }
}
