//! Energy meters, each reading labelled with how it was obtained: measured by a hardware counter
//! (Linux powercap RAPL for CPU packages and DRAM, NVIDIA NVML's total-energy counter for GPUs)
//! or estimated (process CPU time × a per-thread power model from the CPU's TDP, plus a memory
//! model), never one passed off as the other. A [`Session`] reads every available source at its
//! start and end (RAPL counters are also sampled in between, so wrap-arounds are caught) and
//! gives one [`EnergyReport`] with every source's joules, method and uncertainty.

pub mod carbon;
pub mod estimate;
pub mod nvml;
pub mod rapl;

use std::time::Instant;

/// Errors: a counter that exists but cannot be parsed, or a bad setting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    Counter { path: String, reason: String },
    #[error("{0}")]
    BadOptions(String),
}

impl Error {
    /// True for options that cannot be measured (a counter that fails is the machine's fault).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::BadOptions(_))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How a figure was obtained.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Provenance {
    /// Read from a hardware energy counter.
    Measured { counter: String },
    /// Computed from a model; `constants` names every assumption with its value.
    Estimated {
        model: String,
        constants: std::collections::BTreeMap<String, f64>,
    },
}

/// One source's energy over a session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SourceReading {
    /// `cpu-package-0`, `dram-0`, `gpu-0`, `cpu-estimate`, `ram-estimate`, …
    pub source: String,
    pub joules: f64,
    pub provenance: Provenance,
    /// Relative uncertainty (one standard deviation, as a fraction) the method carries.
    pub uncertainty: f64,
}

/// Everything a session measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EnergyReport {
    pub seconds: f64,
    pub sources: Vec<SourceReading>,
    /// CPU time the metering itself took (reading counters; for a command also spawning and
    /// waiting for it), by the metering thread's CPU clock.
    pub meter_cpu_seconds: f64,
    /// CPU time of the work measured: this process and its waited-for children, less the
    /// meter's own; for a command, the command's alone.
    pub workload_cpu_seconds: f64,
}

