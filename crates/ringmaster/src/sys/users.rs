//! Who processes run as: the credentials type and user/group lookups (done in the master,
//! never in a forked child, since NSS lookups may allocate, lock and open files).

use std::ffi::CString;

use nix::unistd::{Gid, Group, User};

/// The identity a child takes before exec: groups, then gid, then uid are applied in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective and saved user id.
    pub uid: libc::uid_t,
    /// Real, effective and saved group id.
    pub gid: libc::gid_t,
    /// Supplementary groups (usually including `gid`).
    pub groups: Vec<libc::gid_t>,
}

/// The credentials of `user`: its uid, `group`'s gid (or the user's primary group when None)
/// and its supplementary groups from the group database (getgrouplist, which includes the gid).
/// Errors name the missing user or group.
pub fn lookup_credentials(user: &str, group: Option<&str>) -> Result<Credentials, String> {
    let account = match User::from_name(user) {
        Ok(Some(account)) => account,
        Ok(None) => return Err(format!("no such user: {user}")),
        Err(e) => return Err(format!("cannot look up user {user}: {e}")),
    };
    let gid = match group {
        None => account.gid,
        Some(name) => match Group::from_name(name) {
            Ok(Some(g)) => g.gid,
            Ok(None) => return Err(format!("no such group: {name}")),
            Err(e) => return Err(format!("cannot look up group {name}: {e}")),
        },
    };
    let c_user = CString::new(user).map_err(|_| format!("invalid user name: {user:?}"))?;
    let groups = nix::unistd::getgrouplist(&c_user, gid)
        .map_err(|e| format!("cannot list the groups of user {user}: {e}"))?;
    Ok(Credentials {
        uid: account.uid.as_raw(),
        gid: gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
    })
}

/// The identity this process has now (real uid and gid, supplementary groups).
pub fn current_credentials() -> Credentials {
    Credentials {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        groups: nix::unistd::getgroups()
            .map(|groups| groups.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_default(),
    }
}

/// Whether this process runs with effective uid 0.
/// The gid of a group, by name (or number).
pub fn lookup_group(group: &str) -> Result<libc::gid_t, String> {
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => group
            .parse::<libc::gid_t>()
            .map_err(|_| format!("no such group: {group}")),
        Err(e) => Err(format!("cannot look up group {group}: {e}")),
    }
}

/// True when a user of that name exists.
pub fn user_exists(user: &str) -> bool {
    matches!(User::from_name(user), Ok(Some(_)))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_with_its_groups() {
        let creds = lookup_credentials("root", None).expect("root exists");
        assert_eq!((creds.uid, creds.gid), (0, 0));
        assert!(creds.groups.contains(&0));
    }

    #[test]
    fn an_explicit_group_replaces_the_primary_one() {
        let nogroup = Group::from_name("nogroup").ok().flatten();
        if crate::sys::testutil::skip_unless(nogroup.is_some(), "the group nogroup") {
            return;
        }
        let Some(nogroup) = nogroup else { return };
        let creds = lookup_credentials("root", Some("nogroup")).expect("lookup");
        assert_eq!(creds.gid, nogroup.gid.as_raw());
        assert!(creds.groups.contains(&nogroup.gid.as_raw()));
    }

    #[test]
    fn missing_names_are_named_in_the_error() {
        let err = lookup_credentials("ringmaster-no-such-user", None).expect_err("missing");
        assert!(
            err.contains("no such user: ringmaster-no-such-user"),
            "{err}"
        );
        let err =
            lookup_credentials("root", Some("ringmaster-no-such-group")).expect_err("missing");
        assert!(
            err.contains("no such group: ringmaster-no-such-group"),
            "{err}"
        );
    }

    #[test]
    fn current_matches_the_process() {
        let me = current_credentials();
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert_eq!(is_root(), nix::unistd::geteuid().as_raw() == 0);
    }
}
