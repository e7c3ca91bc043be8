//! File I/O with guarantees. Writes: whole or not at all (a temporary file in the
//! same directory, fsync, rename over the target, fsync of the directory), so a crash
//! or power cut leaves the old file or the new one, never a torn one. Reads of input
//! files named on the command line or in a config: [`read_bounded`] opens without
//! blocking (a FIFO cannot hang the run), refuses anything but a regular file and
//! reads at most a documented cap per [`InputKind`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What an input file holds; each kind has its own size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A secret (connection string, password, SAS token): at most [`SMALL_CAP`].
    Secret,
    /// A hub profile (TOML): at most [`SMALL_CAP`].
    Profile,
    /// The agent's configuration (TOML): at most [`SMALL_CAP`].
    Config,
    /// A certificate chain or private key (PEM): at most [`SMALL_CAP`].
    Pem,
    /// A CA bundle (PEM or DER): at most [`CA_BUNDLE_CAP`].
    CaBundle,
}

/// Cap on secrets, profiles, configs, certificates and keys: 1 MiB (real ones
/// are a few KiB).
pub const SMALL_CAP: u64 = 1 << 20;
/// Cap on a CA bundle: 16 MiB (the system bundles are about 200 KiB).
pub const CA_BUNDLE_CAP: u64 = 16 << 20;

impl InputKind {
    /// The largest file of this kind that is read.
    pub fn cap(self) -> u64 {
        match self {
            InputKind::CaBundle => CA_BUNDLE_CAP,
            _ => SMALL_CAP,
        }
    }
}

/// Why an input file was not read. The message never contains the file's
/// content; the OS error is carried as text only (no `source()`), so a caller
/// that prints the error chain prints it once.
#[derive(Debug, thiserror::Error)]
pub enum InputFileError {
    /// Opening, inspecting or reading failed (missing, unreadable, ...).
    #[error("{0}")]
    Io(io::Error),
    /// A FIFO, directory, device or socket: reading it could block or never end.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// Larger than the cap for its kind.
    #[error("it is larger than the {} limit for this kind of file", human_size(*cap))]
    TooLarge {
        /// The cap.
        cap: u64,
    },
}

impl InputFileError {
    /// The I/O error kind, when the failure was an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            InputFileError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// Reads an input file (see the module doc): opened with `O_NONBLOCK` so a FIFO
/// with no writer cannot block, refused unless `fstat` says it is a regular file,
/// refused when larger than `kind`'s cap (checked on the size and again while
/// reading, in case it grows).
pub fn read_bounded(path: &Path, kind: InputKind) -> Result<Vec<u8>, InputFileError> {
    read_capped(path, kind.cap())
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_bounded_text(path: &Path, kind: InputKind) -> Result<String, InputFileError> {
    let bytes = read_bounded(path, kind)?;
    String::from_utf8(bytes).map_err(|_| {
        InputFileError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        ))
    })
}

/// Checks that `path` could be read by [`read_bounded`] (exists, is a regular
/// file, is within the cap) without reading it.
pub fn check_input_file(path: &Path, kind: InputKind) -> Result<(), InputFileError> {
    open_regular(path, kind.cap()).map(|_| ())
}

fn open_regular(path: &Path, cap: u64) -> Result<File, InputFileError> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(InputFileError::Io)?;
    let meta = file.metadata().map_err(InputFileError::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO (named pipe)"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else {
            "a special file"
        };
        return Err(InputFileError::NotRegular(what));
    }
    if meta.len() > cap {
        return Err(InputFileError::TooLarge { cap });
    }
    Ok(file)
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, InputFileError> {
    let file = open_regular(path, cap)?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(InputFileError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(InputFileError::TooLarge { cap });
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically (see the module doc). The temporary file
/// is named `.NAME.tmp-PID` (dot-prefixed, so directory scanners such as
/// node_exporter's textfile collector ignore it) and removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        ));
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is synced. A failure here cannot undo
    // it, and some file systems refuse to sync a directory: best effort.
    let _ = sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// A fresh temporary name for `path`: `.NAME.tmp-PID-SEQ` in the same directory
/// (unique per call, so concurrent writers in one process never collide).
pub fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let dir = path.parent().unwrap_or(Path::new(""));
    dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// fsyncs a directory so that a rename or unlink in it survives a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.prom");
        write_atomic(&p, b"one\n").unwrap();
        write_atomic(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn bounded_read_refuses_fifo_directory_and_oversize() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_bounded(&fifo, InputKind::Secret).unwrap_err();
        assert!(matches!(e, InputFileError::NotRegular(_)), "{e}");
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_bounded(d.path(), InputKind::Profile).unwrap_err();
        assert_eq!(e.to_string(), "it is a directory, not a regular file");
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'a'; SMALL_CAP as usize + 1]).unwrap();
        let e = read_bounded(&big, InputKind::Secret).unwrap_err();
        assert!(matches!(e, InputFileError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("1 MiB"), "{e}");
        // The CA bundle cap is larger.
        assert_eq!(
            read_bounded(&big, InputKind::CaBundle).unwrap().len(),
            SMALL_CAP as usize + 1
        );
        let exact = d.path().join("exact");
        std::fs::write(&exact, vec![b'a'; SMALL_CAP as usize]).unwrap();
        assert!(read_bounded(&exact, InputKind::Pem).is_ok());
        let e = read_bounded(Path::new("/dev/null"), InputKind::Secret).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_bounded(&d.path().join("missing"), InputKind::Secret).unwrap_err();
        assert_eq!(e.io_kind(), Some(io::ErrorKind::NotFound));
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn missing_directory_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("no/such/dir/x.prom");
        assert!(write_atomic(&p, b"x").is_err());
    }
}
