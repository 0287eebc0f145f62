//! Intel/AMD RAPL energy counters through Linux powercap: for each zone
//! `ROOT/intel-rapl:N` (a CPU package) and its sub-zone named `dram`, the file `energy_uj`
//! (cumulative microjoules) and `max_energy_range_uj` (where the counter wraps to zero). A
//! reading lower than the previous one has wrapped: the difference is taken through the range
//! (`max − previous + current`, as the kernel's counter restarts from zero). Core and uncore
//! sub-zones are inside the package's figure and `psys` overlaps it, so neither is added. The
//! counters are root-only on recent kernels (mode 0400): unreadable zones are skipped, and with
//! none readable there is no RAPL meter.

use crate::{Error, Provenance, Result, SourceReading};
use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/sys/class/powercap";

/// One counter.
#[derive(Debug, Clone)]
struct Zone {
    /// `cpu-package-0`, `dram-0`.
    source: String,
    energy: PathBuf,
    max_range_uj: u64,
    last_uj: u64,
    total_uj: u128,
}

/// The readable RAPL counters under a powercap root.
#[derive(Debug, Clone)]
pub struct Rapl {
    zones: Vec<Zone>,
}

fn read_u64(path: &Path) -> Result<Option<u64>> {
    let s = match std::fs::read_to_string(path) {
        Ok(s) => s,
        // Missing or not permitted: not a usable counter.
        Err(_) => return Ok(None),
    };
    s.trim()
        .parse::<u64>()
        .map(Some)
        .map_err(|e| Error::Counter {
            path: path.display().to_string(),
            reason: format!("`{}` is not a counter value: {e}", s.trim()),
        })
}

impl Rapl {
    /// The readable package and DRAM zones under `root`, in name order (`None` when there is
    /// none: no RAPL, or no permission).
    pub fn open(root: &Path) -> Result<Option<Rapl>> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Ok(None);
        };
        let mut dirs: Vec<(String, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.starts_with("intel-rapl:").then(|| (n, e.path()))
            })
            .collect();
        dirs.sort();
        let mut zones = Vec::new();
        for (dir_name, dir) in dirs {
            let name = std::fs::read_to_string(dir.join("name")).unwrap_or_default();
            let name = name.trim();
            let index = dir_name.trim_start_matches("intel-rapl:");
            let package = index.split(':').next().unwrap_or("0");
            let source = if name.starts_with("package") && !index.contains(':') {
                format!("cpu-package-{package}")
            } else if name == "dram" {
                format!("dram-{package}")
            } else {
                continue;
            };
            let energy = dir.join("energy_uj");
            let (Some(now), Some(max)) = (
                read_u64(&energy)?,
                read_u64(&dir.join("max_energy_range_uj"))?,
            ) else {
                continue;
            };
            if max == 0 || now > max {
                return Err(Error::Counter {
                    path: energy.display().to_string(),
                    reason: format!("reading {now} outside the counter's range 0..={max}"),
                });
            }
            zones.push(Zone {
                source,
                energy,
                max_range_uj: max,
                last_uj: now,
                total_uj: 0,
            });
        }
        Ok((!zones.is_empty()).then_some(Rapl { zones }))
    }

    /// Reads every counter and adds what it advanced since the last reading.
    pub fn sample(&mut self) -> Result<()> {
        for z in &mut self.zones {
            let now = read_u64(&z.energy)?.ok_or_else(|| Error::Counter {
                path: z.energy.display().to_string(),
                reason: "no longer readable".into(),
            })?;
            if now > z.max_range_uj {
                return Err(Error::Counter {
                    path: z.energy.display().to_string(),
                    reason: format!("reading {now} outside the range 0..={}", z.max_range_uj),
                });
            }
            let delta = if now >= z.last_uj {
                now - z.last_uj
            } else {
                z.max_range_uj - z.last_uj + now
            };
            z.total_uj += u128::from(delta);
            z.last_uj = now;
        }
        Ok(())
    }

    /// Each zone's energy since [`Rapl::open`].
    pub fn readings(&self) -> Vec<SourceReading> {
        self.zones
            .iter()
            .map(|z| SourceReading {
                source: z.source.clone(),
                joules: z.total_uj as f64 * 1e-6,
                provenance: Provenance::Measured {
                    counter: format!("RAPL {}", z.energy.display()),
                },
                // RAPL's package counters track wall power within a few per cent on recent
                // CPUs (Khan et al. 2018); DRAM is model-based on some parts.
                uncertainty: 0.05,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, dir: &str, name: &str, uj: u64, max: u64) {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
    }

    fn set(root: &Path, dir: &str, uj: u64) {
        std::fs::write(root.join(dir).join("energy_uj"), format!("{uj}\n")).unwrap();
    }

    /// A fixture powercap tree: two packages (one wrapping around), their DRAM zones, and
    /// core/psys zones that must not be added. The joules are exactly the counters' advance.
    #[test]
    fn fixture_tree_gives_exact_joules_through_a_wrap_around() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let max = 262_143_328_850u64;
        zone(r, "intel-rapl:0", "package-0", 1_000_000, max);
        zone(r, "intel-rapl:0:0", "core", 5, max);
        zone(r, "intel-rapl:0:1", "dram", 7_000_000, max);
        zone(r, "intel-rapl:1", "package-1", max - 2_000_000, max);
        zone(r, "intel-rapl:1:0", "dram", 0, max);
        zone(r, "intel-rapl:2", "psys", 0, max);
        let mut m = Rapl::open(r).unwrap().unwrap();
        set(r, "intel-rapl:0", 4_500_000); // +3.5 J
        set(r, "intel-rapl:0:1", 7_250_000); // +0.25 J
        set(r, "intel-rapl:1", max - 500_000); // +1.5 J
        set(r, "intel-rapl:1:0", 1_000_000); // +1 J
        m.sample().unwrap();
        set(r, "intel-rapl:1", 3_000_000); // wraps: +0.5 J + 3 J
        set(r, "intel-rapl:0:0", 999_999_999);
        m.sample().unwrap();
        let got: Vec<(String, f64)> = m
            .readings()
            .iter()
            .map(|s| (s.source.clone(), s.joules))
            .collect();
        assert_eq!(
            got,
            vec![
                ("cpu-package-0".to_string(), 3.5),
                ("dram-0".to_string(), 0.25),
                ("cpu-package-1".to_string(), 5.0),
                ("dram-1".to_string(), 1.0),
            ]
        );
        for s in m.readings() {
            assert!(matches!(s.provenance, Provenance::Measured { .. }));
        }
    }

    #[test]
    fn no_tree_or_no_readable_counter_means_no_meter_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Rapl::open(&dir.path().join("absent")).unwrap().is_none());
        assert!(Rapl::open(dir.path()).unwrap().is_none());
        // A zone without its energy file (as when unreadable) is skipped.
        std::fs::create_dir_all(dir.path().join("intel-rapl:0")).unwrap();
        std::fs::write(dir.path().join("intel-rapl:0/name"), "package-0").unwrap();
        assert!(Rapl::open(dir.path()).unwrap().is_none());
        zone(dir.path(), "intel-rapl:0", "package-0", 10, 100);
        std::fs::write(dir.path().join("intel-rapl:0/energy_uj"), "12x").unwrap();
        let e = Rapl::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("energy_uj"), "{e}");
        zone(dir.path(), "intel-rapl:0", "package-0", 200, 100);
        assert!(Rapl::open(dir.path()).is_err());
    }
}
