//! The bench's C programs (`c/min_worker.c`, `c/floor_master.c`): compiled at run time with
//! `cc` into a temp dir that the workers' user can read, once per bench process.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

const MIN_WORKER: &str = include_str!("../c/min_worker.c");
const FLOOR_MASTER: &str = include_str!("../c/floor_master.c");

/// The minimal C worker, linked statically when the C library allows it (no dynamic loader
/// at each start: the cheapest process a master can start here).
pub fn min_worker() -> Result<PathBuf, String> {
    compile("min_worker", MIN_WORKER, true)
}

/// The policy-free floor master (dynamically linked: it looks up the `cyrus` user).
pub fn floor_master() -> Result<PathBuf, String> {
    compile("floor_master", FLOOR_MASTER, false)
}

fn compile(name: &str, source: &str, try_static: bool) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("ringmaster-bench-c.{}", std::process::id()));
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    fs::create_dir_all(&dir).map_err(err)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(err)?;
    let out = dir.join(name);
    if out.exists() {
        return Ok(out);
    }
    let src = dir.join(format!("{name}.c"));
    fs::write(&src, source).map_err(err)?;
    let attempts: &[&[&str]] = if try_static {
        &[&["-static"], &[]]
    } else {
        &[&[]]
    };
    let mut last = String::new();
    for extra in attempts {
        let result = Command::new("cc")
            .args(["-O2", "-w", "-o"])
            .arg(&out)
            .arg(&src)
            .args(*extra)
            .output();
        match result {
            Ok(o) if o.status.success() => return Ok(out),
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => last = format!("cannot run cc: {e}"),
        }
    }
    Err(format!("cannot compile {}: {last}", src.display()))
}

/// Remove the compiled programs (at the end of a bench run).
pub fn clean() {
    let dir = std::env::temp_dir().join(format!("ringmaster-bench-c.{}", std::process::id()));
    let _ = fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_programs_build_and_the_worker_wants_a_master() {
        let worker = min_worker().unwrap();
        // Like Cyrus's services: outside a master (no CYRUS_SERVICE) it exits 70.
        let status = Command::new(&worker)
            .env_remove("CYRUS_SERVICE")
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(70));
        let floor = floor_master().unwrap();
        let status = Command::new(&floor).status().unwrap();
        assert_eq!(status.code(), Some(2), "usage error without arguments");
        clean();
    }
}
