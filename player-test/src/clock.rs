//! The visual clock code: a frame's capture wall-clock time drawn into its picture as big
//! black/white cells, so that a player can read it back after encoding, scaling down to 240p
//! and decoding, and compute true capture → display latency.
//!
//! Layout: the top quarter of the frame is a grid of [`COLS`] × [`ROWS`] cells, one bit each
//! (white = 1), most significant first: 48 bits of Unix time in milliseconds, then a 16-bit
//! CRC-16/CCITT of those 6 bytes, so a misread is detected rather than reported as a time.
//! Reading samples the middle half of each cell and thresholds at mid-grey, which survives
//! lossy compression and any downscale that leaves a cell a few pixels wide (240p: 26 × 15).

/// Grid size: 16 × 4 = 64 cells.
pub const COLS: usize = 16;
pub const ROWS: usize = 4;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// CRC-16/CCITT-FALSE.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xffffu16;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn payload(ms: u64) -> u64 {
    let ms = ms & 0xffff_ffff_ffff;
    let bytes = ms.to_be_bytes();
    (ms << 16) | u64::from(crc16(&bytes[2..]))
}

fn cell(w: usize, h: usize, i: usize) -> (usize, usize, usize, usize) {
    let (col, row) = (i % COLS, i / COLS);
    let band = h / 4;
    let (x0, x1) = (col * w / COLS, (col + 1) * w / COLS);
    let (y0, y1) = (row * band / ROWS, (row + 1) * band / ROWS);
    (x0, x1, y0, y1)
}

/// Draws `ms` (Unix milliseconds) into a luma plane of `w` × `h` with the given stride.
pub fn draw(luma: &mut [u8], w: usize, h: usize, stride: usize, ms: u64) {
    let bits = payload(ms);
    for i in 0..COLS * ROWS {
        let on = bits >> (63 - i) & 1 == 1;
        let (x0, x1, y0, y1) = cell(w, h, i);
        for y in y0..y1 {
            if let Some(row) = luma.get_mut(y * stride + x0..y * stride + x1) {
                row.fill(if on { WHITE } else { BLACK });
            }
        }
    }
}

/// Reads the time back from a luma plane; `None` if the code is absent or damaged.
pub fn read(luma: &[u8], w: usize, h: usize, stride: usize) -> Option<u64> {
    if w < COLS * 4 || h < ROWS * 4 * 4 || luma.len() < stride * h {
        return None;
    }
    let mut bits = 0u64;
    for i in 0..COLS * ROWS {
        let (x0, x1, y0, y1) = cell(w, h, i);
        // The middle half of the cell, away from edges that compression and scaling smear.
        let (qx, qy) = ((x1 - x0) / 4, (y1 - y0) / 4);
        let (mut sum, mut n) = (0u64, 0u64);
        for y in y0 + qy..y1 - qy {
            for x in x0 + qx..x1 - qx {
                sum += u64::from(*luma.get(y * stride + x)?);
                n += 1;
            }
        }
        let mean = sum / n.max(1);
        bits = (bits << 1) | u64::from(mean > 128);
    }
    let ms = bits >> 16;
    (payload(ms) == bits).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[test]
    fn round_trips_on_a_clean_plane() {
        let (w, h) = (320, 180);
        let mut y = vec![100u8; w * h];
        draw(&mut y, w, h, w, 1_795_812_345_678);
        assert_eq!(read(&y, w, h, w), Some(1_795_812_345_678));
        // A damaged cell is detected, not misread.
        let (x0, x1, y0, y1) = cell(w, h, 20);
        let flip = if y[y0 * w + x0] == WHITE {
            BLACK
        } else {
            WHITE
        };
        for r in y0..y1 {
            y[r * w + x0..r * w + x1].fill(flip);
        }
        assert_eq!(read(&y, w, h, w), None);
        assert_eq!(read(&[0u8; 10], 5, 2, 5), None);
    }

    /// A 1080p frame with the code over a busy test pattern, encoded by the real ffmpeg CLI
    /// (libx264, CRF 30), then decoded at 1080p and scaled to 360p and 240p by ffmpeg: the time
    /// reads back exactly at every size.
    #[test]
    fn survives_x264_and_downscaling_to_240p() {
        let (w, h) = (1920usize, 1080usize);
        let ms = 1_795_812_345_678u64;
        let mut frame = vec![128u8; w * h * 3 / 2];
        for (i, p) in frame[..w * h].iter_mut().enumerate() {
            let (x, y) = (i % w, i / w);
            *p = ((x * 7 + y * 13) % 256) as u8; // texture that costs the encoder bits
        }
        draw(&mut frame[..w * h], w, h, w, ms);
        let dir = std::env::temp_dir().join(format!("fc-clock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let h264 = dir.join("code.h264");
        let mut enc = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "yuv420p",
                "-s",
                "1920x1080",
                "-r",
                "30",
                "-i",
                "-",
            ])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-f", "h264",
            ])
            .arg(&h264)
            .stdin(Stdio::piped())
            .spawn()
            .expect("ffmpeg must be installed");
        let mut stdin = enc.stdin.take().unwrap();
        for _ in 0..3 {
            stdin.write_all(&frame).unwrap();
        }
        drop(stdin);
        assert!(enc.wait().unwrap().success());
        for (sw, sh) in [(1920usize, 1080usize), (640, 360), (426, 240)] {
            let out = Command::new("ffmpeg")
                .args(["-v", "error", "-i"])
                .arg(&h264)
                .args([
                    "-frames:v",
                    "1",
                    "-vf",
                    &format!("scale={sw}:{sh}"),
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "gray",
                    "-",
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout.len(), sw * sh);
            assert_eq!(read(&out.stdout, sw, sh, sw), Some(ms), "at {sw}x{sh}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
