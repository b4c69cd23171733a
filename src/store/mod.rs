//! Embedded SQLite: rooms, the server secret and token revocations.
//!
//! One connection behind a mutex; every statement is short, so callers run
//! them inline. The schema is versioned with `PRAGMA user_version` and
//! migrated forward at open.

mod migrations;

use crate::ids::RoomId;
use crate::model::{RoomMode, RoomRecord, Visibility};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value does not parse.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Result alias.
pub type StoreResult<T> = Result<T, StoreError>;

/// The database.
pub struct Store {
    conn: Mutex<Connection>,
}

fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Private => "private",
        Visibility::Listed => "listed",
    }
}

fn mode_str(m: RoomMode) -> &'static str {
    match m {
        RoomMode::Sfu => "sfu",
        RoomMode::Mcu => "mcu",
    }
}

const ROOM_COLUMNS: &str = "id, name, max_participants, visibility, lobby, mode, locked, \
     invites_enabled, invite_generation, created_at, closed_at, invite_expires_at, creator_addr, host_generation";

fn room_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoreResult<RoomRecord>> {
    let id: String = row.get(0)?;
    let visibility: String = row.get(3)?;
    let mode: String = row.get(5)?;
    let Some(id) = RoomId::parse(&id) else {
        return Ok(Err(StoreError::Corrupt(format!("room id {id:?}"))));
    };
    let visibility = match visibility.as_str() {
        "private" => Visibility::Private,
        "listed" => Visibility::Listed,
        other => return Ok(Err(StoreError::Corrupt(format!("visibility {other:?}")))),
    };
    let mode = match mode.as_str() {
        "sfu" => RoomMode::Sfu,
        "mcu" => RoomMode::Mcu,
        other => return Ok(Err(StoreError::Corrupt(format!("mode {other:?}")))),
    };
    Ok(Ok(RoomRecord {
        id,
        name: row.get(1)?,
        max_participants: row.get(2)?,
        visibility,
        lobby: row.get(4)?,
        mode,
        locked: row.get(6)?,
        invites_enabled: row.get(7)?,
        invite_generation: row.get(8)?,
        created_at: row.get(9)?,
        closed_at: row.get(10)?,
        invite_expires_at: row.get::<_, Option<i64>>(11)?.map(|v| v.max(0) as u64),
        creator_addr: row.get(12)?,
        host_generation: row.get(13)?,
    }))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database, for unit tests.
    pub fn open_in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> StoreResult<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        // A poisoned lock only means another thread panicked mid-statement;
        // SQLite's own transactions keep the data consistent, so go on.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// The server's signing secret, created on first use.
    pub fn secret(&self) -> StoreResult<Vec<u8>> {
        self.with(|c| {
            let existing: Option<Vec<u8>> = c
                .query_row("SELECT value FROM meta WHERE key = 'secret'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(s) = existing {
                return Ok(s);
            }
            let mut secret = vec![0u8; 32];
            rand::Rng::fill(&mut rand::thread_rng(), secret.as_mut_slice());
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('secret', ?1)",
                params![secret],
            )?;
            Ok(secret)
        })
    }

    /// Stores a new room.
    pub fn insert_room(&self, r: &RoomRecord) -> StoreResult<()> {
        self.write_room(
            "INSERT INTO rooms (id, name, max_participants, visibility, lobby, mode, locked, \
             invites_enabled, invite_generation, created_at, closed_at, invite_expires_at, creator_addr, \
             host_generation) VALUES (:id, :name, :max, :visibility, :lobby, :mode, :locked, :invites, \
             :generation, :created, :closed, :expires, :creator, :host_generation)",
            r,
        )
    }

    /// Overwrites a room's settings.
    pub fn update_room(&self, r: &RoomRecord) -> StoreResult<()> {
        self.write_room(
            "UPDATE rooms SET name = :name, max_participants = :max, visibility = :visibility, \
             lobby = :lobby, mode = :mode, locked = :locked, invites_enabled = :invites, \
             invite_generation = :generation, created_at = :created, closed_at = :closed, \
             invite_expires_at = :expires, creator_addr = :creator, host_generation = :host_generation \
             WHERE id = :id",
            r,
        )
    }

    /// Runs `sql` with every column of `r` bound to its named parameter.
    fn write_room(&self, sql: &str, r: &RoomRecord) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                sql,
                rusqlite::named_params! {
                    ":id": r.id.as_str(),
                    ":name": r.name,
                    ":max": r.max_participants,
                    ":visibility": visibility_str(r.visibility),
                    ":lobby": r.lobby,
                    ":mode": mode_str(r.mode),
                    ":locked": r.locked,
                    ":invites": r.invites_enabled,
                    ":generation": r.invite_generation,
                    ":created": r.created_at,
                    ":closed": r.closed_at,
                    ":expires": r.invite_expires_at.map(|v| v as i64),
                    ":creator": r.creator_addr,
                    ":host_generation": r.host_generation,
                },
            )?;
            Ok(())
        })
    }

    /// A room, open or closed.
    pub fn get_room(&self, id: &RoomId) -> StoreResult<Option<RoomRecord>> {
        self.with(|c| {
            let row = c
                .query_row(
                    &format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = ?1"),
                    params![id.as_str()],
                    room_from_row,
                )
                .optional()?;
            row.transpose()
        })
    }

    /// Every room not yet closed, in creation order.
    pub fn open_rooms(&self) -> StoreResult<Vec<RoomRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {ROOM_COLUMNS} FROM rooms WHERE closed_at IS NULL ORDER BY rowid"
            ))?;
            let rows = stmt.query_map([], room_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
    }

    /// Open rooms created anonymously from `addr`.
    pub fn open_rooms_from(&self, addr: &str) -> StoreResult<usize> {
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM rooms WHERE closed_at IS NULL AND creator_addr = ?1",
                params![addr],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
    }

    /// Bars `device` (a browser) from `room`.
    pub fn ban(&self, room: &RoomId, device: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO bans (room_id, device, at) VALUES (?1, ?2, ?3)",
                params![room.as_str(), device, crate::model::now_rfc3339()],
            )?;
            Ok(())
        })
    }

    /// Whether `device` is barred from `room`.
    pub fn is_banned(&self, room: &RoomId, device: &str) -> StoreResult<bool> {
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM bans WHERE room_id = ?1 AND device = ?2",
                params![room.as_str(), device],
                |r| r.get(0),
            )?;
            Ok(n > 0)
        })
    }

    /// Appends to a room's moderation log.
    pub fn add_event(
        &self,
        room: &RoomId,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: &serde_json::Value,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO events (room_id, at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    room.as_str(),
                    crate::model::now_rfc3339(),
                    actor,
                    action,
                    target,
                    detail.to_string()
                ],
            )?;
            Ok(())
        })
    }

    /// A room's moderation log, oldest first (at most `limit` of the latest).
    pub fn events(
        &self,
        room: &RoomId,
        limit: usize,
    ) -> StoreResult<Vec<crate::model::AuditEvent>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, at, actor, action, target, detail FROM events WHERE room_id = ?1 \
                 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![room.as_str(), limit as i64], |r| {
                let detail: Option<String> = r.get(5)?;
                Ok(crate::model::AuditEvent {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: detail
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or(serde_json::Value::Null),
                })
            })?;
            let mut out: Vec<_> = rows.collect::<Result<_, _>>()?;
            out.reverse();
            Ok(out)
        })
    }

    /// Stores a recording (insert or overwrite).
    pub fn save_recording(&self, r: &crate::model::RecordingRecord) -> StoreResult<()> {
        let kind = serde_json::to_value(r.kind).unwrap_or_default();
        let format = serde_json::to_value(r.format).unwrap_or_default();
        let state = serde_json::to_value(r.state).unwrap_or_default();
        let files = serde_json::to_string(&r.files).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO recordings (id, room_id, kind, format, state, started_at, ended_at, \
                 duration_s, error, files) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    r.id.as_str(),
                    r.room_id.as_str(),
                    kind.as_str(),
                    format.as_str(),
                    state.as_str(),
                    r.started_at,
                    r.ended_at,
                    r.duration_s,
                    r.error,
                    files
                ],
            )?;
            Ok(())
        })
    }

    fn recordings_where(
        &self,
        clause: &str,
        arg: &str,
    ) -> StoreResult<Vec<crate::model::RecordingRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT id, room_id, kind, format, state, started_at, ended_at, duration_s, error, files \
                 FROM recordings WHERE {clause} ORDER BY started_at, id"
            ))?;
            let rows = stmt.query_map(params![arg], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, Option<f64>>(7)?,
                    row.get::<_, Option<String>>(8)?,
                    row.get::<_, String>(9)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, room, kind, format, state, started_at, ended_at, duration_s, error, files) = row?;
                let parse = |v: &str| serde_json::Value::String(v.to_owned());
                let corrupt = |what: &str| StoreError::Corrupt(format!("recording {id}: {what}"));
                out.push(crate::model::RecordingRecord {
                    id: crate::ids::RecordingId::parse(&id).ok_or_else(|| corrupt("id"))?,
                    room_id: RoomId::parse(&room).ok_or_else(|| corrupt("room"))?,
                    kind: serde_json::from_value(parse(&kind)).map_err(|_| corrupt("kind"))?,
                    format: serde_json::from_value(parse(&format)).map_err(|_| corrupt("format"))?,
                    state: serde_json::from_value(parse(&state)).map_err(|_| corrupt("state"))?,
                    started_at,
                    ended_at,
                    duration_s,
                    error,
                    files: serde_json::from_str(&files).map_err(|_| corrupt("files"))?,
                });
            }
            Ok(out)
        })
    }

    /// One recording.
    pub fn get_recording(
        &self,
        id: &crate::ids::RecordingId,
    ) -> StoreResult<Option<crate::model::RecordingRecord>> {
        Ok(self.recordings_where("id = ?1", id.as_str())?.pop())
    }

    /// A room's recordings, oldest first.
    pub fn room_recordings(
        &self,
        room: &RoomId,
    ) -> StoreResult<Vec<crate::model::RecordingRecord>> {
        self.recordings_where("room_id = ?1", room.as_str())
    }

    /// Every recording, oldest first.
    pub fn all_recordings(&self) -> StoreResult<Vec<crate::model::RecordingRecord>> {
        self.recordings_where("?1 = ?1", "")
    }

    /// Recordings in a given state (`"recording"`, `"finalizing"`, …).
    pub fn recordings_in_state(
        &self,
        state: &str,
    ) -> StoreResult<Vec<crate::model::RecordingRecord>> {
        self.recordings_where("state = ?1", state)
    }

    /// Forgets a recording.
    pub fn delete_recording(&self, id: &crate::ids::RecordingId) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM recordings WHERE id = ?1", params![id.as_str()])?;
            Ok(())
        })
    }

    /// Records a revoked token id until it would have expired anyway.
    pub fn revoke(&self, jti: &str, room: &RoomId, expires_at: u64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO revoked_tokens (jti, room_id, expires_at) VALUES (?1, ?2, ?3)",
                params![jti, room.as_str(), expires_at as i64],
            )?;
            Ok(())
        })
    }

    /// Whether a token id was revoked.
    pub fn is_revoked(&self, jti: &str) -> StoreResult<bool> {
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM revoked_tokens WHERE jti = ?1",
                params![jti],
                |r| r.get(0),
            )?;
            Ok(n > 0)
        })
    }

    /// Drops revocations of tokens that have expired by `now`.
    pub fn purge_revocations(&self, now: u64) -> StoreResult<usize> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM revoked_tokens WHERE expires_at < ?1",
                params![now as i64],
            )?)
        })
    }

    /// Queues one webhook event for each endpoint, all or none.
    pub fn enqueue_webhook(
        &self,
        endpoints: &[String],
        event_id: &str,
        event: &str,
        body: &str,
        created_at: u64,
    ) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for endpoint in endpoints {
                tx.execute(
                    "INSERT INTO webhook_deliveries (endpoint, event_id, event, body, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![endpoint, event_id, event, body, created_at as i64],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The oldest delivery still to be made to `endpoint`.
    pub fn next_webhook(&self, endpoint: &str) -> StoreResult<Option<PendingWebhook>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT seq, endpoint, event_id, event, body, created_at, attempts, next_attempt_ms \
                 FROM webhook_deliveries WHERE endpoint = ?1 ORDER BY seq LIMIT 1",
                params![endpoint],
                |r| {
                    Ok(PendingWebhook {
                        seq: r.get(0)?,
                        endpoint: r.get(1)?,
                        event_id: r.get(2)?,
                        event: r.get(3)?,
                        body: r.get(4)?,
                        created_at: r.get::<_, i64>(5)?.max(0) as u64,
                        attempts: r.get::<_, i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
                        next_attempt_ms: r.get::<_, i64>(7)?.max(0) as u64,
                    })
                },
            )
            .optional()?)
        })
    }

    /// Notes a failed attempt and when to try again.
    pub fn webhook_failed(
        &self,
        seq: i64,
        attempts: u32,
        next_attempt_ms: u64,
        error: &str,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE webhook_deliveries SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 \
                 WHERE seq = ?1",
                params![seq, i64::from(attempts), next_attempt_ms as i64, error],
            )?;
            Ok(())
        })
    }

    /// Forgets a delivery (made, or given up).
    pub fn delete_webhook(&self, seq: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM webhook_deliveries WHERE seq = ?1",
                params![seq],
            )?;
            Ok(())
        })
    }

    /// Deliveries waiting, per endpoint.
    pub fn pending_webhooks(&self) -> StoreResult<Vec<(String, usize)>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT endpoint, COUNT(*) FROM webhook_deliveries GROUP BY endpoint ORDER BY endpoint",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as usize))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// At start: drops deliveries to endpoints no longer configured (returns
    /// how many) and makes every other one due now, whatever its back-off.
    pub fn resume_webhooks(&self, endpoints: &[String]) -> StoreResult<usize> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let mut dropped = 0;
            let stale: Vec<String> = {
                let mut stmt = tx.prepare("SELECT DISTINCT endpoint FROM webhook_deliveries")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter(|e| !endpoints.contains(e))
                    .collect()
            };
            for e in stale {
                dropped += tx.execute(
                    "DELETE FROM webhook_deliveries WHERE endpoint = ?1",
                    params![e],
                )?;
            }
            tx.execute("UPDATE webhook_deliveries SET next_attempt_ms = 0", [])?;
            tx.commit()?;
            Ok(dropped)
        })
    }
}

