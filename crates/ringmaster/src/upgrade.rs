//! A binary upgrade's hand-over between two images of the master (same pid): the versioned
//! state envelope, the environment that names its descriptors, the `--check-upgrade`
//! self-test, the checks of a new binary before the exec, and the rollback to the previous
//! binary. The loop's side (export, exec, adoption of descriptors) is runtime/upgrade.rs.
//!
//! The envelope is `MAGIC`, the format version (u32, little-endian) and JSON. A binary reads
//! only the versions it knows; the old image asks the new one (`--check-upgrade N`) before
//! handing it anything.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::error;

use ringmaster_core::SupervisorState;

use crate::sys;

pub const MAGIC: &[u8; 8] = b"RMUPGRD\n";
/// The state format this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The sealed memfd holding the state.
pub const ENV_STATE: &str = "RINGMASTER_UPGRADE_STATE";
/// The previous binary, open, to run again if this one cannot adopt the state.
pub const ENV_PREVIOUS: &str = "RINGMASTER_UPGRADE_PREVIOUS";
/// Set in a rolled-back image: why the new one failed. It never rolls back again.
pub const ENV_FAILED: &str = "RINGMASTER_UPGRADE_FAILED";
/// Test hook: the new image refuses the state, as a broken build would, so that the
/// rollback can be tested with a real binary.
pub const ENV_TEST_REFUSE: &str = "RINGMASTER_UPGRADE_TEST_REFUSE";
/// How long the new binary's self-test may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the master says of its own binary in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {
    pub version: String,
    pub binary: PathBuf,
    /// Upgrades this pid went through (rolled-back ones not counted).
    pub upgrades: u64,
    /// Upgrades tried, refused ones included.
    pub attempts: u64,
    /// Why the last one failed, if it did.
    pub last_error: Option<String>,
}

impl MasterInfo {
    pub fn at_start() -> MasterInfo {
        MasterInfo {
            version: crate::VERSION.to_string(),
            binary: std::env::current_exe().unwrap_or_default(),
            ..MasterInfo::default()
        }
    }
}

/// A pool's descriptors: its listener (an index in [`Handover::listeners`]: pools of one
/// address share it) and its status pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolFds {
    pub service: u32,
    pub family: u8,
    pub listener: usize,
    pub status_read: RawFd,
    pub status_write: RawFd,
}

/// Everything handed over, descriptors by number (they stay open across the exec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub sup: SupervisorState,
    pub listeners: Vec<RawFd>,
    pub pools: Vec<PoolFds>,
    pub control: Option<(RawFd, PathBuf)>,
    /// The new image's view (the binary being run; counts including this upgrade).
    pub master: MasterInfo,
    /// The image that handed over, for a rollback.
    pub previous: MasterInfo,
}

impl Handover {
    /// Every descriptor the new image adopts.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = self.listeners.clone();
        for p in &self.pools {
            fds.extend([p.status_read, p.status_write]);
        }
        fds.extend(self.control.as_ref().map(|c| c.0));
        fds
    }
}

pub fn encode(handover: &Handover) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(handover).map_err(|e| e.to_string())?;
    let mut bytes = MAGIC.to_vec();
    bytes.extend(FORMAT_VERSION.to_le_bytes());
    bytes.extend(json);
    Ok(bytes)
}

/// The format version of an envelope, if it is one.
pub fn version_of(bytes: &[u8]) -> Result<u32, String> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a ringmaster upgrade state")?;
    let version = rest
        .get(..4)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .ok_or("the upgrade state is cut short")?;
    Ok(u32::from_le_bytes(version))
}

pub fn decode(bytes: &[u8]) -> Result<Handover, String> {
    let version = version_of(bytes)?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "upgrade state format {version}; this binary reads format {FORMAT_VERSION}"
        ));
    }
    serde_json::from_slice(&bytes[MAGIC.len() + 4..])
        .map_err(|e| format!("the upgrade state is unreadable: {e}"))
}

/// `ringmaster --check-upgrade N`: exit 0 when this binary reads state format N.
pub fn check_upgrade(version: u32) -> i32 {
    if version == FORMAT_VERSION {
        println!(
            "ringmaster {} reads upgrade state format {FORMAT_VERSION}",
            crate::VERSION
        );
        0
    } else {
        eprintln!(
            "ringmaster {}: reads upgrade state format {FORMAT_VERSION}, not {version}",
            crate::VERSION
        );
        1
    }
}

