//! The command line's standard output. A reader that stops early (`hookgate check | head -3`) is no
//! error: what is left is dropped and the command ends as it would have, quietly, where `println!` would
//! panic with "failed printing to stdout: Broken pipe". (Rust ignores SIGPIPE, so a closed pipe shows up
//! as an error from the write.)

use std::io::{self, ErrorKind, Write};

/// Standard output, locked, dropping everything once its reader has gone.
pub struct Stdout {
    inner: io::StdoutLock<'static>,
    reader_gone: bool,
}

impl Stdout {
    /// Locks standard output for the command's whole output.
    pub fn lock() -> Stdout {
        Stdout { inner: io::stdout().lock(), reader_gone: false }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.reader_gone {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(error) if error.kind() == ErrorKind::BrokenPipe => {
                self.reader_gone = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.reader_gone {
            return Ok(());
        }
        match self.inner.flush() {
            Err(error) if error.kind() == ErrorKind::BrokenPipe => {
                self.reader_gone = true;
                Ok(())
            }
            other => other,
        }
    }
}

impl Drop for Stdout {
    /// What is still buffered goes out now, while a closed pipe can still be told from other errors (the
    /// flush at the process's exit ignores every error).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Prints `text` on standard output. Returns false, having said why on standard error, only when it could
/// not be written for a reason other than a reader that has gone (a full disk behind a redirection).
pub fn print(text: &str) -> bool {
    let mut out = Stdout::lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(error) => {
            eprintln!("cannot write the output: {error}");
            false
        }
    }
}