/// A webhook delivery still to be made (one event to one endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWebhook {
    /// Queue position (deliveries to one endpoint go in this order).
    pub seq: i64,
    /// Endpoint URL.
    pub endpoint: String,
    /// `evt_…`.
    pub event_id: String,
    /// `room_started`, …
    pub event: String,
    /// The JSON body, exactly as sent.
    pub body: String,
    /// When the event happened (Unix seconds).
    pub created_at: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before (Unix milliseconds).
    pub next_attempt_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now_rfc3339;

    fn room(name: &str) -> RoomRecord {
        RoomRecord {
            id: RoomId::generate(),
            name: name.into(),
            max_participants: 50,
            visibility: Visibility::Listed,
            lobby: false,
            mode: RoomMode::Sfu,
            locked: false,
            invites_enabled: true,
            invite_generation: 0,
            created_at: now_rfc3339(),
            closed_at: None,
            invite_expires_at: None,
            creator_addr: None,
            host_generation: 0,
        }
    }

    #[test]
    fn rooms_round_trip_and_close() {
        let s = Store::open_in_memory().unwrap();
        let mut r = room("Team sync");
        s.insert_room(&r).unwrap();
        assert_eq!(s.get_room(&r.id).unwrap(), Some(r.clone()));
        r.locked = true;
        r.closed_at = Some(now_rfc3339());
        s.update_room(&r).unwrap();
        assert_eq!(s.get_room(&r.id).unwrap(), Some(r.clone()));
        assert!(s.open_rooms().unwrap().is_empty());
    }

    #[test]
    fn bans_events_and_creator_counts() {
        let s = Store::open_in_memory().unwrap();
        let mut r = room("Mod");
        r.creator_addr = Some("10.0.0.1".into());
        r.invite_expires_at = Some(99);
        s.insert_room(&r).unwrap();
        assert_eq!(
            s.get_room(&r.id).unwrap().unwrap().invite_expires_at,
            Some(99)
        );
        assert_eq!(s.open_rooms_from("10.0.0.1").unwrap(), 1);
        assert_eq!(s.open_rooms_from("10.0.0.2").unwrap(), 0);
        assert!(!s.is_banned(&r.id, "dev1").unwrap());
        s.ban(&r.id, "dev1").unwrap();
        assert!(s.is_banned(&r.id, "dev1").unwrap());
        s.add_event(
            &r.id,
            "admin",
            "room_locked",
            None,
            &serde_json::json!({"locked": true}),
        )
        .unwrap();
        s.add_event(
            &r.id,
            "host:p_x",
            "participant_removed",
            Some("p_y"),
            &serde_json::json!({"ban": true}),
        )
        .unwrap();
        let ev = s.events(&r.id, 10).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].action, "room_locked");
        assert_eq!(ev[1].target.as_deref(), Some("p_y"));
        assert_eq!(ev[1].detail["ban"], true);
        assert_eq!(s.events(&r.id, 1).unwrap()[0].action, "participant_removed");
    }

    #[test]
    fn recordings_round_trip() {
        use crate::model::*;
        let s = Store::open_in_memory().unwrap();
        let room = RoomId::generate();
        let mut r = RecordingRecord {
            id: crate::ids::RecordingId::generate(),
            room_id: room.clone(),
            kind: RecordingKind::Composite,
            format: RecordingFormat::Mp4,
            state: RecordingState::Recording,
            started_at: now_rfc3339(),
            ended_at: None,
            duration_s: None,
            error: None,
            files: vec![],
        };
        s.save_recording(&r).unwrap();
        assert_eq!(s.get_recording(&r.id).unwrap(), Some(r.clone()));
        assert_eq!(s.recordings_in_state("recording").unwrap().len(), 1);
        r.state = RecordingState::Ready;
        r.duration_s = Some(9.5);
        r.files = vec![RecordingFile {
            name: "composite.mp4".into(),
            size: 1234,
        }];
        s.save_recording(&r).unwrap();
        assert_eq!(s.room_recordings(&room).unwrap(), vec![r.clone()]);
        assert!(s.recordings_in_state("recording").unwrap().is_empty());
        assert_eq!(s.all_recordings().unwrap().len(), 1);
        s.delete_recording(&r.id).unwrap();
        assert_eq!(s.get_recording(&r.id).unwrap(), None);
    }

    #[test]
    fn webhook_deliveries_queue_per_endpoint_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (a, b) = ("http://a/hook".to_owned(), "http://b/hook".to_owned());
        {
            let s = Store::open(&path).unwrap();
            let both = [a.clone(), b.clone()];
            s.enqueue_webhook(&both, "evt_1", "room_started", "{\"n\":1}", 10)
                .unwrap();
            s.enqueue_webhook(&both, "evt_2", "room_ended", "{\"n\":2}", 11)
                .unwrap();
            let first = s.next_webhook(&a).unwrap().unwrap();
            assert_eq!((first.event_id.as_str(), first.attempts), ("evt_1", 0));
            s.webhook_failed(first.seq, 1, 5_000, "HTTP 500").unwrap();
            let again = s.next_webhook(&a).unwrap().unwrap();
            assert_eq!(
                (again.seq, again.attempts, again.next_attempt_ms),
                (first.seq, 1, 5_000)
            );
            s.delete_webhook(first.seq).unwrap();
            assert_eq!(s.next_webhook(&a).unwrap().unwrap().event_id, "evt_2");
            assert_eq!(s.next_webhook(&b).unwrap().unwrap().event_id, "evt_1");
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.pending_webhooks().unwrap(),
            vec![(a.clone(), 1), (b.clone(), 2)]
        );
        // b is no longer configured: its deliveries go; a's are due now.
        s.webhook_failed(s.next_webhook(&a).unwrap().unwrap().seq, 3, 99_000, "x")
            .unwrap();
        assert_eq!(s.resume_webhooks(std::slice::from_ref(&a)).unwrap(), 2);
        let next = s.next_webhook(&a).unwrap().unwrap();
        assert_eq!((next.attempts, next.next_attempt_ms), (3, 0));
        assert!(s.next_webhook(&b).unwrap().is_none());
    }

    #[test]
    fn secret_is_stable_and_revocations_persist_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let id = RoomId::generate();
        let secret = {
            let s = Store::open(&path).unwrap();
            s.revoke("j1", &id, 100).unwrap();
            s.secret().unwrap()
        };
        let s = Store::open(&path).unwrap();
        assert_eq!(s.secret().unwrap(), secret);
        assert!(s.is_revoked("j1").unwrap());
        assert!(!s.is_revoked("j2").unwrap());
        assert_eq!(s.purge_revocations(101).unwrap(), 1);
        assert!(!s.is_revoked("j1").unwrap());
    }
}
