//! Tests that need more than the toolchain (a `redis-server`, `nft`, a
//! browser, root for a network namespace) ask [`require`] first.
//!
//! Run by hand without what they need, they print why and skip (return
//! early). Under the README's test command, which installs the packages
//! and sets `TETHER_TEST_REQUIRE_ALL=1`, a missing prerequisite fails the
//! test instead, so a green run never hides a skip.

/// The variable `scripts/test.sh` sets.
pub const REQUIRE_ALL: &str = "TETHER_TEST_REQUIRE_ALL";

/// `Ok(())` when the prerequisite holds; otherwise, under
/// `TETHER_TEST_REQUIRE_ALL=1` a panic, else a line saying the test
/// skipped and `false`. Use as `if !require(test, check) { return; }`.
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
