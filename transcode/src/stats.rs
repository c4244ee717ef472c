//! What a rung (or a stream's decoder) costs and how well it keeps up, measured on its own
//! thread and read by whoever reports it (`/api/streams`, metrics, the shedding decision).
//!
//! CPU time is the thread's own clock (`CLOCK_THREAD_CPUTIME_ID`) plus, on Linux, the threads
//! the codec library started from it: libx264's and libavcodec's worker threads inherit the
//! name of the thread that creates them, and every Ferrocast codec thread has a name of its
//! own ([`thread_name`]), so `/proc/self/task/*/comm` tells whose they are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A process-unique name for a codec thread (15 bytes at most: Linux truncates the rest).
pub fn thread_name(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = format!("fc-{kind}{n}");
    name.truncate(15);
    name
}

/// One rung's figures (atomics: written by its thread, read anywhere).
#[derive(Debug, Default)]
pub struct RungStats {
    encoder: Mutex<Option<&'static str>>,
    frames: AtomicU64,
    /// Media time encoded, µs (each frame's distance to the next kept one).
    media_us: AtomicU64,
    /// Wall time spent scaling and encoding, µs.
    busy_us: AtomicU64,
    /// CPU time of the rung's threads, µs.
    cpu_us: AtomicU64,
    /// Source arrival → encoded frame out, µs, of the latest frame.
    lag_us: AtomicU64,
    /// Pictures the decoder could not hand over at once (the rung's queue was full).
    waits: AtomicU64,
}

/// A snapshot of [`RungStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RungFigures {
    /// `libx264` or `h264_nvenc`; `None` until the first encoder opened.
    pub encoder: Option<&'static str>,
    pub frames: u64,
    pub media_secs: f64,
    pub cpu_secs: f64,
    /// Media seconds encoded per second of work (how many times real time this rung could
    /// run alone); `None` before a second of media.
    pub speed: Option<f64>,
    pub lag_secs: f64,
    pub waits: u64,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RungStats {
    pub fn set_encoder(&self, name: &'static str) {
        *self.encoder.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
    }

    pub(crate) fn encoded(&self, media: Duration, busy: Duration) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.media_us.fetch_add(us(media), Ordering::Relaxed);
        self.busy_us.fetch_add(us(busy), Ordering::Relaxed);
    }

    pub(crate) fn set_lag(&self, lag: Duration) {
        self.lag_us.store(us(lag), Ordering::Relaxed);
    }

    pub(crate) fn set_cpu(&self, cpu: Duration) {
        self.cpu_us.store(us(cpu), Ordering::Relaxed);
    }

    pub(crate) fn waited(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn figures(&self) -> RungFigures {
        let media = self.media_us.load(Ordering::Relaxed) as f64 / 1e6;
        let busy = self.busy_us.load(Ordering::Relaxed) as f64 / 1e6;
        RungFigures {
            encoder: *self.encoder.lock().unwrap_or_else(|e| e.into_inner()),
            frames: self.frames.load(Ordering::Relaxed),
            media_secs: media,
            cpu_secs: self.cpu_us.load(Ordering::Relaxed) as f64 / 1e6,
            speed: (media >= 1.0 && busy > 0.0).then(|| media / busy),
            lag_secs: self.lag_us.load(Ordering::Relaxed) as f64 / 1e6,
            waits: self.waits.load(Ordering::Relaxed),
        }
    }
}

/// The CPU time of the calling thread and of the threads named like it (its codec's workers),
/// sampled at most once a second; workers that have ended keep their last reading.
#[derive(Debug)]
pub(crate) struct CpuClock {
    name: String,
    /// The codec may start worker threads (otherwise the thread's own clock is all).
    workers_possible: bool,
    /// Worker thread id → its last reading.
    workers: std::collections::HashMap<u64, Duration>,
    /// Readings of workers that are gone.
    gone: Duration,
    sampled: Option<Instant>,
    last: Duration,
}

impl CpuClock {
    /// For the calling thread, whose name is `name`; `workers_possible`: its codec may start
    /// threads of its own (`/proc` is read only then).
    pub(crate) fn new(name: &str, workers_possible: bool) -> CpuClock {
        let mut name = name.to_owned();
        name.truncate(15);
        CpuClock {
            name,
            workers_possible,
            workers: Default::default(),
            gone: Duration::ZERO,
            sampled: None,
            last: Duration::ZERO,
        }
    }

    /// The total now, if a second has passed since the last sample (or `force`).
    pub(crate) fn sample(&mut self, force: bool) -> Option<Duration> {
        let now = Instant::now();
        if !force
            && self
                .sampled
                .is_some_and(|s| now.duration_since(s) < Duration::from_secs(1))
        {
            return None;
        }
        self.sampled = Some(now);
        let own = thread_cpu();
        let seen = if self.workers_possible {
            workers_named(&self.name)
        } else {
            Vec::new()
        };
        for (tid, t) in &self.workers {
            if !seen.iter().any(|(s, _)| s == tid) {
                self.gone += *t;
            }
        }
        self.workers = seen.into_iter().collect();
        self.last = own + self.gone + self.workers.values().sum::<Duration>();
        Some(self.last)
    }
}

/// The calling thread's CPU time.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Other threads of this process named `name`, with their CPU time (Linux; none elsewhere).
fn workers_named(name: &str) -> Vec<(u64, Duration)> {
    let mut out = Vec::new();
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: sysconf and gettid take no pointers.
        let (tick, me) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::gettid()) };
        let tick = if tick > 0 { tick as f64 } else { 100.0 };
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return out;
        };
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if i64::try_from(tid).ok() == Some(i64::from(me)) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some(t) = parse_stat(&stat, name, tick) {
                out.push((tid, t));
            }
        }
    }
    out
}

/// utime + stime of a `/proc/PID/task/TID/stat` line whose comm is `name`.
fn parse_stat(stat: &str, name: &str, ticks_per_sec: f64) -> Option<Duration> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    if stat.get(open + 1..close)? != name {
        return None;
    }
    // After "comm)": state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / ticks_per_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_by_name() {
        // A line as Linux writes /proc/self/task/TID/stat, for a libx264 worker.
        let line = "4242 (fc-rung7) S 4100 4100 4100 0 -1 4194368 25 0 0 0 150 30 0 0 20 0 9 0 \
                    880 0 0 18446744073709551615 0 0 0 0 0 0 0 4096 0 0 0 0 -1 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line, "fc-rung7", 100.0),
            Some(Duration::from_millis(1800))
        );
        assert_eq!(parse_stat(line, "fc-rung8", 100.0), None);
        // A name with a space and a parenthesis.
        let odd = "7 (a) b) R 1 1 1 0 -1 0 0 0 0 0 5 5 0 0 20 0 1 0 1 0 0";
        assert_eq!(
            parse_stat(odd, "a) b", 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_stat("garbage", "x", 100.0), None);
    }

    #[test]
    fn names_are_unique_and_short() {
        let a = thread_name("rung");
        let b = thread_name("rung");
        assert_ne!(a, b);
        assert!(thread_name("a-very-long-kind-name").len() <= 15);
    }

    #[test]
    fn the_clock_counts_this_threads_work() {
        let mut c = CpuClock::new("not-a-codec", true);
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let t = c.sample(true).unwrap();
        assert!(t >= Duration::from_millis(20), "{t:?}");
    }
}
