//! Owners and groups: which ids a scan saw, and their names.
//!
//! Ids are collected per worker as rows pass (a repeat of the previous row's id costs one
//! comparison), merged per rank, and resolved to names once per id by rank 0 at the end: never
//! a passwd or group lookup per file, and each name is stored once per snapshot.

use std::collections::BTreeSet;
use std::ffi::CStr;

use storage_tracker_proto::entry::EntryRef;

use crate::walk::RowSink;

/// The distinct uids and gids of the rows that passed through.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeenIds {
    pub uids: BTreeSet<u32>,
    pub gids: BTreeSet<u32>,
    last: Option<(u32, u32)>,
}

impl SeenIds {
    pub fn record(&mut self, uid: u32, gid: u32) {
        if self.last != Some((uid, gid)) {
            self.uids.insert(uid);
            self.gids.insert(gid);
            self.last = Some((uid, gid));
        }
    }

    pub fn merge(&mut self, other: &SeenIds) {
        self.uids.extend(&other.uids);
        self.gids.extend(&other.gids);
    }
}

/// A row sink that notes the ids of every row it passes on.
#[derive(Debug)]
pub struct NotingIds<'a, S> {
    pub inner: &'a mut S,
    pub ids: &'a mut SeenIds,
}

impl<S: RowSink> RowSink for NotingIds<'_, S> {
    fn row(&mut self, entry: &EntryRef<'_>) {
        // A row whose stat failed has no owner.
        if entry
            .error
            .is_none_or(|(op, _)| op != storage_tracker_proto::ErrorOp::Stat)
        {
            self.ids.record(entry.stat.uid, entry.stat.gid);
        }
        self.inner.row(entry);
    }
}

/// Which database an id is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    Group,
}

/// The name of a uid or gid from the system's databases (files, LDAP, sssd: whatever NSS is
/// configured with), or `None` when it has none.
pub fn resolve(kind: IdKind, id: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: the out-structs and buffer are valid for the call, and the name pointer is
        // read only while `buf` is alive and unchanged.
        let (rc, name) = unsafe {
            match kind {
                IdKind::User => {
                    let mut pw: libc::passwd = std::mem::zeroed();
                    let mut out: *mut libc::passwd = std::ptr::null_mut();
                    let rc =
                        libc::getpwuid_r(id, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out);
                    (
                        rc,
                        (!out.is_null())
                            .then(|| CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned()),
                    )
                }
                IdKind::Group => {
                    let mut gr: libc::group = std::mem::zeroed();
                    let mut out: *mut libc::group = std::ptr::null_mut();
                    let rc =
                        libc::getgrgid_r(id, &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out);
                    (
                        rc,
                        (!out.is_null())
                            .then(|| CStr::from_ptr(gr.gr_name).to_string_lossy().into_owned()),
                    )
                }
            }
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_and_an_unused_id_does_not() {
        assert_eq!(resolve(IdKind::User, 0).as_deref(), Some("root"));
        assert_eq!(resolve(IdKind::Group, 0).as_deref(), Some("root"));
        assert_eq!(resolve(IdKind::User, 3_999_999_999), None);
    }

    #[test]
    fn repeats_are_cheap_and_sets_merge() {
        let mut a = SeenIds::default();
        for (u, g) in [(1, 10), (1, 10), (2, 10), (1, 11)] {
            a.record(u, g);
        }
        let mut b = SeenIds::default();
        b.record(7, 70);
        a.merge(&b);
        assert_eq!(a.uids.into_iter().collect::<Vec<_>>(), [1, 2, 7]);
        assert_eq!(a.gids.into_iter().collect::<Vec<_>>(), [10, 11, 70]);
    }
}
