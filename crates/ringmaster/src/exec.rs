//! Where a `cmd=`'s program lives: an absolute argv[0] as is, a relative one in the service
//! directory (Cyrus's SERVICE_PATH; Debian's `/usr/lib/cyrus/bin`). PATH is not searched,
//! as in Cyrus.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The file a command's argv[0] names: `argv0` itself when absolute, else
/// `service_dir/argv0`. Pure: no file system access.
fn executable_path(argv0: &str, service_dir: &Path) -> PathBuf {
    if argv0.starts_with('/') {
        PathBuf::from(argv0)
    } else {
        service_dir.join(argv0)
    }
}

/// The executable a command's argv[0] names, when it exists as a regular file with an
/// execute bit (Cyrus checks the owner's; any will do here). None otherwise.
pub fn resolve_executable(argv0: &str, service_dir: &Path) -> Option<PathBuf> {
    if argv0.is_empty() {
        return None;
    }
    let path = executable_path(argv0, service_dir);
    let meta = std::fs::metadata(&path).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative() {
        assert_eq!(
            resolve_executable("/bin/sh", Path::new("/nonexistent")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            resolve_executable("sh", Path::new("/bin")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve_executable("sh", Path::new("/nonexistent")), None);
        assert_eq!(
            resolve_executable("/nonexistent/x", Path::new("/bin")),
            None
        );
        assert_eq!(resolve_executable("", Path::new("/bin")), None);
        // A directory is not an executable.
        assert_eq!(resolve_executable("/bin", Path::new("/")), None);
    }
}
