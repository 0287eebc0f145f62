//! Memory plans: a command's peak memory estimated from the model's shapes before any work
//! starts, printed, and checked against a budget — `--max-memory`, or by default the memory the
//! machine has available less a margin — so that a run which cannot fit is refused at once,
//! with the option that would make it fit, instead of being killed hours in.
//!
//! A plan counts anonymous memory (what the process allocates). The model file is memory-mapped
//! and read as it streams: its pages are the kernel's page cache, which it drops under pressure,
//! so they are not in the plan.

use crate::llama::LlamaConfig;
use crate::scratch::Placement;
use frugal_formats::gguf::GgufFile;

/// One part of a plan: what it is and its bytes at the peak.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub what: String,
    pub bytes: u64,
}

/// The parts alive together at a run's peak, the process itself among them ([`MemoryPlan::new`];
/// [`MemoryPlan::total`] adds the slack).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    pub parts: Vec<Part>,
    /// Where the large working buffers ([`MemoryPlan::add_scratch`]) go.
    pub placement: Placement,
    /// The scratch buffers placed in files (none in memory placement): disk, not memory.
    pub on_disk: Vec<Part>,
}

/// Bytes every plan adds for the process itself and small buffers (measured: a Frugal command
/// that loads nothing peaks at about 60 MB; the rest covers allocator slack).
pub const BASE_BYTES: u64 = 128 << 20;

impl Default for MemoryPlan {
    fn default() -> MemoryPlan {
        MemoryPlan::new()
    }
}

impl MemoryPlan {
    /// A plan of the process alone.
    pub fn new() -> MemoryPlan {
        MemoryPlan::placed(Placement::Memory)
    }

    /// A plan of the process alone whose scratch buffers go where `placement` says.
    pub fn placed(placement: Placement) -> MemoryPlan {
        MemoryPlan {
            parts: vec![Part {
                what: "the process and small buffers".into(),
                bytes: BASE_BYTES,
            }],
            placement,
            on_disk: Vec::new(),
        }
    }

    /// Adds a large working buffer ([`crate::scratch::Scratch`]): a part of memory, or of the
    /// scratch files when the plan places them in files.
    pub fn add_scratch(&mut self, what: impl Into<String>, bytes: u64) -> &mut Self {
        if bytes == 0 {
            return self;
        }
        match self.placement {
            Placement::Memory => self.add(what, bytes),
            Placement::Files(_) => {
                self.on_disk.push(Part {
                    what: what.into(),
                    bytes,
                });
                self
            }
        }
    }

    /// The scratch files' bytes at the peak.
    pub fn disk_total(&self) -> u64 {
        self.on_disk.iter().map(|p| p.bytes).sum()
    }

    /// Adds a part (none when `bytes` is 0).
    pub fn add(&mut self, what: impl Into<String>, bytes: u64) -> &mut Self {
        if bytes > 0 {
            self.parts.push(Part {
                what: what.into(),
                bytes,
            });
        }
        self
    }

    /// The parts, and a tenth more: allocator slack and the transient copies too small or too
    /// short-lived to list (measured against the real peak in BENCHMARKS.md).
    pub fn total(&self) -> u64 {
        let sum: u64 = self.parts.iter().map(|p| p.bytes).sum();
        sum + sum / 10
    }

    /// The larger of two plans that run one after the other (a compression, then the
    /// evaluation of its output), with the larger of their scratch files.
    pub fn max(self, other: MemoryPlan) -> MemoryPlan {
        let (mut peak, rest) = if other.total() > self.total() {
            (other, self)
        } else {
            (self, other)
        };
        if rest.disk_total() > peak.disk_total() {
            peak.on_disk = rest.on_disk;
            peak.placement = rest.placement;
        }
        peak
    }

