//! Giving up privileges: every capability (effective, permitted, inheritable, ambient and
//! the bounding set), `no_new_privs`, and for a VMM started as root the switch to an
//! unprivileged user.

use std::ffi::CString;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("{call}: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    #[error("user name '{0}' contains a NUL byte")]
    BadUserName(String),
    #[error("--user needs vessel to start as root (it runs as uid {0})")]
    NotRoot(u32),
}

fn check(call: &'static str, ret: libc::c_int) -> Result<(), PrivilegeError> {
    if ret < 0 {
        return Err(PrivilegeError::Call {
            call,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A user to run as: its ids and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

impl User {
    /// Look up `name` (a user name, or a numeric uid) in the user database.
    pub fn lookup(name: &str) -> Result<Self, PrivilegeError> {
        let c = CString::new(name).map_err(|_| PrivilegeError::BadUserName(name.into()))?;
        // SAFETY: a zeroed passwd is a valid out-parameter for getpwnam_r.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pw`.
        let mut rc =
            unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        if (rc != 0 || out.is_null()) && name.bytes().all(|b| b.is_ascii_digit()) {
            let uid: libc::uid_t = name
                .parse()
                .map_err(|_| PrivilegeError::UnknownUser(name.into()))?;
            // SAFETY: as above.
            rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        }
        if rc != 0 || out.is_null() {
            return Err(PrivilegeError::UnknownUser(name.into()));
        }
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: pw_name points into `buf`, alive here; `groups` holds `n` entries.
        let rc = unsafe { libc::getgrouplist(pw.pw_name, pw.pw_gid, groups.as_mut_ptr(), &mut n) };
        groups.truncate(if rc < 0 { 0 } else { n.max(0) as usize });
        Ok(Self {
            name: name.into(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            groups,
        })
    }
}

/// Refuse `--user` when not root: a flag that could not take effect.
pub fn require_root() -> Result<(), PrivilegeError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(PrivilegeError::NotRoot(euid));
    }
    Ok(())
}

/// Become `user` in every thread of the process (glibc applies set*id to all threads).
pub fn switch_user(user: &User) -> Result<(), PrivilegeError> {
    // SAFETY: `groups` holds `len` valid gids.
    check("setgroups", unsafe {
        libc::setgroups(user.groups.len(), user.groups.as_ptr())
    })?;
    // SAFETY: plain id arguments.
    check("setresgid", unsafe {
        libc::setresgid(user.gid, user.gid, user.gid)
    })?;
    // SAFETY: plain id arguments.
    check("setresuid", unsafe {
        libc::setresuid(user.uid, user.uid, user.uid)
    })
}

/// Whether this thread has capability `cap` in its effective set.
fn has_effective(cap: u32) -> bool {
    let (_, data) = capget();
    let word = (cap / 32) as usize;
    data.get(word)
        .is_some_and(|d| d.effective & (1 << (cap % 32)) != 0)
}

const CAP_SETPCAP: u32 = 8;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capget() -> (CapHeader, [CapData; 2]) {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as capget v3 expects. On failure the
    // data stays zero, which callers read as "no capabilities".
    unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    (header, data)
}

/// Empty this thread's bounding set (while it still has CAP_SETPCAP, which that needs;
/// without it there is nothing this thread could drop from a set it already lost).
pub fn drop_bounding() -> Result<(), PrivilegeError> {
    if has_effective(CAP_SETPCAP) {
        for cap in 0..64 {
            // SAFETY: PR_CAPBSET_DROP takes a capability number; unknown ones fail (EINVAL).
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
            if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                check("prctl(PR_CAPBSET_DROP)", rc)?;
            }
        }
    }
    Ok(())
}

/// Empty this thread's bounding and ambient sets, then its effective, permitted and
/// inheritable sets, and set `no_new_privs`. Idempotent.
pub fn drop_all() -> Result<(), PrivilegeError> {
    drop_bounding()?;
    // SAFETY: clearing the ambient set takes no pointers.
    check("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    })?;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as capset v3 expects.
    check("capset", unsafe {
        libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int
    })?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    check("prctl(PR_SET_NO_NEW_PRIVS)", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_number() {
        let by_name = User::lookup("root").unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(User::lookup("0").unwrap().uid, 0);
        assert!(matches!(
            User::lookup("no-such-user-here"),
            Err(PrivilegeError::UnknownUser(_))
        ));
        assert!(User::lookup("a\0b").is_err());
    }

    #[test]
    fn a_thread_drops_everything() {
        std::thread::spawn(|| {
            drop_all().unwrap();
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
            assert!(status.contains("CapPrm:\t0000000000000000"), "{status}");
            assert!(status.contains("NoNewPrivs:\t1"), "{status}");
            // Idempotent: a second call in a thread without capabilities still succeeds.
            drop_all().unwrap();
        })
        .join()
        .unwrap();
    }
}
