//! What the bench commands print: Markdown tables on stdout, a line at a
//! time, flushed.
//!
//! A failed write (above all a reader that closed the pipe) is an I/O error
//! in the returned chain, never a panic, so `crow`'s `main` recognises a
//! closed pipe here as it does for every other command.

use std::io::Write;

use anyhow::Result;

/// Print `text` and a newline to stdout, flushed.
pub(crate) fn line(text: impl std::fmt::Display) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}