impl EnergyReport {
    pub fn joules(&self) -> f64 {
        self.sources.iter().map(|s| s.joules).sum()
    }
    /// True when every figure came from a counter.
    pub fn all_measured(&self) -> bool {
        !self.sources.is_empty()
            && self
                .sources
                .iter()
                .all(|s| matches!(s.provenance, Provenance::Measured { .. }))
    }
    /// The meter's CPU time as a fraction of the workload's (`None` for a workload that used
    /// no CPU time).
    pub fn meter_overhead(&self) -> Option<f64> {
        (self.workload_cpu_seconds > 0.0)
            .then(|| self.meter_cpu_seconds / self.workload_cpu_seconds)
    }
    pub fn kwh(&self) -> f64 {
        self.joules() / 3.6e6
    }
    /// How the figures were obtained, in words: each source's counter or estimate model.
    pub fn method(&self) -> String {
        self.sources
            .iter()
            .map(|s| match &s.provenance {
                Provenance::Measured { counter } => counter.clone(),
                Provenance::Estimated { model, .. } => model.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Where the meters look.
#[derive(Debug, Clone)]
pub struct MeterOptions {
    /// The powercap root (`/sys/class/powercap`; a fixture folder in tests).
    pub powercap_root: std::path::PathBuf,
    /// Try NVML (loaded at run time when the library is present).
    pub nvml: bool,
    /// The CPU power model used when no CPU counter is readable.
    pub estimate: estimate::CpuPowerModel,
}

impl MeterOptions {
    /// This machine's sources for CPU work: no GPU counter (a whole-device figure would add
    /// other processes' and idle energy).
    pub fn detect_cpu() -> Self {
        MeterOptions {
            nvml: false,
            ..Self::detect()
        }
    }

    /// This machine's sources and model (the TDP from the shipped table).
    pub fn detect() -> Self {
        MeterOptions {
            powercap_root: rapl::DEFAULT_ROOT.into(),
            nvml: true,
            estimate: estimate::CpuPowerModel::detect(Some((
                estimate::CPU_TDP_SOURCE,
                estimate::CPU_TDP_TABLE,
            ))),
        }
    }
}

/// A measurement in progress.
pub struct Session {
    start: Instant,
    cpu0: estimate::CpuTimes,
    /// The sources read, in report order (counters first, then any estimate).
    meters: Vec<Box<dyn Meter>>,
    /// CPU seconds spent in the session's own calls.
    meter_cpu: f64,
}

/// A source of energy figures: a hardware counter (RAPL, NVML) or an estimate. A new meter is
/// one file implementing this, opened in [`open_meters`].
pub trait Meter {
    /// Reads the counters now (a counter that wraps must be read more often than it wraps).
    fn sample(&mut self) -> Result<()> {
        Ok(())
    }
    /// The energy since the meter was opened, by source with its provenance; `now` is the
    /// process's CPU time and `seconds` the wall time since the session started.
    fn readings(&mut self, now: &estimate::CpuTimes, seconds: f64) -> Vec<SourceReading>;
}

impl Meter for rapl::Rapl {
    fn sample(&mut self) -> Result<()> {
        rapl::Rapl::sample(self)
    }
    fn readings(&mut self, _now: &estimate::CpuTimes, _seconds: f64) -> Vec<SourceReading> {
        rapl::Rapl::readings(self)
    }
}

impl Meter for nvml::Gpus {
    fn readings(&mut self, _now: &estimate::CpuTimes, _seconds: f64) -> Vec<SourceReading> {
        nvml::Gpus::readings(self)
    }
}

/// The CPU and memory estimate from the CPU time since `t0` (when no CPU counter is readable).
struct Estimate {
    model: estimate::CpuPowerModel,
    t0: estimate::CpuTimes,
}

impl Meter for Estimate {
    fn readings(&mut self, now: &estimate::CpuTimes, seconds: f64) -> Vec<SourceReading> {
        self.model
            .readings(now.cpu_seconds - self.t0.cpu_seconds, seconds)
    }
}

/// The meters `opts` asks for that this machine has: RAPL where readable, NVML when asked and
/// present, the estimate for the CPU and memory when no CPU counter is readable.
pub fn open_meters(opts: &MeterOptions) -> Result<Vec<Box<dyn Meter>>> {
    let mut meters: Vec<Box<dyn Meter>> = Vec::new();
    let rapl = rapl::Rapl::open(&opts.powercap_root)?;
    let cpu_counter = rapl.is_some();
    if let Some(r) = rapl {
        meters.push(Box::new(r));
    }
    if let Some(g) = opts.nvml.then(nvml::Gpus::open).flatten() {
        meters.push(Box::new(g));
    }
    if !cpu_counter {
        meters.push(Box::new(Estimate {
            model: opts.estimate.clone(),
            t0: estimate::CpuTimes::now(),
        }));
    }
    Ok(meters)
}

/// The calling thread's CPU time, seconds.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: clock_gettime writes one timespec into the zeroed struct we own.
    let t = unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
        t
    };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

impl Session {
    /// Starts measuring: hardware counters where readable, the estimate for the CPU and memory
    /// otherwise.
    pub fn start(opts: &MeterOptions) -> Result<Session> {
        // The workload's clock starts before the meter's own work, which is then subtracted.
        let cpu0 = estimate::CpuTimes::now();
        let c0 = thread_cpu_seconds();
        let meters = open_meters(opts)?;
        Ok(Session {
            start: Instant::now(),
            cpu0,
            meters,
            meter_cpu: thread_cpu_seconds() - c0,
        })
    }

    /// Reads the RAPL counters now (call more often than the shortest wrap period for long
    /// runs; `stop` does it too).
    pub fn sample(&mut self) -> Result<()> {
        let c0 = thread_cpu_seconds();
        for m in &mut self.meters {
            m.sample()?;
        }
        self.meter_cpu += thread_cpu_seconds() - c0;
        Ok(())
    }

    /// Adds CPU time the caller spent metering outside the session's own calls.
    fn add_meter_cpu(&mut self, seconds: f64) {
        self.meter_cpu += seconds;
    }

    /// Ends the session.
    pub fn stop(self) -> Result<EnergyReport> {
        self.finish(None)
    }

    /// Ends the session; `workload` is the CPU time of the work measured when the caller knows
    /// it better than "this process and its children since the start, less the meter".
    fn finish(mut self, workload: Option<f64>) -> Result<EnergyReport> {
        let cpu1 = estimate::CpuTimes::now();
        let m0 = self.meter_cpu;
        let c0 = thread_cpu_seconds();
        for m in &mut self.meters {
            m.sample()?;
        }
        let seconds = self.start.elapsed().as_secs_f64();
        let mut sources = Vec::new();
        for m in &mut self.meters {
            sources.extend(m.readings(&cpu1, seconds));
        }
        Ok(EnergyReport {
            seconds,
            sources,
            meter_cpu_seconds: m0 + (thread_cpu_seconds() - c0),
            workload_cpu_seconds: workload
                .unwrap_or(cpu1.cpu_seconds - self.cpu0.cpu_seconds - m0)
                .max(0.0),
        })
    }
}

/// A report with the energy of the work that made it: `energy` beside the report's own
/// fields in JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Metered<T> {
    #[serde(flatten)]
    pub report: T,
    pub energy: EnergyReport,
}

impl<T> Metered<T> {
    /// The energy in one line of text, with how it was obtained.
    pub fn energy_line(&self) -> String {
        let e = &self.energy;
        format!(
            "energy     {:.1} J over {:.1} s ({}: {})",
            e.joules(),
            e.seconds,
            if e.all_measured() {
                "measured"
            } else {
                "estimated"
            },
            e.method()
        )
    }
}

/// Runs `work` under a [`Session`] on `opts`' meters: its result with the energy it took (the
/// cost a compression's break-even is computed from).
pub fn metered<T, E: From<Error>>(
    opts: &MeterOptions,
    work: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<Metered<T>, E> {
    let session = Session::start(opts)?;
    let report = work()?;
    Ok(Metered {
        report,
        energy: session.stop()?,
    })
}

/// Runs `program args…` to completion under a [`Session`] (its CPU time counted through the
/// children's resource usage for the estimate); returns its exit status and the energy. With
/// `stdout_to_stderr` the command's standard output goes to ours's standard error (so that a
/// caller printing JSON keeps its standard output clean).
pub fn measure_command(
    program: &std::ffi::OsStr,
    args: &[std::ffi::OsString],
    opts: &MeterOptions,
    stdout_to_stderr: bool,
) -> Result<(std::process::ExitStatus, EnergyReport)> {
    let children0 = estimate::CpuTimes::children();
    let mut session = Session::start(opts)?;
    // This thread's CPU time from here to the end (spawning, waiting, sampling) is metering.
    let t0 = thread_cpu_seconds() - session.meter_cpu;
    let mut command = std::process::Command::new(program);
    command.args(args);
    if stdout_to_stderr {
        command.stdout(std::io::stderr());
    }
    // Without a terminal (scripts, CI) the child leads its own process group, and SIGINT,
    // SIGTERM and SIGHUP sent to Frugal are forwarded to that group while it runs: an
    // interrupted measurement leaves no process behind, and the child's own exit status
    // (128 + the signal) comes back. On a terminal the child stays in the foreground group
    // (an interactive program may read it, and Ctrl-C reaches it directly); signals sent to
    // Frugal alone are forwarded to the child.
    // SAFETY: isatty only inspects the descriptor.
    let interactive = unsafe { libc::isatty(0) } == 1;
    if !interactive {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let forwarding = forward::Forwarding::install();
    let mut child = command
        .spawn()
        .map_err(|e| Error::BadOptions(format!("cannot run {}: {e}", program.to_string_lossy())))?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    let target = if interactive { pid } else { -pid };
    forwarding.to_target(target);
    // A thread waits for the child; this one samples the counters every second meanwhile (RAPL
    // wraps within minutes at high power) and stops the session as soon as the child ends.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(Ok(s)) => break s,
            Ok(Err(e)) => {
                return Err(Error::BadOptions(format!(
                    "waiting for {}: {e}",
                    program.to_string_lossy()
                )))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => session.sample()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::BadOptions("lost the measured command".into()))
            }
        }
    };
    // Stopped by a signal: what the command left in its group (a shell's background job, which
    // ignores SIGINT) is ended too.
    if !interactive {
        forwarding.end_group_if_signalled(pid);
    }
    drop(forwarding);
    // The session's own calls ran on this thread and are in this span already.
    let own = thread_cpu_seconds() - t0;
    let counted = session.meter_cpu;
    session.add_meter_cpu((own - counted).max(0.0));
    // The workload is the child's CPU time alone.
    let workload = estimate::CpuTimes::children().cpu_seconds - children0.cpu_seconds;
    Ok((status, session.finish(Some(workload))?))
}

/// Forwarding of termination signals to a measured command's process group.
mod forward {
    use std::sync::atomic::{AtomicI32, Ordering};

