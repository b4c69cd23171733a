//! The property tests' runner settings, shared by the `fuzz_*` tests
//! (included with `#[path]`, so the in-process ones need not build the
//! rest of `common`).

use proptest::test_runner::{Config, FileFailurePersistence};

/// 256 cases unless `PROPTEST_CASES` says otherwise; a failing case is
/// saved next to `source` (the calling test's `file!()`, as
/// `*.proptest-regressions`) and tried first from then on.
pub fn config(source: &'static str) -> Config {
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(source),
        ..Config::default()
    }
}
