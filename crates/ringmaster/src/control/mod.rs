//! The control socket (docs/control.md): its protocol (`proto`), the master's side
//! (`server`, driven by runtime/control.rs), and the client subcommands `status`, `reload`,
//! `stop` and `metrics` (`client`, with the status table and the reload plan in `render`).

pub mod client;
pub mod proto;
pub mod render;
pub mod server;

use std::path::PathBuf;

/// Where the control socket is when `-S` does not say: `/run/ringmaster/control.sock` for
/// root, else `$XDG_RUNTIME_DIR/ringmaster/control.sock`; None when neither applies (an
/// unprivileged user without a runtime directory).
pub fn default_path(is_root: bool, xdg_runtime_dir: Option<&str>) -> Option<PathBuf> {
    if is_root {
        return Some(PathBuf::from("/run/ringmaster/control.sock"));
    }
    xdg_runtime_dir
        .filter(|d| d.starts_with('/'))
        .map(|d| PathBuf::from(d).join("ringmaster/control.sock"))
}

/// The control socket path to use: the one given, else the default for this process.
pub fn socket_path(given: Option<&std::path::Path>) -> Option<PathBuf> {
    given.map(PathBuf::from).or_else(|| {
        let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
        default_path(crate::sys::users::is_root(), xdg.as_deref())
    })
}

/// The master's control socket. Given with `-S`, it must be made, or the master does not
/// start (another master answering on it included). At the default path, trouble is logged
/// and the master runs without one: Cyrus lets several masters run side by side (each with
/// its own cyrus.conf and pidfile), and a drop-in must not refuse the second for want of a
/// socket; give each its own `-S`.
pub fn open_for_master(
    given: Option<&std::path::Path>,
    disabled: bool,
) -> Result<Option<crate::sys::control::ControlListener>, String> {
    use crate::sys::control::{BindError, ControlListener};
    if disabled {
        return Ok(None);
    }
    let Some(path) = socket_path(given) else {
        tracing::warn!(
            "no control socket: XDG_RUNTIME_DIR is not set (give one with -S, or --no-control)"
        );
        return Ok(None);
    };
    match ControlListener::bind(&path) {
        Ok(listener) => Ok(Some(listener)),
        Err(err) if given.is_none() => {
            let hint = match err {
                BindError::InUse(_) => " (give this master its own with -S)",
                _ => "",
            };
            tracing::error!("{err}; running without a control socket{hint}");
            Ok(None)
        }
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_under_run_for_root_else_the_runtime_dir() {
        assert_eq!(
            default_path(true, Some("/run/user/1000")),
            Some(PathBuf::from("/run/ringmaster/control.sock"))
        );
        assert_eq!(
            default_path(false, Some("/run/user/1000")),
            Some(PathBuf::from("/run/user/1000/ringmaster/control.sock"))
        );
        assert_eq!(default_path(false, None), None);
        assert_eq!(default_path(false, Some("relative")), None);
    }
}
