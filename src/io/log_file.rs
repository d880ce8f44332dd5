//! The project's log file `.agents/orchestrator.log`, capped in size so that a week-long
//! run cannot fill the disk: when the file passes its cap it is renamed to
//! `orchestrator.log.1` (older copies shift to `.2`, `.3`, …) and a new file is started.
//! At most `keep` old copies are kept.
//!
//! It is a plain `io::Write`; `main` wraps it in tracing-appender's non-blocking writer,
//! so the run never waits on the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// 10 MiB per file, 3 old copies: at most 40 MiB of logs per project.
pub const DEFAULT_CAP_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_KEEP: usize = 3;

pub struct CappedLogFile {
    path: PathBuf,
    file: File,
    written: u64,
    cap: u64,
    keep: usize,
}

impl CappedLogFile {
    pub fn open(path: &Path, cap: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(CappedLogFile {
            path: path.to_path_buf(),
            file,
            written,
            cap,
            keep,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            let _ = fs::remove_file(&self.path);
        } else {
            let _ = fs::remove_file(self.numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            fs::rename(&self.path, self.numbered(1))?;
        }
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Write for CappedLogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.cap {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The last `n` lines of a log file, oldest first, reading backwards from the end in
/// blocks so a 10 MiB log costs only what is shown. A missing file has no lines; bytes that
/// are not UTF-8 are shown replaced.
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 8 * 1024;
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut start = len;
    let mut tail: Vec<u8> = Vec::new();
    // One more newline than lines wanted proves the first kept line is whole.
    while start > 0 && tail.iter().filter(|b| **b == b'\n').count() <= n {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&tail);
        tail = block;
        start = from;
    }
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().map(|l| l.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_the_last_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orchestrator.log");
        assert!(tail_lines(&path, 5).unwrap().is_empty());
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let want: Vec<String> = (4997..5000).map(|i| format!("line {i}")).collect();
        assert_eq!(tail_lines(&path, 3).unwrap(), want);
        let all = tail_lines(&path, 10_000).unwrap();
        assert_eq!(all.len(), 5000);
        assert_eq!(all[0], "line 0");
        std::fs::write(&path, "no newline at end").unwrap();
        assert_eq!(tail_lines(&path, 2).unwrap(), ["no newline at end"]);
        std::fs::write(&path, b"ok\n\xff bad\n").unwrap();
        assert_eq!(tail_lines(&path, 1).unwrap(), ["\u{fffd} bad"]);
    }

    #[test]
    fn rotates_past_the_cap_and_keeps_a_bounded_number_of_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orchestrator.log");
        let mut log = CappedLogFile::open(&path, 100, 2).unwrap();
        for i in 0..50 {
            writeln!(log, "line {i:04} ........................").unwrap();
        }
        log.flush().unwrap();
        let mut total = 0;
        for entry in fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let len = entry.metadata().unwrap().len();
            assert!(len <= 100, "{:?} is {len} bytes", entry.file_name());
            total += 1;
        }
        assert_eq!(total, 3, "the live file and two old copies");
        let live = fs::read_to_string(&path).unwrap();
        assert!(
            live.contains("line 0049"),
            "the newest line is in the live file"
        );
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orchestrator.log");
        fs::write(&path, "earlier\n").unwrap();
        let mut log = CappedLogFile::open(&path, 1000, 1).unwrap();
        writeln!(log, "later").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "earlier\nlater\n");
    }
}
