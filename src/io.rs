//! File helpers shared by every stage: atomic writes and transparent gzip reading.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Opens a file for buffered reading, decompressing it when its name ends in `.gz`.
pub fn open_read(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let buffered = BufReader::with_capacity(1 << 16, file);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Returns `base` if it exists, else `base.gz`, else an error naming both.
pub fn find_plain_or_gz(base: &Path) -> Result<PathBuf> {
    if base.is_file() {
        return Ok(base.to_path_buf());
    }
    let mut gz = base.as_os_str().to_owned();
    gz.push(".gz");
    let gz = PathBuf::from(gz);
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::io(
        base,
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("not found (nor {})", gz.display()),
        ),
    ))
}

/// Temporary files of this process not yet committed or dropped: what [`remove_temporaries_on_signal`] removes.
static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// This host's name, as temporary file names carry it (a file system may be shared by many hosts).
pub fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is writable for its whole length; gethostname NUL-terminates within it on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let name = if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            String::new()
        };
        // Only characters that keep the name one path component and easy to split.
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if clean.is_empty() {
            "host".into()
        } else {
            clean
        }
    })
}

/// Whether process `pid` of this host is alive.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes the temporary files that processes of this host, now dead, left for `dest` (killed by SIGKILL, or
/// before [`remove_temporaries_on_signal`] could run). Those of live processes and of other hosts stay.
fn remove_stale_temporaries(dest: &Path, name: &str) {
    let Some(dir) = dest.parent().map(|d| {
        if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        }
    }) else {
        return;
    };
    let prefix = format!(".{name}.tmp-{}-", host());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32 && !alive(pid) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Removes this process's uncommitted temporary files when SIGINT, SIGTERM or SIGHUP arrives, then exits with
/// 128 + the signal: for commands whose only state is their output (label, shard, synth, evaluate, report).
/// Training keeps its own SIGTERM handling (checkpoint, then exit), so it does not call this.
pub fn remove_temporaries_on_signal() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Error::io(Path::new("(signal handler)"), e))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let paths = std::mem::take(&mut *live());
            for p in &paths {
                let _ = fs::remove_file(p);
            }
            eprintln!(
                "interrupted (signal {sig}): removed {} temporary file(s); nothing was committed half-written",
                paths.len()
            );
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// A file written under a temporary name next to its destination and renamed into place by
/// [`AtomicFile::commit`], so that readers never see a half-written file. Dropped without commit, the temporary
/// file is removed and the destination is untouched. The temporary name carries host and process id
/// (`.NAME.tmp-HOST-PID`), so the next writer of the same file removes what a killed process left.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the temporary file (and the destination's parent directories).
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile> {
        let dest = dest.as_ref().to_path_buf();
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let name = dest
            .file_name()
            .ok_or_else(|| Error::format(&dest, "not a file path"))?
            .to_string_lossy();
        remove_stale_temporaries(&dest, &name);
        let tmp = dest.with_file_name(format!(".{name}.tmp-{}-{}", host(), std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        live().push(tmp.clone());
        Ok(AtomicFile {
            dest,
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// Flushes, fsyncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("writer present until commit");
        let file = writer
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        let renamed = fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e));
        if renamed.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        forget(&self.tmp);
        renamed
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
            forget(&self.tmp);
        }
    }
}

/// Takes `tmp` off the list of live temporary files.
fn forget(tmp: &Path) {
    let mut l = live();
    if let Some(i) = l.iter().position(|p| p == tmp) {
        l.swap_remove(i);
    }
}

/// A CSV writer onto an [`AtomicFile`] at `dest`: minimal quoting and `\n` line ends, as the CheXpert labeler
/// writes. The file appears on [`commit_csv`].
pub fn csv_writer(dest: &Path) -> Result<csv::Writer<AtomicFile>> {
    Ok(csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(AtomicFile::create(dest)?))
}

/// Flushes a [`csv_writer`] and moves its file into place.
pub fn commit_csv(w: csv::Writer<AtomicFile>, dest: &Path) -> Result<()> {
    let file = w
        .into_inner()
        .map_err(|e| Error::io(dest, io::Error::other(e.error().to_string())))?;
    file.commit()
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes).map_err(|e| Error::io(&f.tmp, e))?;
    f.commit()
}

/// Refuses to write `output` when it is one of `inputs`, however spelled (`./a.csv`, a symlink): the write would
/// replace what the command reads. Checked before anything is written.
pub fn refuse_overwrite(output: &Path, inputs: &[&Path]) -> Result<()> {
    // The output may not exist yet: resolve its directory and keep its name.
    let resolve = |p: &Path| -> Option<PathBuf> {
        std::fs::canonicalize(p).ok().or_else(|| {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?))
        })
    };
    let Some(out) = resolve(output) else {
        return Ok(());
    };
    for input in inputs {
        if resolve(input).is_some_and(|i| i == out) {
            return Err(Error::Input(format!(
                "{}: the output is also an input ({}); write it elsewhere",
                output.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Bytes available to this user on the file system holding `path`, where the system says.
#[allow(clippy::useless_conversion)] // statvfs's field types differ between platforms
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs the call fills.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// SHA-256 of a file, hex.
pub fn sha256_of(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/out.txt");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half").unwrap();
            // dropped without commit
        }
        assert!(!dest.exists());
        assert_eq!(
            fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            0,
            "temp file left behind"
        );
        write_atomic(&dest, b"whole").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
    }

    #[test]
    fn a_dead_process_s_temporary_file_goes_a_live_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.csv");
        // A pid that cannot be running (above the kernel's pid_max), and a live one: this process's parent.
        let dead = dir
            .path()
            .join(format!(".out.csv.tmp-{}-{}", host(), i32::MAX));
        let parent = std::os::unix::process::parent_id();
        let running = dir.path().join(format!(".out.csv.tmp-{}-{parent}", host()));
        let elsewhere = dir
            .path()
            .join(format!(".out.csv.tmp-otherhost-{}", i32::MAX));
        for p in [&dead, &running, &elsewhere] {
            fs::write(p, b"partial").unwrap();
        }
        write_atomic(&dest, b"whole").unwrap();
        assert!(!dead.exists(), "a dead process's temporary file was left");
        assert!(running.exists() && elsewhere.exists());
        assert!(live().is_empty() || !live().iter().any(|p| p.starts_with(dir.path())));
    }

    #[test]
    fn gz_is_read_transparently() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("a.csv");
        let gz = dir.path().join("a.csv.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(b"x,y\n1,2\n").unwrap();
        enc.finish().unwrap();
        let found = find_plain_or_gz(&base).unwrap();
        assert_eq!(found, gz);
        let mut s = String::new();
        open_read(&found).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "x,y\n1,2\n");
        let err = find_plain_or_gz(&dir.path().join("b.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.csv") && err.contains("b.csv.gz"), "{err}");
    }
}
