//! Reading the files a configuration names: regular files only, each with a size cap, so that a
//! FIFO or `/dev/zero` named as a rule, secret or model file fails at once instead of hanging
//! or filling memory.

use std::io::Read;
use std::path::Path;

/// Config and rule files.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Secrets (passwords, tokens).
pub const MAX_SECRET_BYTES: u64 = 64 << 10;
/// Certificates and keys.
pub const MAX_PEM_BYTES: u64 = 1 << 20;
/// Detector models.
pub const MAX_MODEL_BYTES: u64 = 256 << 20;

/// Reads `path` if it is a regular file (or a link to one) of at most `max` bytes.
///
/// # Errors
/// The file cannot be opened or read, is not a regular file, or is larger than `max`.
pub fn read(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    // Open without blocking, so that a FIFO with no writer cannot stall the open itself.
    let file = open_nonblocking(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > max {
        return Err(Error::new(ErrorKind::InvalidData, format!("larger than {} bytes", max)));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the check and the read.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(ErrorKind::InvalidData, format!("larger than {} bytes", max)));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
///
/// # Errors
/// As [`read`], or the file is not UTF-8.
pub fn read_to_string(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, max)?).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer; on a regular file it
    // changes nothing.
    std::fs::OpenOptions::new().read(true).custom_flags(libc_o_nonblock()).open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// `O_NONBLOCK` on Linux and the BSDs (macOS included).
#[cfg(unix)]
const fn libc_o_nonblock() -> i32 {
    if cfg!(any(target_os = "macos", target_os = "ios", target_os = "freebsd", target_os = "openbsd", target_os = "netbsd")) {
        0x0004
    } else {
        0o4000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_cap_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "groups: []\n").unwrap();
        assert_eq!(read_to_string(&file, 100).unwrap(), "groups: []\n");
        let err = read(&file, 5).unwrap_err();
        assert!(err.to_string().contains("larger than 5 bytes"), "{err}");
        assert!(read(dir.path(), 100).unwrap_err().to_string().contains("not a regular file"));
        let err = read(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(read(&dir.path().join("missing"), 100).is_err());
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(read_to_string(&file, 100).unwrap_err().to_string().contains("not UTF-8"));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("model.onnx");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo (coreutils)");
        assert!(made.success());
        // Without a writer, a blocking open would wait forever; the test would hang, not fail.
        let err = read(&fifo, 100).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