    /// Where signals go: the child's process group as `-pgid`, or the child alone as its pid
    /// (0: not started yet); and the last signal received (0: none).
    static GROUP: AtomicI32 = AtomicI32::new(0);
    static RECEIVED: AtomicI32 = AtomicI32::new(0);
    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    extern "C" fn on_signal(sig: libc::c_int) {
        // SAFETY: errno is thread-local; kill may change it under the interrupted code.
        let saved = unsafe { *libc::__errno_location() };
        RECEIVED.store(sig, Ordering::SeqCst);
        let target = GROUP.load(Ordering::SeqCst);
        if target != 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(target, sig) };
        }
        unsafe { *libc::__errno_location() = saved };
    }

    /// While alive, this process's SIGINT/SIGTERM/SIGHUP handlers forward to the group; the
    /// handlers it replaced (the Ctrl-C cleanup) come back when it drops.
    pub struct Forwarding {
        old: Vec<(libc::c_int, libc::sigaction)>,
    }

    impl Forwarding {
        pub fn install() -> Forwarding {
            GROUP.store(0, Ordering::SeqCst);
            RECEIVED.store(0, Ordering::SeqCst);
            let mut old = Vec::new();
            for sig in SIGNALS {
                // SAFETY: a plain handler that only touches atomics and calls kill.
                unsafe {
                    let mut new: libc::sigaction = std::mem::zeroed();
                    new.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                    new.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut new.sa_mask);
                    let mut prev: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, &new, &mut prev) == 0 {
                        old.push((sig, prev));
                    }
                }
            }
            Forwarding { old }
        }

        /// The child is known (`-pgid` for its group, or its pid): a signal that came before
        /// it is forwarded now.
        pub fn to_target(&self, target: i32) {
            GROUP.store(target, Ordering::SeqCst);
            let sig = RECEIVED.load(Ordering::SeqCst);
            if sig != 0 && target != 0 {
                // SAFETY: sending a signal to the child (or its own group).
                unsafe { libc::kill(target, sig) };
            }
        }
    }

    impl Forwarding {
        /// After the command ended: if a signal was forwarded, SIGTERM to whatever is left
        /// of its process group.
        pub fn end_group_if_signalled(&self, pid: i32) {
            let g = pid;
            if g > 0 && RECEIVED.load(Ordering::SeqCst) != 0 {
                // SAFETY: sending a signal to the command's own group (ESRCH when it is empty).
                unsafe { libc::kill(-g, libc::SIGTERM) };
            }
        }
    }

    impl Drop for Forwarding {
        fn drop(&mut self) {
            GROUP.store(0, Ordering::SeqCst);
            for (sig, prev) in &self.old {
                // SAFETY: restoring the handler read by `install`.
                unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(root: &std::path::Path) -> MeterOptions {
        MeterOptions {
            powercap_root: root.to_path_buf(),
            nvml: false,
            estimate: estimate::CpuPowerModel::for_cpu("test CPU", 4, None),
        }
    }

    /// Without a readable counter every figure is an estimate that says so; with a fixture
    /// powercap tree the session reports the counter's advance as measured.
    #[test]
    fn sessions_label_estimates_and_measurements() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Session::start(&opts(&dir.path().join("none"))).unwrap();
        let t0 = std::time::Instant::now();
        let mut x = 1u64;
        while t0.elapsed().as_millis() < 30 {
            x = x.wrapping_mul(3).wrapping_add(7);
        }
        assert!(x != 0);
        s.sample().unwrap();
        let r = s.stop().unwrap();
        assert!(!r.all_measured());
        assert_eq!(r.sources.len(), 2);
        assert!(r
            .sources
            .iter()
            .all(|s| matches!(s.provenance, Provenance::Estimated { .. })));
        assert!(r.sources[0].joules > 0.0, "{:?}", r.sources[0]);

        let root = dir.path().join("powercap");
        let z = root.join("intel-rapl:0");
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("name"), "package-0\n").unwrap();
        std::fs::write(z.join("max_energy_range_uj"), "1000000000\n").unwrap();
        std::fs::write(z.join("energy_uj"), "999000000\n").unwrap();
        let s = Session::start(&opts(&root)).unwrap();
        std::fs::write(z.join("energy_uj"), "2500000\n").unwrap();
        let r = s.stop().unwrap();
        assert!(r.all_measured());
        assert_eq!(r.sources.len(), 1);
        assert!((r.joules() - 3.5).abs() < 1e-9, "{}", r.joules());
    }

    #[test]
    fn a_command_is_measured_with_its_children_cpu_time() {
        let dir = tempfile::tempdir().unwrap();
        let (status, r) = measure_command(
            std::ffi::OsStr::new("sh"),
            &[
                "-c".into(),
                "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done".into(),
            ],
            &opts(&dir.path().join("none")),
            false,
        )
        .unwrap();
        assert!(status.success());
        assert!(r.sources[0].joules > 0.0, "{:?}", r.sources);
        // The shell's CPU time is the workload; this process's waiting is the meter's own.
        assert!(r.workload_cpu_seconds > 0.0, "{r:?}");
        assert!(r.meter_cpu_seconds < r.workload_cpu_seconds, "{r:?}");
        assert!(measure_command(
            std::ffi::OsStr::new("/nonexistent/x"),
            &[],
            &opts(dir.path()),
            false
        )
        .is_err());
    }
}
