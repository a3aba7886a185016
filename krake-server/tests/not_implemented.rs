//! Until the REST API exists, `krake-server` says so on one line and exits with 2.

use std::process::Command;

#[test]
fn says_not_implemented_and_exits_with_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .arg("--help")
        .output()
        .expect("run krake-server");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 stderr");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("krake-server "), "{stderr}");
    assert!(
        stderr.contains("REST API is not implemented yet"),
        "{stderr}"
    );
}
