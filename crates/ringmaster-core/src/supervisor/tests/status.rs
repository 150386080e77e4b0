//! Tests of what `Supervisor::status` adds for the control socket: a pool's last exec error.

use super::*;

#[test]
fn a_failed_spawn_is_the_pools_last_exec_error() {
    let mut h = Harness::booted(config(vec![service("imap", 143, 1, None)]));
    let role = h.spawned[0].1.role.clone();
    assert_eq!(h.sup.status().pools[0].counters.last_exec_error, None);
    h.feed(Input::SpawnFailed {
        role,
        error: "/usr/lib/cyrus/bin/imapd: Permission denied".into(),
    });
    let status = h.sup.status();
    assert_eq!(
        status.pools[0].counters.last_exec_error.as_deref(),
        Some("/usr/lib/cyrus/bin/imapd: Permission denied")
    );
}
