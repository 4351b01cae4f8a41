//! Tests that need more than the toolchain (a browser) ask [`require`]
//! first: the same rule as the gateway's `tests/common/require.rs`. Run by
//! hand without the program, such a test says why and skips; under the
//! README's test command (`scripts/test.sh`, which installs the packages
//! and sets `TETHER_TEST_REQUIRE_ALL=1`) it fails instead.

/// The variable `scripts/test.sh` sets.
pub const REQUIRE_ALL: &str = "TETHER_TEST_REQUIRE_ALL";

/// `true` when `check` holds; otherwise, under `TETHER_TEST_REQUIRE_ALL=1`
/// a panic, else a line saying the test skipped and `false`.
pub fn require(test: &str, check: Result<(), String>) -> bool {
    let Err(why) = check else { return true };
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("{test}: {why} (and {REQUIRE_ALL}=1 makes that a failure)");
    }
    eprintln!("{test}: SKIPPED: {why}");
    false
}

/// `Ok` when `program` is found on `PATH`.
pub fn program(program: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join(program).is_file()) {
        Ok(())
    } else {
        Err(format!("`{program}` is not on PATH (scripts/test.sh installs it)"))
    }
}
