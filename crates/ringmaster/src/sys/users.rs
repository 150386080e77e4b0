//! Who processes run as: the credentials type and user/group lookups (done in the master,
//! never in a forked child, since NSS lookups may allocate, lock and open files).

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
