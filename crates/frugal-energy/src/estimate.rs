//! The estimate used where no energy counter is readable (containers, VMs, this CI): CPU energy
//! from the process's CPU time and a per-thread power, memory energy from its peak resident
//! size and a per-GB power. Every constant is reported with the figure.
//!
//! - CPU: `cpu_seconds × TDP / package threads` — each busy hardware thread drawing an equal
//!   share of its package's TDP (CodeCarbon's per-process attribution; an upper-ish bound, as
//!   packages rarely sit at TDP, and blind to idle power the process does not cause). The
//!   package's threads are `siblings` in `/proc/cpuinfo` (in a container on bare metal, the
//!   whole package, not the container's slice); where that is missing, the logical CPUs this
//!   process may use. A VM sees only its own vCPUs as the package, so there a table TDP (the
//!   whole chip's) spread over few vCPUs overstates: the figure is an upper bound, as
//!   CodeCarbon's is on the same VM.
//! - TDP: looked up by the CPU's model name (as `/proc/cpuinfo` gives it) in a `Name,TDP` table
//!   ([`CPU_TDP_TABLE`]: 4,898 models, CodeCarbon 3.2.9's `cpu_power.csv`), else 85 W,
//!   CodeCarbon's default for an unknown CPU (a VM that names its CPU only `AMD EPYC`, as this
//!   project's machines do, gets the default, and the figure says so).
//! - Memory: `peak RSS (GB) × 0.375 W/GB × wall seconds` (3 W per 8 GB, CodeCarbon 2.x's RAM
//!   model).

use crate::{Provenance, SourceReading};

/// The shipped CPU model → TDP table (`Name,TDP`), written by `scripts/make-cpu-table.py` from
/// the pinned CodeCarbon wheel (see `data/README.md`).
pub const CPU_TDP_TABLE: &str = include_str!("../../../data/cpu-tdp.csv");
/// How [`CPU_TDP_TABLE`] is named in a figure's provenance.
pub const CPU_TDP_SOURCE: &str = "data/cpu-tdp.csv (CodeCarbon 3.2.9 cpu_power.csv)";

/// CodeCarbon's TDP for a CPU it cannot identify.
pub const DEFAULT_TDP_W: f64 = 85.0;
/// 3 W per 8 GB of memory.
pub const RAM_W_PER_GB: f64 = 0.375;

/// What the estimate assumes about this machine's CPU.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CpuPowerModel {
    pub cpu_model: String,
    /// Logical CPUs this process may use.
    pub logical_cpus: usize,
    /// Hardware threads one TDP is shared by (a package's `siblings`).
    pub package_threads: usize,
    pub tdp_watts: f64,
    /// Where the TDP came from (`table PATH` or `default`).
    pub tdp_source: String,
    pub ram_watts_per_gb: f64,
}

