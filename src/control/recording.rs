//! Recordings of a room as the room task sees them: which files are still
//! open, when a recording is finished, and what is stored about it. The
//! media work (branches, muxers) is in `media::recorder`; this file only
//! keeps the books.

use crate::ids::RecordingId;
use crate::model::{RecordingFile, RecordingRecord, RecordingState, now_rfc3339};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::oneshot;

use super::ControlError;

/// Files of a recording directory with their sizes, by name.
pub fn list_files(dir: &Path) -> Vec<RecordingFile> {
    let mut files: Vec<RecordingFile> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| RecordingFile {
                name: e.file_name().to_string_lossy().into_owned(),
                size: meta.len(),
            })
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// A recording that is running or finishing in a room.
pub struct Active {
    /// What is stored.
    pub record: RecordingRecord,
    /// Its directory.
    pub dir: PathBuf,
    /// Files still being written.
    pub open: HashSet<PathBuf>,
    /// When it started (for the duration).
    pub started: Instant,
    /// When `stop` was asked.
    pub stopping_since: Option<Instant>,
    /// Callers waiting for the stop to complete.
    pub waiters: Vec<oneshot::Sender<Result<RecordingRecord, ControlError>>>,
}

impl Active {
    /// A recording that just started.
    pub fn new(record: RecordingRecord, dir: PathBuf) -> Self {
        Self {
            record,
            dir,
            open: HashSet::new(),
            started: Instant::now(),
            stopping_since: None,
            waiters: Vec::new(),
        }
    }

    /// Ends the recording in `state` (ready or failed), with the files on disk.
    pub fn end(&mut self, state: RecordingState, error: Option<String>) -> RecordingRecord {
        self.record.state = state;
        self.record.error = error;
        self.record.ended_at = Some(now_rfc3339());
        self.record.duration_s = Some((self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        self.record.files = list_files(&self.dir);
        self.record.clone()
    }

    /// Tells everyone waiting for the stop.
    pub fn notify(&mut self) {
        for w in self.waiters.drain(..) {
            let _ = w.send(Ok(self.record.clone()));
        }
    }

    /// The id.
    pub fn id(&self) -> &RecordingId {
        &self.record.id
    }
}

/// Stem of a track's file (`pipelines/recording.toml`; by default
/// `<participant>-<kind>-<track>`).
pub fn track_stem(participant: &str, kind: &str, track: &str) -> String {
    crate::media::recorder::Templates::current().track_stem(participant, kind, track)
}

/// Whether `name` is a plain file name (what downloads accept).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `path` is a regular file that really lies inside `dir`, once
/// every symbolic link on the way is resolved: a link planted in a served
/// directory cannot hand out a file from elsewhere.
pub fn resolves_inside(dir: &Path, path: &Path) -> bool {
    match (std::fs::canonicalize(dir), std::fs::canonicalize(path)) {
        (Ok(dir), Ok(real)) => real.starts_with(&dir) && real.is_file(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn links_out_of_the_directory_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("rec");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(root.path().join("secret"), b"s").unwrap();
        std::fs::write(dir.join("a.mp4"), b"1").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), dir.join("b.mp4")).unwrap();
        std::os::unix::fs::symlink("a.mp4", dir.join("c.mp4")).unwrap();
        assert!(resolves_inside(&dir, &dir.join("a.mp4")));
        assert!(!resolves_inside(&dir, &dir.join("b.mp4")));
        assert!(
            resolves_inside(&dir, &dir.join("c.mp4")),
            "a link inside stays inside"
        );
        assert!(!resolves_inside(&dir, &dir.join("../secret")));
        assert!(!resolves_inside(&dir, &dir.join("missing.mp4")));
        assert!(!resolves_inside(&dir, &dir), "a directory is not a file");
    }

    #[test]
    fn download_names_are_plain() {
        assert!(is_plain_name("composite.mp4"));
        assert!(is_plain_name("p_abc-video-t_xyz.mkv"));
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "x\0y", "..", "a b"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn files_are_listed_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.mkv"), b"12345").unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"1").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let files = list_files(dir.path());
        assert_eq!(files.len(), 2);
        assert_eq!((files[0].name.as_str(), files[0].size), ("a.mp4", 1));
        assert_eq!((files[1].name.as_str(), files[1].size), ("b.mkv", 5));
        assert!(list_files(&dir.path().join("missing")).is_empty());
    }
}