/// The new binary can take over: it is an executable file and says it reads our format.
/// Blocks the loop for the self-test, a few milliseconds (workers accept meanwhile).
pub fn check_binary(path: &Path) -> Result<(), String> {
    sys::upgrade::executable(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut child = Command::new(path)
        .arg("--check-upgrade")
        .arg(FORMAT_VERSION.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: cannot run its self-test: {e}", path.display()))?;
    let deadline = Instant::now() + CHECK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!(
                    "{}: its self-test (--check-upgrade {FORMAT_VERSION}) failed ({status})",
                    path.display()
                ))
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{}: its self-test did not finish", path.display()));
            }
            Err(e) => {
                return Err(format!(
                    "{}: waiting for its self-test: {e}",
                    path.display()
                ))
            }
        }
    }
}

/// What an image started by an upgrade finds in its environment, taken out of it so that
/// children do not inherit it.
pub struct Inherited {
    pub state: RawFd,
    pub previous_binary: Option<RawFd>,
    /// This image is a rollback: why the new one failed.
    pub failed: Option<String>,
    pub test_refuse: bool,
}

fn take_env(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    // Single-threaded (the master never starts a thread), so changing the environment is sound.
    std::env::remove_var(name);
    value
}

impl Inherited {
    pub fn from_env() -> Option<Inherited> {
        let state = take_env(ENV_STATE);
        let previous = take_env(ENV_PREVIOUS);
        let failed = take_env(ENV_FAILED);
        let test_refuse = take_env(ENV_TEST_REFUSE).is_some();
        let state = state?.parse().ok()?;
        Some(Inherited {
            state,
            previous_binary: previous.and_then(|p| p.parse().ok()),
            failed,
            test_refuse,
        })
    }

    /// Reads and decodes the state; the descriptor stays open (a rollback passes it on).
    pub fn read(&self) -> Result<Handover, String> {
        let bytes = sys::upgrade::read_inherited(self.state)
            .map_err(|e| format!("cannot read the upgrade state (fd {}): {e}", self.state))?;
        decode(&bytes)
    }

    /// This image cannot adopt the state: runs the previous binary with it, or, in a rolled
    /// back image (or without the previous binary), gives up. Returns only if the exec fails.
    pub fn roll_back(&self, why: &str) {
        error!("upgrade: cannot adopt the state: {why}");
        let Some(previous) = self.previous_binary.filter(|_| self.failed.is_none()) else {
            error!("upgrade: no previous binary to return to; the master exits");
            return;
        };
        error!("upgrade: rolling back to the previous binary");
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        env.push((ENV_STATE.into(), self.state.to_string().into()));
        env.push((ENV_FAILED.into(), why.into()));
        let argv: Vec<OsString> = std::env::args_os().collect();
        let err = sys::upgrade::exec_inherited(previous, &argv, &env);
        error!("upgrade: cannot run the previous binary again: {err}");
    }
}

/// The descriptors of the hand-over made inheritable (or close-on-exec again).
pub fn inherit_all(fds: &[RawFd], keep: bool) -> Result<(), String> {
    for &fd in fds {
        sys::upgrade::inherit(fd, keep).map_err(|e| format!("fcntl on {fd}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handover() -> Handover {
        Handover {
            sup: SupervisorState {
                services: vec![],
                workers: vec![],
                daemons: vec![],
                events: vec![],
                reload: Default::default(),
            },
            listeners: vec![5, 6],
            pools: vec![PoolFds {
                service: 0,
                family: 4,
                listener: 1,
                status_read: 7,
                status_write: 8,
            }],
            control: Some((9, "/run/x.sock".into())),
            master: MasterInfo::at_start(),
            previous: MasterInfo::default(),
        }
    }

    #[test]
    fn an_envelope_round_trips_and_names_its_version() {
        let h = handover();
        let bytes = encode(&h).unwrap();
        assert_eq!(version_of(&bytes), Ok(FORMAT_VERSION));
        assert_eq!(decode(&bytes), Ok(h.clone()));
        assert_eq!(h.fds(), vec![5, 6, 7, 8, 9]);
    }

    #[test]
    fn another_version_or_garbage_is_refused_cleanly() {
        let mut bytes = encode(&handover()).unwrap();
        bytes[8] = 2;
        let err = decode(&bytes).unwrap_err();
        assert!(err.contains("format 2"), "{err}");
        assert!(decode(b"hello").is_err());
        assert!(decode(b"RMUPGRD\n\x01").is_err());
        let mut cut = encode(&handover()).unwrap();
        cut.truncate(20);
        assert!(decode(&cut).is_err());
    }

    #[test]
    fn the_self_test_answers_for_its_own_version_only() {
        assert_eq!(check_upgrade(FORMAT_VERSION), 0);
        assert_eq!(check_upgrade(FORMAT_VERSION + 1), 1);
    }

    #[test]
    fn a_missing_or_failing_binary_is_refused() {
        assert!(check_binary(Path::new("/nonexistent/ringmaster")).is_err());
        // /bin/false "fails its self-test" like a binary that crashes at start.
        let err = check_binary(Path::new("/bin/false")).unwrap_err();
        assert!(err.contains("self-test"), "{err}");
    }
}