impl CpuPowerModel {
    /// This machine's CPU model and logical CPU count; the TDP from `table` (CSV text with a
    /// `Name,TDP` header) when it lists the model, else [`DEFAULT_TDP_W`].
    pub fn detect(table: Option<(&str, &str)>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim())
        };
        let cpu_model = field("model name").unwrap_or("unknown").to_string();
        let logical_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let siblings = field("siblings").and_then(|v| v.parse::<usize>().ok());
        let mut m = Self::for_cpu(&cpu_model, logical_cpus, table);
        if let Some(n) = siblings.filter(|&n| n > 0) {
            m.package_threads = n;
        }
        m
    }

    /// The model for a named CPU; `table` is `(source name, CSV text)`.
    pub fn for_cpu(cpu_model: &str, logical_cpus: usize, table: Option<(&str, &str)>) -> Self {
        let found = table.and_then(|(src, csv)| lookup_tdp(csv, cpu_model).map(|w| (src, w)));
        let (tdp_watts, tdp_source) = match found {
            Some((src, w)) => (w, format!("table {src}")),
            None => (DEFAULT_TDP_W, "default (CPU not in a TDP table)".into()),
        };
        CpuPowerModel {
            cpu_model: cpu_model.to_string(),
            logical_cpus: logical_cpus.max(1),
            package_threads: logical_cpus.max(1),
            tdp_watts,
            tdp_source,
            ram_watts_per_gb: RAM_W_PER_GB,
        }
    }

    /// Watts per busy logical CPU.
    pub fn watts_per_cpu(&self) -> f64 {
        self.tdp_watts / self.package_threads.max(1) as f64
    }

    /// The CPU estimate for `cpu_seconds` of CPU time, and the memory estimate for the process's
    /// peak resident size over `wall_seconds`.
    pub fn readings(&self, cpu_seconds: f64, wall_seconds: f64) -> Vec<SourceReading> {
        let rss_gb = peak_rss_bytes() as f64 / 1e9;
        self.readings_with(cpu_seconds, wall_seconds, rss_gb)
    }

    /// [`CpuPowerModel::readings`] for a given peak resident size.
    pub fn readings_with(
        &self,
        cpu_seconds: f64,
        wall_seconds: f64,
        rss_gb: f64,
    ) -> Vec<SourceReading> {
        vec![
            SourceReading {
                source: "cpu-estimate".into(),
                joules: cpu_seconds * self.watts_per_cpu(),
                provenance: Provenance::Estimated {
                    model: format!(
                        "process CPU time × TDP / package threads ({}, TDP {})",
                        self.cpu_model, self.tdp_source
                    ),
                    constants: [
                        ("cpu_seconds".to_string(), cpu_seconds),
                        ("tdp_watts".to_string(), self.tdp_watts),
                        ("logical_cpus".to_string(), self.logical_cpus as f64),
                        ("package_threads".to_string(), self.package_threads as f64),
                    ]
                    .into(),
                },
                // A TDP share is a coarse stand-in for the power actually drawn.
                uncertainty: 0.3,
            },
            SourceReading {
                source: "ram-estimate".into(),
                joules: rss_gb * self.ram_watts_per_gb * wall_seconds,
                provenance: Provenance::Estimated {
                    model: "peak resident GB × W/GB × wall seconds".into(),
                    constants: [
                        ("peak_rss_gb".to_string(), rss_gb),
                        ("watts_per_gb".to_string(), self.ram_watts_per_gb),
                        ("wall_seconds".to_string(), wall_seconds),
                    ]
                    .into(),
                },
                uncertainty: 0.5,
            },
        ]
    }
}

/// The TDP (W) of `cpu` in a `Name,TDP` CSV: exact match of the name, after dropping what
/// `/proc/cpuinfo` adds (`(R)`, `(TM)`, `CPU`, `Processor`, AMD's `96-Core`, `@ 2.10GHz`,
/// repeated spaces), case-insensitive.
pub fn lookup_tdp(csv: &str, cpu: &str) -> Option<f64> {
    let clean = |s: &str| -> String {
        let s = s.split('@').next().unwrap_or(s);
        s.replace("(R)", "")
            .replace("(TM)", "")
            .replace("(tm)", "")
            .split_whitespace()
            .filter(|w| {
                !w.eq_ignore_ascii_case("cpu")
                    && !w.eq_ignore_ascii_case("processor")
                    && !w.to_ascii_lowercase().ends_with("-core")
            })
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase()
    };
    let want = clean(cpu);
    csv.lines().skip(1).find_map(|l| {
        let (name, tdp) = l.rsplit_once(',')?;
        (clean(name.trim_matches('"')) == want)
            .then(|| tdp.trim().parse::<f64>().ok())
            .flatten()
            .filter(|w| *w > 0.0 && w.is_finite())
    })
}

/// CPU time used so far by this process and its waited-for children.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    pub cpu_seconds: f64,
}

fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        u
    }
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 * 1e-6
}

impl CpuTimes {
    /// The CPU time of this process's waited-for children.
    pub fn children() -> Self {
        let c = rusage(libc::RUSAGE_CHILDREN);
        CpuTimes {
            cpu_seconds: seconds(c.ru_utime) + seconds(c.ru_stime),
        }
    }

