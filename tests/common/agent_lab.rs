//! Agent configurations for the lab: the hub by name through the lab DNS, TLS
//! trusting only the lab CA, the lab device's key in a connection-string file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::HUB_HOST;

/// The lab device's key (base64 of 32 bytes). hubprobe must never print it.
pub const LAB_DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";

/// Writes `dir/connection-string` for device `dev1` with the lab key; its path.
pub fn write_connection_string(dir: &Path) -> PathBuf {
    let p = dir.join("connection-string");
    std::fs::write(
        &p,
        format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={LAB_DEVICE_KEY}\n"),
    )
    .expect("write the connection string");
    p
}

/// The `[hub]` section (ending in a newline) for the lab hub's `mqtt-tls` endpoint
/// on `port`: the lab profile, the name resolved by the lab DNS at `dns`, only the
/// lab CA trusted, 2 s phase timeouts.
pub fn hub_section(dns: SocketAddr, ca: &Path, port: u16) -> String {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-hub.toml");
    format!(
        "[hub]\nhost = \"{HUB_HOST}\"\nprofile = \"{}\"\nendpoints = [\"mqtt-tls\"]\n\
         ports = {{ mqtt-tls = {port} }}\ndns_server = \"{dns}\"\ntrust = \"none\"\n\
         ca_file = \"{}\"\ntimeout = \"2s\"\n",
        profile.display(),
        ca.display()
    )
}

/// A small tmpfs mounted on a fresh temporary directory (a full disk on demand);
/// unmounted on drop. Needs root (the lab runs as root): fails, never skips.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=...`, e.g. `"256k"`).
    pub fn mount(size: &str) -> Tmpfs {
        use std::ffi::CString;
        let dir = tempfile::tempdir().expect("a directory to mount on");
        let target = CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        let data = CString::new(format!("size={size},mode=0755")).unwrap();
        // SAFETY: mount(2) with valid C strings; undone in Drop.
        let r = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert!(
            r == 0,
            "mounting a {size} tmpfs on {} failed (the lab runs as root): {}",
            dir.path().display(),
            std::io::Error::last_os_error()
        );
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target =
            std::ffi::CString::new(self.dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2(2) of the mount made in `mount`.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}