    /// The parts, largest first: `one decoded block 0.75 GiB, output layer 0.49 GiB, …`.
    pub fn parts_text(&self) -> String {
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| std::cmp::Reverse(p.bytes));
        parts
            .iter()
            .map(|p| format!("{} {}", p.what, gib(p.bytes)))
            .chain(std::iter::once("a tenth for slack".to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line for the user before the run starts.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "memory plan: about {} at the peak ({}), beside the memory-mapped model",
            gib(self.total()),
            self.parts_text()
        );
        if !self.on_disk.is_empty() {
            t += &format!(
                "; about {} more {} ({})",
                gib(self.disk_total()),
                self.placement.to_text(),
                self.disk_text()
            );
        }
        t
    }

    fn disk_text(&self) -> String {
        self.on_disk
            .iter()
            .map(|p| format!("{} {}", p.what, gib(p.bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Refuses the plan when it exceeds `budget`, saying what would make it fit (`remedy`).
    /// The scratch files, when placed in files, must fit the free space of their folder
    /// (less a tenth: the output is written there too).
    pub fn check(&self, budget: &Budget, remedy: &str) -> crate::Result<()> {
        if self.total() > budget.bytes {
            return Err(crate::Error::OverBudget {
                needed: self.total(),
                plan: self.parts_text(),
                budget: budget.clone(),
                remedy: remedy.to_string(),
            });
        }
        if let Placement::Files(dir) = &self.placement {
            let needed = self.disk_total();
            if let Some(free) = crate::scratch::free_bytes(dir) {
                if needed > free - free / 10 {
                    return Err(crate::Error::OverDisk {
                        needed,
                        free,
                        dir: dir.clone(),
                        plan: self.disk_text(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// `bytes` as GiB with two decimals (MiB below one GiB).
pub fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// How much memory a run may use, and where that figure comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub bytes: u64,
    pub source: BudgetSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BudgetSource {
    /// `--max-memory`.
    Option,
    /// What the kernel reported available (`MemAvailable`), less the margin.
    Available { available: u64 },
    /// Nothing to measure by (not Linux): no limit.
    Unknown,
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            BudgetSource::Option => write!(f, "--max-memory {}", gib(self.bytes)),
            BudgetSource::Available { available } => write!(
                f,
                "the {} this machine has available less a margin ({} available; --max-memory sets the budget)",
                gib(self.bytes),
                gib(available)
            ),
            BudgetSource::Unknown => write!(f, "no known limit"),
        }
    }
}

impl Budget {
    /// `--max-memory` when given, else the machine's available memory less a tenth (at least
    /// 256 MiB) for everything else it runs.
    pub fn from_option(max_memory: Option<u64>) -> Budget {
        match max_memory {
            Some(bytes) => Budget {
                bytes,
                source: BudgetSource::Option,
            },
            None => match available() {
                Some(available) => Budget {
                    bytes: available.saturating_sub((available / 10).max(256 << 20)),
                    source: BudgetSource::Available { available },
                },
                None => Budget {
                    bytes: u64::MAX,
                    source: BudgetSource::Unknown,
                },
            },
        }
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&s)
}

fn parse_meminfo(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut it = line.split_whitespace().skip(1);
    let kb: u64 = it.next()?.parse().ok()?;
    (it.next() == Some("kB")).then_some(kb.checked_mul(1024)?)
}

/// A size as `--max-memory` takes it: bytes, or a number with K, M, G or T (powers of 1024;
/// `GiB`, `GB` and `G` alike), e.g. `6G`, `1.5GiB`, `512M`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}`: the unit must be K, M, G or T (e.g. 6G, 512M)"
            ))
        }
    };
    let x: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 6G, 512M)"))?;
    let bytes = x * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < 2f64.powi(63)) {
        return Err(format!("`{s}`: a size from 1 byte to 8 EiB"));
    }
    Ok(bytes as u64)
}

/// The stored bytes copied out of the map before a tensor is decoded (none for F32, which is
/// copied straight into its F32 tensor).
fn staging_bytes(t: &frugal_formats::gguf::TensorInfo) -> u64 {
    if t.ggml_type == frugal_formats::gguf::GgmlType::F32 {
        0
    } else {
        t.n_bytes
    }
}

/// Bytes of block `i`'s weights decoded to F32 (every `blk.{i}.` tensor of `f`), and the
/// stored copy of the largest one while it is decoded.
pub fn block_f32_bytes(f: &GgufFile, i: usize) -> u64 {
    let prefix = format!("blk.{i}.");
    let tensors = || {
        f.header
            .tensors
            .iter()
            .filter(|t| t.name.starts_with(&prefix))
    };
    tensors().map(|t| 4 * t.n_elements()).sum::<u64>()
        + tensors().map(staging_bytes).max().unwrap_or(0)
}

/// The largest block's bytes decoded to F32.
pub fn largest_block_f32_bytes(f: &GgufFile, c: &LlamaConfig) -> u64 {
    (0..c.n_layer)
        .map(|i| block_f32_bytes(f, i))
        .max()
        .unwrap_or(0)
}

/// The output layer decoded to F32 (`output.weight`, or the tied embedding), and its stored
/// copy while it is decoded.
pub fn output_f32_bytes(f: &GgufFile, c: &LlamaConfig) -> u64 {
    let t = f
        .tensor("output.weight")
        .or_else(|| f.tensor("token_embd.weight"));
    4 * (c.n_vocab as u64) * (c.n_embd as u64) + t.map_or(0, staging_bytes)
}

/// What one chunk of `t` tokens holds while it passes through a block in F32: its input and
/// output states, the normed input, queries, keys and values, the attention scores and their
/// softmax (per head, `t × t`), and the FFN's gate, up and product.
pub fn block_pass_bytes(c: &LlamaConfig, t: usize) -> u64 {
    let (t, d, ff) = (t as u64, c.n_embd as u64, c.n_ff as u64);
    let qd = (c.n_head * c.head_dim()) as u64;
    let kv = (c.n_head_kv * c.head_dim()) as u64;
    let heads = c.n_head as u64;
    4 * (3 * t * d + t * (2 * qd + 2 * kv) + 2 * heads * t * t + 3 * t * ff)
}

/// What a model loaded with its weights as stored ([`crate::llama::LoadOptions::KERNELS`])
/// holds in memory: its vectors (norms, biases) in F32, and every matrix Frugal's kernels do
/// not read in place ([`crate::linear::reads_in_place`]: the IQ and ternary types) as candle's
/// copy of its bytes — the token embedding decoded to F32 when its rows cannot be read in
/// place. With `FRUGAL_CANDLE_QMATMUL=1` (benchmarks) every matrix is copied, and candle may
/// repack it once more.
pub fn stored_model_bytes(f: &GgufFile) -> u64 {
    let forced = crate::qmatmul::candle_forced();
    f.header
        .tensors
        .iter()
        .map(|t| {
            let vector = t.dims.iter().filter(|&&d| d > 1).count() <= 1;
            if vector {
                4 * t.n_elements()
            } else if forced {
                2 * t.n_bytes
            } else if crate::linear::reads_in_place(t.ggml_type) {
                0
            } else if t.name == "token_embd.weight" {
                4 * t.n_elements() + staging_bytes(t)
            } else {
                t.n_bytes
            }
        })
        .sum()
}

/// What a model loaded with every weight decoded to F32 ([`crate::llama::LoadOptions::EXACT`]
/// or `GGML`) holds: every tensor in F32 (a tied embedding twice: the table and the output
/// layer), and the stored copy of the largest while it is decoded.
pub fn decoded_model_bytes(f: &GgufFile) -> u64 {
    let all: u64 = f.header.tensors.iter().map(|t| 4 * t.n_elements()).sum();
    let tied = match (f.tensor("output.weight"), f.tensor("token_embd.weight")) {
        (None, Some(e)) => 4 * e.n_elements(),
        _ => 0,
    };
    let staging = f
        .header
        .tensors
        .iter()
        .map(staging_bytes)
        .max()
        .unwrap_or(0);
    all + tied + staging
}

/// What decoding `positions` tokens one at a time holds besides the model: the key/value
/// cache of every block (twice: it grows by copying), one token's pass through a block, and
/// the logits.
pub fn decode_bytes(c: &LlamaConfig, positions: usize) -> u64 {
    let kv = (c.n_head_kv * c.head_dim()) as u64;
    let cache = 2 * c.n_layer as u64 * positions as u64 * kv * 4;
    2 * cache + block_pass_bytes(c, 1) + 2 * 4 * c.n_vocab as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_refuse_the_rest() {
        assert_eq!(parse_size("6G"), Ok(6 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("512 M"), Ok(512 << 20));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        for bad in [
            "",
            "G",
            "6X",
            "-1G",
            "0",
            "1e400",
            "nan",
            "1..2G",
            "9999999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn meminfo_is_read_in_kilobytes_and_nothing_else() {
        let s = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo(s), Some(20_000_000 * 1024));
        assert_eq!(parse_meminfo("MemAvailable: 5 MB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn a_plan_over_its_budget_is_refused_naming_the_remedy() {
        let mut p = MemoryPlan::new();
        p.add("states", 3 << 30).add("nothing", 0);
        assert_eq!(p.parts.len(), 2);
        assert_eq!(p.total(), ((3 << 30) + BASE_BYTES) * 11 / 10);
        let fits = Budget::from_option(Some(7 << 29));
        assert!(p.check(&fits, "fewer tokens").is_ok());
        let small = Budget::from_option(Some(2 << 30));
        let e = p
            .check(&small, "pass --calib-tokens 1024")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3.44 GiB") && e.contains("--max-memory 2.00 GiB"),
            "{e}"
        );
        assert!(
            e.contains("states 3.00 GiB") && e.contains("--calib-tokens 1024"),
            "{e}"
        );
        assert!(p.to_text().starts_with("memory plan: about 3.44 GiB"));
        let machine = Budget::from_option(None);
        assert!(machine.bytes > 0);
    }

    #[test]
    fn scratch_parts_go_to_disk_when_placed_in_files_and_must_fit_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut mem = MemoryPlan::new();
        mem.add("block", 1 << 30).add_scratch("grams", 3 << 30);
        assert_eq!(mem.total(), ((4 << 30) + BASE_BYTES) * 11 / 10);
        assert_eq!(mem.disk_total(), 0);
        let mut files = MemoryPlan::placed(Placement::Files(dir.path().to_path_buf()));
        files.add("block", 1 << 30).add_scratch("grams", 3 << 30);
        assert_eq!(files.total(), ((1 << 30) + BASE_BYTES) * 11 / 10);
        assert_eq!(files.disk_total(), 3 << 30);
        assert!(files
            .to_text()
            .contains("3.00 GiB more in unnamed scratch files"));
        // Two phases: the larger memory and the larger scratch files, wherever each is.
        let mut stats = MemoryPlan::new();
        stats.add("states", 2 << 30);
        let both = stats.max(files.clone());
        assert_eq!(
            (both.total(), both.disk_total()),
            (((2 << 30) + BASE_BYTES) * 11 / 10, 3 << 30)
        );
        let free = crate::scratch::free_bytes(dir.path()).unwrap();
        let mut huge = MemoryPlan::placed(Placement::Files(dir.path().to_path_buf()));
        huge.add_scratch("grams", free);
        let e = huge
            .check(&Budget::from_option(Some(1 << 40)), "")
            .unwrap_err();
        assert!(matches!(e, crate::Error::OverDisk { .. }), "{e}");
        assert!(files.check(&Budget::from_option(Some(2 << 30)), "").is_ok() || free < (4 << 30));
    }
}