    pub fn now() -> Self {
        let (s, c) = (rusage(libc::RUSAGE_SELF), rusage(libc::RUSAGE_CHILDREN));
        CpuTimes {
            cpu_seconds: seconds(s.ru_utime)
                + seconds(s.ru_stime)
                + seconds(c.ru_utime)
                + seconds(c.ru_stime),
        }
    }
}

/// Peak resident size of this process (or of its largest waited-for child, if larger), bytes.
pub fn peak_rss_bytes() -> u64 {
    let kb = rusage(libc::RUSAGE_SELF)
        .ru_maxrss
        .max(rusage(libc::RUSAGE_CHILDREN).ru_maxrss);
    kb.max(0) as u64 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tdp_lookup_cleans_cpuinfo_names_and_falls_back_to_the_default() {
        let csv = "Name,TDP\nIntel Xeon Gold 6148,150\nAMD EPYC 7B13,240\n";
        assert_eq!(
            lookup_tdp(csv, "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz"),
            Some(150.0)
        );
        assert_eq!(lookup_tdp(csv, "AMD EPYC 7B13"), Some(240.0));
        assert_eq!(lookup_tdp(csv, "AMD EPYC"), None);
        let m = CpuPowerModel::for_cpu("AMD EPYC", 2, Some(("t.csv", csv)));
        assert_eq!(
            (m.tdp_watts, m.tdp_source.as_str()),
            (85.0, "default (CPU not in a TDP table)")
        );
        let m = CpuPowerModel::for_cpu("AMD EPYC 7B13", 128, Some(("t.csv", csv)));
        assert_eq!(m.tdp_watts, 240.0);
        assert!(m.tdp_source.contains("t.csv"));
        // The shipped table: every row parses, and /proc/cpuinfo spellings find their model.
        assert_eq!(
            CPU_TDP_TABLE
                .lines()
                .skip(1)
                .filter(|l| l
                    .rsplit_once(',')
                    .and_then(|(_, w)| w.parse::<f64>().ok())
                    .is_some_and(|w| w > 0.0))
                .count(),
            CPU_TDP_TABLE.lines().count() - 1
        );
        let shipped = Some((CPU_TDP_SOURCE, CPU_TDP_TABLE));
        for (cpu, w) in [
            ("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", 150.0),
            ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", 65.0),
            ("AMD EPYC 9654 96-Core Processor", 360.0),
        ] {
            let m = CpuPowerModel::for_cpu(cpu, 8, shipped);
            assert_eq!(m.tdp_watts, w, "{cpu}");
            assert!(m.tdp_source.contains("cpu-tdp.csv"), "{}", m.tdp_source);
        }
        assert_eq!(
            CpuPowerModel::for_cpu("AMD EPYC", 2, shipped).tdp_watts,
            85.0
        );
        // A 192-thread package's TDP is shared by its threads, however few this process gets.
        let mut m = CpuPowerModel::for_cpu("AMD EPYC 9654 96-Core Processor", 8, shipped);
        m.package_threads = 192;
        assert_eq!(m.watts_per_cpu(), 360.0 / 192.0);
    }

    /// Hand-computed: 12 CPU-seconds on a 2-thread share of 85 W = 510 J; 2 GB × 0.375 W/GB ×
    /// 10 s = 7.5 J; both labelled estimates with their constants.
    #[test]
    fn estimate_is_cpu_time_times_tdp_share_plus_memory() {
        let m = CpuPowerModel::for_cpu("x", 2, None);
        let r = m.readings_with(12.0, 10.0, 2.0);
        assert!((r[0].joules - 510.0).abs() < 1e-9);
        assert!((r[1].joules - 7.5).abs() < 1e-9);
        for s in &r {
            let Provenance::Estimated { constants, .. } = &s.provenance else {
                panic!("an estimate must say so");
            };
            assert!(!constants.is_empty());
        }
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        let t0 = CpuTimes::now();
        let mut x = 0u64;
        while CpuTimes::now().cpu_seconds - t0.cpu_seconds < 0.05 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert!(x != 1);
        assert!(peak_rss_bytes() > 1 << 20);
    }
}
