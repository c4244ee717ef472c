//! A real decoder for the player: the ffmpeg CLI reading fMP4 (init + parts) on stdin and
//! writing every decoded picture, scaled to 320×180 grey, on stdout, with its presentation time
//! from the `showinfo` filter on stderr. Each frame's visual clock code ([`crate::clock`]) is
//! read as it arrives.
//!
//! Threads, not tasks (ffmpeg I/O blocks): a writer feeding stdin from a bounded queue, a reader
//! pairing stdout frames with stderr timestamps. Dropping the queue's sender ends the decoder.

use crate::clock;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const W: usize = 320;
const H: usize = 180;

/// One decoded picture.
#[derive(Debug, Clone, Copy)]
pub struct DecodedFrame {
    /// Presentation time as ffmpeg reports it (seconds, ffmpeg's own origin).
    pub pts: Option<f64>,
    /// The capture time read from the picture (Unix ms), if the code was readable.
    pub code_ms: Option<u64>,
    /// When the picture came out of the decoder.
    pub at: Instant,
}

pub struct Decoder {
    child: Child,
    input: Option<mpsc::SyncSender<Vec<u8>>>,
    pub frames: mpsc::Receiver<DecodedFrame>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Chunks dropped because the decoder fell behind (bounded queue full).
    pub overruns: u64,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("pid", &self.child.id())
            .finish()
    }
}

fn pts_of(line: &str) -> Option<f64> {
    if !line.contains("Parsed_showinfo") {
        return None;
    }
    let at = line.find("pts_time:")? + "pts_time:".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

impl Decoder {
    /// Starts ffmpeg. Feed it an init segment first, then media in order.
    pub fn start() -> std::io::Result<Decoder> {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostats", "-loglevel", "info"])
            // No probing beyond the init segment: frames come out as their part arrives
            // (`-fflags nobuffer` would lose the first seconds of an fMP4 pipe).
            .args(["-probesize", "32", "-analyzeduration", "0"])
            .args(["-f", "mp4", "-i", "pipe:0"])
            .args(["-map", "0:v:0", "-vf", &format!("scale={W}:{H},showinfo")])
            .args([
                "-fps_mode",
                "passthrough",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "gray",
            ])
            .arg("pipe:1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(std::io::Error::other("ffmpeg pipes"));
        };
        let (input, chunks) = mpsc::sync_channel::<Vec<u8>>(256);
        let (pts_tx, pts_rx) = mpsc::channel::<f64>();
        let (frame_tx, frames) = mpsc::channel();
        let writer = std::thread::spawn(move || {
            for chunk in chunks {
                if stdin.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let log = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(p) = pts_of(&line) {
                    if pts_tx.send(p).is_err() {
                        break;
                    }
                }
            }
        });
        let reader = std::thread::spawn(move || {
            let mut frame = vec![0u8; W * H];
            while stdout.read_exact(&mut frame).is_ok() {
                let at = Instant::now();
                let pts = pts_rx.recv_timeout(Duration::from_secs(5)).ok();
                let code_ms = clock::read(&frame, W, H, W);
                if frame_tx.send(DecodedFrame { pts, code_ms, at }).is_err() {
                    break;
                }
            }
        });
        Ok(Decoder {
            child,
            input: Some(input),
            frames,
            threads: vec![writer, log, reader],
            overruns: 0,
        })
    }

    /// Queues bytes for the decoder without blocking; a full queue drops them (counted).
    pub fn feed(&mut self, bytes: Vec<u8>) {
        if let Some(tx) = &self.input {
            if tx.try_send(bytes).is_err() {
                self.overruns += 1;
            }
        }
    }

    /// Ends input, waits for ffmpeg to flush, and returns the frames not yet taken.
    pub fn finish(mut self) -> Vec<DecodedFrame> {
        self.input = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.frames.try_iter().collect()
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_showinfo_pts() {
        let line = "[Parsed_showinfo_1 @ 0x55d] n:  12 pts:  36000 pts_time:0.4     duration:3000";
        assert_eq!(pts_of(line), Some(0.4));
        assert_eq!(pts_of("frame=  10 fps=0.0"), None);
        assert_eq!(pts_of("[Parsed_showinfo_1 @ 0x5] pts_time:x"), None);
    }
}
